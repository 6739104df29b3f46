"""The papers' speed tables: standard vs flattened vs depthwise-separable, measured.

Single layers (``k×k``, C→C channels, N×N input) and whole models are converted to
fp32 and int8 TFLite and timed side by side with the LiteRT interpreter. Each row holds
the theoretical MAC ratio to the standard convolution, the measured speedup and the share
of the theoretical speedup realised.

Example:
    >>> rows = compare_layers(sizes=[16, 32], channels=[64], threads=[1])
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from liteconv.compat import keras
from liteconv.device.harness import benchmark
from liteconv.export.convert import to_tflite
from liteconv.keras_layers import create_model, flattened_conv, model_cost, separable_conv

LAYER_VARIANTS = ("standard", "flattened_1", "flattened_2", "separable")
MODEL_VARIANTS = {"standard": "baseline_cnn", "flattened_2": "flattened_cnn",
                  "separable": "separable_cnn"}  # fmt: skip


def layer_model(variant: str, size: int, channels: int, kernel: int = 3):
    """One convolution layer of ``variant`` on a ``size×size×channels`` input."""
    inputs = keras.Input((size, size, channels))
    if variant == "standard":
        x = keras.layers.Conv2D(channels, kernel, padding="same", name="conv")(inputs)
    elif variant.startswith("flattened"):
        x = flattened_conv(inputs, channels, kernel, stages=int(variant[-1]), name="flat")
    elif variant == "separable":
        x = separable_conv(inputs, channels, kernel, activation=None, use_batch_norm=False,
                           name="sep")  # fmt: skip
    else:
        raise ValueError(f"Unknown variant={variant!r}; choose from {LAYER_VARIANTS}")
    return keras.Model(inputs, x, name=f"{variant}_{size}_{channels}")


def _measure(models: dict[str, object], dtypes, threads, runs, warmup, folder: Path, group: dict):
    """Convert each model in each dtype, time all of them interleaved, return rows."""
    files, info = [], {}
    for variant, model in models.items():
        cost = model_cost(model)
        rng = np.random.default_rng(0)
        calib = rng.uniform(size=(16, *model.input_shape[1:])).astype("float32")
        for dtype in dtypes:
            blob = to_tflite(
                model, mode=dtype, representative_data=calib if dtype == "int8" else None
            )
            path = folder / f"{model.name}_{dtype}.tflite"
            path.write_bytes(blob)
            files.append(path)
            info[path.stem] = (variant, dtype, cost.total_macs, cost.total_params)
    records = benchmark(files, threads=threads, runs=runs, warmup=warmup)
    rows = []
    for rec in records:
        variant, dtype, macs, params = info[Path(rec["file"]).stem]
        rows.append({**group, "variant": variant, "dtype": dtype, "threads": rec["threads"],
                     "macs": macs, "params": params, "p50_ms": rec["p50_ms"], "cv": rec["cv"]})  # fmt: skip
    for row in rows:
        ref = next(r for r in rows if r["variant"] == "standard" and r["dtype"] == row["dtype"]
                   and r["threads"] == row["threads"])  # fmt: skip
        row["theoretical_speedup"] = round(ref["macs"] / row["macs"], 3)
        row["param_reduction"] = round(ref["params"] / row["params"], 3)
        row["measured_speedup"] = round(ref["p50_ms"] / row["p50_ms"], 3)
        row["realised_share"] = round(row["measured_speedup"] / row["theoretical_speedup"], 3)
    return rows


def compare_layers(
    *, sizes, channels, threads=(1,), dtypes=("fp32", "int8"), kernel: int = 3,
    runs: int = 50, warmup: int = 5, echo=print,
) -> list[dict]:  # fmt: skip
    """Single-layer latency of every variant at every input size and channel count."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in channels:
            for n in sizes:
                models = {v: layer_model(v, n, c, kernel) for v in LAYER_VARIANTS}
                group = {"scope": "layer", "size": n, "channels": c, "kernel": kernel}
                rows += _measure(models, dtypes, threads, runs, warmup, Path(tmp), group)
                echo(f"layer {n}x{n}x{c}: " + ", ".join(
                    f"{r['variant']}/{r['dtype']}/t{r['threads']} {r['measured_speedup']:.2f}x"
                    for r in rows[-len(LAYER_VARIANTS) * len(dtypes) * len(threads):]
                    if r["variant"] != "standard"))  # fmt: skip
    return rows


def compare_models(
    *, input_shape=(28, 28, 1), threads=(1,), dtypes=("fp32", "int8"), runs: int = 50,
    warmup: int = 5, echo=print,
) -> list[dict]:  # fmt: skip
    """Whole-model latency of baseline_cnn / flattened_cnn / separable_cnn."""
    models = {}
    for variant, name in MODEL_VARIANTS.items():
        model = create_model(name, input_shape=input_shape, num_classes=10)
        models[variant] = keras.Model(model.inputs, model.outputs, name=name)
    group = {"scope": "model", "size": input_shape[0], "channels": input_shape[2], "kernel": 3}
    with tempfile.TemporaryDirectory() as tmp:
        rows = _measure(models, dtypes, threads, runs, warmup, Path(tmp), group)
    for r in rows:
        r["model"] = MODEL_VARIANTS[r["variant"]]
    echo("models: " + ", ".join(f"{r['model']}/{r['dtype']}/t{r['threads']} {r['p50_ms']:.3f} ms"
                                for r in rows))  # fmt: skip
    return rows
