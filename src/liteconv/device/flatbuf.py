"""Just enough of the TFLite flatbuffer to cut a model after one operator (no TensorFlow).

``truncated(blob, k)`` returns the model with its first subgraph running operators
``0..k`` only, and operator ``k``'s first output as the graph's output. It edits two
vector lengths and one tensor index in place — a shorter vector leaves unreachable but
valid bytes — so it needs no flatbuffer library and works on a board. ``probe`` uses it
to find which operator crashes the runtime: the runtime executes the operators in the
order of that vector, so the first prefix that crashes ends at the culprit.

``custom_codes(blob)`` lists the model's custom operator codes (``FlexMatrixInverse`` for a
Select-TF op), so a load error can name them.

Layout (schema.fbs): Model {version, operator_codes, subgraphs, ...}; OperatorCode
{deprecated_builtin_code, custom_code, version, builtin_code}; SubGraph {tensors, inputs,
outputs, operators, ...}; Operator {opcode_index, inputs, outputs, ...}.

Example:
    >>> part = truncated(Path("model.tflite").read_bytes(), 3)   # operators 0..3
"""

from __future__ import annotations

import struct

from .errors import LiteconvError

_MODEL_OPERATOR_CODES, _MODEL_SUBGRAPHS = 1, 2
_OPCODE_CUSTOM = 1
_SUBGRAPH_OUTPUTS, _SUBGRAPH_OPERATORS = 2, 3
_OPERATOR_OUTPUTS = 2


def _u32(buf, pos: int) -> int:
    return struct.unpack_from("<I", buf, pos)[0]


def _field(buf, table: int, index: int) -> int | None:
    """Absolute position of field ``index`` of the table at ``table`` (None if absent)."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    size = struct.unpack_from("<H", buf, vtable)[0]
    if 4 + 2 * index + 2 > size:
        return None
    offset = struct.unpack_from("<H", buf, vtable + 4 + 2 * index)[0]
    return table + offset if offset else None


def _vector(buf, table: int, index: int) -> tuple[int, int]:
    """``(position of the length, length)`` of the vector field ``index`` of a table."""
    at = _field(buf, table, index)
    if at is None:
        raise LiteconvError("no such vector in the model")
    start = at + _u32(buf, at)
    return start, _u32(buf, start)


def _table_at(buf, vector: int, i: int) -> int:
    element = vector + 4 + 4 * i
    return element + _u32(buf, element)


def operator_count(blob: bytes) -> int:
    """How many operators the first subgraph has."""
    buf = memoryview(blob)
    model = _u32(buf, 0)
    subgraphs, _ = _vector(buf, model, _MODEL_SUBGRAPHS)
    _, count = _vector(buf, _table_at(buf, subgraphs, 0), _SUBGRAPH_OPERATORS)
    return count


def custom_codes(blob: bytes) -> list[str]:
    """The model's custom operator codes, in order (empty for a builtin-only model or bytes
    that are not a readable model: the load error says what is wrong with those)."""
    buf = memoryview(blob)
    try:
        codes, count = _vector(buf, _u32(buf, 0), _MODEL_OPERATOR_CODES)
        out = []
        for i in range(count):
            at = _field(buf, _table_at(buf, codes, i), _OPCODE_CUSTOM)
            if at is not None:
                start = at + _u32(buf, at)
                out.append(bytes(buf[start + 4 : start + 4 + _u32(buf, start)]).decode())
        return out
    except (LiteconvError, struct.error, UnicodeDecodeError, IndexError, ValueError):
        return []


def truncated(blob: bytes, last: int) -> bytes:
    """``blob`` running operators ``0..last`` of its first subgraph, ending at the first
    output of operator ``last``."""
    buf = bytearray(blob)
    try:
        model = _u32(buf, 0)
        subgraphs, _ = _vector(buf, model, _MODEL_SUBGRAPHS)
        graph = _table_at(buf, subgraphs, 0)
        operators, count = _vector(buf, graph, _SUBGRAPH_OPERATORS)
        if not 0 <= last < count:
            raise LiteconvError(f"operator {last}: the model has {count}")
        op = _table_at(buf, operators, last)
        op_outputs, n_out = _vector(buf, op, _OPERATOR_OUTPUTS)
        outputs, n_graph_out = _vector(buf, graph, _SUBGRAPH_OUTPUTS)
        if not n_out or not n_graph_out:
            raise LiteconvError(f"operator {last} or the graph has no output")
        struct.pack_into("<I", buf, operators, last + 1)
        struct.pack_into("<I", buf, outputs, 1)
        buf[outputs + 4 : outputs + 8] = buf[op_outputs + 4 : op_outputs + 8]
    except (struct.error, IndexError):
        raise LiteconvError("the model's flatbuffer cannot be walked") from None
    return bytes(buf)
