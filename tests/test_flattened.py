"""Flattened (LVH) convolution against a rank-1 full convolution and numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import np_conv2d, np_depthwise2d
from liteconv.compat import keras, tf
from liteconv.keras_layers import flattened_conv


def _model(c_in, c_out, k, size=(9, 8), **kwargs):
    inputs = keras.Input((*size, c_in))  # odd and even sizes: SAME pads asymmetrically
    return keras.Model(inputs, flattened_conv(inputs, c_out, k, name="f", **kwargs))


def _strides_of_every_conv(model) -> list[tuple[int, int]]:
    convs = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
    return [tuple(lyr.strides) for lyr in model.layers if isinstance(lyr, convs)]


# (9, 8) and (8, 9): a stride-2 SAME convolution pads an odd size (1, 1) and an even one
# (0, 1), so both the plain and the explicitly padded vertical step are exercised.
@pytest.mark.parametrize("size", [(9, 8), (8, 9)])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("strides", [1, 2, 3, (2, 1)])
def test_one_stage_equals_rank_one_full_conv_forward_and_gradients(padding, strides, size):
    rng = np.random.default_rng(0)
    c_in, c_out, k = 3, 5, 3
    model = _model(c_in, c_out, k, size, stages=1, strides=strides, padding=padding,
                   use_bias=False)  # fmt: skip
    # every convolution has equal row and column strides: TensorFlow's portable and GPU
    # depthwise kernels refuse anything else (only oneDNN takes them; pooling may differ)
    strides_seen = _strides_of_every_conv(model)
    assert len(strides_seen) == 3 and all(sh == sw for sh, sw in strides_seen), strides_seen
    z = rng.normal(size=(c_in, c_out)).astype("float32")
    y = rng.normal(size=(k, c_out)).astype("float32")
    x = rng.normal(size=(k, c_out)).astype("float32")
    model.get_layer("f_s1_lateral").set_weights([z[None, None]])
    model.get_layer("f_s1_vertical").set_weights([y[:, None, :, None]])
    model.get_layer("f_s1_horizontal").set_weights([x[None, :, :, None]])

    images = tf.constant(rng.normal(size=(2, *size, c_in)).astype("float32"))
    # Independent reference: one full conv whose kernel is K[h,w,i,o] = z[i,o] y[h,o] x[w,o].
    zv, yv, xv = tf.Variable(z), tf.Variable(y), tf.Variable(x)

    def reference(inp):
        kernel = tf.einsum("io,ho,wo->hwio", zv, yv, xv)
        return tf.nn.conv2d(inp, kernel, strides, padding.upper())

    upstream = tf.constant(rng.normal(size=reference(images).shape).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(images)
        ours = model(images)
        ref = reference(images)
        loss_ours = tf.reduce_sum(ours * upstream)
        loss_ref = tf.reduce_sum(ref * upstream)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)

    g_in_ours = tape.gradient(loss_ours, images)
    g_in_ref = tape.gradient(loss_ref, images)
    np.testing.assert_allclose(g_in_ours.numpy(), g_in_ref.numpy(), rtol=1e-4, atol=1e-4)

    g_ours = tape.gradient(loss_ours, model.trainable_weights)
    g_ref = tape.gradient(loss_ref, [zv, yv, xv])
    np.testing.assert_allclose(g_ours[0].numpy()[0, 0], g_ref[0].numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        g_ours[1].numpy()[:, 0, :, 0], g_ref[1].numpy(), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(
        g_ours[2].numpy()[0, :, :, 0], g_ref[2].numpy(), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("size", [(9, 8), (8, 9)])
@pytest.mark.parametrize("strides", [1, 2])
def test_two_stages_with_biases_match_numpy_reference(strides, size):
    """Biases after every 1-D step, SAME padding: the stride-s vertical step of the paper's
    formulation (numpy), computed with equal strides in every op."""
    rng = np.random.default_rng(1)
    c_in, c_out, k = 4, 6, 3
    model = _model(c_in, c_out, k, size, stages=2, strides=strides)
    for layer in model.layers[1:]:
        layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()])
    images = rng.normal(size=(2, *size, c_in)).astype("float32")

    ref = images.astype(np.float64)
    for stage in (1, 2):
        s = strides if stage == 1 else 1
        lat = model.get_layer(f"f_s{stage}_lateral").get_weights()
        ver = model.get_layer(f"f_s{stage}_vertical").get_weights()
        hor = model.get_layer(f"f_s{stage}_horizontal").get_weights()
        ref = np_conv2d(ref, lat[0], bias=lat[1])
        ref = np_depthwise2d(ref, ver[0], (s, 1), "same", bias=ver[1])
        ref = np_depthwise2d(ref, hor[0], (1, s), "same", bias=hor[1])
    out = model.predict(images, verbose=0)
    assert out.shape == (2, -(-size[0] // strides), -(-size[1] // strides), c_out)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_layer_names_are_stable_and_no_nonlinearity_inside():
    model = _model(3, 4, (3, 5), stages=2)
    names = [layer.name for layer in model.layers[1:]]
    assert names == [
        f"f_s{s}_{part}" for s in (1, 2) for part in ("lateral", "vertical", "horizontal")
    ]
    assert model.get_layer("f_s1_vertical").kernel_size == (3, 1)
    assert model.get_layer("f_s1_horizontal").kernel_size == (1, 5)
    # Linear in its input: f(2a) - f(0) == 2 (f(a) - f(0)) (biases make it affine).
    a = np.random.default_rng(2).normal(size=(1, 9, 8, 3)).astype("float32")
    f0 = model.predict(np.zeros_like(a), verbose=0)
    np.testing.assert_allclose(
        model.predict(2 * a, verbose=0) - f0, 2 * (model.predict(a, verbose=0) - f0), atol=1e-4
    )


def test_strided_stage_costs_what_runs_and_needs_a_known_size():
    """The vertical step runs at stride 1 (s× its MACs), the horizontal one at (s, s); a
    SAME strided stage on an input of unknown height is refused with a message."""
    from liteconv.keras_layers import model_cost

    c_in, c_out, k, s = 8, 16, 3, 2
    cost = {c.name: c.macs for c in model_cost(_model(c_in, c_out, k, (8, 8), strides=s)).layers}
    assert cost["f_s1_lateral"] == 8 * 8 * c_in * c_out
    # even height: rows padded (0, 1) explicitly, the VALID vertical step computes the
    # (4 - 1)·2 + 1 = 7 rows the strided output reads, at every column
    assert cost["f_s1_vertical"] == 7 * 8 * k * c_out
    assert cost["f_s1_horizontal"] == 4 * 4 * k * c_out
    with pytest.raises(ValueError, match="needs a known input height"):
        flattened_conv(keras.Input((None, None, 3)), 4, 3, strides=2, name="g")
    flattened_conv(keras.Input((None, None, 3)), 4, 3, strides=2, padding="valid", name="v")


def test_parameter_count_matches_formula():
    c_in, c_out, k = 16, 32, 3
    model = _model(c_in, c_out, k, stages=2)
    stage1 = c_in * c_out + c_out + 2 * (k * c_out + c_out)
    stage2 = c_out * c_out + c_out + 2 * (k * c_out + c_out)
    assert model.count_params() == stage1 + stage2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"filters": 0}, "filters=0"),
        ({"kernel_size": -1}, "kernel_size=-1"),
        ({"kernel_size": (3, 3, 3)}, "kernel_size=(3, 3, 3)"),
        ({"stages": 0}, "stages=0"),
        ({"strides": 1.5}, "strides=1.5"),
        ({"padding": "full"}, "padding='full'"),
        ({"use_bias": "yes"}, "use_bias='yes'"),
    ],
)
def test_bad_arguments_echo_the_value(kwargs, message):
    args = {"filters": 4, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        flattened_conv(keras.Input((8, 8, 3)), **args)


def test_default_names_are_unique():
    inputs = keras.Input((8, 8, 3))
    a = flattened_conv(inputs, 4, 3)
    b = flattened_conv(a, 4, 3)
    model = keras.Model(inputs, b)
    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names))


def test_stages_start_from_different_seeded_filters():
    def build(seed):
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((9, 9, 4))
        model = keras.Model(inputs, flattened_conv(inputs, 6, 3, stages=2, name="f"))
        return {w.name: w.numpy() for w in model.weights}

    first = build(7)
    for kind in ("vertical", "horizontal"):
        a = first[f"f_s1_{kind}/depthwise_kernel:0"]
        b = first[f"f_s2_{kind}/depthwise_kernel:0"]
        assert a.shape == b.shape and not np.allclose(a, b), kind
    again = build(7)
    assert first.keys() == again.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    other = build(8)
    assert not np.allclose(first["f_s1_vertical/depthwise_kernel:0"],
                           other["f_s1_vertical/depthwise_kernel:0"])  # fmt: skip
