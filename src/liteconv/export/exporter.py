"""``liteconv export RUN_DIR``: optimize, convert, write and verify every asked-for mode.

Modes: ``fp32``, ``fp16``, ``dynamic``, ``int8`` (post-training, calibrated on the run's
training split), ``int16x8`` and ``qat_int8`` (quantization-aware fine-tune, then int8).
``prune_sparsity`` prunes first (then QAT preserves the zeros). Files go to
``RUN_DIR/export/<name>.tflite`` with a sidecar ``<name>.json`` that the benchmark and
the device bundle read; ``verify.json``/``verify.md`` hold the Keras-vs-TFLite check.

Example:
    >>> results = export_run("runs/fashion_mnist_flattened/20261122-220113", modes=["fp32"])
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from liteconv.errors import LiteconvError
from liteconv.export.convert import MODES, float_ops, list_ops, to_tflite
from liteconv.export.verify import verify_tflite
from liteconv.keras_layers import create_model
from liteconv.pipeline import optimize
from liteconv.pipeline import run as runlib
from liteconv.pipeline.evaluate import load_run_model, run_data
from liteconv.tables import format_table

EXPORT_MODES = (*MODES, "qat_int8")
EXPORT_DIR = "export"


def _check_modes(modes) -> list[str]:
    modes = list(dict.fromkeys(modes))
    bad = [m for m in modes if m not in EXPORT_MODES]
    if bad or not modes:
        raise LiteconvError(
            f"--mode {','.join(bad) or '(empty)'}: unknown; choose from {', '.join(EXPORT_MODES)}"
        )
    return modes


def _tensor(detail: dict) -> dict:
    scale, zero = detail["quantization"]
    return {
        "name": detail["name"],
        "shape": [int(d) for d in detail["shape"]],
        "dtype": np.dtype(detail["dtype"]).name,
        "scale": float(scale),
        "zero_point": int(zero),
    }


def sidecar(blob: bytes, *, name: str, mode: str, run: runlib.Run, extra: dict) -> dict:
    """What the benchmark and the device bundle need to know about one ``.tflite``."""
    from liteconv.export.runtime import load_interpreter

    interp = load_interpreter(model_content=blob)
    manifest = run.manifest()
    h, w, c = manifest["input_shape"]
    ops = list_ops(blob)
    return {
        "name": name,
        "mode": mode,
        "file": f"{name}.tflite",
        "size_bytes": len(blob),
        "gzip_bytes": optimize.gzip_size(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "inputs": [_tensor(d) for d in interp.get_input_details()],
        "outputs": [_tensor(d) for d in interp.get_output_details()],
        "preprocessing": {
            "layout": "NHWC",
            "height": h,
            "width": w,
            "channels": c,
            "scale": 1 / 255,
            "description": f"uint8 pixels / 255 as float32, resized to {h}x{w}x{c}; integer "
            "inputs: quantize with the input scale and zero point",
        },
        "class_names": manifest["class_names"],
        "macs": manifest["model"]["macs"],
        "params": manifest["model"]["params"],
        "model": manifest["model"]["name"],
        "experiment": manifest.get("experiment"),
        "source_model_sha256": runlib.sha256_file(run.file(runlib.MODEL)),
        "ops": sorted({op.name for op in ops}),
        "float_ops": sorted(set(float_ops(blob, ops))) if mode != "fp32" else [],
        **extra,
    }


def _float32_model(run: runlib.Run, cfg, model):
    def builder():
        manifest = run.manifest()
        return create_model(
            cfg.model.name,
            input_shape=manifest["input_shape"],
            num_classes=len(manifest["class_names"]),
            **cfg.model.kwargs,
        )

    return optimize.float32_clone(model, builder)


def export_run(
    run_dir: str | Path,
    *,
    modes: list[str] | None = None,
    qat_epochs: int | None = None,
    prune_sparsity: float | None = None,
    prune_epochs: int | None = None,
    io_type: str | None = None,
    per_channel: bool | None = None,
    calibration_samples: int | None = None,
    verify: bool = True,
    echo=print,
) -> dict:
    """Export the run's model in each mode, write files atomically, verify, return results."""
    run = runlib.Run.open(run_dir)
    cfg = run.config()
    modes = _check_modes(modes or cfg.export.modes)
    qat_epochs = cfg.export.qat_epochs if qat_epochs is None else qat_epochs
    sparsity = cfg.export.prune_sparsity if prune_sparsity is None else prune_sparsity
    prune_epochs = prune_epochs or cfg.export.prune_epochs
    io_type = io_type or cfg.export.io_type
    if io_type not in ("float32", "int8", "uint8"):
        raise LiteconvError(f"--io {io_type}: choose float32, int8 or uint8")
    if sparsity is not None and not 0 < sparsity < 1:
        raise LiteconvError(f"--prune {sparsity}: expected a sparsity between 0 and 1, e.g. 0.5")
    calibration = calibration_samples or cfg.export.calibration_samples
    per_channel = cfg.export.per_channel if per_channel is None else per_channel
    if not per_channel and sparsity:
        raise LiteconvError(
            "--per-tensor cannot be combined with --prune (sparsity-preserving QAT is per-channel)"
        )

    model = _float32_model(run, cfg, load_run_model(run))
    splits = run_data(run)
    x_cal, _ = splits.arrays("train", limit=calibration)
    verbose = cfg.train.verbose
    base, prefix, extra = model, "", {}
    if sparsity:
        echo(f"pruning to {sparsity:.0%} sparsity ({prune_epochs} epochs)")
        base, report = optimize.prune(
            model, splits, sparsity=sparsity, epochs=prune_epochs,
            learning_rate=cfg.export.prune_learning_rate, verbose=verbose,
        )  # fmt: skip
        prefix = f"pruned{round(sparsity * 100)}_"
        extra = {"pruning": {"target_sparsity": sparsity, "layer_sparsity": report}}

    blobs: dict[str, tuple[str, bytes]] = {}
    for mode in modes:
        echo(f"converting {prefix}{mode}{'' if per_channel else ' (per-tensor)'}")
        if mode == "qat_int8":
            qat = optimize.quantization_aware(
                base, splits, epochs=qat_epochs, learning_rate=cfg.export.qat_learning_rate,
                preserve_sparsity=bool(sparsity), per_channel=per_channel, verbose=verbose,
            )  # fmt: skip
            blob = to_tflite(qat, mode="int8", representative_data=x_cal, io_type=io_type,
                             per_channel=per_channel)  # fmt: skip
        else:
            blob = to_tflite(
                base,
                mode=mode,
                representative_data=x_cal if mode in ("int8", "int16x8") else None,
                num_calibration=calibration,
                io_type=io_type if mode == "int8" else "float32",
                per_channel=per_channel,
            )
        blobs[prefix + mode + ("" if per_channel else "_per_tensor")] = (mode, blob)

    results = {}
    for name, (mode, blob) in blobs.items():
        info = sidecar(blob, name=name, mode=mode, run=run,
                       extra={**extra, "per_channel": per_channel,
                              "qat_epochs": qat_epochs if mode == "qat_int8" else None})  # fmt: skip
        run.write_bytes(f"{EXPORT_DIR}/{name}.tflite", blob)
        run.write_json(f"{EXPORT_DIR}/{name}.json", info)
        results[name] = {"mode": mode, "size_bytes": len(blob), "gzip_bytes": info["gzip_bytes"]}
        echo(f"wrote {run.file(EXPORT_DIR) / (name + '.tflite')} ({len(blob):,} bytes)")
    if verify:
        results = verify_run(run, model=model, splits=splits, echo=echo)
    run.update_manifest(artifacts=run.artifact_hashes())
    return results


