"""Keras vs TFLite: accuracy, top-1 agreement and output error on the full test split.

Runs the ``.tflite`` through the LiteRT interpreter (``device.runtime``), quantizing
integer inputs and dequantizing outputs with the tensors' own parameters (``device.tensors``).
``verify_run`` checks every export of a run and writes ``export/verify.{json,md}``.

Example:
    >>> row = verify_tflite(blob, x_test, y_test, keras_probs)
    >>> row["agreement"]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from liteconv.device.errors import LiteconvError
from liteconv.device.harness import sidecar_for
from liteconv.device.probe import probe_model
from liteconv.device.runtime import invoke, load_interpreter
from liteconv.device.tables import format_table
from liteconv.device.tensors import dequantize, quantize
from liteconv.pipeline import run as runlib
from liteconv.pipeline.evaluate import float32_run_model, run_data

EXPORT_DIR = runlib.EXPORT


def tflite_predict(
    blob: bytes, x: np.ndarray, *, batch_size: int = 200, num_threads=None, source: str = "<model>"
):
    """Dequantized outputs of a single-input, single-output ``.tflite`` for float inputs ``x``."""
    interp = load_interpreter(model_content=blob, num_threads=num_threads)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    outputs = []
    current = None
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size]
        if current != len(chunk):
            interp.resize_tensor_input(inp["index"], [len(chunk), *inp["shape"][1:]])
            interp.allocate_tensors()
            inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
            current = len(chunk)
        interp.set_tensor(inp["index"], quantize(chunk, inp))
        invoke(interp, source)
        outputs.append(dequantize(interp.get_tensor(out["index"]), out))
    return np.concatenate(outputs)


# Below this share of test images on which a .tflite's top class is the Keras model's, the
# export prints a note: the file does not compute what was trained (a digits model with a
# shared Conv2D: qat_int8 after the default 1 epoch at 1e-4 agreed on 0.11, its fp32 file on
# all — before QAT's ranges were calibrated, export/quantize.calibrate_ranges).
LOW_AGREEMENT = 0.9


def verify_tflite(
    blob: bytes, x: np.ndarray, y: np.ndarray, keras_probs: np.ndarray
) -> dict[str, float]:
    """Accuracy, agreement with Keras and output error of ``blob`` on (x, y)."""
    probs = tflite_predict(blob, x)
    diff = np.abs(probs - keras_probs)
    return {
        "accuracy": float((probs.argmax(1) == y).mean()),
        "keras_accuracy": float((keras_probs.argmax(1) == y).mean()),
        "agreement": float((probs.argmax(1) == keras_probs.argmax(1)).mean()),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "size_bytes": len(blob),
        "samples": int(len(y)),
    }


def verify_run(run_dir: str | Path | runlib.Run, *, model=None, splits=None, echo=print) -> dict:
    """Evaluate every ``export/*.tflite`` of a run against its Keras model on the test split."""
    run = run_dir if isinstance(run_dir, runlib.Run) else runlib.Run.open(run_dir)
    files = sorted(run.file(EXPORT_DIR).glob("*.tflite"))
    if not files:
        raise LiteconvError(
            f"{run.path}: no export/*.tflite; run 'liteconv export {run.path}' first"
        )
    if model is None:
        model = float32_run_model(run)
    splits = splits or run_data(run)
    x, y = splits.arrays("test")
    keras_probs = model.predict(x, batch_size=256, verbose=0)
    rows = {}
    for f in files:
        run.verify_artifact(f"{EXPORT_DIR}/{f.name}")
        blob = f.read_bytes()
        probe_model(blob, str(f))  # a file read back: a native crash must not take us down
        row = verify_tflite(blob, x, y, keras_probs)
        mode = str(sidecar_for(f).get("mode", "?"))
        rows[f.stem] = {"mode": mode, **row}
        echo(
            f"verified {f.name}: accuracy {row['accuracy']:.4f} (Keras {row['keras_accuracy']:.4f}), "
            f"agreement {row['agreement']:.4f}, max |diff| {row['max_abs_diff']:.3g}"
        )
        if row["agreement"] < LOW_AGREEMENT:
            hint = ("more QAT epochs (export.qat_epochs) or post-training int8 (--mode int8)"
                    if mode == "qat_int8" else "another mode, or more calibration samples"
                    if mode in ("int8", "int16x8") else "the conversion's warnings above")  # fmt: skip
            echo(f"note: {f.name} answers like the Keras model on only {row['agreement']:.0%} "
                 f"of the {row['samples']} test images; try {hint}")  # fmt: skip
    fp32 = next((r["size_bytes"] for n, r in rows.items() if r["mode"] == "fp32"), None)
    table = format_table(
        ["model", "mode", "accuracy", "Keras acc.", "agreement", "max abs diff", "mean abs diff",
         "size (bytes)", "size vs fp32"],
        [[n, r["mode"], r["accuracy"], r["keras_accuracy"], r["agreement"], r["max_abs_diff"],
          r["mean_abs_diff"], r["size_bytes"],
          f"{r['size_bytes'] / fp32:.1%}" if fp32 else "-"] for n, r in rows.items()],
        markdown=True,
    )  # fmt: skip
    run.write_json(runlib.VERIFY_JSON, rows)
    run.write_text(runlib.VERIFY_MD, table + "\n")
    run.update_manifest(export=rows)
    echo(table)
    return rows
