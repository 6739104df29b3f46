"""``liteconv export RUN_DIR``: optimize, convert, write and verify every asked-for mode.

Modes: ``fp32``, ``fp16``, ``dynamic``, ``int8`` (post-training, calibrated on the run's
training split), ``int16x8`` and ``qat_int8`` (quantization-aware fine-tune, then int8).
``prune_sparsity`` prunes first (then QAT preserves the zeros). Files go to
``RUN_DIR/export/<name>.tflite`` with a sidecar ``<name>.json`` that the benchmark and
the device bundle read; ``verify.json``/``verify.md`` hold the Keras-vs-TFLite check.
Options are the run config's ``export:`` section with the caller's overrides, checked once
by ``liteconv.config``.

Example:
    >>> results = export_run("runs/fashion_mnist_flattened/20261122-220113", modes=["fp32"])
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from liteconv.config import Config, ExportConfig, config_from_dict
from liteconv.device.graph import list_ops
from liteconv.device.runtime import load_interpreter
from liteconv.export import quantize
from liteconv.export.convert import float_ops, to_tflite
from liteconv.export.verify import EXPORT_DIR, verify_run
from liteconv.pipeline import run as runlib
from liteconv.pipeline.data import DataSplits
from liteconv.pipeline.evaluate import float32_run_model, run_data


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
    interp = load_interpreter(model_content=blob)
    manifest = run.manifest()
    h, w, c = manifest["input_shape"]
    ops = list_ops(blob)
    return {
        "name": name,
        "mode": mode,
        "file": f"{name}.tflite",
        "size_bytes": len(blob),
        "gzip_bytes": quantize.gzip_size(blob),
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


def export_settings(run: runlib.Run, overrides: dict) -> Config:
    """The run's config with ``export.*`` overrides applied and checked (one place: config)."""
    data = run.config().to_dict()
    export = data.setdefault("export", {})
    for key, value in overrides.items():
        if value is not None:
            export[key] = list(dict.fromkeys(value)) if key == "modes" else value
    return config_from_dict(data, f"{run.path} (export options)")


def _prune(model, splits: DataSplits, opts: ExportConfig, verbose: int, echo):
    """(model to convert, file-name prefix, sidecar extras) after optional pruning."""
    if not opts.prune_sparsity:
        return model, "", {}
    sparsity = opts.prune_sparsity
    echo(f"pruning to {sparsity:.0%} sparsity ({opts.prune_epochs} epochs)")
    pruned, report = quantize.prune(
        model, splits, sparsity=sparsity, epochs=opts.prune_epochs,
        learning_rate=opts.prune_learning_rate, verbose=verbose,
    )  # fmt: skip
    extra = {"pruning": {"target_sparsity": sparsity, "layer_sparsity": report}}
    return pruned, f"pruned{round(sparsity * 100)}_", extra


def _convert(base, mode: str, splits: DataSplits, x_cal, opts: ExportConfig, verbose: int) -> bytes:
    """The ``.tflite`` bytes of ``base`` in ``mode`` (``qat_int8``: fine-tune, then int8)."""
    if mode == "qat_int8":
        qat = quantize.quantization_aware(
            base, splits, epochs=opts.qat_epochs, learning_rate=opts.qat_learning_rate,
            preserve_sparsity=bool(opts.prune_sparsity), per_channel=opts.per_channel,
            verbose=verbose,
        )  # fmt: skip
        return to_tflite(qat, mode="int8", representative_data=x_cal, io_type=opts.io_type,
                         per_channel=opts.per_channel)  # fmt: skip
    return to_tflite(
        base,
        mode=mode,
        representative_data=x_cal if mode in ("int8", "int16x8") else None,
        num_calibration=opts.calibration_samples,
        io_type=opts.io_type if mode == "int8" else "float32",
        per_channel=opts.per_channel,
    )


def _write(run: runlib.Run, blobs: dict, opts: ExportConfig, extra: dict, echo) -> dict:
    """Write every ``.tflite`` and its sidecar atomically; return the size summary."""
    results = {}
    for name, (mode, blob) in blobs.items():
        info = sidecar(blob, name=name, mode=mode, run=run,
                       extra={**extra, "per_channel": opts.per_channel,
                              "qat_epochs": opts.qat_epochs if mode == "qat_int8" else None})  # fmt: skip
        run.write_bytes(f"{EXPORT_DIR}/{name}.tflite", blob)
        run.write_json(f"{EXPORT_DIR}/{name}.json", info)
        # record the new file's hash at once: verify (and a later command) check it
        run.update_manifest(artifacts={f"{EXPORT_DIR}/{name}.tflite": info["sha256"]})
        results[name] = {"mode": mode, "size_bytes": len(blob), "gzip_bytes": info["gzip_bytes"]}
        echo(f"wrote {run.file(EXPORT_DIR) / (name + '.tflite')} ({len(blob):,} bytes)")
    return results


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
    """Export the run's model in each mode, write files atomically, verify, return results.

    Every option left ``None`` comes from the run config's ``export:`` section.
    """
    run = runlib.Run.open(run_dir)
    cfg = export_settings(run, {
        "modes": modes, "qat_epochs": qat_epochs, "prune_sparsity": prune_sparsity,
        "prune_epochs": prune_epochs, "io_type": io_type, "per_channel": per_channel,
        "calibration_samples": calibration_samples,
    })  # fmt: skip
    opts, verbose = cfg.export, cfg.train.verbose
    model = float32_run_model(run)
    splits = run_data(run)
    x_cal, _ = splits.arrays("train", limit=opts.calibration_samples)
    base, prefix, extra = _prune(model, splits, opts, verbose, echo)
    suffix = "" if opts.per_channel else "_per_tensor"
    blobs: dict[str, tuple[str, bytes]] = {}
    for mode in opts.modes:
        echo(f"converting {prefix}{mode}{'' if opts.per_channel else ' (per-tensor)'}")
        blobs[prefix + mode + suffix] = (mode, _convert(base, mode, splits, x_cal, opts, verbose))
    results = _write(run, blobs, opts, extra, echo)
    if verify:
        results = verify_run(run, model=model, splits=splits, echo=echo)
    run.update_manifest(artifacts=run.artifact_hashes())
    return results