def verify_run(run_dir, *, model=None, splits=None, echo=print) -> dict:
    """Evaluate every ``export/*.tflite`` of a run against its Keras model on the test split."""
    run = run_dir if isinstance(run_dir, runlib.Run) else runlib.Run.open(run_dir)
    files = sorted(run.file(EXPORT_DIR).glob("*.tflite"))
    if not files:
        raise LiteconvError(
            f"{run.path}: no export/*.tflite; run 'liteconv export {run.path}' first"
        )
    if model is None:
        model = _float32_model(run, run.config(), load_run_model(run))
    splits = splits or run_data(run)
    x, y = splits.arrays("test")
    keras_probs = model.predict(x, batch_size=256, verbose=0)
    rows = {}
    for f in files:
        row = verify_tflite(f.read_bytes(), x, y, keras_probs)
        mode = "?"
        side = f.with_suffix(".json")
        if side.is_file():
            mode = json.loads(side.read_text()).get("mode", "?")
        rows[f.stem] = {"mode": mode, **row}
        echo(
            f"verified {f.name}: accuracy {row['accuracy']:.4f} (Keras {row['keras_accuracy']:.4f}), "
            f"agreement {row['agreement']:.4f}, max |diff| {row['max_abs_diff']:.3g}"
        )
    fp32 = next((r["size_bytes"] for n, r in rows.items() if r["mode"] == "fp32"), None)
    table = format_table(
        ["model", "mode", "accuracy", "Keras acc.", "agreement", "max abs diff", "mean abs diff",
         "size (bytes)", "size vs fp32"],
        [[n, r["mode"], r["accuracy"], r["keras_accuracy"], r["agreement"], r["max_abs_diff"],
          r["mean_abs_diff"], r["size_bytes"],
          f"{r['size_bytes'] / fp32:.1%}" if fp32 else "-"] for n, r in rows.items()],
        markdown=True,
    )  # fmt: skip
    run.write_json(f"{EXPORT_DIR}/verify.json", rows)
    run.write_text(f"{EXPORT_DIR}/verify.md", table + "\n")
    run.update_manifest(export=rows)
    echo(table)
    return rows
