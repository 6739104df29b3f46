"""A model saved by Keras 3 (TensorFlow >= 2.16's default) becomes a tf_keras model liteconv runs.

The reference is always the Keras 3 model itself, loaded from the same file: the rebuild must
answer the same on inputs the loader's own check never saw, with every weight copied.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import DIGITS
from liteconv.cli import cli
from liteconv.compat import keras, keras3, tf
from liteconv.device.errors import LiteconvError
from liteconv.keras_layers.keras3 import check_same_outputs
from liteconv.pipeline.model_file import load_keras_model


def _randomize_batchnorm(model, rng):
    """Moving statistics far from 0 / 1, so a BN whose weights were not copied shows."""
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 2.0, gamma.shape), rng.normal(0, 0.5, beta.shape),
                rng.normal(0, 0.5, mean.shape), rng.uniform(0.5, 2.0, var.shape),
            ])  # fmt: skip


def _same_answers(path, model, seed=7):
    source = keras3().models.load_model(path, compile=False)
    rng = np.random.default_rng(seed)
    shape = [3] + [int(d) for d in source.inputs[0].shape[1:]]
    x = rng.uniform(-1.0, 2.0, shape).astype("float32")  # another range than the loader's check
    want = [np.asarray(a) for a in tf.nest.flatten(source(x, training=False))]
    got = [np.asarray(a) for a in tf.nest.flatten(model(x, training=False))]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    return source


def test_a_keras3_functional_model_with_its_ops_and_activations_answers_the_same(tmp_path):
    k3 = keras3()
    k3.utils.set_random_seed(0)
    L = k3.layers
    inp = k3.Input((12, 12, 3))
    x = L.Rescaling(4.0, offset=-2.0)(inp)  # activations of a few units: gelu's tails show
    x = L.Conv2D(8, 3, padding="same", activation="relu6")(x)
    x = L.BatchNormalization()(x)
    y = L.SeparableConv2D(8, 3, padding="same", activation="gelu")(x)
    y = L.DepthwiseConv2D(3, padding="same")(y)
    x = L.Add()([x, y])
    x = x * k3.ops.relu6(x + 3.0) / 6.0  # hard-swish written with ops, as MobileNetV3 does
    x = L.Activation("hard_sigmoid")(x)  # relu6(x+3)/6 in Keras 3, another function in tf_keras
    x = L.LeakyReLU(negative_slope=0.1)(x)
    features = L.Activation("gelu")(y)  # a feature map as a second output: no pooling or
    x = L.GlobalAveragePooling2D()(x)  # softmax hides a small error in an activation
    out = L.Dense(5, activation="softmax")(x)
    source = k3.Model(inp, [out, features], name="k3_net")
    _randomize_batchnorm(source, np.random.default_rng(1))
    path = tmp_path / "k3.keras"
    source.save(path)

    model = load_keras_model(path)
    assert isinstance(model, keras.Model) and model.name == "k3_net"
    assert all(type(layer).__module__.startswith("tf_keras.") for layer in model.layers)
    source = _same_answers(path, model)
    assert model.count_params() == source.count_params()


def test_a_nested_backbone_and_a_sequential_model_are_rebuilt(tmp_path):
    k3 = keras3()
    k3.utils.set_random_seed(0)
    L = k3.layers
    backbone = k3.Sequential([
        k3.Input((16, 16, 3)),
        L.Conv2D(4, 3, strides=2, use_bias=False),
        L.BatchNormalization(),
        L.ReLU(max_value=6.0),
    ], name="tiny_backbone")  # fmt: skip
    _randomize_batchnorm(backbone, np.random.default_rng(2))
    backbone.trainable = False
    inp = k3.Input((16, 16, 3))
    x = L.RandomFlip("horizontal")(inp)  # augmentation: identity at inference
    x = backbone(x, training=False)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(0.3)(x)
    out = L.Dense(3, name="head")(x)
    path = tmp_path / "transfer.keras"
    k3.Model(inp, out, name="transfer").save(path)

    model = load_keras_model(path)
    _same_answers(path, model)
    inner = model.get_layer("tiny_backbone")
    assert isinstance(inner, keras.Model) and inner.weights and not inner.trainable_weights
    assert model.get_layer("head").trainable_weights


def test_shared_layers_and_a_model_called_twice_are_rebuilt_shared(tmp_path):
    """A layer applied twice, its second call after a layer the config lists later, and a
    sub-model called twice: the rebuild once failed with KeyError ('pool', 0)."""
    k3 = keras3()
    k3.utils.set_random_seed(1)
    L = k3.layers
    inp = k3.Input((16, 16, 3))
    shared = L.Conv2D(6, 3, padding="same", activation="relu", name="shared")
    a = shared(L.Conv2D(6, 3, padding="same")(inp))
    b = shared(L.MaxPooling2D(name="pool")(a))
    sub_in = k3.Input((8, 8, 6))
    sub = k3.Model(sub_in, L.Conv2D(6, 1, activation="tanh")(sub_in), name="sub")
    out = L.Dense(3)(L.GlobalAveragePooling2D()(sub(sub(b))))
    path = tmp_path / "shared.keras"
    k3.Model(inp, out, name="siamese").save(path)

    model = load_keras_model(path)
    _same_answers(path, model)
    assert len(model.get_layer("shared")._inbound_nodes) == 2  # noqa: SLF001 - still shared
    assert [layer.name for layer in model.layers].count("shared") == 1
    assert len(model.get_layer("sub")._inbound_nodes) == 2  # noqa: SLF001


def test_what_tf_keras_cannot_rebuild_is_one_line_naming_the_layer(tmp_path):
    k3 = keras3()
    cases = {
        "lora": (k3.layers.Dense(2, lora_rank=2, name="lora_head"), "lora_rank=2"),
        "rms": (k3.layers.RMSNormalization(name="rms"), "no tf_keras twin"),
    }
    for case, (layer, says) in cases.items():
        inp = k3.Input((8,))
        path = tmp_path / f"{case}.keras"
        k3.Model(inp, layer(inp)).save(path)
        with pytest.raises(LiteconvError) as err:
            load_keras_model(path)
        message = str(err.value)
        assert "\n" not in message and f"'{layer.name}'" in message and says in message
        assert str(path) in message and "tf_keras" in message


def test_two_models_that_answer_differently_are_refused(tmp_path):
    k3 = keras3()
    k3.utils.set_random_seed(0)
    inp = k3.Input((6,))
    source = k3.Model(inp, k3.layers.Dense(3)(inp))
    twin_in = keras.Input((6,))
    twin = keras.Model(twin_in, keras.layers.Dense(3)(twin_in))  # its own random weights
    with pytest.raises(LiteconvError, match="answers differently"):
        check_same_outputs(tmp_path / "m.keras", source, twin)
    twin.set_weights(source.get_weights())
    assert check_same_outputs(tmp_path / "m.keras", source, twin) < 1e-5


def test_liteconv_import_takes_a_keras3_file_and_exports_it(tmp_path):
    from sklearn.datasets import load_digits

    k3 = keras3()
    k3.utils.set_random_seed(0)
    digits = load_digits()
    x = (digits.images[..., None] / 16.0).astype("float32")
    source = k3.Sequential([
        k3.Input((8, 8, 1)),
        k3.layers.Conv2D(16, 3, padding="same", activation="relu"),
        k3.layers.Flatten(),
        k3.layers.Dense(10, activation="softmax"),
    ], name="keras3_cnn")  # fmt: skip
    source.compile("adam", "sparse_categorical_crossentropy")
    source.fit(x, digits.target, epochs=5, batch_size=32, verbose=0)
    path = tmp_path / "keras3_cnn.keras"
    source.save(path)

    runner = CliRunner()
    result = runner.invoke(cli, ["import", str(path), "-c", DIGITS, "--name", "k3",
                                 "--out", str(tmp_path / "runs")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Keras 2 (tf_keras) rebuild" in result.output
    run_dir = next((tmp_path / "runs" / "k3").iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["source"]["rebuilt_in_keras2"] is True
    assert manifest["source"]["keras_version"].startswith("3.")
    # the run's model.keras is a tf_keras file that answers as the Keras 3 one did
    run_model = keras.models.load_model(run_dir / "model.keras", compile=False)
    np.testing.assert_allclose(run_model.predict(x[:64], verbose=0),
                               source.predict(x[:64], verbose=0), rtol=1e-5, atol=1e-6)  # fmt: skip
    assert manifest["metrics"]["test_accuracy"] > 0.8
    result = runner.invoke(cli, ["export", str(run_dir), "--mode", "fp32"])
    assert result.exit_code == 0, result.output
    verify = json.loads((run_dir / "export" / "verify.json").read_text())
    assert verify["fp32"]["agreement"] == 1.0
