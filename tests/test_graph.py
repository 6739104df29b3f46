"""A model's graph as it runs: every call of every layer in order, nested models inlined."""

from __future__ import annotations

import numpy as np
import pytest

from liteconv.compat import keras
from liteconv.keras_layers.graph import inline_nested, layer_calls, ordered_calls

L = keras.layers


def _transfer(frozen: bool):
    """A backbone (conv, BN, a shared 1x1 conv applied twice) called with training=False."""
    b_in = keras.Input((6, 6, 2))
    y = L.BatchNormalization(name="bb_bn")(L.Conv2D(4, 3, padding="same", name="bb_conv")(b_in))
    shared = L.Conv2D(4, 1, activation="tanh", name="bb_shared")
    y = shared(L.Add()([shared(y), y]))
    backbone = keras.Model(b_in, y, name="backbone")
    rng = np.random.default_rng(0)
    bn = backbone.get_layer("bb_bn")
    bn.set_weights([rng.uniform(0.5, 2, 4), rng.normal(size=4), rng.normal(size=4),
                    rng.uniform(0.5, 2, 4)])  # fmt: skip
    backbone.trainable = not frozen
    inputs = keras.Input((6, 6, 2))
    x = backbone(inputs, training=False)
    return keras.Model(inputs, L.Dense(3, name="head")(L.GlobalAveragePooling2D()(x)))


def test_a_shared_layers_second_call_comes_after_the_calls_it_needs():
    inputs = keras.Input((6, 6, 2))
    shared = L.Conv2D(2, 3, padding="same", name="shared")
    out = shared(L.MaxPooling2D(name="pool")(shared(inputs)))
    model = keras.Model(inputs, out)
    assert len(layer_calls(shared, model)) == 2
    order = [(layer.name, layer_calls(layer, model).index(node))
             for layer, node in ordered_calls(model)]  # fmt: skip
    assert order == [("shared", 0), ("pool", 0), ("shared", 1)]


def test_an_inlined_backbone_computes_the_same_and_leaves_the_model_as_it_was():
    for frozen in (True, False):
        model = _transfer(frozen)
        nodes = {layer.name: len(layer._inbound_nodes)  # noqa: SLF001
                 for layer in model.get_layer("backbone").layers}  # fmt: skip
        flat = inline_nested(model)
        names = [layer.name for layer in flat.layers]
        assert "backbone" not in names and names.count("bb_shared") == 1
        assert len(layer_calls(flat.get_layer("bb_shared"), flat)) == 2  # still shared
        x = np.random.default_rng(1).normal(size=(4, 6, 6, 2)).astype("float32")
        # training=True too: the backbone was called with training=False, so its
        # BatchNormalization stays in inference mode while the outer model trains
        for training in (False, True):
            np.testing.assert_allclose(flat(x, training=training), model(x, training=training),
                                       rtol=1e-5, atol=1e-6)  # fmt: skip
        assert flat.get_layer("bb_conv").trainable is not frozen
        assert flat.get_layer("head").trainable
        after = {layer.name: len(layer._inbound_nodes)  # noqa: SLF001
                 for layer in model.get_layer("backbone").layers}  # fmt: skip
        assert after == nodes  # its layers were copied, not called again
    plain = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    assert inline_nested(plain) is plain


def test_dependency_order_moves_only_what_needs_a_later_item_and_names_a_cycle():
    """Items keep their order except one that needs what a later item gives (a shared
    layer's second call listed with its first); an item needing what nothing gives is a
    one-line error naming the model."""
    from liteconv.keras_layers.graph import dependency_order

    items = [("c", {"b"}), ("a", {"x"}), ("b", {"a"}), ("d", {"x"})]
    order = dependency_order(items, lambda i: i[1], lambda i: [i[0]], {"x"}, "m")
    assert [i[0] for i in order] == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="^m: its graph's calls cannot be ordered"):
        dependency_order([("a", {"b"}), ("b", {"a"})], lambda i: i[1], lambda i: [i[0]], set(), "m")
