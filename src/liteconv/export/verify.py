"""Keras vs TFLite: accuracy, top-1 agreement and output error on the full test split.

Runs the ``.tflite`` through the LiteRT interpreter (``runtime.load_interpreter``),
quantizing integer inputs and dequantizing outputs with the tensors' own parameters.

Example:
    >>> row = verify_tflite(blob, x_test, y_test, keras_probs)
    >>> row["agreement"]
"""

from __future__ import annotations

import numpy as np

from liteconv.export.bench import dequantize, output_step, quantize
from liteconv.export.runtime import load_interpreter

__all__ = ["dequantize", "output_step", "quantize", "tflite_predict", "verify_tflite"]


def tflite_predict(blob: bytes, x: np.ndarray, *, batch_size: int = 200, num_threads=None):
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
        interp.invoke()
        outputs.append(dequantize(interp.get_tensor(out["index"]), out))
    return np.concatenate(outputs)


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
