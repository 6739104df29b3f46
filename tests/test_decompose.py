"""Decomposing trained convolutions: LVH (rank 1 per filter) and CP, against references."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import np_conv2d
from liteconv.compat import keras
from liteconv.keras_layers import model_cost
from liteconv.keras_layers.decompose import cp_kernel, flatten_model, rank1_per_filter

RNG = np.random.default_rng(0)


def _conv_model(kernel, bias, *, strides, padding, size, activation=None):
    kh, kw, cin, cout = kernel.shape
    inputs = keras.Input((size, size + 1, cin))
    x = keras.layers.Conv2D(cout, (kh, kw), strides=strides, padding=padding, name="conv",
                            activation=activation, use_bias=bias is not None)(inputs)  # fmt: skip
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    model.get_layer("conv").set_weights([kernel] + ([bias] if bias is not None else []))
    bn = model.get_layer("bn")
    bn.set_weights([RNG.uniform(0.5, 2, cout), RNG.normal(size=cout),
                    RNG.normal(size=cout), RNG.uniform(0.5, 2, cout)])  # fmt: skip
    return model


def _rank1_kernel(kh, kw, cin, cout):
    y, x, z = RNG.normal(size=(kh, cout)), RNG.normal(size=(kw, cout)), RNG.normal(size=(cin, cout))
    return np.einsum("ho,wo,io->hwio", y, x, z).astype(np.float32)


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("size", [7, 8])
def test_rank_one_kernel_becomes_an_lvh_layer_with_the_same_outputs(padding, strides, size):
    kernel = _rank1_kernel(3, 3, 4, 5)
    bias = RNG.normal(size=5).astype(np.float32)
    model = _conv_model(kernel, bias, strides=strides, padding=padding, size=size,
                        activation="relu")  # fmt: skip
    x = RNG.normal(size=(3, size, size + 1, 4)).astype(np.float32)
    for stages in (1, 2):
        flat, report = flatten_model(model, method="lvh", stages=stages)
        assert report[0]["rel_error"] < 1e-6
        assert "conv_s1_lateral" in [lyr.name for lyr in flat.layers]
        np.testing.assert_allclose(flat.predict(x, verbose=0), model.predict(x, verbose=0),
                                   atol=1e-4)  # fmt: skip
    # the conv alone against a numpy convolution of the reconstructed kernel
    flat1, _ = flatten_model(model, method="lvh", stages=1)
    inner = keras.Model(flat1.input, flat1.get_layer("conv_act").output)
    ref = np.maximum(np_conv2d(x, kernel, (strides, strides), padding, bias), 0)
    np.testing.assert_allclose(inner.predict(x, verbose=0), ref, atol=1e-4)


def test_lvh_of_a_general_kernel_is_the_best_rank_one_per_filter():
    kernel = RNG.normal(size=(3, 3, 6, 4))
    y, x, z, err = rank1_per_filter(kernel)
    approx = np.einsum("ho,wo,io->hwio", y, x, z)
    assert err == pytest.approx(np.linalg.norm(kernel - approx) / np.linalg.norm(kernel), rel=1e-6)
    # no rank-1 tensor built from perturbed factors does better (a local optimum check)
    for _ in range(20):
        yp, xp, zp = (v + RNG.normal(scale=1e-2, size=v.shape) for v in (y, x, z))
        worse = np.linalg.norm(kernel - np.einsum("ho,wo,io->hwio", yp, xp, zp))
        assert worse >= np.linalg.norm(kernel - approx) - 1e-9


def test_cp_at_full_rank_reproduces_the_convolution():
    rank = 6
    a, b, c, d = (RNG.normal(size=(n, rank)) for n in (3, 3, 4, 5))
    kernel = np.einsum("hr,wr,ir,or->hwio", a, b, c, d).astype(np.float32)  # CP rank 6
    bias = RNG.normal(size=5).astype(np.float32)
    model = _conv_model(kernel, bias, strides=2, padding="same", size=9)
    flat, report = flatten_model(model, method="cp", rank=rank)
    assert report[0]["rank"] == rank and report[0]["rel_error"] < 1e-4
    x = RNG.normal(size=(2, 9, 10, 4)).astype(np.float32)
    np.testing.assert_allclose(flat.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-3)
    *_, err = cp_kernel(kernel, 2)
    assert 0.05 < err < 1  # a lower rank cannot reproduce it


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("size", [7, 8])
def test_cp_block_with_exact_factors_is_the_full_convolution(padding, strides, size):
    """The CP block's structure alone (factors set exactly, no ALS in the way): equal to a
    numpy convolution of the CP kernel for strides 1 and 2, SAME and VALID, odd and even."""
    rank = 4
    a, b, c, d = (RNG.normal(size=(n, rank)) for n in (3, 3, 4, 5))
    kernel = np.einsum("hr,wr,ir,or->hwio", a, b, c, d).astype(np.float32)
    bias = RNG.normal(size=5).astype(np.float32)
    model = _conv_model(kernel, bias, strides=strides, padding=padding, size=size)
    flat, _ = flatten_model(model, method="cp", rank=rank, max_iter=5)
    flat.get_layer("conv_cp_in").set_weights([c[None, None].astype(np.float32)])
    flat.get_layer("conv_cp_vertical").set_weights([a[:, None, :, None].astype(np.float32)])
    flat.get_layer("conv_cp_horizontal").set_weights([b[None, :, :, None].astype(np.float32)])
    flat.get_layer("conv_cp_out").set_weights([d.T[None, None].astype(np.float32), bias])
    x = RNG.normal(size=(2, size, size + 1, 4)).astype(np.float32)
    inner = keras.Model(flat.input, flat.get_layer("conv_cp_out").output).predict(x, verbose=0)
    ref = np_conv2d(x, kernel, (strides, strides), padding, bias)
    assert np.abs(inner - ref).max() <= 1e-4


def test_second_stage_starts_as_identity_and_costs_are_reported():
    kernel = RNG.normal(size=(3, 3, 8, 8)).astype(np.float32)
    model = _conv_model(kernel, None, strides=1, padding="valid", size=8)
    one, r1 = flatten_model(model, method="lvh", stages=1)
    two, r2 = flatten_model(model, method="lvh", stages=2)
    x = RNG.normal(size=(2, 8, 9, 8)).astype(np.float32)
    np.testing.assert_allclose(two.predict(x, verbose=0), one.predict(x, verbose=0), atol=1e-5)
    assert r1[0]["rel_error"] == pytest.approx(r2[0]["rel_error"])
    assert r1[0]["macs_before"] == model_cost(model).layers[0].macs
    assert model_cost(one).total_macs - r1[0]["macs_after"] == (
        model_cost(model).total_macs - r1[0]["macs_before"]
    )
    # the second stage adds a lateral 8→8 and two 3-tap depthwise filters (no biases: the
    # convolution had none)
    assert r2[0]["params_after"] == r1[0]["params_after"] + 8 * 8 + 2 * 3 * 8
    assert r1[0]["params_after"] == 8 * 8 + 2 * 3 * 8


def test_a_convolution_the_model_applies_twice_stays_shared_and_the_rest_decomposes():
    """A shared Conv2D (two calls, the second after a pooling) is kept, still one layer with
    its weights; the rank-1 conv before it becomes LVH, and the model answers as before
    (the rebuild once ran the shared layer's second call before its input existed)."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    shared = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="shared")
    y = shared(keras.layers.MaxPooling2D(name="pool")(shared(x)))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(y))
    model.get_layer("conv").set_weights([_rank1_kernel(3, 3, 3, 4), np.zeros(4, np.float32)])
    flat, report = flatten_model(model)
    assert [r["layer"] for r in report] == ["conv"] and report[0]["rel_error"] < 1e-6
    names = [lyr.name for lyr in flat.layers]
    assert names.count("shared") == 1 and "conv_s1_lateral" in names
    assert len(flat.get_layer("shared")._inbound_nodes) == 2  # noqa: SLF001
    x = RNG.normal(size=(2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(flat.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-4)
    with pytest.raises(ValueError, match="'shared' is applied 2 times"):
        flatten_model(model, layers=["shared"])


def test_the_convolutions_of_a_nested_backbone_are_decomposed():
    """A transfer model (its backbone one layer of the outer model) had 'nothing to
    decompose'; the backbone's rank-1 conv now becomes LVH, outputs unchanged."""
    b_in = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="bb_conv")(b_in)
    backbone = keras.Model(b_in, y, name="backbone")
    backbone.get_layer("bb_conv").set_weights([_rank1_kernel(3, 3, 3, 4), np.ones(4, np.float32)])
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(backbone(inputs, training=False))
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    flat, report = flatten_model(model)
    assert [r["layer"] for r in report] == ["bb_conv"] and report[0]["rel_error"] < 1e-6
    assert "bb_conv_s1_lateral" in [lyr.name for lyr in flat.layers]
    x = RNG.normal(size=(2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(flat.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-4)
    # the data-aware refit reads the parent layer's inputs inside the backbone
    from liteconv.keras_layers.data_aware import fit_to_outputs

    images = RNG.uniform(size=(16, 8, 8, 3)).astype(np.float32)
    rows = fit_to_outputs(model, flat, images, report)
    assert rows[0]["output_error"] < 1e-3


def test_bad_requests_are_explained():
    model = _conv_model(_rank1_kernel(3, 3, 2, 2), None, strides=1, padding="same", size=6)
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        flatten_model(model, layers=["nope"])
    with pytest.raises(ValueError, match="'bn' .* cannot be decomposed"):
        flatten_model(model, layers=["bn"])
    with pytest.raises(ValueError, match="Unknown method"):
        flatten_model(model, method="svd")
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="nothing to decompose"):
        flatten_model(dense)


def test_a_decomposition_asked_again_is_not_recomputed(monkeypatch):
    """flatten --budget-ms decomposes each candidate, then applies the chosen plan: the same
    kernel and rank must not run ALS twice, and callers must not share arrays."""
    import tensorly.decomposition

    from liteconv.keras_layers import decompose as dec

    kernel = np.random.default_rng(5).normal(size=(3, 3, 6, 8)).astype("float32")
    first = dec.cp_kernel(kernel, 4, max_iter=50)

    def no_als(*_a, **_k):
        raise AssertionError("ALS ran again for a kernel and rank already decomposed")

    monkeypatch.setattr(tensorly.decomposition, "parafac", no_als)
    second = dec.cp_kernel(kernel.copy(), 4, max_iter=50)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    second[0][:] = 0  # a caller's change does not reach the next caller
    assert np.abs(dec.cp_kernel(kernel, 4, max_iter=50)[0]).sum() > 0
    with pytest.raises(AssertionError, match="ALS ran again"):
        dec.cp_kernel(kernel, 3, max_iter=50)  # another rank is another decomposition


def test_cp_above_a_modes_size_still_decomposes():
    """A first layer (3×3×1×C) at rank 0.5·C exceeds its 9-dim mode: ALS's normal equations
    are singular there (it once stopped `flatten --method cp` with 'Singular matrix')."""
    kernel = RNG.normal(size=(3, 3, 1, 32)).astype(np.float32)
    a, b, c, d, err = cp_kernel(kernel, 16)
    assert a.shape == (3, 16) and c.shape == (1, 16) and d.shape == (16, 32)
    approx = np.einsum("hr,wr,ir,ro->hwio", a, b, c, d)
    assert err < 1e-3 and np.abs(approx - kernel).max() < 1e-2 * np.abs(kernel).max()
