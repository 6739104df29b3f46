"""The one walker over a ``.tflite`` model's operators (no TensorFlow import).

The interpreter's Python API has no public list of operators; ``_get_ops_details`` is
used here and nowhere else. XNNPACK is switched off for the walk: a delegate replaces the
nodes it takes by one opaque node.

Example:
    >>> [op.name for op in list_ops(blob)]
    ['CONV_2D', 'DEPTHWISE_CONV_2D', ...]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .runtime import load_interpreter

# The one custom operator every TFLite runtime registers (detection models' box decoding and
# non-max suppression): its outputs are boxes, classes, scores and their count
POSTPROCESS_OP = "TFLite_Detection_PostProcess"


@dataclass(frozen=True)
class OpInfo:
    """One operator: its name, input/output tensor indices and their dtypes."""

    index: int
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    input_types: tuple[str, ...]
    output_types: tuple[str, ...]


def interpreter_ops(interp) -> list[OpInfo]:
    """The operators of an allocated interpreter (built without delegates to see them all)."""
    tensors = {t["index"]: np.dtype(t["dtype"]).name for t in interp.get_tensor_details()}
    ops = []
    for op in interp._get_ops_details():  # no public API lists ops with their tensors
        inputs = tuple(int(i) for i in op["inputs"])
        outputs = tuple(int(i) for i in op["outputs"])
        ops.append(
            OpInfo(
                int(op["index"]), op["op_name"], inputs, outputs,
                tuple(tensors.get(i, "?") for i in inputs if i >= 0),
                tuple(tensors.get(i, "?") for i in outputs if i >= 0),
            )
        )  # fmt: skip
    return ops


def list_ops(blob: bytes, runtime: str = "auto", source: str | None = None) -> list[OpInfo]:
    """The operators of the ``.tflite`` bytes ``blob``, in execution order (``source``:
    the name a load error gives the model)."""
    interp = load_interpreter(model_content=blob, runtime=runtime, xnnpack=False, source=source)
    return interpreter_ops(interp)


def delegation(interp) -> tuple[int, int]:
    """``(taken, total)``: how many of the model's operators a delegate (XNNPACK) runs.

    The Python API shows no execution plan, but each ``DELEGATE`` node lists the tensors
    its partition reads and writes: walking back from what it writes through the original
    nodes until what it reads gives the nodes it replaced. An interpreter built without
    delegates has no ``DELEGATE`` node: ``(0, total)``.
    """
    ops = interp._get_ops_details()  # the one place (with interpreter_ops) that reads it
    plain = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {int(t): i for i, op in enumerate(plain) for t in op["outputs"]}
    taken: set[int] = set()
    for op in ops:
        if op["op_name"] != "DELEGATE":
            continue
        boundary = {int(t) for t in op["inputs"]}
        todo = [int(t) for t in op["outputs"]]
        while todo:
            tensor = todo.pop()
            node = producer.get(tensor)
            if tensor in boundary or node is None or node in taken:
                continue
            taken.add(node)
            todo.extend(int(t) for t in plain[node]["inputs"] if t >= 0)
    return len(taken), len(plain)


# The operators whose tensor types say what a converter made of a model's precision.
COMPUTE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D",
               "BATCH_MATMUL", "UNIDIRECTIONAL_SEQUENCE_LSTM")  # fmt: skip


def precision(ops: list[OpInfo]) -> str | None:
    """What a converter made of a model, read from its compute operators' tensor types:
    ``int16x8`` (int16 activations), ``int8`` / ``uint8`` (integer activations in most of
    them), ``dynamic`` (any with float activations and integer weights: the converter
    leaves small weights float), ``fp16`` (weights stored as float16 and dequantized),
    else ``fp32``; None for a model with no compute operator. The names are ``liteconv
    export``'s modes (QAT int8 reads as ``int8``)."""
    votes: dict[str, int] = {}
    for op in ops:
        if op.name not in COMPUTE_OPS or not op.output_types:
            continue
        out, ins = op.output_types[0], set(op.input_types)
        mode = {"int16": "int16x8", "int8": "int8", "uint8": "uint8"}.get(out)
        if mode is None:
            mode = "dynamic" if ins & {"int8", "uint8"} else "fp32"
        votes[mode] = votes.get(mode, 0) + 1
    if not votes:
        return None
    if "int16x8" in votes:
        return "int16x8"
    integer = max(("int8", "uint8"), key=lambda m: votes.get(m, 0))
    if 2 * votes.get(integer, 0) > sum(votes.values()):
        return integer
    if "dynamic" in votes:
        return "dynamic"
    if any(op.name == "DEQUANTIZE" and "float16" in op.input_types for op in ops):
        return "fp16"
    return "fp32"


