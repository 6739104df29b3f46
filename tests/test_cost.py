"""Analytic MACs and parameters against hand-computed cases and the papers' figures."""

from __future__ import annotations

import pytest

from liteconv.compat import keras
from liteconv.keras_layers import create_model, flattened_conv, model_cost, separable_conv


def _macs(model):
    return {c.name: c.macs for c in model_cost(model).layers}


def test_hand_computed_layers():
    inputs = keras.Input((10, 10, 3))
    a = keras.layers.Conv2D(8, 3, padding="same", name="std")(inputs)  # 10·10·9·3·8
    b = keras.layers.Conv2D(8, 3, strides=2, name="std_s2")(a)  # out 4×4: 16·9·8·8
    c = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(
        b
    )  # 16·9·8·2
    d = keras.layers.Conv2D(5, 1, name="pw")(c)  # 16·16·5
    e = keras.layers.SeparableConv2D(6, (3, 1), padding="same", name="sep")(d)  # 16·3·5 + 16·5·6
    f = keras.layers.BatchNormalization(name="bn")(e)
    g = keras.layers.Flatten(name="flat")(f)
    h = keras.layers.Dense(7, name="fc")(g)  # 96·7
    model = keras.Model(inputs, h)
    macs = _macs(model)
    assert macs["std"] == 10 * 10 * 9 * 3 * 8
    assert macs["std_s2"] == 4 * 4 * 9 * 8 * 8
    assert macs["dw"] == 4 * 4 * 9 * 8 * 2
    assert macs["pw"] == 4 * 4 * 16 * 5
    assert macs["sep"] == 4 * 4 * 3 * 5 + 4 * 4 * 5 * 6
    assert macs["bn"] == 0 and macs["flat"] == 0
    assert macs["fc"] == 96 * 7
    cost = model_cost(model)
    assert cost.total_params == model.count_params()
    assert cost.total_macs == sum(macs.values())


def test_attention_recurrent_transposed_and_1d_layers_by_hand_and_as_tflite_counts_them():
    """Each against its hand count and, where the converter keeps the operators in the main
    graph, against ``model_macs`` of its .tflite (an independent count from the
    operators' tensor shapes). Conv2DTranspose had counted its output as a convolution's:
    stride² too many."""
    from liteconv.device.graph import model_macs
    from liteconv.export.convert import to_tflite

    L = keras.layers
    q, v = keras.Input((10, 24)), keras.Input((7, 12))
    cross = L.MultiHeadAttention(3, 8, value_dim=5, output_shape=20)(q, v)
    image, seq = keras.Input((8, 8, 4)), keras.Input((7, 3), batch_size=1)
    signal = keras.Input((20, 6))
    cases = {  # name: (model, hand count, counted in the .tflite's main graph)
        "cross-attention": (keras.Model([q, v], cross),
                            10 * 24 * 3 * 8 + 7 * 12 * 3 * 8 + 7 * 12 * 3 * 5  # Q, K, V
                            + 3 * 10 * 7 * (8 + 5) + 10 * 3 * 5 * 20, True),  # scores, sum, out
        "transposed": (keras.Model(image, L.Conv2DTranspose(6, 3, strides=2, padding="same")(image)),
                       8 * 8 * 4 * 3 * 3 * 6, True),
        "1-D": (keras.Model(signal, L.SeparableConv1D(8, 3)(L.Conv1D(5, 3, padding="same")(signal))),
                20 * 5 * 3 * 6 + 18 * 3 * 5 + 18 * 5 * 8, True),
        "lstm": (keras.Model(seq, L.LSTM(10)(seq)), 7 * 4 * 10 * (3 + 10), True),
        "gru": (keras.Model(seq, L.GRU(10)(seq)), 7 * 3 * 10 * (3 + 10), False),  # a WHILE loop
        "bidirectional": (keras.Model(seq, L.Bidirectional(L.LSTM(10))(seq)),
                          2 * 7 * 4 * 10 * (3 + 10), False),
    }  # fmt: skip
    for name, (model, hand, in_main_graph) in cases.items():
        assert model_cost(model).total_macs == hand, name
        assert model_cost(model).total_params == model.count_params(), name
        if in_main_graph:
            assert model_macs(to_tflite(model)) == hand, name


