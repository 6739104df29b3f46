"""Emulated board latency against published board figures, held out from every fit
(``liteconv study emulation``).

The published figures are ``published_latency.csv`` (beside this module): board latencies
others measured and published, each row with its source (XNNPACK's README tables, the
TFLite benchmarks page, EfficientNet-Lite's and MobileNet's READMEs). Rows are grouped
into *tables* (one source, one board, one thread count). The architectures are built from
``keras.applications`` (random weights: latency does not depend on them) or the registry
(EfficientNet-Lite), converted to fp32 and full-integer int8 here, and estimated on the
table's target (``emulate.estimate``) at the table's thread count with the target's
constant set aside (1).

What is fitted, and on what (the report marks each row *fit* or *held out*):

- each board's constant (``cycle_scale``): on one named table (``FIT_TABLES``), the
  geometric mean of published ÷ estimated; absolute errors are judged only on the
  board's *other* tables;
- the thread model's cycles per dispatch (``estimate.SYNC_CYCLES``): on XNNPACK's Pixel
  3a 1- vs 2-thread pairs, one count for every core;
- the bytes per cycle a cluster's shared L2 returns (``estimate.SHARED_L2_BYTES_PER_CYCLE``):
  on the Raspberry Pi 4's EfficientDet-Lite 1- vs 2- and 4-thread pairs, one count for
  every core whose L2 is shared (``SHARED_L2_PAIRS``);
- per table, the goals on ratios (one constant per table and mode, i.e. model-to-model
  ratios) are judged leave-one-out: each row's constant comes from the table's other rows.

Two baselines on the same rows, each with its own leave-one-out constant: MACs × constant
and this host's measured time × constant. Reported per table and predictor: Spearman rank
correlation, median and worst residual, the share within ±10 % and ±20 %.

Example:
    >>> paths = emulation_study("docs/results/emulation")
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import statistics
from pathlib import Path

import numpy as np

from liteconv.compat import keras
from liteconv.device import caches
from liteconv.device.errors import LiteconvError
from liteconv.device.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from liteconv.device.machine import machine_info
from liteconv.device.tables import format_table
from liteconv.device.targets import HeldOut, load_target
from liteconv.emulate.estimate import (
    EMULATED_RUNTIME,
    SHARED_L2_BYTES_PER_CYCLE,
    SYNC_CYCLES,
    dram_bandwidth,
    dram_ms,
    emulated_runtime,
    estimate_models,
    time_ms,
)
from liteconv.export.convert import to_tflite

PUBLISHED_CSV = Path(__file__).with_name("published_latency.csv")

# The target whose core estimates each published board; "stand-in" where no target models
# that board (the table is then judged on ratios only, its constant being its own).
BOARDS = {
    "Raspberry Pi 4": ("raspberry-pi-4", ""),
    "Raspberry Pi 5": ("raspberry-pi-5", ""),
    # XNNPACK's Pi 3B+ and Pi 2 figures ran 32-bit Raspbian: the 32-bit user space emulates them
    "Raspberry Pi 3B+": ("raspberry-pi-3-32bit", ""),
    # ...and the SSD figures of a Pi 3B+ on the 64-bit OS (TFLite 2.5, XNNPACK), the 64-bit one
    "Raspberry Pi 3B+ (64-bit)": ("raspberry-pi-3", ""),
    "Raspberry Pi 2": (
        "raspberry-pi-3-32bit",
        "stand-in: Cortex-A7 at 900 MHz (BCM2836) as a Cortex-A53, both 32-bit",
    ),
    "Pixel 4": ("pixel-4", ""),
    "Pixel 3": ("android-big-cores", "stand-in: Kryo 385 Gold (Cortex-A75 class) as a Cortex-A76"),
    "Pixel 3a": ("android-big-cores", "stand-in: Kryo 360 Gold (Cortex-A75 class) as a Cortex-A76"),
    "Pixel 2": ("raspberry-pi-4", "stand-in: Kryo 280 (Cortex-A73 class) as a Cortex-A72"),
    "Pixel": ("raspberry-pi-4", "stand-in: Kryo (Snapdragon 821, custom core) as a Cortex-A72"),
}
# What a stand-in takes other than its target's YAML: the phones' 64-bit LPDDR4 buses let
# T threads draw T × one thread's bandwidth up to the bus's peak, as before 2026-12-06,
# not the Pi 4's one core's figure at any T (``dram_all_threads_mb_s``: a Pi's 32-bit bus).
STAND_IN_MEMORY = {
    "Pixel 2": {"dram_all_threads_mb_s": 0.0},
    "Pixel": {"dram_all_threads_mb_s": 0.0},
}
# EfficientDet-Lite on the Pi 4 and Pi 5 (TFLite 2.18): the source the Pi 5's constant and
# both boards' all-thread bandwidth come from
EFFICIENTDET_LOGS = "NobuoTsukamoto/benchmarks tensorflow/lite/efficentdet"
# The TF1 detection zoo's SSD / SSDLite on the Pi 4, a 64-bit and a 32-bit Pi 3B+ (TFLite 2.5,
# fp32 with XNNPACK; the INT8 column, TFLite's builtin kernels, is a table of its own)
SSD_LOGS = (
    "NobuoTsukamoto/benchmarks tensorflow/lite/tf1_detection_model_zoo/raspi.md: "
    "benchmark_tflite.py"
)
# The one table each board's constant is fitted on (source prefix, board, threads).
FIT_TABLES = {
    "raspberry-pi-4": ("google/XNNPACK README.md, revision of 2022-02", "Raspberry Pi 4", 4),
    "raspberry-pi-3-32bit": (
        "google/XNNPACK README.md, revision of 2022-02",
        "Raspberry Pi 3B+",
        4,
    ),
    "pixel-4": ("tensorflow/tensorflow", "Pixel 4", 4),
    "raspberry-pi-5": (EFFICIENTDET_LOGS, "Raspberry Pi 5", 4),
    # one thread: the table's 4-thread runs are slower than its 3-thread ones for two models
    "raspberry-pi-3": (SSD_LOGS, "Raspberry Pi 3B+ (64-bit)", 1),
}
# The boards whose all-thread bandwidth (``dram_all_threads_mb_s``: one core's figure) was
# chosen on their published 1- vs T-thread pairs of one source: those pairs are not held out.
BANDWIDTH_PAIRS = {"Raspberry Pi 4": EFFICIENTDET_LOGS, "Raspberry Pi 5": EFFICIENTDET_LOGS,
                   "Raspberry Pi 3B+ (64-bit)": SSD_LOGS}  # fmt: skip
# The table pairs the thread model's dispatch cost is fitted on.
SYNC_TABLE = ("google/XNNPACK README.md, revision of 2020-03", "Pixel 3a")
# The 1- vs T-thread pairs the shared L2's bytes per cycle is fitted on (board, source):
# the Pi 4's EfficientDet-Lite logs, whose pairs its all-thread DRAM figure was chosen on.
SHARED_L2_PAIRS = ("Raspberry Pi 4", EFFICIENTDET_LOGS)
# A sanity check across boards, not a score: one source timing two boards with one harness
# gives each model's board-to-board ratio; the first board is estimated on a target other
# than its table's (XNNPACK's 2022 Pi 3B+ column ran 32-bit Raspbian; estimated here on the
# 64-bit Pi 3 target: the A53's cycle model and constant, fitted on the SSD table).
CROSS_BOARD = ("google/XNNPACK README.md, revision of 2022-02", "Raspberry Pi 3B+",
               "raspberry-pi-3", "Raspberry Pi 4", 4)  # fmt: skip


def cross_board_rows(pairs: list[dict], constant_a: float, constant_b: float) -> list[dict]:
    """Board A ÷ board B per model: ``pairs`` of ``{"model", "mode", "a_raw", "b_raw",
    "a_published", "b_published"}`` (estimates without their constants); each row gets the
    estimated ratio (with each board's constant), the published one and the error."""
    out = []
    for p in pairs:
        estimated = p["a_raw"] * constant_a / (p["b_raw"] * constant_b)
        published = p["a_published"] / p["b_published"]
        out.append({"model": p["model"], "mode": p["mode"], "estimated": round(estimated, 3),
                    "published": round(published, 3),
                    "error": round(estimated / published - 1, 4)})  # fmt: skip
    return out


@dataclasses.dataclass
class Table:
    source: str
    board: str
    threads: int
    rows: list[dict]
    target: str = ""
    stand_in: str = ""
    fit_table: bool = False  # a board's constant is fitted on this table
    runtime: str = ""  # what ran the published figures (the CSV's runtime column)

    @property
    def key(self) -> str:
        return f"{self.board}, {self.threads} thread{'s' * (self.threads > 1)} — {self.source}"


def _board(table: Table, targets: dict):
    """The target a table's times are computed on: its target's settings, with a stand-in's
    memory (``STAND_IN_MEMORY``)."""
    target, memory = targets[table.target], STAND_IN_MEMORY.get(table.board)
    return dataclasses.replace(target, **memory) if memory else target


def _mode(precision: str) -> str:
    return "fp32" if precision.startswith("fp32") else "int8"


COLUMNS = ("source", "board", "threads", "model", "alpha", "resolution", "precision", "ms")


def load_tables(path: str | Path = PUBLISHED_CSV) -> tuple[list[Table], list[str]]:
    """The published rows grouped into tables, and the rows left out (with why)."""
    tables: dict[tuple, Table] = {}
    skipped = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise LiteconvError(f"{path}: no column {', '.join(missing)}; expected the columns "
                                f"of {PUBLISHED_CSV.name}: {', '.join(COLUMNS)}")  # fmt: skip
        for row in reader:
            board = row["board"].strip()
            name = row["model"].strip()
            if board not in BOARDS:
                skipped.append(f"{board} {name}: no target models this board's core "
                               "(Cortex-A7, 32-bit only)")  # fmt: skip
                continue
            if name not in BUILDABLE and not name.startswith(DETECTORS + ("efficientnet_lite",)):
                skipped.append(f"{board} {name}: not in keras.applications nor the registry")
                continue
            threads = int(row["threads"] or 1)
            key = (row["source"], board, threads)
            target, stand_in = BOARDS[board]
            runtime = (row.get("runtime") or "").strip()
            table = tables.setdefault(key, Table(row["source"], board, threads, [], target,
                                                 stand_in, runtime=runtime))  # fmt: skip
            table.rows.append({"model": name, "alpha": float(row["alpha"] or 1.0),
                               "resolution": int(row["resolution"]), "mode": _mode(row["precision"]),
                               "precision": row["precision"], "published_ms": float(row["ms"])})  # fmt: skip
    return list(tables.values()), skipped


BUILDABLE = {
    "mobilenet_v1": lambda a, r: keras.applications.MobileNet(weights=None, alpha=a, input_shape=(r, r, 3)),
    "mobilenet_v2": lambda a, r: keras.applications.MobileNetV2(weights=None, alpha=a, input_shape=(r, r, 3)),
    "mobilenet_v3_large": lambda a, r: keras.applications.MobileNetV3Large(
        weights=None, alpha=a, input_shape=(r, r, 3)),
    "mobilenet_v3_small": lambda a, r: keras.applications.MobileNetV3Small(
        weights=None, alpha=a, input_shape=(r, r, 3)),
    "mobilenet_v3_large_minimalistic": lambda a, r: keras.applications.MobileNetV3Large(
        weights=None, alpha=a, minimalistic=True, input_shape=(r, r, 3)),
    "mobilenet_v3_small_minimalistic": lambda a, r: keras.applications.MobileNetV3Small(
        weights=None, alpha=a, minimalistic=True, input_shape=(r, r, 3)),
    "nasnet_mobile": lambda a, r: keras.applications.NASNetMobile(weights=None, input_shape=(r, r, 3)),
    "inception_resnet_v2": lambda a, r: keras.applications.InceptionResNetV2(
        weights=None, input_shape=(r, r, 3)),
}  # fmt: skip


# The detectors, built with the post-processing operator their TFLite exports end in: the
# TF1 zoo's SSDs (``studies/ssd_mobilenet``) and EfficientDet-Lite.
SSD_DETECTORS = ("ssd_mobilenet", "ssdlite_mobilenet")
DETECTORS = ("efficientdet_lite", *SSD_DETECTORS)


def build(name: str, alpha: float, resolution: int):
    """The Keras model of a published row (random weights, 1000 classes; EfficientDet-Lite
    and the TF1 zoo's SSD / SSDLite: the COCO detector up to its post-processing operator,
    ``efficientdet_lite``, ``ssd_mobilenet``)."""
    keras.utils.set_random_seed(0)
    if name.startswith(SSD_DETECTORS):
        from liteconv.studies.ssd_mobilenet import ssd_mobilenet

        return ssd_mobilenet(name, resolution)
    if name.startswith("efficientdet_lite"):
        from liteconv.studies.efficientdet_lite import efficientdet_lite

        return efficientdet_lite(int(name[-1]))
    if name.startswith("efficientnet_lite"):
        from liteconv.keras_layers import create_model

        return create_model("efficientnet_lite", input_shape=(resolution, resolution, 3),
                            num_classes=1000, variant=int(name[-1]))  # fmt: skip
    return BUILDABLE[name](alpha, resolution)


def model_file(folder: Path, row: dict) -> Path:
    return folder / f"{row['model']}-{row['alpha']:g}-{row['resolution']}-{row['mode']}.tflite"


def convert_rows(rows: list[dict], folder: Path, max_macs: float = math.inf,
                 echo=print) -> dict[Path, int]:  # fmt: skip
    """Each row's ``.tflite`` in ``folder`` (converted once and kept: the emulation cache is
    keyed by the file's bytes) and the MACs of its architecture; architectures over
    ``max_macs`` are counted but not converted (absent from the answer's files)."""
    from liteconv.keras_layers.cost import model_cost

    folder.mkdir(parents=True, exist_ok=True)
    macs: dict[Path, int] = {}
    by_arch: dict[tuple, list[dict]] = {}
    for row in rows:
        by_arch.setdefault((row["model"], row["alpha"], row["resolution"]), []).append(row)
    for (name, alpha, res), group in by_arch.items():
        model = None
        for row in group:
            path = model_file(folder, row)
            macs_file = path.with_suffix(".macs")
            if macs_file.is_file() and (path.is_file() or int(macs_file.read_text()) > max_macs):
                macs[path] = int(macs_file.read_text())
                continue
            if model is None:
                model = build(name, alpha, res)
                count = model_cost(model).total_macs
            macs[path] = count
            if count <= max_macs:
                echo(f"converting {path.name}")
                data = (
                    np.random.default_rng(0).uniform(0, 1, size=(8, res, res, 3)).astype("float32")
                )
                atomic_write_bytes(path, to_tflite(model, mode=row["mode"], representative_data=data,
                                                   num_calibration=8,
                                                   postprocess_op=name.startswith(DETECTORS)))  # fmt: skip
            atomic_write_bytes(macs_file, str(count).encode())
    return macs


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None below 3 pairs."""
    if len(a) < 3:
        return None

    def ranks(x):
        order = sorted(range(len(x)), key=lambda i: x[i])
        out = [0.0] * len(x)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    ra, rb = ranks(a), ranks(b)
    if len(set(ra)) < 2 or len(set(rb)) < 2:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def geometric_fit(pairs: list[tuple[float, float]]) -> float:
    """The constant c that best fits ``published ≈ c × predicted`` in log space."""
    logs = [math.log(p / q) for q, p in pairs if q and p]
    return math.exp(sum(logs) / len(logs)) if logs else float("nan")


def leave_one_out(predicted: list[float], published: list[float]) -> list[float | None]:
    """Each row's residual (calibrated ÷ published − 1) with the constant fitted on the
    *other* rows of its table and mode: no row sees itself in its constant."""
    out = []
    for i, (q, p) in enumerate(zip(predicted, published)):
        others = [(predicted[j], published[j]) for j in range(len(predicted))
                  if j != i and predicted[j]]  # fmt: skip
        out.append(None if not q or not others else q * geometric_fit(others) / p - 1)
    return out


def scores(predicted: list[float], published: list[float], residuals: list[float | None]) -> dict:
    """Spearman, median and worst |residual|, share within ±10 % / ±20 % of one predictor."""
    res = [r for r in residuals if r is not None]
    if not res:
        return {"n": 0}
    return {"n": len(res), "spearman": spearman(predicted, published),
            "median": statistics.median(abs(r) for r in res),
            "worst": max(res, key=abs),
            "within_10": sum(abs(r) <= 0.10 for r in res) / len(res),
            "within_20": sum(abs(r) <= 0.20 for r in res) / len(res)}  # fmt: skip


PREDICTORS = ("estimate", "macs", "host")


def judge_table(rows: list[dict]) -> dict:
    """Per mode and predictor, the leave-one-out residuals (set on each row) and scores."""
    result = {}
    for mode in sorted({r["mode"] for r in rows}):
        mine = [r for r in rows if r["mode"] == mode and r.get("estimate")]
        if len(mine) < 2:
            continue
        pub = [r["published_ms"] for r in mine]
        result[mode] = {}
        for name in PREDICTORS:
            pred = [r.get(name) or 0.0 for r in mine]
            loo = leave_one_out(pred, pub)
            for r, e in zip(mine, loo):
                r[f"{name}_loo_error"] = e
            result[mode][name] = scores(pred, pub, loo)
    return result


def _fit_on_grid(ratios, published: list[float], grid) -> tuple[float, list[float]]:
    """The grid value whose ``ratios(value)`` best fit ``published`` (log-squared error),
    and the ratios at it."""
    errors = [sum(math.log(e / p) ** 2 for e, p in zip(ratios(k), published)) for k in grid]
    best = float(grid[int(np.argmin(errors))])
    return best, ratios(best)


def fit_sync(pairs: list[tuple[dict, float]], target, grid=None) -> tuple[float, list[dict]]:
    """Cycles per dispatch and extra thread that best fit published 2-thread ÷ 1-thread
    ratios: ``pairs`` of (counts of one model, published ratio). Log-squared error over a
    grid (0 … 200 000 cycles); returns the count and each pair's fitted ratio."""
    grid = np.arange(0, 200_001, 500) if grid is None else grid
    raw = dataclasses.replace(target, cycle_scale=1.0)

    def ratios(k):
        return [time_ms(raw, c, 2, sync_cycles=k)["estimated_ms"] / time_ms(raw, c, 1, sync_cycles=k)["estimated_ms"]
                for c, _ in pairs]  # fmt: skip

    best, fitted = _fit_on_grid(ratios, [p for _, p in pairs], grid)
    return best, [{"estimated_ratio": round(e, 4), "published_ratio": round(p, 4)}
                  for e, (_, p) in zip(fitted, pairs)]  # fmt: skip


def _speedup(
    one_target, one: dict, many_target, many: dict, threads: int, sync: float, l2: float
) -> float:
    """Estimated 1-thread ÷ ``threads``-thread time of one model's counts (``one`` on
    ``one_target``, ``many`` on ``many_target``) at ``sync`` cycles per dispatch and ``l2``
    bytes per cycle of shared L2."""
    return (time_ms(one_target, one, 1, sync_cycles=sync, l2_bytes_per_cycle=l2)["estimated_ms"]
            / time_ms(many_target, many, threads, sync_cycles=sync,
                      l2_bytes_per_cycle=l2)["estimated_ms"])  # fmt: skip


def fit_shared_l2(pairs: list[tuple], sync: float, grid=None) -> tuple[float, list[dict]]:
    """Bytes per cycle of a shared L2 that best fit published 1-thread ÷ T-thread ratios:
    ``pairs`` of (target, one-thread counts, T-thread counts, T, published ratio). Log-
    squared error over a grid (1 … 30 bytes per cycle, the dispatch cost at ``sync``);
    returns the rate and each pair's fitted ratio."""
    grid = np.round(np.arange(1.0, 30.001, 0.1), 1) if grid is None else grid
    raw = [dataclasses.replace(p[0], cycle_scale=1.0) for p in pairs]

    def ratios(rate):
        return [_speedup(t, one, t, many, n, sync, rate)
                for t, (_, one, many, n, _) in zip(raw, pairs)]  # fmt: skip

    best, fitted = _fit_on_grid(ratios, [p[-1] for p in pairs], grid)
    return best, [{"threads": p[3], "estimated_ratio": round(e, 4), "published_ratio": round(p[-1], 4)}
                  for e, p in zip(fitted, pairs)]  # fmt: skip


def sync_asked(pairs: list[tuple], l2: float, sync: float = SYNC_CYCLES, grid=None) -> dict:
    """The cycles per dispatch and extra thread that published 1- vs T-thread ``pairs`` ask
    for, each (one-thread target, one-thread counts, T-thread target, T-thread counts, T,
    published 1T ÷ T), every other term as the estimate has it (the shared L2 at ``l2``):
    ``{"cycles": the grid value (0 … 200 000) whose ratios fit the published ones best
    (log-squared error), "bound": None, or "below" where even no dispatch cost estimates
    too little a speed-up (they ask for less than none), "above" where the grid's end still
    estimates too much, "median_error": the pairs' median |error| at ``sync`` (the
    estimate's), "median_error_asked": at the cycles asked}``. Read, not fitted: what a
    table's runtime and harness pay per dispatch (one pair alone asks for a wide range
    when its ratio scarcely depends on it: few dispatches, much work)."""
    grid = np.arange(0, 200_001, 500) if grid is None else grid
    published = [p[-1] for p in pairs]
    raw = [[dataclasses.replace(t, cycle_scale=1.0) for t in (p[0], p[2])] for p in pairs]

    def ratios(k):
        return [_speedup(one_t, p[1], many_t, p[3], p[4], k, l2)
                for (one_t, many_t), p in zip(raw, pairs)]  # fmt: skip

    def median_error(values):
        return round(float(np.median([abs(e / q - 1) for e, q in zip(values, published)])), 4)

    cycles, fitted = _fit_on_grid(ratios, published, grid)
    off = float(np.mean([math.log(e / q) for e, q in zip(fitted, published)]))
    bound = None  # at a grid end and still off by more than 0.5 % on average
    if cycles == grid[0] and off < -0.005:
        bound = "below"
    elif cycles == grid[-1] and off > 0.005:
        bound = "above"
    return {"cycles": cycles, "bound": bound, "median_error": median_error(ratios(sync)),
            "median_error_asked": median_error(fitted)}  # fmt: skip


CNN_TARGETS = ("raspberry-pi-3", "raspberry-pi-4", "raspberry-pi-5")


def cnn_speed_per_target(
    folder: Path, *, targets=CNN_TARGETS, cache: str, echo=print
) -> list[dict]:
    """The README's speed claims per target: baseline / flattened / separable CNNs at
    28×28×1 (random weights), fp32 and int8, measured on this host (1 thread) and
    estimated on each target; speed-up over the baseline of the same mode."""
    from liteconv.device.harness import benchmark
    from liteconv.keras_layers import create_model

    files = {}
    data = np.random.default_rng(0).uniform(size=(16, 28, 28, 1)).astype("float32")
    for name in ("baseline_cnn", "flattened_cnn", "separable_cnn"):
        keras.utils.set_random_seed(0)
        model = create_model(name, input_shape=(28, 28, 1), num_classes=10)
        for mode in ("fp32", "int8"):
            path = folder / f"{name}-{mode}.tflite"
            path.write_bytes(
                to_tflite(model, mode=mode, representative_data=data, num_calibration=16)
            )
            files[(name, mode)] = path
    echo("timing the three CNNs on this host (1 thread, interleaved)")
    host = {r["file"]: r["p50_ms"] for r in benchmark([str(f) for f in files.values()], runs=200)}
    rows = {k: {"model": k[0], "mode": k[1], "host_ms": host[str(f)]} for k, f in files.items()}
    for name in targets:
        for key, est in zip(files, estimate_models([str(f) for f in files.values()],
                                                   load_target(name), cache=cache, echo=echo)):  # fmt: skip
            rows[key][name] = est["estimated_ms"]
            rows[key][f"{name}_instructions"] = est["instructions_per_invoke"]
    for (_model, mode), row in rows.items():
        base = rows[("baseline_cnn", mode)]
        for col in ("host_ms", *targets):
            if row.get(col) and base.get(col):
                row[f"speedup_{col.removesuffix('_ms')}"] = round(base[col] / row[col], 2)
    return list(rows.values())


# How the DRAM term could combine with compute at T threads (what the estimate uses: add,
# every thread's traffic, at the target's bandwidth at T threads: T × one thread's up to
# what all threads sustain). Each gets the terms in ms: compute ``c``, sync ``s``, memory
# as used ``m``, memory if the T threads shared the re-read lines ``ms``, at one thread's
# bandwidth ``m1`` and ``ms1``, and at T × one thread's up to the bus's datasheet peak
# ``mp`` (the estimate before the Pi boards' all-thread bandwidth, 2026-12-06).
MEMORY_VARIANTS = {
    "add (used)": lambda c, s, m, ms, m1, ms1, mp: c + s + m,
    "T threads' bandwidth up to the bus's peak": lambda c, s, m, ms, m1, ms1, mp: c + s + mp,
    "re-reads shared by the threads": lambda c, s, m, ms, m1, ms1, mp: c + s + ms,
    "one thread's bandwidth at any T": lambda c, s, m, ms, m1, ms1, mp: c + s + m1,
    "re-reads shared, one thread's bandwidth": lambda c, s, m, ms, m1, ms1, mp: c + s + ms1,
    "overlap: max(compute, memory)": lambda c, s, m, ms, m1, ms1, mp: max(c, m) + s,
    "no memory term": lambda c, s, m, ms, m1, ms1, mp: c + s,
    "no sync term": lambda c, s, m, ms, m1, ms1, mp: c + m,
}


def _variant_ms(combine, row: dict, to_one_thread: float, to_bus_peak: float = 1.0) -> float:
    """A row's time (no constant) with its terms combined by one ``MEMORY_VARIANTS`` entry;
    ``to_one_thread``: its table's bandwidth at T threads ÷ one thread's; ``to_bus_peak``:
    that bandwidth ÷ T threads' up to the bus's peak."""
    terms = [row["terms"][k] for k in ("compute_ms", "sync_ms", "memory_ms", "memory_shared_ms")]
    return combine(*terms, *(m * to_one_thread for m in terms[2:]), terms[2] * to_bus_peak)


def _bandwidth_ratios(table: Table, targets: dict) -> tuple[float, float]:
    """``(to_one_thread, to_bus_peak)`` of ``_variant_ms`` for a table: the bandwidth its
    estimates use at its thread count ÷ one thread's, and ÷ T threads' up to the bus's peak."""
    board = _board(table, targets)
    used = dram_bandwidth(board, table.threads)
    return (used / (board.dram_mb_s or 1),
            used / (dram_bandwidth(board, table.threads, bus_peak=True) or 1))  # fmt: skip


def memory_variants(tables: list[Table], targets: dict) -> list[dict]:
    """Per table with a memory term and mode: the share of rows within ±10 % (leave-one-
    out) and the median error under each way of combining the terms (``MEMORY_VARIANTS``):
    which term the published figures ask for. ``targets``: each table's target by name."""
    out = []
    for t in tables:
        to_one_thread, to_bus_peak = _bandwidth_ratios(t, targets)
        for mode in sorted({r["mode"] for r in t.rows}):
            rows = [r for r in t.rows if r["mode"] == mode and r.get("terms")]
            if len(rows) < 3 or not any(r["terms"]["memory_ms"] for r in rows):
                continue
            entry = {"table": t.key, "mode": mode, "n": len(rows)}
            for name, combine in MEMORY_VARIANTS.items():
                pred = [_variant_ms(combine, r, to_one_thread, to_bus_peak) for r in rows]
                sc = scores(pred, [r["published_ms"] for r in rows],
                            leave_one_out(pred, [r["published_ms"] for r in rows]))  # fmt: skip
                entry[name] = {"within_10": sc["within_10"], "median": sc["median"]}
            out.append(entry)
    return out


def _speedup_pairs(tables: list[Table], estimated: bool = True):
    """``(one-thread table, T-thread table, one-thread row, T-thread row, role)`` for each
    model and mode one source publishes for a board at 1 and at T threads (``estimated``:
    only where both rows have an estimate); ``role``: ``fit (threads)`` for the sync count's
    own table (``SYNC_TABLE``), ``fit (bandwidth)`` for the pairs a board's all-thread
    bandwidth was chosen on (``BANDWIDTH_PAIRS``), else ``held out``."""
    for many in tables:
        if many.threads == 1:
            continue
        one = [t for t in tables if t.source == many.source and t.board == many.board
               and t.threads == 1]  # fmt: skip
        if not one:
            continue
        base = {(r["model"], r["mode"]): r for r in one[0].rows}
        bandwidth_source = BANDWIDTH_PAIRS.get(many.board)
        if many.source.startswith(SYNC_TABLE[0]) and many.board == SYNC_TABLE[1]:
            role = "fit (threads)"
        elif bandwidth_source and many.source.startswith(bandwidth_source):
            role = "fit (bandwidth)"
        else:
            role = "held out"
        for r in many.rows:
            b = base.get((r["model"], r["mode"]))
            if b is not None and (not estimated or (b.get("estimate") and r.get("estimate"))):
                yield one[0], many, b, r, role


def _held_out(errors: list[float | None]) -> dict:
    """A target YAML's ``HeldOut`` of relative errors (None: no estimate), as a mapping."""
    errors = [e for e in errors if e is not None]
    if not errors:
        return dataclasses.asdict(HeldOut())
    return dataclasses.asdict(HeldOut(len(errors), round(100 * float(np.median(np.abs(errors))), 1),
                                      round(100 * max(errors, key=abs), 1)))  # fmt: skip


def held_out_accuracy(tables: list[Table]) -> dict[str, dict]:
    """Per target, the errors of its rows that no fit saw (what ``bench --emulate`` prints
    beside its estimates, from the target's YAML): ``absolute`` (its own board's figures,
    the constant from another table: ``absolute_error``) and ``ratios`` (one constant per
    table and mode, leave-one-out: ``estimate_loo_error``, stand-in boards too), each
    ``_held_out``. Left out: a fit's rows (``role``) and the T-thread rows of the 1- vs
    T-thread pairs a count or a board's all-thread bandwidth was chosen on."""
    chosen = {id(r) for *_, r, role in _speedup_pairs(tables, estimated=False)
              if role != "held out"}  # fmt: skip
    out = {}
    for name in sorted({t.target for t in tables}):
        free = [r for t in tables if t.target == name for r in t.rows
                if r.get("role") == "held out" and id(r) not in chosen]  # fmt: skip
        out[name] = {"absolute": _held_out([r.get("absolute_error") for r in free]),
                     "ratios": _held_out([r.get("estimate_loo_error") for r in free])}  # fmt: skip
    return out


def _pair_key(many: Table, row: dict) -> tuple:
    return many.source, many.board, many.threads, row["model"], row["mode"]


def thread_speedups(tables: list[Table], asked: dict | None = None) -> list[dict]:
    """Each board's 1-thread ÷ T-thread time where one source publishes both (same model
    and mode), published against estimated: the thread model and the memory at T threads
    judged on pairs, with no constant (it cancels). The pairs something was fitted or
    chosen on are marked so (``_speedup_pairs``); every other pair is held out. ``asked``:
    by ``_pair_key``, the dispatch cost each pair asks for (``sync_asked``)."""
    out = []
    for _, many, b, r, role in _speedup_pairs(tables):
        published = b["published_ms"] / r["published_ms"]
        estimated = b["estimate"] / r["estimate"]
        builtin = b["builtin"] / r["builtin"] if b.get("builtin") and r.get("builtin") else None
        out.append({"board": many.board, "threads": many.threads, "model": r["model"],
                    "mode": r["mode"], "published": round(published, 3),
                    "estimated": round(estimated, 3),
                    "error": round(estimated / published - 1, 4), "role": role,
                    # a table measured without XNNPACK: today's builtin kernels' ratio too
                    "builtin_error": None if builtin is None
                    else round(builtin / published - 1, 4),
                    "source": many.source, "runtime": many.runtime,
                    "sync_asked": (asked or {}).get(_pair_key(many, r))})  # fmt: skip
    return out


def speedup_variants(tables: list[Table], targets: dict,
                     role: str = "held out") -> dict[str, dict]:  # fmt: skip
    """The speed-up pairs of one ``role`` (default: the held-out ones) under each
    ``MEMORY_VARIANTS`` entry (the sync count as fitted): ``{variant: {"n", "median", "low",
    "high"}}``, median of |error|."""
    errors: dict[str, list[float]] = {name: [] for name in MEMORY_VARIANTS}
    for one, many, b, r, pair_role in _speedup_pairs(tables):
        if pair_role != role:
            continue
        published = b["published_ms"] / r["published_ms"]
        factors = [_bandwidth_ratios(t, targets) for t in (one, many)]
        for name, combine in MEMORY_VARIANTS.items():
            estimated = (_variant_ms(combine, b, *factors[0])
                         / _variant_ms(combine, r, *factors[1]))  # fmt: skip
            errors[name].append(estimated / published - 1)
    return {name: {"n": len(e), "median": round(statistics.median(map(abs, e)), 4),
                   "low": round(min(e), 4), "high": round(max(e), 4)}
            for name, e in errors.items() if e}  # fmt: skip


def measured_with_xnnpack(table: Table) -> bool:
    """Whether ``table``'s figures ran XNNPACK (its runtime names it); the TFLite benchmark
    and MobileNet READMEs of 2018–2020 ran TFLite's builtin kernels of their day."""
    return "xnnpack" in table.runtime.lower()


def kernel_variants(tables: list[Table]) -> list[dict]:
    """Per table measured without XNNPACK and mode: the scores (Spearman, median and worst
    error, shares within ±10 / ±20 %, leave-one-out) of the estimate (``xnnpack``: XNNPACK's
    kernels, used) and of today's builtin kernels (``builtin``: each row's ``builtin``
    estimate, the same board, threads and memory model): which kernels the figures ask for."""
    out = []
    for t in tables:
        if measured_with_xnnpack(t):
            continue
        for mode in sorted({r["mode"] for r in t.rows}):
            rows = [
                r for r in t.rows if r["mode"] == mode and r.get("estimate") and r.get("builtin")
            ]
            if len(rows) < 2:
                continue
            published = [r["published_ms"] for r in rows]
            entry = {"table": t.key, "mode": mode, "n": len(rows)}
            for name, key in (("xnnpack", "estimate"), ("builtin", "builtin")):
                pred = [r[key] for r in rows]
                sc = scores(pred, published, leave_one_out(pred, published))
                entry[name] = {k: sc[k] for k in ("spearman", "median", "worst", "within_10",
                                                  "within_20")}  # fmt: skip
            out.append(entry)
    return out


def _find(tables: list[Table], source_prefix: str, board: str, threads: int | None = None):
    return [t for t in tables if t.source.startswith(source_prefix) and t.board == board
            and (threads is None or t.threads == threads)]  # fmt: skip


def _estimates(tables: list[Table], targets: dict, cache: str, echo,
               xnnpack: bool = True) -> dict[tuple[str, str], dict]:  # fmt: skip
    """``estimate_models`` of every row's file of ``tables`` on its table's target (one run
    per target), by ``(target, file)``: the records whose outputs matched the host's."""
    out = {}
    for name in sorted({t.target for t in tables}):
        files = sorted({str(r["file"]) for t in tables if t.target == name for r in t.rows})
        for rec in estimate_models(files, targets[name], cache=cache, xnnpack=xnnpack, echo=echo):
            if rec["check"]["passed"]:
                out[(name, rec["file"])] = rec
    return out


def _host_times(files_threads: set[tuple[Path, int]], echo) -> dict[tuple[Path, int], float]:
    from liteconv.device.harness import benchmark

    out = {}
    for threads in sorted({t for _, t in files_threads}):
        files = sorted(str(f) for f, t in files_threads if t == threads)
        echo(f"timing {len(files)} model(s) on this host at {threads} thread(s)")
        for rec in benchmark(files, threads=[threads], warmup=3, runs=15):
            out[(Path(rec["file"]), threads)] = rec["p50_ms"]
    return out


def _cross_board(tables: list[Table], constants: dict, sync: float, l2: float, cache: str,
                 echo) -> list[dict]:  # fmt: skip
    """``cross_board_rows`` for ``CROSS_BOARD``: board A's table's twins estimated on the
    target named there, board B's table's estimates; [] where a table or constant is
    missing (a study of other boards)."""
    source, board_a, target_a, board_b, threads = CROSS_BOARD
    found_a = _find(tables, source, board_a, threads)
    found_b = _find(tables, source, board_b, threads)
    if not (found_a and found_b) or not {target_a, found_b[0].target} <= set(constants):
        return []
    target = dataclasses.replace(load_target(target_a), cycle_scale=1.0)
    table_a = dataclasses.replace(found_a[0], target=target_a)
    records = _estimates([table_a], {target_a: target}, cache, echo)
    b_rows = {str(r["file"]): r for r in found_b[0].rows}  # the same twin: the same file
    pairs = []
    for r in table_a.rows:
        other = b_rows.get(str(r["file"]))
        rec = records.get((target_a, str(r["file"])))
        if other and other.get("estimate") and rec:
            pairs.append({"model": r["model"], "mode": r["mode"],
                          "a_raw": time_ms(target, rec, threads, sync_cycles=sync,
                                           l2_bytes_per_cycle=l2)["estimated_ms"],
                          "b_raw": other["estimate"], "a_published": r["published_ms"],
                          "b_published": other["published_ms"]})  # fmt: skip
    return cross_board_rows(pairs, constants[target_a]["constant"],
                            constants[found_b[0].target]["constant"])  # fmt: skip


def emulation_study(out: str | Path, *, published: str | Path = PUBLISHED_CSV,
                    boards: list[str] | None = None, cache: str = str(caches.EMULATE),
                    models_dir: str = str(caches.PUBLISHED_MODELS), max_macs: float = 4e9,
                    host: bool = True, cnns: bool = True, echo=print) -> list[Path]:  # fmt: skip
    """Estimate every published row (``boards``: only those boards), fit what is fitted on
    its named table, judge the rest held out against the MACs and host-time baselines;
    write OUT.json and OUT.md."""
    tables, skipped = load_tables(published)
    if boards:
        unknown = [b for b in boards if b not in {t.board for t in tables}]
        if unknown:
            raise LiteconvError(f"--boards: no published figures for {', '.join(unknown)}; "
                                f"choose from {', '.join(sorted({t.board for t in tables}))}")  # fmt: skip
        tables = [t for t in tables if t.board in boards]
        skipped = [x for x in skipped if any(x.startswith(f"{b} ") for b in boards)]
    folder = Path(models_dir)
    rows = [r for t in tables for r in t.rows]
    macs = convert_rows(rows, folder, max_macs, echo)
    for t in tables:
        for r in t.rows:
            r["file"] = model_file(folder, r)
            r["macs"] = macs[r["file"]]
        over = [r for r in t.rows if not r["file"].is_file()]
        skipped += [f"{t.board} {r['model']} ({r['resolution']} px, {r['macs'] / 1e9:.1f} G MACs): "
                    f"over the study's emulation budget (--max-macs {max_macs:g})" for r in over]  # fmt: skip
        t.rows = [r for r in t.rows if r["file"].is_file()]
    tables = [t for t in tables if t.rows]
    targets = {name: dataclasses.replace(load_target(name), cycle_scale=1.0)
               for name in sorted({t.target for t in tables})}  # fmt: skip
    counted = _estimates(tables, targets, cache, echo)

    def counts_of(table, row):
        return counted.get((table.target, str(row["file"])))

    # The thread model's one count, fitted on the 1- vs 2-thread pairs.
    sync, sync_rows = SYNC_CYCLES, []
    one = {(r["model"], r["mode"]): r for t in _find(tables, *SYNC_TABLE, 1) for r in t.rows}
    two = _find(tables, *SYNC_TABLE, 2)
    if one and two:
        pairs, labels = [], []
        for r in two[0].rows:
            base = one.get((r["model"], r["mode"]))
            rec = counts_of(two[0], r)
            if base and rec:
                pairs.append((rec, r["published_ms"] / base["published_ms"]))
                labels.append(r["model"])
                r["role"] = base["role"] = "fit (threads)"
        if pairs:
            sync, fitted = fit_sync(pairs, _board(two[0], targets))
            sync_rows = [{"model": m, **f} for m, f in zip(labels, fitted)]
    # The shared L2's bytes per cycle, fitted on the Pi 4's EfficientDet-Lite 1- vs T pairs.
    l2, l2_rows, l2_pairs, l2_labels = SHARED_L2_BYTES_PER_CYCLE, [], [], []
    board, source = SHARED_L2_PAIRS
    for one, many, b, r, _ in _speedup_pairs(tables, estimated=False):
        rb, rr = counts_of(one, b), counts_of(many, r)
        if many.board == board and many.source.startswith(source) and rb and rr:
            l2_pairs.append((_board(many, targets), rb, rr, many.threads,
                             b["published_ms"] / r["published_ms"]))  # fmt: skip
            l2_labels.append(r["model"])
    if l2_pairs:
        l2, fitted = fit_shared_l2(l2_pairs, sync)
        l2_rows = [{"model": m, **f} for m, f in zip(l2_labels, fitted)]
    for t in tables:
        for r in t.rows:
            rec = counts_of(t, r)
            parts = (
                None
                if rec is None
                else time_ms(
                    _board(t, targets), rec, t.threads, sync_cycles=sync, l2_bytes_per_cycle=l2
                )
            )
            r["estimate"] = None if parts is None else parts["estimated_ms"]
            r["terms"] = parts and {k: parts[k] for k in ("compute_ms", "shared_l2_ms", "sync_ms",
                                                          "memory_ms")}  # fmt: skip
            if parts:  # the memory term if the threads shared the lines an invoke re-reads
                shared = dram_ms(_board(t, targets), rec.get("memory"), t.threads, t.threads)
                r["terms"]["memory_shared_ms"] = round(shared, 4)
            r.setdefault("role", "held out")
    # The dispatch cost each 1- vs T-thread pair, and each source's pairs together, ask for
    # (read, not fitted).
    asked, by_source = {}, {}
    for base_table, many, b, r, role in _speedup_pairs(tables):
        rb, rr = counts_of(base_table, b), counts_of(many, r)
        if rb and rr:
            pair = (_board(base_table, targets), rb, _board(many, targets), rr, many.threads,
                    b["published_ms"] / r["published_ms"])  # fmt: skip
            asked[_pair_key(many, r)] = sync_asked([pair], l2, sync)
            by_source.setdefault((many.source, many.board, many.runtime), []).append((pair, role))
    sync_by_source = [{"source": source, "board": board, "runtime": runtime, "n": len(found),
                       "roles": sorted({role for _, role in found}),
                       **sync_asked([pair for pair, _ in found], l2, sync)}
                      for (source, board, runtime), found in by_source.items()]  # fmt: skip
    # The tables measured without XNNPACK, estimated with today's builtin kernels too (their
    # own thread split, no dispatch term): reported beside the estimate, not used.
    builtin = _estimates([t for t in tables if not measured_with_xnnpack(t)], targets, cache,
                         echo, xnnpack=False)  # fmt: skip
    for t in tables:
        for r in t.rows:
            rec = builtin.get((t.target, str(r["file"])))
            r["builtin"] = (
                time_ms(_board(t, targets), rec, t.threads, l2_bytes_per_cycle=l2)["estimated_ms"]
                if rec
                else None
            )
    if host:
        cpus = len(os.sched_getaffinity(0))
        times = _host_times(
            {(r["file"], min(t.threads, cpus)) for t in tables for r in t.rows}, echo
        )
        for t in tables:
            for r in t.rows:
                r["host"] = times.get((r["file"], min(t.threads, cpus)))
                r["host_threads"] = min(t.threads, cpus)
    # Each board's constant on its one named table; absolute errors on its other tables.
    constants = {}
    for target, (prefix, board, threads) in FIT_TABLES.items():
        fit = _find(tables, prefix, board, threads)
        if fit:
            constants[target] = {"table": fit[0].key, "constant": round(geometric_fit(
                [(r["estimate"], r["published_ms"]) for r in fit[0].rows if r["estimate"]]), 4),
                "yaml": load_target(target).cycle_scale}  # fmt: skip
            for r in fit[0].rows:
                r["role"] = "fit (constant)"
    for t in tables:
        c = constants.get(t.target)
        t.fit_table = bool(c) and c["table"] == t.key
        for r in t.rows:
            r["absolute_error"] = (None if not c or t.stand_in or t.fit_table or not r["estimate"]
                                   else round(r["estimate"] * c["constant"] / r["published_ms"] - 1, 4))  # fmt: skip
            r["absolute_error_builtin"] = (
                None if r["absolute_error"] is None or not r.get("builtin")
                else round(r["builtin"] * c["constant"] / r["published_ms"] - 1, 4))  # fmt: skip
    cross = _cross_board(tables, constants, sync, l2, cache, echo)
    variants = memory_variants(tables, targets)
    kernels = kernel_variants(tables)
    speedup_errors = speedup_variants(tables, targets)
    bandwidth_errors = speedup_variants(tables, targets, role="fit (bandwidth)")
    judged = [{"table": t.key, "target": t.target, "stand_in": t.stand_in, "threads": t.threads,
               "fit_table": t.fit_table, "scores": judge_table(t.rows),
               "rows": [{k: (str(Path(v).name) if k == "file" else v) for k, v in r.items()}
                        for r in t.rows]} for t in tables]  # fmt: skip
    accuracy = held_out_accuracy(tables)  # after judge_table: it sets the leave-one-out errors
    for name, found in accuracy.items():
        target = load_target(name)
        found["yaml"] = {"absolute": dataclasses.asdict(target.held_out_absolute),
                         "ratios": dataclasses.asdict(target.held_out_ratios)}  # fmt: skip
    document = {"source": str(Path(published).name),
                "runtime": {name: emulated_runtime(t) for name, t in sorted(targets.items())},
                "machine": machine_info(), "sync_cycles": sync, "sync_cycles_in_code": SYNC_CYCLES,
                "sync_pairs": sync_rows, "l2_bytes_per_cycle": l2,
                "l2_bytes_per_cycle_in_code": SHARED_L2_BYTES_PER_CYCLE, "l2_pairs": l2_rows,
                "thread_speedups": thread_speedups(tables, asked),
                "sync_by_source": sync_by_source,
                "constants": constants, "accuracy": accuracy, "cross_board": cross,
                "tables": judged,
                "memory_variants": variants, "speedup_variants": speedup_errors,
                "speedup_variants_bandwidth": bandwidth_errors,
                "kernel_variants": kernels,
                "skipped": skipped}  # fmt: skip
    if cnns:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            document["cnns"] = cnn_speed_per_target(Path(tmp), cache=cache, echo=echo)
    out = Path(out)
    atomic_write_json(out.with_suffix(".json"), document)
    atomic_write_text(out.with_suffix(".md"), _markdown(document))
    return [out.with_suffix(".json"), out.with_suffix(".md")]


GOALS = {"spearman": 0.99, "within_10": 0.80, "within_20": 0.95}

LIMITS = [
    "Runtimes differ: XNNPACK's README figures are its own `end2end-bench`; the TFLite "
    "benchmark and MobileNet READMEs used TFLite's `benchmark_model` of their day (2018–2020, "
    "before XNNPACK was TFLite's CPU default); the emulated runtime is ai-edge-litert 2.0.2 "
    "through the TFLite interpreter. One constant per table absorbs the runtime's speed, "
    "not a different mix of kernels; those tables are also estimated with today's builtin "
    'kernels ("Which kernels the figures ask for"), not the same as then (gemmlowp, Eigen).',
    "The emulated guest is shown each board's core (its YAML's `midr`), so today's XNNPACK "
    "runs that core's kernels and sizes its GEMM tiles to the caches cpuinfo reports for it; "
    "the XNNPACK of 2020–2022 had no cache-sized tiles and re-read a layer's weights from "
    "DRAM for each tile of rows once they outgrew the L2, so the weight-heavy models of those "
    "tables (MobileNet v1 1.0, the full SSD) come out relatively fast here.",
    "Cortex-A53 boards (the 64-bit Pi 3, the Zero 2, `single-core-embedded`): the A53's "
    "own kernels run (its MIDR), their cycles come from LLVM 19's in-order `cortex-a55` "
    "model. LLVM's `cortex-a53` model keeps every write-back in order (no RetireOOO), so "
    "the loads XNNPACK's A53 kernels slip between FMLAs each waited for the FMLA before "
    "them: about 8 times the block's resource bound, against 2 on the A55 model.",
    "uint8 rows (TF1 quantized models, asymmetric per-tensor) are compared with the full-"
    "integer int8 models converted here (per-channel weights): the same operators, other "
    "kernels.",
    "Stand-in cores: no target models the Pixel 1/2 (Kryo, Cortex-A73 class) or the Pixel "
    "3/3a (Cortex-A75 class) cores; their tables are estimated on a Cortex-A72 or a "
    "Cortex-A76 (neoverse-n1) and judged on ratios only.",
    "Threads: the emulation runs one thread. Compute is split into what runs on the "
    "calling thread (interpreter, operator setup, dispatch) and what XNNPACK's tasks run on "
    "every thread, both counted from the runtime's symbols; each dispatch costs the fitted "
    "cycle count per extra thread (waking the pool, waiting for the slowest thread). Load "
    "imbalance inside an operator is in that count, not modelled apart. On a Cortex-A53 or "
    "A72 cluster (one L2 shared by the cores) the parallel part runs no faster than that L2 "
    "returns the counted L1D misses (one count of bytes per cycle, fitted on the Pi 4's "
    "EfficientDet-Lite pairs); the L1D misses are one thread's, at any T.",
    "Memory: the cache model runs the one-thread access stream through the L1D and last-"
    "level cache; T threads draw T times one thread's sustained bandwidth (STREAM), up to "
    "what the board's threads sustain together: the bus's datasheet peak, but on the Pi 4 "
    "and Pi 5 one core's figure (`dram_all_threads_mb_s`, chosen on their published 1- vs "
    "2- vs 4-thread EfficientDet-Lite pairs, so those pairs are not held out; XNNPACK issue "
    "#814's Pi 4 MobileNet v1 run agrees, 2.19× at 4 threads), and so on the 64-bit Pi 3 "
    "(chosen after seeing its SSD pairs, which are marked so; the 32-bit Pi 3 target keeps "
    "T threads up to the bus's peak, which its 4-thread tables fit better). No published "
    "multi-thread STREAM figure of these boards was found to measure it by. Stand-in phones "
    "(Pixel 1/2 on the Pi 4's core) keep T threads up to the bus's peak (`STAND_IN_MEMORY`).",
    "EfficientDet-Lite0-2 (the Pi 4 / Pi 5 logs of TFLite 2.18's benchmark_model): twins "
    "built from google/automl's definition (`studies/efficientdet_lite.py`) with its "
    "post-processing operator (box decoding and non-max suppression over every anchor, on "
    "the calling thread); random weights make that suppression's work differ from the "
    "trained model's; the twins' files are the published ones' sizes within 0.05 % "
    "(13.68 / 18.17 / 22.79 MB against the logs' 13.68 / 18.17 / 22.80). The logs' "
    "3-thread runs are left out (the targets estimate 1, 2 and 4 threads).",
    "SSD / SSDLite MobileNet v2 / v3 (the Pi 4, 64-bit and 32-bit Pi 3B+ table of TFLite "
    "2.5 with XNNPACK, timed in Python around set_input_tensor + invoke): twins built from "
    "the TF1 detection API's definition (`studies/ssd_mobilenet.py`: its feature maps, "
    "predictors, anchors, the halved last stage of its MobileNet v3 detection backbones, and "
    "the export's post-processing operator), random weights, batch norms with one forward "
    "pass's statistics (so the outputs, whose sorted scores the emulated check compares, "
    "depend on every layer); parameters and multiply-adds "
    "within 5 % of the MobileNetV2 / V3 papers' SSDLite rows. The table's 3-thread runs are "
    "left out; its Pi 3B+ runs two models slower at 4 threads than at 3, which no model "
    "here reproduces. Its INT8 column (SSDLite MobileNet v2 only; the author's full-integer "
    "quantization, run by TFLite 2.5's release wheel, whose XNNPACK delegate left quantized "
    "models to TFLite's builtin kernels) is a table of its own, estimated with XNNPACK's "
    "int8 kernels like every table and with today's builtin ones beside; the twin's int8 "
    "file is converted here (per-channel, float input; the post-processing operator in "
    "float behind a DEQUANTIZE, as in TF1's quantized detectors).",
    "Pi 3B+ and Pi 2: their published columns are 32-bit Raspbian (armv7 kernels), "
    "estimated on the 32-bit target (`raspberry-pi-3-32bit`: PyPI's tflite-runtime 2.14.0 "
    "armv7l, under qemu-arm -cpu cortex-a15, which has the ISA; qemu-arm has no Cortex-A53). "
    "That wheel is built without XNNPACK: its builtin kernels (fp32 and int8) stand in for "
    "the XNNPACK armv7 kernels the published figures ran. LLVM has no scheduling model of "
    "an A53 running 32-bit code: there one cycle per instruction (the constant holds the "
    "mean cycles per instruction), split over the threads by the library's own symbols "
    "(Eigen's and gemmlowp's GEMMs and the depthwise convolutions on every thread, the rest "
    "on one), dispatches = the graph's computing operators. The Pi 2's Cortex-A7 is a "
    "stand-in (ratios only).",
]


def _pct(v, signed=False) -> str:
    if v is None:
        return ""
    return f"{100 * v:+.1f} %" if signed else f"{100 * v:.0f} %"


def _held_out_cell(h: dict) -> str:
    if not h["rows"]:
        return "none held out"
    return f"{h['rows']} / {h['median_pct']:g} % / {h['worst_pct']:+g} %"


def _score_cell(s: dict) -> str:
    """``scores`` as one cell: Spearman / median / worst / within ±10 % / within ±20 %."""
    return (f"{'' if s.get('spearman') is None else format(s['spearman'], '.3f')} / "
            f"{_pct(s['median'])} / {_pct(s['worst'], True)} / "
            f"{_pct(s['within_10'])} / {_pct(s['within_20'])}")  # fmt: skip


def _summary_rows(doc: dict) -> list[list]:
    out = []
    for t in doc["tables"]:
        held = not t["fit_table"] and any(r["role"] == "held out" for r in t["rows"])
        for mode, per in t["scores"].items():
            est = per["estimate"]
            if not est.get("n"):
                continue
            met = (est.get("spearman") is not None and est["spearman"] >= GOALS["spearman"]
                   and est["within_10"] >= GOALS["within_10"] and est["within_20"] >= GOALS["within_20"])  # fmt: skip
            beats = not better_baselines(per)
            out.append([t["table"][:90], mode, est["n"], "held out" if held else "fit",
                        *(_score_cell(per[k]) if per[k].get("n") else ""
                          for k in ("estimate", "macs", "host")),
                        "yes" if met else "no", "yes" if beats else "no"])  # fmt: skip
    return out


BASELINE_NAMES = {"macs": "MACs × constant", "host": "this host's time × constant"}


def better_baselines(per: dict) -> list[tuple[float, str]]:
    """``(median, name)`` of each baseline whose median error is below the estimate's, for
    one table and mode's scores (``judge_table``); empty where the estimate beats both."""
    return [(per[b]["median"], b) for b in ("macs", "host")
            if per[b].get("n") and per[b]["median"] < per["estimate"]["median"]]  # fmt: skip


def not_beaten(doc: dict) -> list[dict]:
    """The tables and modes where a baseline's median error (leave-one-out) is below the
    estimate's: that baseline and its median, the estimate's, and the estimate's worst row
    (where it loses), with why a row count or role makes the comparison weak."""
    out = []
    for t in doc["tables"]:
        for mode, per in t["scores"].items():
            est = per["estimate"]
            if not est.get("n"):
                continue
            better = better_baselines(per)
            if not better:
                continue
            median, name = min(better)
            worst = max((r for r in t["rows"]
                         if r["mode"] == mode and r.get("estimate_loo_error") is not None),
                        key=lambda r: abs(r["estimate_loo_error"]))  # fmt: skip
            notes = []
            if est["n"] <= 3:
                notes.append(f"{est['n']} rows")
            if t["fit_table"]:
                notes.append("the board's fit table")
            if name == "host":
                notes.append(f"host-dependent ({doc['machine']['cpu']})")
            out.append({"table": t["table"], "mode": mode, "n": est["n"],
                        "estimate": est["median"], "baseline": name, "baseline_median": median,
                        "worst": f"{worst['model']} {worst['alpha']:g}/{worst['resolution']}",
                        "worst_error": worst["estimate_loo_error"], "notes": notes})  # fmt: skip
    return out


def _asked_cell(asked: dict | None) -> str:
    if not asked:
        return ""
    if asked["bound"] == "below":
        return "< 0"
    if asked["bound"] == "above":
        return f"> {asked['cycles']:,.0f}".replace(",", " ")
    return f"{asked['cycles']:,.0f}".replace(",", " ")


def _asked_section(doc: dict) -> list[str]:
    rows = doc.get("sync_by_source") or []
    if not rows:
        return []
    return [
        "`dispatch cost asked`: the cycles per dispatch and extra thread that would make the "
        "pair's estimated speed-up the published one, every other term as estimated (read, "
        f"not fitted; the estimate uses {doc['sync_cycles_in_code']:g}); `< 0`: estimated "
        "too low a speed-up even with no dispatch cost. One pair alone asks for a wide range "
        "where its ratio scarcely depends on it (few dispatches, much work), so per source "
        "and board (their runtimes and harnesses differ) the cost that fits all its pairs "
        "best, and the pairs' median |error| with the estimate's cost and with that one:", "",
        format_table(["source", "board", "runtime", "pairs", "role", "asked",
                      "median |error|", "with the cost asked"],
                     [[r["source"][:70], r["board"], r["runtime"][:50], r["n"],
                       ", ".join(r.get("roles", [])), _asked_cell(r), _pct(r["median_error"]),
                       _pct(r["median_error_asked"])]
                      for r in rows], markdown=True), "",
    ]  # fmt: skip


def _markdown(doc: dict) -> str:
    parts = [
        "# Emulated latency against published board figures, held out from the fit", "",
        f"Published: `{doc['source']}` (every row with its source). Estimated: "
        + "; ".join(f"{k}: {v}" for k, v in doc["runtime"].items()) + "; "
        "instructions counted per translation block, cycles from llvm-mca on the hot blocks "
        "(32-bit targets: see the limits), "
        "split into serial and parallel parts by the runtime's symbols, every load and store "
        "through the board's L1D and last-level cache model. At T threads: ms = constant × "
        "((serial + max(parallel / T, shared L2)) cycles / clock + dispatches × sync cycles × "
        "(T − 1) / clock + DRAM bytes / bandwidth(T)), shared L2 = L1D misses × 64 bytes ÷ "
        "the shared L2's bytes per cycle (Cortex-A53 and A72 clusters, whose cores share "
        "their L2; 0 elsewhere), bandwidth(T) = min(T × one thread's STREAM figure, "
        "what all threads sustain: the bus's datasheet peak, on the Pi 4 and 5 one core's "
        "figure). "
        f"Host: {doc['machine']['cpu']} (only the host baseline depends on it).", "",
        "Scores per table and mode, each row's constant fitted on the *other* rows of its "
        "table (leave-one-out): Spearman / median |error| / worst error / share within ±10 % / "
        "within ±20 %. Goals on held-out tables: Spearman ≥ 0.99, ≥ 80 % within ±10 %, ≥ 95 % "
        "within ±20 %. `beats baselines`: the estimate's median error is at most both "
        "baselines' (MACs × constant; this host's p50 × constant, at min(T, host cores) threads).", "",
        format_table(["table", "mode", "rows", "role", "estimate", "MACs", "host time",
                      "goals met", "beats baselines"], _summary_rows(doc), markdown=True), "",
        "## The thread model's one count", "",
        f"Cycles per dispatch and extra thread, fitted on XNNPACK's Pixel 3a 1- vs 2-thread "
        f"pairs: **{doc['sync_cycles']:g}** (in the code: {doc['sync_cycles_in_code']:g}).", "",
        format_table(["model", "estimated 2T ÷ 1T", "published 2T ÷ 1T"],
                     [[r["model"], r["estimated_ratio"], r["published_ratio"]]
                      for r in doc["sync_pairs"]], markdown=True), "",
        "## The shared L2's one count", "",
        "Bytes per cycle the L2 a Cortex-A53 or A72 cluster's cores share returns to their "
        "L1D misses, all threads together (at T threads the parallel part takes at least "
        "the invoke's L1D misses × 64 bytes ÷ this), fitted on the Raspberry Pi 4's "
        f"EfficientDet-Lite 1- vs 2- and 4-thread pairs: **{doc['l2_bytes_per_cycle']:g}** "
        f"(in the code: {doc['l2_bytes_per_cycle_in_code']:g}). Those pairs are marked fit "
        "(bandwidth) below; every other pair is held out from it.", "",
        format_table(["model", "threads", "estimated 1T ÷ T", "published 1T ÷ T"],
                     [[r["model"], r["threads"], r["estimated_ratio"], r["published_ratio"]]
                      for r in doc.get("l2_pairs", [])], markdown=True), "",
        "## Thread speed-ups, 1 thread ÷ T threads (no constant)", "",
        "Where one source publishes a board at 1 and at T threads: the time ratio, published "
        "and estimated (the thread model and memory at T threads; the board's constant "
        "cancels). `builtin`: the error with today's builtin kernels (their own thread "
        "split, no dispatch term), for the tables measured without XNNPACK.", "",
        format_table(["board", "threads", "model", "mode", "published", "estimated", "error",
                      "builtin", "role", "dispatch cost asked"],
                     [[r["board"], r["threads"], r["model"], r["mode"], r["published"],
                       r["estimated"], _pct(r["error"], True),
                       _pct(r.get("builtin_error"), True), r["role"],
                       _asked_cell(r.get("sync_asked"))]
                      for r in doc.get("thread_speedups", [])], markdown=True), "",
        *_asked_section(doc),
        "## Board constants (each fitted on one named table)", "",
        format_table(["target", "fitted on", "constant", "in the YAML"],
                     [[k, v["table"][:100], v["constant"], v["yaml"]]
                      for k, v in doc["constants"].items()], markdown=True), "",
        "## What `bench --emulate` says of each target: its held-out errors", "",
        "Every estimate is printed with these (from the target's YAML, `held_out_absolute` / "
        "`held_out_ratios`): absolute, this board's figures with its constant from another "
        "table; model to model, one constant per table and mode (leave-one-out), on every "
        "board estimated with the target (stand-ins too). Neither counts a fit's rows, nor "
        "the T-thread rows of the pairs a count or a board's all-thread bandwidth was chosen "
        "on. rows / median |error| / worst error.", "",
        format_table(["target", "absolute", "model to model", "in the YAML"],
                     [[k, _held_out_cell(v["absolute"]), _held_out_cell(v["ratios"]),
                       "same" if {"absolute": v["absolute"], "ratios": v["ratios"]} == v.get("yaml")
                       else f"{_held_out_cell(v['yaml']['absolute'])}; "
                            f"{_held_out_cell(v['yaml']['ratios'])}"]
                      for k, v in doc.get("accuracy", {}).items()], markdown=True), "",
    ]  # fmt: skip
    losses = not_beaten(doc)
    if losses:
        parts += ["## Where the estimate does not beat both baselines", "",
                  "Per table and mode where a baseline's median error (leave-one-out) is below "
                  "the estimate's: that baseline, and the row the estimate misses most. The "
                  "host baseline is this machine's measured time (the same runtime's x86 "
                  "kernels), so it differs by host and run; tables of 2–3 rows decide on one "
                  "row. docs/emulation.md says why where the cause is known.", "",
                  format_table(["table", "mode", "rows", "estimate", "better baseline",
                                "estimate's worst row", "notes"],
                               [[v["table"][:80], v["mode"], v["n"], _pct(v["estimate"]),
                                 f"{BASELINE_NAMES[v['baseline']]}: {_pct(v['baseline_median'])}",
                                 f"{v['worst']} ({_pct(v['worst_error'], True)})",
                                 "; ".join(v["notes"])] for v in losses], markdown=True), ""]  # fmt: skip
    if doc.get("cross_board"):
        source, board_a, target_a, board_b, threads = CROSS_BOARD
        parts += [f"## {board_a} ÷ {board_b} across boards (a sanity check, not a score)", "",
                  f"One source times both boards ({source}, {threads} threads): each model's "
                  f"ratio, published and estimated with each board's constant. {board_a} is "
                  f"estimated on `{target_a}` (its published column ran 32-bit Raspbian; the "
                  "64-bit target has the A53's own cycle model and its constant from the "
                  f"SSD table); {board_b}'s constant is fitted on this very table.", "",
                  format_table(["model", "mode", "published", "estimated", "error"],
                               [[r["model"], r["mode"], r["published"], r["estimated"],
                                 _pct(r["error"], True)] for r in doc["cross_board"]],
                               markdown=True), ""]  # fmt: skip
    if doc.get("memory_variants"):
        names = list(MEMORY_VARIANTS)
        parts += ["## Which terms the figures ask for", "",
                  "Per table with a DRAM term: share within ±10 % / median error (leave-one-"
                  "out) when the terms combine otherwise. Read, not fitted: the estimate keeps "
                  "`add (used)`, at T threads' bandwidth up to what the board's threads sustain "
                  "together (the bus's datasheet peak; on the Pi 4 and 5 one core's figure, "
                  "chosen on their 1- vs T-thread pairs). Re-reads: the misses on lines the invoke had already "
                  "read from memory (counted by the cache model); `shared` is what T threads "
                  "would move if each such line were read once for all of them.", "",
                  format_table(["table", "mode", "rows", *names],
                               [[v["table"][:80], v["mode"], v["n"],
                                 *[f"{_pct(v[n]['within_10'])} / {_pct(v[n]['median'])}" for n in names]]
                                for v in doc["memory_variants"]], markdown=True), ""]  # fmt: skip
    groups = [("held out", doc.get("speedup_variants") or {}),
              ("the Pi boards' (their all-thread bandwidth chosen on them)",
               doc.get("speedup_variants_bandwidth") or {})]  # fmt: skip
    if any(g for _, g in groups):
        parts += ["The thread speed-ups (1 thread ÷ T threads, no constant) under each: "
                  "median |error| and range, for the held-out pairs and for the pairs the Pi "
                  "boards' all-thread bandwidth (`dram_all_threads_mb_s`) was chosen on.", "",
                  format_table(["pairs", "terms", "n", "median |error|", "range"],
                               [[label, n, v["n"], _pct(v["median"]),
                                 f"{_pct(v['low'], True)} … {_pct(v['high'], True)}"]
                                for label, g in groups for n, v in g.items()], markdown=True), ""]  # fmt: skip
    if doc.get("kernel_variants"):
        parts += ["## Which kernels the figures ask for", "",
                  "The tables measured without XNNPACK (TFLite's benchmark of 2018–2020, before "
                  "XNNPACK was its CPU default; TFLite 2.5's int8, which its XNNPACK left to "
                  "the builtin kernels) ran TFLite's builtin kernels of then. Each is "
                  "estimated with XNNPACK's kernels (used) and with today's builtin kernels "
                  f"({EMULATED_RUNTIME}, XNNPACK off: `bench --no-xnnpack --emulate`; their own "
                  "thread split, ruy's GEMM on every thread, im2col and element-wise operators on "
                  "one, no dispatch term), each with its own leave-one-out constant: Spearman / "
                  "median |error| / worst / within ±10 % / within ±20 %.", "",
                  format_table(["table", "mode", "rows", "XNNPACK's kernels (used)",
                                "today's builtin kernels"],
                               [[v["table"][:80], v["mode"], v["n"],
                                 *[_score_cell(v[k]) for k in ("xnnpack", "builtin")]]
                                for v in doc["kernel_variants"]], markdown=True), ""]  # fmt: skip
    absolute = [[t["table"][:80], r["model"], r["alpha"], r["resolution"], r["mode"],
                 r["published_ms"], _pct(r["absolute_error"], True),
                 _pct(r.get("absolute_error_builtin"), True)]
                for t in doc["tables"] for r in t["rows"] if r.get("absolute_error") is not None]  # fmt: skip
    if absolute:
        parts += ["## Absolute, with the board's constant from another table of the same core", "",
                  "Goal: within ±25 %. `builtin`: with today's builtin kernels, for the tables "
                  "measured without XNNPACK.", "",
                  format_table(["table", "model", "α", "px", "mode", "published ms", "error",
                                "builtin"],
                               absolute, markdown=True), ""]  # fmt: skip
    parts += ["## Every row", ""]
    for t in doc["tables"]:
        note = f" ({t['stand_in']})" if t["stand_in"] else ""
        parts += [f"### {t['table']}", "", f"Target `{t['target']}`{note}, {t['threads']} "
                  f"thread{'s' * (t['threads'] > 1)}.", "",
                  format_table(["model", "α", "px", "mode", "published ms", "MACs (M)",
                                "estimated ms (raw)", "estimate", "MACs", "host", "role"],
                               [[r["model"], r["alpha"], r["resolution"], r["precision"],
                                 r["published_ms"], round(r["macs"] / 1e6),
                                 r["estimate"], _pct(r.get("estimate_loo_error"), True),
                                 _pct(r.get("macs_loo_error"), True),
                                 _pct(r.get("host_loo_error"), True), r["role"]]
                                for r in t["rows"]], markdown=True), ""]  # fmt: skip
    if doc["skipped"]:
        parts += ["## Rows left out", "", *[f"- {s}" for s in doc["skipped"]], ""]
    parts += ["## What limits it", "", *[f"- {x}" for x in LIMITS], ""]
    if doc.get("cnns"):
        cols = ["host", *CNN_TARGETS]
        parts += ["## The three CNNs (28×28×1) per target: host measured, targets estimated", "",
                  "Milliseconds per invoke, one thread, and speed-up over `baseline_cnn` in the "
                  "same mode (host: this machine's p50 with LiteRT + XNNPACK; targets: "
                  "estimated with each YAML's constant).", "",
                  format_table(["model", "mode", *[f"{c} ms" for c in cols],
                                *[f"× baseline {c}" for c in cols]],
                               [[r["model"], r["mode"], r["host_ms"], *[r.get(c) for c in CNN_TARGETS],
                                 *[r.get(f"speedup_{c}") for c in cols]] for r in doc["cnns"]],
                               markdown=True), ""]  # fmt: skip
    return "\n".join(parts) + "\n"
