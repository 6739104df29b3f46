"""Models saved before strided flattened steps became portable, rewritten so they run anywhere.

Until liteconv 0.1 (git 2026-11), a strided LVH stage or CP block was saved as
``DepthwiseConv2D((k, 1), strides=(s, 1))`` followed by ``DepthwiseConv2D((1, k),
strides=(1, s))``. Only TensorFlow's oneDNN kernels accept unequal row and column strides;
its portable CPU kernel and its GPU kernel refuse them at the first ``predict``. Such a
pair is rebuilt here as ``flattened.vertical_horizontal`` builds it today (the same
function, the same weights), so old ``.keras`` files keep loading and running. Any other
``DepthwiseConv2D`` with unequal strides cannot be rewritten exactly and is a one-line
error saying how to rebuild the model.

Example:
    >>> model = portable_model(keras.models.load_model("old_run/model.keras"))
"""

from __future__ import annotations

from liteconv.compat import keras, tf
from liteconv.keras_layers.decompose import rebuild_graph
from liteconv.keras_layers.flattened import vertical_horizontal


def _unequal(layer) -> bool:
    return isinstance(layer, keras.layers.DepthwiseConv2D) and (
        layer.strides[0] != layer.strides[1]
    )


def _plain(layer) -> bool:
    return (
        layer.depth_multiplier == 1
        and tuple(layer.dilation_rate) == (1, 1)
        and keras.activations.serialize(layer.activation) in ("linear", None)
        and layer.data_format == "channels_last"
    )


def _consumers(model, layer) -> list:
    """The layers that take ``layer``'s output, in ``model``."""
    return [
        other
        for other in model.layers
        for node in other._inbound_nodes  # noqa: SLF001 - the functional graph's nodes
        if any(t is layer.output for t in tf.nest.flatten(node.input_tensors))
    ]


def old_strided_pairs(model) -> dict[str, object]:
    """``{vertical layer name: horizontal layer}`` for every old-style strided 1-D pair.

    Raises:
        ValueError: a ``DepthwiseConv2D`` with unequal strides that is not such a pair.
    """
    pairs, claimed = {}, set()
    for layer in model.layers:
        if not _unequal(layer) or layer.name in claimed:
            continue
        k_w, s_w = layer.kernel_size[1], layer.strides[1]
        users = _consumers(model, layer)
        partner = users[0] if len(users) == 1 else None
        ok = (
            k_w == 1
            and s_w == 1
            and _plain(layer)
            and len(layer._inbound_nodes) == 1  # noqa: SLF001 - not shared
            and isinstance(partner, keras.layers.DepthwiseConv2D)
            and partner.kernel_size[0] == 1
            and partner.strides[0] == 1
            and partner.padding == layer.padding
            and partner.use_bias == layer.use_bias
            and _plain(partner)
            and len(partner._inbound_nodes) == 1  # noqa: SLF001
        )
        if not ok:
            raise ValueError(
                f"layer {layer.name!r}: DepthwiseConv2D with strides {tuple(layer.strides)} runs "
                "only where TensorFlow's oneDNN kernels are on (not on most CPUs or GPUs) and is "
                "not an old liteconv flattened step that can be rewritten; rebuild the model "
                "with equal strides (or with this liteconv's flattened_conv) and retrain"
            )
        pairs[layer.name] = partner
        claimed.add(partner.name)
    return pairs


def portable_model(model):
    """``model`` itself when every op runs on every kernel, else a rebuilt copy whose old
    strided 1-D pairs are rewritten exactly (weights copied). Functional or sequential."""
    if not any(_unequal(layer) for layer in model.layers):
        return model
    pairs = old_strided_pairs(model)
    partners = {h.name for h in pairs.values()}
    renamed: dict[str, str] = {}  # new layer name -> old layer name (weights to copy)

    def build_block(layer, x):
        if layer.name in partners:
            return x  # the pair's output was already produced at its vertical step
        horizontal = pairs[layer.name]
        prefix = layer.name.removesuffix("_vertical")
        s_w = horizontal.strides[1]
        out = vertical_horizontal(x, (layer.kernel_size[0], horizontal.kernel_size[1]),
                                  strides=(layer.strides[0], s_w), padding=layer.padding,
                                  use_bias=layer.use_bias, name=prefix)  # fmt: skip
        renamed[f"{prefix}_vertical"] = layer.name
        renamed[f"{prefix}_horizontal"] = horizontal.name
        return out

    selected = set(pairs) | partners
    new = rebuild_graph(model, build_block, select=lambda layer: layer.name in selected)
    old = {layer.name: layer for layer in model.layers}
    for layer in new.layers:
        source = old.get(renamed.get(layer.name, layer.name))
        if source is not None and layer.weights:
            layer.set_weights(source.get_weights())
    return new