def test_flattened_and_separable_costs_follow_their_formulas():
    n, c, m, k = 12, 16, 32, 3
    inputs = keras.Input((n, n, c))
    flat = keras.Model(inputs, flattened_conv(inputs, m, k, stages=2, name="f"))
    lvh = n * n * (c * m + 2 * k * m) + n * n * (m * m + 2 * k * m)
    assert model_cost(flat).total_macs == lvh
    sep = keras.Model(inputs, separable_conv(inputs, m, k, name="s"))
    assert model_cost(sep).total_macs == n * n * k * k * c + n * n * c * m
    full = n * n * k * k * c * m
    # The separable ratio the MobileNet paper gives: 1/M + 1/K².
    assert model_cost(sep).total_macs / full == pytest.approx(1 / m + 1 / k**2)


def test_a_shared_layer_costs_its_macs_at_every_call_and_its_weights_once():
    """One Conv2D applied to a 10x10 and then a 5x5 map: two calls, two shapes."""
    inputs = keras.Input((10, 10, 4))
    shared = keras.layers.Conv2D(4, 3, padding="same", name="shared")
    a = shared(inputs)  # 10·10·9·4·4
    b = shared(keras.layers.MaxPooling2D(name="pool")(a))  # 5·5·9·4·4
    model = keras.Model(inputs, keras.layers.Flatten(name="flat")(b))
    cost = model_cost(model)
    macs = _macs(model)
    assert macs["shared"] == 10 * 10 * 9 * 4 * 4
    assert macs["shared (call 2)"] == 5 * 5 * 9 * 4 * 4
    rows = {c.name: c for c in cost.layers}
    assert rows["shared (call 2)"].output_shape == (None, 5, 5, 4)
    assert cost.total_params == model.count_params() == 9 * 4 * 4 + 4
    # a nested model the outer one calls twice runs its layers twice
    sub_in = keras.Input((5, 5, 4))
    sub = keras.Model(sub_in, keras.layers.Conv2D(2, 1, name="pw")(sub_in), name="sub")
    outer_in = keras.Input((5, 5, 4))
    twice = keras.Model(outer_in, keras.layers.Add()([sub(outer_in), sub(outer_in)]))
    assert model_cost(twice).total_macs == 2 * 5 * 5 * 4 * 2


@pytest.mark.parametrize(
    ("alpha", "size", "macs_m", "params_m"),
    [(1.0, 224, 569, 4.2), (0.5, 160, 76, 1.32), (0.25, 128, 14, 0.47)],
)
def test_mobilenet_v1_matches_paper_tables(alpha, size, macs_m, params_m):
    # Howard et al. 2017, Tables 1/6/7: mult-adds and parameters (1000 classes).
    model = create_model("mobilenet_v1", input_shape=(size, size, 3), num_classes=1000, alpha=alpha)
    cost = model_cost(model)
    assert cost.total_macs / 1e6 == pytest.approx(macs_m, rel=0.035 if macs_m < 20 else 0.01)
    assert cost.total_params / 1e6 == pytest.approx(params_m, rel=0.05)
    assert cost.total_params == model.count_params()


def test_table_has_shares_and_total():
    model = create_model("separable_cnn", input_shape=(28, 28, 1), num_classes=10)
    table = model_cost(model).table()
    assert table.splitlines()[0].split() == ["layer", "type", "output", "params", "MACs", "share"]
    cost = model_cost(model)
    total = table.splitlines()[-1].split()
    assert total[0] == "total"
    assert int(total[1].replace(",", "")) == model.count_params() == cost.total_params
    # the share column adds up to 100% across the layers (independent of the total row)
    shares = [float(line.split()[-1].rstrip("%")) for line in table.splitlines()[2:-1]]
    assert sum(shares) == pytest.approx(100.0, abs=0.1 * len(shares))
