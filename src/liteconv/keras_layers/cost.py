"""Analytic cost accounting: per-layer multiply-accumulates (MACs) and parameters.

Formulas (N×N output map, K×K kernel, W input and M output channels, as in the MobileNet
paper): standard conv ``N²K²WM``, depthwise ``N²K²W`` (× depth multiplier), pointwise
``N²WM``, separable = depthwise + pointwise, dense ``in × out``. Non-square maps and
kernels use ``H·W`` and ``k_h·k_w``. Normalisation, activation, pooling and reshaping
layers count their parameters but no MACs (the papers' convention).

Example:
    >>> cost = model_cost(create_model("mobilenet_v1", input_shape=(224, 224, 3), num_classes=1000))
    >>> round(cost.total_macs / 1e6)
    569
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from liteconv.compat import keras
from liteconv.device.tables import format_table
from liteconv.keras_layers.graph import layer_calls


@dataclass(frozen=True)
class LayerCost:
    """Cost of one layer."""

    name: str
    kind: str
    output_shape: tuple
    params: int
    macs: int


@dataclass(frozen=True)
class ModelCost:
    """Per-layer and total cost of a model."""

    name: str
    layers: list[LayerCost] = field(default_factory=list)

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def total_params(self) -> int:
        return sum(layer.params for layer in self.layers)

    def table(self, *, markdown: bool = False) -> str:
        """The per-layer table: layer, type, output shape, params, MACs, share of MACs."""
        total = self.total_macs or 1
        rows = [
            [
                c.name,
                c.kind,
                "x".join(str(d) for d in c.output_shape[1:]),
                c.params,
                c.macs,
                f"{100 * c.macs / total:.1f}%",
            ]
            for c in self.layers
        ]
        rows.append(["total", "", "", self.total_params, self.total_macs, "100.0%"])
        return format_table(
            ["layer", "type", "output", "params", "MACs", "share"], rows, markdown=markdown
        )

    def as_dict(self) -> dict:
        return {"model": self.name, "params": self.total_params, "macs": self.total_macs}


def _shape(shape) -> tuple:
    if isinstance(shape, list):  # several inputs/outputs: count the first
        shape = shape[0]
    return tuple(shape)


def _attention_macs(layer, node, out: tuple) -> int:
    """MultiHeadAttention: the query, key and value projections, the scores, the weighted
    sum and the output projection, for query (T, dq) and value (S, dv) (key = value when
    not given; value = query without the call's node)."""
    args = list(getattr(node, "call_args", None) or [])
    kwargs = dict(getattr(node, "call_kwargs", None) or {})
    named = dict(zip(("query", "value", "key"), args)) | {
        k: v for k, v in kwargs.items() if k in ("query", "value", "key") and v is not None}  # fmt: skip
    shape = lambda name: tuple(named[name].shape) if name in named else None  # noqa: E731
    query = shape("query") or _shape(layer.input_shape)
    value = shape("value") or query
    key = shape("key") or value
    heads, kd = layer._num_heads, layer._key_dim
    vd = layer._value_dim or kd
    t, s = math.prod(query[1:-1]), math.prod(value[1:-1])
    return (t * query[-1] * heads * kd + s * key[-1] * heads * kd + s * value[-1] * heads * vd
            + heads * t * s * (kd + vd) + t * heads * vd * out[-1])  # fmt: skip


def _recurrent_macs(layer, inp: tuple) -> int:
    """LSTM (4 gates), GRU (3), SimpleRNN (1): steps × gates × units × (inputs + units)."""
    gates = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}[type(layer).__name__]
    units = layer.cell.units
    return math.prod(inp[1:-1]) * gates * units * (inp[-1] + units)


# Convolutions counted by their input pixels, and those counted per input channel (the
# depthwise part of a separable one): whichever of them this Keras has.
_TRANSPOSED = tuple(getattr(keras.layers, n) for n in ("Conv1DTranspose", "Conv2DTranspose",
                    "Conv3DTranspose") if hasattr(keras.layers, n))  # fmt: skip
_DEPTHWISE = tuple(getattr(keras.layers, n) for n in ("DepthwiseConv1D", "DepthwiseConv2D",
                   "SeparableConv1D", "SeparableConv2D") if hasattr(keras.layers, n))  # fmt: skip


def layer_macs(layer, node=None) -> int:
    """MACs of one (unwrapped, built) Keras layer for one example; with ``node`` (one of
    ``layer_calls``), of that call's shapes (a shared layer's calls may differ).
    Convolutions (1-3 D, depthwise, separable, transposed: each input pixel times its
    kernel and filters), dense layers, MultiHeadAttention and LSTM / GRU / SimpleRNN;
    every other layer none."""
    layers = keras.layers
    out = _shape(node.output_shapes if node is not None else layer.output_shape)
    inp = _shape(node.input_shapes if node is not None else layer.input_shape)
    if isinstance(layer, layers.MultiHeadAttention):
        return _attention_macs(layer, node, out)
    if type(layer).__name__ in ("LSTM", "GRU", "SimpleRNN"):
        return _recurrent_macs(layer, inp)
    if isinstance(layer, _TRANSPOSED):
        return math.prod(inp[1:-1]) * math.prod(layer.kernel_size) * inp[-1] * out[-1]
    if isinstance(layer, _DEPTHWISE):
        spatial = math.prod(out[1:-1])
        c_in = inp[-1]
        dw = spatial * math.prod(layer.kernel_size) * c_in * layer.depth_multiplier
        if "Separable" in type(layer).__name__:
            return dw + spatial * c_in * layer.depth_multiplier * layer.filters
        return dw
    if isinstance(layer, (layers.Conv1D, layers.Conv2D, layers.Conv3D)):
        groups = getattr(layer, "groups", 1)
        return math.prod(out[1:-1]) * math.prod(layer.kernel_size) * (inp[-1] // groups) * out[-1]
    if isinstance(layer, layers.Dense):
        return math.prod(inp[1:-1]) * inp[-1] * layer.units
    return 0


def _leaf_layers(model, times: int = 1):
    """``(outer, layer, container, times)``: each leaf layer, the wrapper the model calls
    (itself where unwrapped), the model whose graph calls it and how many times the models
    around it run (a nested model the outer one calls twice runs its layers twice)."""
    for layer in model.layers:
        inner = getattr(layer, "layer", None)  # tfmot QuantizeWrapper / PruneLowMagnitude
        inner = getattr(layer, "forward_layer", None) or inner  # Bidirectional's built copy
        if isinstance(layer, keras.Model):
            calls = len([n for n in layer_calls(layer, model) if n is not None]) or 1
            yield from _leaf_layers(layer, times * calls)
        elif isinstance(inner, keras.layers.Layer):
            yield layer, inner, model, times
        else:
            yield layer, layer, model, times


def model_cost(model) -> ModelCost:
    """Return the per-layer and total MACs and parameters of a built Keras model."""
    costs = []
    for outer, layer, container, times in _leaf_layers(model):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        calls = layer_calls(outer, container)
        both = 2 if type(outer).__name__ == "Bidirectional" else 1  # its layer runs twice
        for k, node in enumerate(calls):  # a shared layer: a row per call, its weights once
            costs.append(
                LayerCost(
                    name=outer.name if k == 0 else f"{outer.name} (call {k + 1})",
                    kind=type(layer).__name__,
                    output_shape=_shape(outer.output_shape if node is None else node.output_shapes),
                    params=int(layer.count_params()) * both if k == 0 else 0,
                    macs=times * both * int(layer_macs(layer, node)),
                )
            )
    return ModelCost(model.name, costs)
