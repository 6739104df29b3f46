"""Data-aware decomposition: factors fitted to a layer's outputs on real activations.

References: numpy convolutions (conftest.np_conv2d) of the parent's kernel on the same
inputs; exactly rank-1 / rank-R kernels the fit must recover from a random start.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import np_conv2d
from liteconv.compat import keras
from liteconv.keras_layers.data_aware import (
    Moments,
    conv_patches,
    fit_cp,
    fit_rank1,
    fit_to_outputs,
)
from liteconv.keras_layers.decompose import flatten_model

RNG = np.random.default_rng(7)


def _smooth_images(n, h, w, c, seed=0):
    """Correlated inputs (as real activations are): random walks over rows and columns,
    mixed across channels, so some input directions carry far more energy than others."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(np.cumsum(rng.normal(size=(n, h, w, c)), 1), 2) / np.sqrt(h * w)
    return (x @ rng.normal(size=(c, c))).astype(np.float32)


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("strides", [(1, 1), (2, 2), (2, 1)])
@pytest.mark.parametrize("size", [7, 8])
def test_patches_times_the_kernel_is_the_convolution(padding, strides, size):
    x = RNG.normal(size=(2, size, size + 1, 3)).astype(np.float32)
    kernel = RNG.normal(size=(3, 3, 3, 4))
    p = conv_patches(x, (3, 3), strides, padding)
    ref = np_conv2d(x.astype(np.float64), kernel, strides, padding)
    assert p.shape[:3] == ref.shape[:3]
    np.testing.assert_allclose(p @ kernel.reshape(-1, 4), ref, atol=1e-4)


def _patch_rows(shape=(3, 3, 5), n=200, seed=1):
    x = _smooth_images(n, 9, 9, shape[2], seed)
    return conv_patches(x, shape[:2], (1, 1), "same").reshape(-1, int(np.prod(shape)))


def test_rank1_fit_recovers_an_exactly_rank1_layer_from_a_random_start():
    shape, filters = (3, 3, 5), 6
    p = _patch_rows(shape)
    y, x, z = (RNG.normal(size=(n, filters)) for n in shape)
    kernel = np.einsum("hr,wr,cr->hwcr", y, x, z).reshape(-1, filters)
    bias = RNG.normal(size=filters)
    target = p @ kernel + bias
    moments = Moments.of(p, target, bias=True)
    start = [RNG.normal(size=(n, filters)) for n in shape]
    _, fitted, _ = fit_rank1(moments, start, shape, sweeps=500, tol=1e-15)
    assert _rel(p @ fitted + moments.bias(fitted), target) <= 1e-4


def test_cp_fit_recovers_an_exactly_rank_r_layer_from_a_random_start():
    shape, filters, rank = (3, 3, 5), 7, 3
    p = _patch_rows(shape)
    a, b, c = (RNG.normal(size=(n, rank)) for n in shape)
    kernel = np.einsum("hr,wr,cr->hwcr", a, b, c).reshape(-1, rank) @ RNG.normal(
        size=(rank, filters)
    )
    target = p @ kernel
    moments = Moments.of(p, target, bias=False)
    start = [RNG.normal(size=(n, rank)) for n in shape]
    _, _, fitted, _ = fit_cp(moments, start, RNG.normal(size=(rank, filters)), shape,
                             sweeps=3000, tol=1e-16)  # fmt: skip
    assert _rel(p @ fitted, target) <= 1e-4


def _two_conv_model(strides=1, padding="same", seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12, 12, 6))
    h = keras.layers.Conv2D(12, 3, strides=strides, padding=padding, name="c1")(inputs)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c2")(h)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(h))
    bn = model.get_layer("bn1")
    bn.set_weights([RNG.uniform(0.5, 2, 12), RNG.normal(size=12), RNG.normal(size=12),
                    RNG.uniform(0.5, 2, 12)])  # fmt: skip
    return model


def _held_out_output_error(parent, flat, images, name, final):
    """Independent: the parent's linear response by a numpy convolution of its input,
    against the decomposed block's output, on the images fit_to_outputs holds out."""
    layer = parent.get_layer(name)
    held = images[-max(1, round(len(images) * 0.125)) :]
    x = keras.Model(parent.inputs, layer.input).predict(held, verbose=0).astype(np.float64)
    ref = np_conv2d(x, layer.kernel.numpy(), tuple(layer.strides), layer.padding,
                    layer.bias.numpy())  # fmt: skip
    got = keras.Model(flat.inputs, flat.get_layer(final).output).predict(held, verbose=0)
    return _rel(got, ref)


