"""Strided flattened models saved before every op had equal strides still load and run."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import np_conv2d, np_depthwise2d
from liteconv.compat import keras
from liteconv.device.errors import LiteconvError
from liteconv.keras_layers.portable import portable_model
from liteconv.pipeline.model_file import load_keras_model


def _old_style_model(size, padding="same"):
    """What flattened_conv(strides=2) built until 2026-11: unequal strides in the 1-D steps,
    which only TensorFlow's oneDNN kernels run. Building it is fine anywhere; running is not."""
    inputs = keras.Input((*size, 3))
    x = keras.layers.Conv2D(4, 1, name="f_s1_lateral")(inputs)
    x = keras.layers.DepthwiseConv2D((3, 1), strides=(2, 1), padding=padding,
                                     name="f_s1_vertical")(x)  # fmt: skip
    x = keras.layers.DepthwiseConv2D((1, 3), strides=(1, 2), padding=padding,
                                     name="f_s1_horizontal")(x)  # fmt: skip
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, keras.layers.ReLU(name="act")(x))
    rng = np.random.default_rng(3)
    for layer in model.layers[1:]:
        layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.get_weights()])
    return model


def _reference(model, images, padding):
    """The old graph's function in numpy: stride (2, 1) vertical, (1, 2) horizontal."""
    get = lambda n: model.get_layer(n).get_weights()  # noqa: E731
    x = np_conv2d(images, get("f_s1_lateral")[0], bias=get("f_s1_lateral")[1])
    x = np_depthwise2d(x, get("f_s1_vertical")[0], (2, 1), padding, bias=get("f_s1_vertical")[1])
    x = np_depthwise2d(x, get("f_s1_horizontal")[0], (1, 2), padding,
                       bias=get("f_s1_horizontal")[1])  # fmt: skip
    gamma, beta, mean, var = get("bn")
    return np.maximum((x - mean) / np.sqrt(var + 1e-3) * gamma + beta, 0)


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("size", [(9, 8), (8, 9)])
def test_old_saved_strided_model_loads_rewritten_and_computes_the_same(tmp_path, size, padding):
    path = tmp_path / "model.keras"
    old = _old_style_model(size, padding)
    old.save(path)
    model = load_keras_model(path)
    convs = [lyr for lyr in model.layers if isinstance(lyr, keras.layers.DepthwiseConv2D)]
    assert [tuple(lyr.strides) for lyr in convs] == [(1, 1), (2, 2)]
    images = np.random.default_rng(4).normal(size=(2, *size, 3)).astype(np.float32)
    out = model.predict(images, verbose=0)
    np.testing.assert_allclose(out, _reference(old, images, padding), atol=1e-4)
    assert portable_model(model) is model  # nothing left to rewrite


def test_other_unequal_strides_are_a_one_line_error(tmp_path):
    inputs = keras.Input((8, 8, 3))
    y = keras.layers.DepthwiseConv2D((3, 3), strides=(2, 1), name="odd")(inputs)
    path = tmp_path / "model.keras"
    keras.Model(inputs, y).save(path)
    with pytest.raises(LiteconvError, match=r"layer 'odd': DepthwiseConv2D with strides \(2, 1\)"):
        load_keras_model(path)


@pytest.mark.parametrize("shared", ["vertical", "horizontal"])
def test_an_old_pair_with_a_shared_step_is_a_one_line_error_not_a_crash(shared):
    """A strided 1-D pair whose vertical or horizontal step the model calls twice cannot be
    rewritten one-for-one: the one-line error names the layer (no AttributeError from a
    shared layer's several outputs)."""
    L = keras.layers
    a, b = keras.Input((8, 8, 4)), keras.Input((8, 8, 4))
    vertical = L.DepthwiseConv2D((3, 1), strides=(2, 1), padding="same", name="v")
    horizontal = L.DepthwiseConv2D((1, 3), strides=(1, 2), padding="same", name="h")
    other = vertical(b) if shared == "vertical" else horizontal(b)
    with pytest.raises(ValueError, match=r"layer '[vh]': DepthwiseConv2D with strides"):
        portable_model(keras.Model([a, b], [horizontal(vertical(a)), other]))
