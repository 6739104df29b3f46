"""Emulated board latency against published board figures (``liteconv study emulation``).

The published figures are XNNPACK's README tables (google/XNNPACK; ``end2end-bench``,
random weights, multi-threaded; the Raspberry Pi 4 column 64-bit, the Pi 3B+ column
32-bit Raspbian). The same architectures are built from ``keras.applications`` with
random weights at 224×224, converted to fp32 and full-integer int8 TFLite here, and
estimated on the matching target (``emulate.estimate``). Reported: every model-to-model
ratio against the published one, fp32 ÷ int8, and the absolute residual after the one
constant per board that best fits (geometric mean of published ÷ estimated). The goals of
the issue that asked for this: ratios within 10 %, fp32 ÷ int8 within 20 %, absolute
within 30 % after the constant.

Example:
    >>> rows = emulation_study("docs/results/emulation", boards=["raspberry-pi-4"])
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

from liteconv.compat import keras
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
                    models=tuple(BUILDERS), cache: str = ".cache/emulate", echo=print):  # fmt: skip
    """Estimate the published models on each board, compare, write OUT.json and OUT.md."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        files = _convert(Path(tmp), list(models), echo)
        for board in boards:
            target = load_target(board)
            keys = [k for k in files if k[0] in PUBLISHED[board].get(k[1], {})]
            estimates = estimate_models(
                [str(files[k]) for k in keys], target, cache=cache, echo=echo
            )
            rows = [{"board": board, "model": k[0], "mode": k[1],
                     "published_ms": PUBLISHED[board][k[1]][k[0]], **e} for k, e in zip(keys, estimates)]  # fmt: skip
            scale = _fit(rows)
            for r in rows:
                r["file"] = Path(r["file"]).name
                r["calibrated_ms"] = (
                    None if r["estimated_ms"] is None else round(r["estimated_ms"] * scale, 2)
                )
                r["absolute_error"] = (
                    None
                    if r["calibrated_ms"] is None
                    else round(r["calibrated_ms"] / r["published_ms"] - 1, 4)
                )
            results.append({"board": board, "core": target.core, "clock_mhz": target.clock_mhz,
                            "fitted_constant": round(scale, 4), "rows": rows,
                            "ratios": _ratios(rows)})  # fmt: skip
        cnns = cnn_speed_per_target(Path(tmp), cache=cache, echo=echo)
    document = {"source": SOURCE, "runtime": EMULATED_RUNTIME, "machine": machine_info(),
                "boards": results, "cnns": cnns}  # fmt: skip
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


def _markdown(doc: dict) -> str:
    parts = ["# Emulated latency against published board figures", "",
             f"Published: {doc['source']}. Estimated: one thread, {doc['runtime']}, instructions "
             "counted per translation block, cycles from llvm-mca (no cache or memory term), at "
             "the board's clock; `calibrated` = estimated × one constant per board (the "
             "geometric-mean fit, which also absorbs the published figures' multi-threading). "
             f"Host: {doc['machine']['cpu']}.", ""]  # fmt: skip
    for b in doc["boards"]:
        parts += [f"## {b['board']} ({b['core']} at {b['clock_mhz']:g} MHz; fitted constant "
                  f"{b['fitted_constant']})", "",
                  format_table(["model", "mode", "instructions/invoke", "estimated cycles",
                                "estimated ms", "calibrated ms", "published ms", "absolute error",
                                "outputs match host"],
                               [[r["model"], r["mode"], f"{r['instructions_per_invoke'] / 1e6:.1f} M",
                                 f"{r['estimated_cycles'] / 1e6:.1f} M", r["estimated_ms"],
                                 r["calibrated_ms"], r["published_ms"],
                                 "" if r["absolute_error"] is None else f"{100 * r['absolute_error']:+.1f} %",
                                 r["check"]["passed"]] for r in b["rows"]], markdown=True),
                  "", format_table(["ratio", "estimated", "published", "error", "goal", "met"],
                                   [[x["kind"], x["estimated"], x["published"],
                                     f"{100 * x['error']:+.1f} %", f"±{100 * x['goal']:.0f} %",
                                     abs(x["error"]) <= x["goal"]] for x in b["ratios"]],
                                   markdown=True), ""]  # fmt: skip
    cols = ["host", *CNN_TARGETS]
    parts += ["## The three CNNs (28×28×1) per target: host measured, targets estimated", "",
              "Milliseconds per invoke, one thread, and speed-up over `baseline_cnn` in the same "
              "mode (host: this machine's p50 with LiteRT + XNNPACK; targets: estimated, "
              "uncalibrated).", "",
              format_table(["model", "mode", *[f"{c} ms" for c in cols],
                            *[f"× baseline {c}" for c in cols]],
                           [[r["model"], r["mode"], r["host_ms"], *[r.get(c) for c in CNN_TARGETS],
                             *[r.get(f"speedup_{c}") for c in cols]] for r in doc.get("cnns", [])],
                           markdown=True), ""]  # fmt: skip
    return "\n".join(parts) + "\n"