@pytest.mark.parametrize(
    ("options", "finals"),
    [
        ({"method": "lvh", "stages": 1}, ("c1_s1_horizontal", "c2_s1_horizontal")),
        ({"method": "lvh", "stages": 2}, ("c1_s2_horizontal", "c2_s2_horizontal")),
        ({"method": "cp", "rank": 4}, ("c1_cp_out", "c2_cp_out")),
    ],
)
@pytest.mark.parametrize(("strides", "padding"), [(1, "same"), (2, "same"), (2, "valid")])
def test_data_fit_beats_the_kernel_fit_on_held_out_outputs(options, finals, strides, padding):
    """A random (full-rank) layer on correlated inputs: the factors fitted to its
    outputs reproduce them better than the kernel's best factors, on images the fit did
    not see; the reported errors match a numpy convolution; the second layer, fed by
    the decomposed first, is fitted to the parent's outputs (asymmetric)."""
    model = _two_conv_model(strides, padding)
    images = _smooth_images(160, 12, 12, 6, seed=3)
    flat, report = flatten_model(model, **options)
    kernel_fit = [
        _held_out_output_error(model, flat, images, r["layer"], f) for r, f in zip(report, finals)
    ]
    parent_out = model.predict(images[-20:], verbose=0)
    before = _rel(flat.predict(images[-20:], verbose=0), parent_out)
    fitted = fit_to_outputs(model, flat, images, report)
    # the first layer's kernel fit is measured on the parent's own input; the second's on
    # the refitted first layer's output (what it is fitted on)
    assert fitted[0]["kernel_fit_output_error"] == pytest.approx(kernel_fit[0], rel=1e-3)
    for row, final in zip(fitted, finals):
        now = _held_out_output_error(model, flat, images, row["layer"], final)
        assert row["output_error"] == pytest.approx(now, rel=1e-3)
        assert now < 0.8 * row["kernel_fit_output_error"], row
        assert row["fit_rows"] > 0 and row["fit_sweeps"] >= 1
        assert row["rel_error"] >= row["kernel_fit_rel_error"] - 1e-6  # further from the kernel
    assert _rel(flat.predict(images[-20:], verbose=0), parent_out) < before


def test_data_fit_of_an_exactly_rank1_layer_reproduces_its_outputs():
    """Starting from noise in the factors (not the exact kernel fit), the data fit finds
    the layer again: the whole model's outputs, BatchNorm and activation included."""
    kernel = np.einsum("ho,wo,io->hwio", *(RNG.normal(size=(n, 5)) for n in (3, 3, 4)))
    inputs = keras.Input((10, 11, 4))
    h = keras.layers.Conv2D(5, 3, strides=2, padding="same", name="conv")(inputs)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn")(h))
    model = keras.Model(inputs, h)
    model.get_layer("conv").set_weights([kernel.astype(np.float32), RNG.normal(size=5)])
    flat, report = flatten_model(model, method="lvh", stages=1)
    for name in ("conv_s1_lateral", "conv_s1_vertical", "conv_s1_horizontal"):
        layer = flat.get_layer(name)
        layer.set_weights(
            [RNG.normal(size=w.shape).astype(np.float32) for w in layer.get_weights()]
        )
    images = _smooth_images(64, 10, 11, 4, seed=5)
    (row,) = fit_to_outputs(model, flat, images, report, sweeps=500)
    assert row["kernel_fit_output_error"] > 0.5 and row["output_error"] <= 1e-4
    np.testing.assert_allclose(flat.predict(images, verbose=0), model.predict(images, verbose=0),
                               atol=1e-3)  # fmt: skip


def test_refit_false_measures_without_changing_weights():
    model = _two_conv_model()
    images = _smooth_images(40, 12, 12, 6)
    flat, report = flatten_model(model, method="lvh")
    weights = [w.copy() for w in flat.get_weights()]
    rows = fit_to_outputs(model, flat, images, report, refit=False)
    assert all(r["output_error"] == r["kernel_fit_output_error"] > 0 for r in rows)
    assert all(np.array_equal(a, b) for a, b in zip(weights, flat.get_weights()))


def test_too_few_images_is_an_error():
    model = _two_conv_model()
    flat, report = flatten_model(model, method="lvh")
    with pytest.raises(ValueError, match="at least 2 images"):
        fit_to_outputs(model, flat, _smooth_images(1, 12, 12, 6), report)
