"""Emulated board latency against published board figures (``liteconv study emulation``).

The published figures are XNNPACK's README tables (google/XNNPACK; ``end2end-bench``,
random weights, multi-threaded; the Raspberry Pi 4 column 64-bit, the Pi 3B+ column
32-bit Raspbian). The same architectures are built from ``keras.applications`` with
random weights at 224×224, converted to fp32 and full-integer int8 TFLite here, and
estimated on the matching target (``emulate.estimate``: instructions, llvm-mca cycles, the
cache model's DRAM traffic) at the published figures' thread count (the target's largest,
4), with the target's constant set to 1. Reported: every model-to-model ratio against the
published one, fp32 ÷ int8, and the absolute residual after the one constant per board
that best fits (geometric mean of published ÷ estimated; the target YAML records it as
``cycle_scale``), and the same residuals with the other last-level replacement policy
(``lru`` / ``random``: how much the answer rests on it). The goals of the issue that asked
for this: ratios within 10 %, fp32 ÷ int8 within 20 %, absolute within 30 % after the
constant.

Example:
    >>> rows = emulation_study("docs/results/emulation", boards=["raspberry-pi-4"])
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path

import numpy as np

from liteconv.compat import keras
from liteconv.device.errors import LiteconvError
from liteconv.device.files import atomic_write_json, atomic_write_text
from liteconv.device.machine import machine_info
from liteconv.device.tables import format_table
from liteconv.device.targets import load_target
from liteconv.emulate.estimate import EMULATED_RUNTIME, estimate_models
from liteconv.export.convert import to_tflite

# XNNPACK README, multi-threaded, ms (the table revision the issue quotes, Feb 2022).
PUBLISHED = {
    "raspberry-pi-4": {"fp32": {"mobilenet_v1": 77, "mobilenet_v2": 46, "mobilenet_v3_large": 40,
                                "mobilenet_v3_small": 15},
                       "int8": {"mobilenet_v1": 24, "mobilenet_v2": 17}},
    "raspberry-pi-3": {"fp32": {"mobilenet_v1": 114, "mobilenet_v2": 79, "mobilenet_v3_large": 67,
                                "mobilenet_v3_small": 22},
                       "int8": {"mobilenet_v1": 46, "mobilenet_v2": 30}},
}  # fmt: skip
SOURCE = ("google/XNNPACK README (end2end-bench, random weights, multi-threaded; Pi 4 64-bit, "
          "Pi 3B+ 32-bit Raspbian)")  # fmt: skip

# XNNPACK README (revision of March 2020), single-threaded, Pixel 3a (Cortex-A75-class big
# core), fp32: the only published single-thread column, compared as model-to-model ratios
# on a stand-in core (no constant, no board DRAM figure: the ratios only).
SINGLE_THREAD = {"board": "Pixel 3a (1 thread)", "target": "android-big-cores",
                 "fp32": {"mobilenet_v1": 88, "mobilenet_v2": 55, "mobilenet_v3_large": 44,
                          "mobilenet_v3_small": 14},
                 "source": "google/XNNPACK README, March 2020 revision: single-threaded Pixel 3a "
                           "(end2end_bench, random weights)"}  # fmt: skip

BUILDERS = {
    "mobilenet_v1": lambda: keras.applications.MobileNet(weights=None, input_shape=(224, 224, 3)),
    "mobilenet_v2": lambda: keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3)),
    "mobilenet_v3_large": lambda: keras.applications.MobileNetV3Large(
        weights=None, input_shape=(224, 224, 3)),
    "mobilenet_v3_small": lambda: keras.applications.MobileNetV3Small(
        weights=None, input_shape=(224, 224, 3)),
}  # fmt: skip


def _convert(folder: Path, models: list[str], echo) -> dict[tuple[str, str], Path]:
    files = {}
    rng = np.random.default_rng(0)
    calibration = rng.uniform(0, 1, size=(8, 224, 224, 3)).astype("float32")
    for name in models:
        keras.utils.set_random_seed(0)
        model = BUILDERS[name]()
        for mode in ("fp32", "int8"):
            if mode not in {m for per in PUBLISHED.values() for m, v in per.items() if name in v}:
                continue
            path = folder / f"{name}-{mode}.tflite"
            echo(f"converting {name} {mode}")
            path.write_bytes(to_tflite(model, mode=mode, representative_data=calibration,
                                       num_calibration=8))  # fmt: skip
            files[(name, mode)] = path
    return files


def _fit(rows: list[dict]) -> float:
    logs = [math.log(r["published_ms"] / r["estimated_ms"]) for r in rows if r["estimated_ms"]]
    return math.exp(sum(logs) / len(logs)) if logs else float("nan")


def _estimated_rows(target, files: dict, published: dict, threads: int, cache: str,
                    echo) -> list[dict]:  # fmt: skip
    """One row per ``(model, mode)`` of ``files`` that ``published`` (``{mode: {model: ms}}``)
    has: estimated on ``target`` with its constant set aside (1), ``estimated_ms`` at
    ``threads``, beside ``published_ms``."""
    keys = [k for k in files if k[0] in published.get(k[1], {})]
    raw = dataclasses.replace(target, cycle_scale=1.0)
    estimates = estimate_models([str(files[k]) for k in keys], raw, cache=cache, echo=echo)
    return [{"model": k[0], "mode": k[1], "published_ms": published[k[1]][k[0]], **e,
             "estimated_ms_1_thread": e["estimated_ms"],
             "estimated_ms": e["estimated_ms_threads"][str(threads)], "threads": threads}
            for k, e in zip(keys, estimates)]  # fmt: skip


def _board_rows(board: str, target, files: dict, cache: str, echo) -> dict:
    """Estimates on ``target`` at the published thread count, the fitted constant,
    calibrated residuals, ratios and the worst of each (``summary``)."""
    threads = max(target.threads)
    rows = [
        {"board": board, **r}
        for r in _estimated_rows(target, files, PUBLISHED[board], threads, cache, echo)
    ]
    scale = _fit(rows)
    for r in rows:
        r["file"] = Path(r["file"]).name
        r["calibrated_ms"] = (
            None if r["estimated_ms"] is None else round(r["estimated_ms"] * scale, 2)
        )
        r["absolute_error"] = (None if r["calibrated_ms"] is None
                               else round(r["calibrated_ms"] / r["published_ms"] - 1, 4))  # fmt: skip
    result = {"board": board, "core": target.core, "clock_mhz": target.clock_mhz,
            "threads": threads, "l2_policy": target.l2_policy,
            "dram_mb_s": target.dram_mb_s, "dram_source": target.dram_source,
            "caches": f"L1D {target.l1d_kb} KB {target.l1d_ways}-way {target.l1d_policy}, "
                      f"last level {target.l2_kb} KB {target.l2_ways}-way {target.l2_policy}",
            "fitted_constant": round(scale, 4), "yaml_constant": target.cycle_scale,
            "rows": rows, "ratios": _ratios(rows)}  # fmt: skip
    return {**result, "summary": _summary(result)}


def _single_thread(files: dict, cache: str, echo) -> dict:
    """One-thread model-to-model ratios on the stand-in core against ``SINGLE_THREAD``:
    whether what the 4-thread comparison misses comes from the threads."""
    target = load_target(SINGLE_THREAD["target"])
    rows = _estimated_rows(target, files, {"fp32": SINGLE_THREAD["fp32"]}, 1, cache, echo)
    rows = [{k: r[k] for k in ("model", "mode", "published_ms", "estimated_ms")} for r in rows]
    return {"board": SINGLE_THREAD["board"], "target": target.name, "core": target.core,
            "source": SINGLE_THREAD["source"], "rows": rows, "ratios": _ratios(rows)}  # fmt: skip


def _summary(board: dict) -> dict:
    """The worst residual of each kind and the fitted constant, for the sensitivity table."""
    worst = {"fitted_constant": board["fitted_constant"]}
    for kind, items in (("model ÷ model", [x for x in board["ratios"] if x["goal"] == 0.10]),
                        ("fp32 ÷ int8", [x for x in board["ratios"] if x["goal"] == 0.20])):  # fmt: skip
        worst[kind] = max((abs(x["error"]) for x in items), default=None)
    worst["absolute"] = max((abs(r["absolute_error"]) for r in board["rows"]
                             if r["absolute_error"] is not None), default=None)  # fmt: skip
    return worst


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


def emulation_study(out: str | Path, *, boards=("raspberry-pi-4", "raspberry-pi-3"),
                    models=tuple(BUILDERS), cache: str = ".cache/emulate", sensitivity: bool = True,
                    echo=print):  # fmt: skip
    """Estimate the published models on each board, compare, write OUT.json and OUT.md
    (``sensitivity``: also with the other last-level replacement policy)."""
    unknown = [b for b in boards if b not in PUBLISHED]
    if unknown:
        raise LiteconvError(f"--boards: no published figures for {', '.join(unknown)}; "
                            f"choose from {', '.join(PUBLISHED)}")  # fmt: skip
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        files = _convert(Path(tmp), list(models), echo)
        for board in boards:
            target = load_target(board)
            result = _board_rows(board, target, files, cache, echo)
            result["sensitivity"] = {target.l2_policy: result.pop("summary")}
            if sensitivity and target.l2_kb:
                other = "lru" if target.l2_policy == "random" else "random"
                alt = _board_rows(board, dataclasses.replace(target, l2_policy=other), files,
                                  cache, echo)  # fmt: skip
                result["sensitivity"][other] = alt["summary"]
            results.append(result)
        single = _single_thread(files, cache, echo)
        cnns = cnn_speed_per_target(Path(tmp), cache=cache, echo=echo)
    document = {"source": SOURCE, "runtime": EMULATED_RUNTIME, "machine": machine_info(),
                "boards": results, "single_thread": single, "cnns": cnns}  # fmt: skip
    out = Path(out)
    atomic_write_json(out.with_suffix(".json"), document)
    atomic_write_text(out.with_suffix(".md"), _markdown(document))
    return [out.with_suffix(".json"), out.with_suffix(".md")]


def _ratios(rows: list[dict]) -> list[dict]:
    by = {(r["model"], r["mode"]): r for r in rows if r["estimated_ms"]}
    out = []
    for mode in ("fp32", "int8"):
        names = [m for (m, md) in by if md == mode]
        for a in names:
            for b in names:
                if a < b:
                    est = by[(a, mode)]["estimated_ms"] / by[(b, mode)]["estimated_ms"]
                    pub = by[(a, mode)]["published_ms"] / by[(b, mode)]["published_ms"]
                    out.append({"kind": f"{a} ÷ {b} ({mode})", "estimated": round(est, 3),
                                "published": round(pub, 3), "error": round(est / pub - 1, 4),
                                "goal": 0.10})  # fmt: skip
    for (m, md), r in by.items():
        if md == "fp32" and (m, "int8") in by:
            est = r["estimated_ms"] / by[(m, "int8")]["estimated_ms"]
            pub = r["published_ms"] / by[(m, "int8")]["published_ms"]
            out.append({"kind": f"{m} fp32 ÷ int8", "estimated": round(est, 3),
                        "published": round(pub, 3), "error": round(est / pub - 1, 4), "goal": 0.20})  # fmt: skip
    return out


LIMITS = [
    "The published figures are XNNPACK's own `end2end-bench` (Feb 2022, no TFLite "
    "interpreter); the emulated runtime is ai-edge-litert 2.0.2 (its XNNPACK is newer, older "
    "than the host's), run through the TFLite interpreter.",
    "Threads: the emulation runs one thread; the compute term is split evenly over the "
    "published figures' 4 threads and the DRAM term is not (shared bus). Per-operator thread "
    "synchronisation and load imbalance on small maps are not modelled: the operator-heavy "
    "MobileNet v3-Small (111 TFLite operators for 27 M instructions; v1: 34 for 193 M) comes "
    "out too fast relative to v1/v2 at 4 threads; at one thread (the Pixel 3a table) its "
    "ratios mostly hold.",
    "Memory: the cache model runs the one-thread access stream (virtual addresses) through "
    "the L1D and last-level cache; four cores share the real L2, and hardware prefetch "
    "hides latency but not traffic, which is what the DRAM term charges.",
    "Pi 3B+: the published column is 32-bit Raspbian (armv7 NEON kernels, other tiling); "
    "this emulation runs the 64-bit runtime. qemu-arm has no Cortex-A53 model and LLVM's "
    "32-bit ARM backend no A53 scheduling model, so a faithful armv7 path is not built; the "
    "Pi 3 residuals include that difference.",
]


def _ratio_table(ratios: list[dict]) -> str:
    return format_table(["ratio", "estimated", "published", "error", "goal", "met"],
                        [[x["kind"], x["estimated"], x["published"], f"{100 * x['error']:+.1f} %",
                          f"±{100 * x['goal']:.0f} %", abs(x["error"]) <= x["goal"]]
                         for x in ratios], markdown=True)  # fmt: skip


def _markdown(doc: dict) -> str:
    parts = ["# Emulated latency against published board figures", "",
             f"Published: {doc['source']}. Estimated: {doc['runtime']}; instructions counted "
             "per translation block, cycles from llvm-mca on the hot blocks, every load and "
             "store through a model of the board's L1D and last-level cache (DRAM traffic = "
             "lines read + dirty lines written back); ms = constant × (cycles / clock / threads "
             "+ DRAM bytes / the board's sustained bandwidth), at the published figures' 4 "
             "threads. `calibrated` = estimated × the one constant per board fitted here "
             "(geometric mean; the target YAML records it as `cycle_scale`). "
             f"Host: {doc['machine']['cpu']} (the estimates do not depend on it).", ""]  # fmt: skip
    for b in doc["boards"]:
        parts += [f"## {b['board']} ({b['core']} at {b['clock_mhz']:g} MHz, {b['threads']} "
                  f"threads; fitted constant {b['fitted_constant']}, in the YAML "
                  f"{b['yaml_constant']:g})", "",
                  f"Caches: {b['caches']}; DRAM {b['dram_mb_s']:g} MB/s ({b['dram_source']}).", "",
                  format_table(["model", "mode", "instructions/invoke", "estimated cycles",
                                "DRAM MB/invoke", "compute ms", "memory ms", "estimated ms",
                                "calibrated ms", "published ms", "absolute error",
                                "outputs match host"],
                               [[r["model"], r["mode"], f"{r['instructions_per_invoke'] / 1e6:.1f} M",
                                 f"{r['estimated_cycles'] / 1e6:.1f} M",
                                 round(r["dram_bytes"] / 1e6, 1),
                                 round(r["compute_ms"] / r["threads"], 2), round(r["memory_ms"], 2),
                                 r["estimated_ms"], r["calibrated_ms"], r["published_ms"],
                                 "" if r["absolute_error"] is None else f"{100 * r['absolute_error']:+.1f} %",
                                 r["check"]["passed"]] for r in b["rows"]], markdown=True),
                  "", _ratio_table(b["ratios"]), ""]  # fmt: skip
        sens = b.get("sensitivity", {})
        if len(sens) > 1:
            pct = lambda v: "" if v is None else f"{100 * v:.1f} %"  # noqa: E731
            parts += ["Sensitivity to the last-level replacement policy (worst residual of "
                      "each kind; the Cortex-A72 TRM makes it software-programmable, "
                      "pseudo-LRU or pseudo-random):", "",
                      format_table(["policy", "model ÷ model", "fp32 ÷ int8", "absolute",
                                    "fitted constant"],
                                   [[f"{p}{' (used)' if p == b['l2_policy'] else ''}",
                                     pct(v["model ÷ model"]), pct(v["fp32 ÷ int8"]),
                                     pct(v["absolute"]), v["fitted_constant"]]
                                    for p, v in sens.items()], markdown=True), ""]  # fmt: skip
    single = doc.get("single_thread")
    if single:
        parts += [f"## One thread: {single['board']} against {single['target']} "
                  f"({single['core']}, estimated at 1 thread, no constant)", "",
                  f"Published: {single['source']}. Ratios only (a stand-in core, no DRAM "
                  "term): if the one-thread ratios hold where the 4-thread ones miss, what "
                  "misses comes from the threads.", "",
                  _ratio_table(single["ratios"]), ""]  # fmt: skip
    parts += ["## What limits it", "", *[f"- {x}" for x in LIMITS], ""]
    cols = ["host", *CNN_TARGETS]
    parts += ["## The three CNNs (28×28×1) per target: host measured, targets estimated", "",
              "Milliseconds per invoke, one thread, and speed-up over `baseline_cnn` in the same "
              "mode (host: this machine's p50 with LiteRT + XNNPACK; targets: estimated with "
              "the memory term and each YAML's constant).", "",
              format_table(["model", "mode", *[f"{c} ms" for c in cols],
                            *[f"× baseline {c}" for c in cols]],
                           [[r["model"], r["mode"], r["host_ms"], *[r.get(c) for c in CNN_TARGETS],
                             *[r.get(f"speedup_{c}") for c in cols]] for r in doc.get("cnns", [])],
                           markdown=True), ""]  # fmt: skip
    return "\n".join(parts) + "\n"
