"""Tensor values in and out of a model: (de)quantization, output resolution, random inputs.

Example:
    >>> x_q = quantize(images, interp.get_input_details()[0])
    >>> probs = dequantize(interp.get_tensor(out["index"]), out)
"""

from __future__ import annotations

import numpy as np

from .errors import LiteconvError
from .graph import interpreter_ops
from .runtime import load_interpreter


def dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    """Tensor values → float32 (identity for float tensors)."""
    if np.dtype(detail["dtype"]).kind == "f":
        return y.astype(np.float32)
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float inputs → the tensor's dtype (identity for float tensors)."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def output_step(blob: bytes, runtime: str = "auto", index: int | None = None) -> float | None:
    """The quantization step of a model's output (``index``: another tensor's), or None for
    a float graph.

    With float I/O around an integer graph it is the step of the tensor feeding the final
    DEQUANTIZE op: that is the resolution at which two correct int8 kernels may differ.
    """
    interp = load_interpreter(model_content=blob, runtime=runtime, xnnpack=False)
    index = interp.get_output_details()[0]["index"] if index is None else index
    for op in interpreter_ops(interp):
        if index in op.outputs and op.name == "DEQUANTIZE":
            index = op.inputs[0]
    detail = next(t for t in interp.get_tensor_details() if t["index"] == index)
    if np.dtype(detail["dtype"]).kind == "f":
        return None
    return float(detail["quantization"][0])


def set_inputs(interp, values) -> None:
    """Set every input of ``interp`` from ``values`` (one per input, in the model's order)."""
    for detail, value in zip(interp.get_input_details(), values):
        interp.set_tensor(detail["index"], value)


# Operators that read a table with an integer input as row indices: (table, indices) positions.
_LOOKUPS = {"GATHER": (0, 1), "EMBEDDING_LOOKUP": (1, 0)}
INDEX_BOUND = 16  # an integer input that indexes no table: 0..15, valid as any small id


def index_bound(interp, tensor: int) -> int:
    """Exclusive bound of the values an integer input that is not quantized may take: the
    rows of the smallest table a GATHER / EMBEDDING_LOOKUP reads with it (token ids into an
    embedding), else ``INDEX_BOUND``."""
    shapes = {t["index"]: t["shape"] for t in interp.get_tensor_details()}
    rows = []
    for op in getattr(interp, "_get_ops_details", list)():  # no public API lists operators
        table, indices = _LOOKUPS.get(op["op_name"], (None, None))
        inputs = list(op["inputs"])
        if table is not None and len(inputs) > max(table, indices) and inputs[indices] == tensor:
            shape = shapes.get(int(inputs[table]))
            if shape is not None and len(shape) and shape[0] > 0:
                rows.append(int(shape[0]))
    return min(rows, default=INDEX_BOUND)


def random_inputs(interp, seed: int = 0) -> list[np.ndarray]:
    """One random tensor per model input, of its dtype and shape: floats in [0, 1), a
    quantized integer input over its type's range (at most -128..255), any other integer
    input (ids, indices) in ``0 .. index_bound - 1``."""
    rng = np.random.default_rng(seed)
    out = []
    for detail in interp.get_input_details():
        dtype, shape = np.dtype(detail["dtype"]), detail["shape"]
        if dtype.kind == "f":
            out.append(rng.uniform(0, 1, size=shape).astype(dtype))
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            scale = (detail.get("quantization") or (0.0, 0))[0]
            if scale:
                lo, hi = max(info.min, -128), min(info.max, 255)
            else:  # token ids into an embedding, positions: a negative one fails GATHER
                lo, hi = 0, min(info.max, index_bound(interp, detail["index"]) - 1)
            out.append(rng.integers(lo, hi + 1, size=shape).astype(dtype))
        elif dtype == np.bool_:
            out.append(rng.integers(0, 2, size=shape).astype(bool))
        else:
            raise LiteconvError(f"input {detail['name']}: unsupported dtype {dtype}")
    return out