def model_facts(blob: bytes, runtime: str = "auto") -> dict:
    """``{"mode": precision(...), "macs": model_macs(...)}`` of the ``.tflite`` bytes
    ``blob``, from one interpreter: what a model without ``liteconv export``'s sidecar shows."""
    interp = load_interpreter(model_content=blob, runtime=runtime, xnnpack=False)
    ops = interpreter_ops(interp)
    return {"mode": precision(ops), "macs": interpreter_macs(interp, ops)}


def model_macs(blob: bytes) -> int:
    """Multiply-accumulates per invoke of the ``.tflite`` bytes ``blob`` (``op_macs`` of
    each operator, from its weight and output tensors' shapes)."""
    return interpreter_macs(load_interpreter(model_content=blob, xnnpack=False))


def op_macs(name: str, shapes: list[list[int]], out: list[int]) -> int:
    """Multiply-accumulates of one operator ``name`` with input tensor ``shapes`` (None
    for an absent optional input) and output shape ``out``: CONV_2D output elements × kh ×
    kw × input channels, DEPTHWISE_CONV_2D output elements × kh × kw, CONV_3D output
    elements × kd × kh × kw × input channels, FULLY_CONNECTED output elements × inputs,
    TRANSPOSE_CONV input elements × kh × kw × output channels, BATCH_MATMUL output
    elements × the contracted size, UNIDIRECTIONAL_SEQUENCE_LSTM steps × gates × units ×
    (inputs + units); every other operator none."""
    size = lambda dims: int(np.prod(dims)) if dims else 0  # noqa: E731
    if name == "CONV_2D":
        w = shapes[1]
        return size(out) * w[1] * w[2] * w[3]
    if name == "DEPTHWISE_CONV_2D":
        return size(out) * shapes[1][1] * shapes[1][2]
    if name == "CONV_3D":
        w = shapes[1]
        return size(out) * w[0] * w[1] * w[2] * w[3]
    if name == "FULLY_CONNECTED":
        return size(out) * shapes[1][-1]
    if name == "TRANSPOSE_CONV":  # inputs: output shape, weights (O, kh, kw, I), input
        w = shapes[1]
        return size(shapes[2]) * w[0] * w[1] * w[2]
    if name == "BATCH_MATMUL":  # x (..., M, K) or, adjoint, (..., K, M); out (..., M, N)
        x = shapes[0]
        return size(out) * (x[-1] if x[-2] == out[-2] else x[-2])
    if name == "UNIDIRECTIONAL_SEQUENCE_LSTM":  # input weights 1-4 (units, I), input-to-
        x, forget = shapes[0], shapes[2]  # input absent in a CIFG LSTM; recurrent 5-8
        gates = sum(w is not None for w in shapes[1:5])
        units, inputs = forget
        return size(x) // inputs * gates * units * (inputs + units)
    return 0


def interpreter_macs(interp, ops: list[OpInfo] | None = None) -> int:
    """``model_macs`` of an allocated interpreter built without delegates (``ops``: its
    ``interpreter_ops`` if already at hand)."""
    shapes = {t["index"]: [int(d) for d in t["shape"]] for t in interp.get_tensor_details()}
    total = 0
    for op in interpreter_ops(interp) if ops is None else ops:
        ins = [shapes[i] if i >= 0 else None for i in op.inputs]
        total += op_macs(op.name, ins, shapes[op.outputs[0]] if op.outputs else [])
    return total
