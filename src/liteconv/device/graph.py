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


def model_macs(blob: bytes) -> int:
    """Multiply-accumulates per invoke of the ``.tflite`` bytes ``blob``: its CONV_2D
    (output elements × kh × kw × input channels), DEPTHWISE_CONV_2D (output elements ×
    kh × kw) and FULLY_CONNECTED (output elements × inputs) operators, from the weight
    and output tensors' shapes; other operators count none."""
    interp = load_interpreter(model_content=blob, xnnpack=False)
    shapes = {t["index"]: [int(d) for d in t["shape"]] for t in interp.get_tensor_details()}
    total = 0
    for op in interpreter_ops(interp):
        if op.name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        weights, out = shapes[op.inputs[1]], shapes[op.outputs[0]]
        per_output = {"CONV_2D": lambda w: w[1] * w[2] * w[3],
                      "DEPTHWISE_CONV_2D": lambda w: w[1] * w[2],
                      "FULLY_CONNECTED": lambda w: w[-1]}[op.name](weights)  # fmt: skip
        total += int(np.prod(out)) * per_output
    return total
