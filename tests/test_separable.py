"""Depthwise-separable block against Keras SeparableConv2D and a numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import np_conv2d, np_depthwise2d
from liteconv.compat import keras
from liteconv.keras_layers import separable_conv


@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("depth_multiplier", [1, 2])
def test_without_bn_and_activation_equals_keras_separable_conv2d(
    strides, padding, depth_multiplier
):
    rng = np.random.default_rng(0)
    inputs = keras.Input((9, 10, 3))
    ours = keras.Model(
        inputs,
        separable_conv(
            inputs,
            5,
            3,
            strides=strides,
            padding=padding,
            depth_multiplier=depth_multiplier,
            activation=None,
            use_batch_norm=False,
            name="b",
        ),
    )
    stock = keras.layers.SeparableConv2D(
        5, 3, strides=strides, padding=padding, depth_multiplier=depth_multiplier
    )
    stock_model = keras.Sequential([keras.Input((9, 10, 3)), stock])
    dw = rng.normal(size=(3, 3, 3, depth_multiplier)).astype("float32")
    pw = rng.normal(size=(1, 1, 3 * depth_multiplier, 5)).astype("float32")
    bias = rng.normal(size=(5,)).astype("float32")
    stock.set_weights([dw, pw, bias])
    ours.get_layer("b_dw").set_weights([dw])
    ours.get_layer("b_pw").set_weights([pw, bias])
    images = rng.normal(size=(2, 9, 10, 3)).astype("float32")
    np.testing.assert_allclose(
        ours.predict(images, verbose=0), stock_model.predict(images, verbose=0), atol=1e-5
    )


def test_full_block_matches_numpy_reference_in_inference_mode():
    rng = np.random.default_rng(1)
    inputs = keras.Input((8, 8, 4))
    model = keras.Model(inputs, separable_conv(inputs, 6, 3, strides=2, name="b"))
    assert [layer.name for layer in model.layers[1:]] == [
        "b_dw",
        "b_dw_bn",
        "b_dw_act",
        "b_pw",
        "b_pw_bn",
        "b_pw_act",
    ]
    dw = rng.normal(size=(3, 3, 4, 1)).astype("float32")
    pw = rng.normal(size=(1, 1, 4, 6)).astype("float32")
    model.get_layer("b_dw").set_weights([dw])
    model.get_layer("b_pw").set_weights([pw])
    bn = {}
    for layer, ch in (("b_dw_bn", 4), ("b_pw_bn", 6)):
        g, b = rng.uniform(0.5, 2, ch), rng.normal(size=ch)
        m, v = rng.normal(size=ch), rng.uniform(0.5, 2, ch)
        model.get_layer(layer).set_weights([a.astype("float32") for a in (g, b, m, v)])
        bn[layer] = (g, b, m, v)

    def np_bn(x, params, eps=1e-3):
        g, b, m, v = params
        return g * (x - m) / np.sqrt(v + eps) + b

    images = rng.normal(size=(2, 8, 8, 4)).astype("float32")
    ref = np.clip(np_bn(np_depthwise2d(images, dw, (2, 2), "same"), bn["b_dw_bn"]), 0, 6)
    ref = np.clip(np_bn(np_conv2d(ref, pw), bn["b_pw_bn"]), 0, 6)
    np.testing.assert_allclose(model.predict(images, verbose=0), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"filters": -2}, "filters=-2"),
        ({"depth_multiplier": 0}, "depth_multiplier=0"),
        ({"activation": "nope"}, "activation='nope'"),
        ({"padding": "causal"}, "padding='causal'"),
    ],
)
def test_bad_arguments_echo_the_value(kwargs, message):
    args = {"filters": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        separable_conv(keras.Input((8, 8, 3)), **args)
