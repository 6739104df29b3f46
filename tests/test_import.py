"""Bring your own model: a Keras model trained outside liteconv becomes a run folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import DIGITS
from liteconv.cli import cli
from liteconv.compat import keras


@pytest.fixture(scope="module")
def outside_model(tmp_path_factory):
    """A small CNN built and fitted with plain Keras on scikit-learn's digits, saved."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images[..., None] / 16.0).astype("float32")
    y = digits.target
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same"),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ], name="outside_cnn")  # fmt: skip
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("outside") / "outside.keras"
    model.save(path)
    return path


def test_imported_model_exports_verifies_and_bundles(outside_model, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["import", str(outside_model), "-c", DIGITS, "--name", "mine",
                                 "--out", str(tmp_path / "runs")])  # fmt: skip
    assert result.exit_code == 0, result.output
    run_dir = next((tmp_path / "runs" / "mine").iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["imported"] is True and manifest["status"] == "complete"
    assert manifest["input_rescaled"] is None  # takes [0, 1] pixels: the file as it came
    assert (run_dir / "model.keras").read_bytes() == outside_model.read_bytes()
    assert manifest["source"]["sha256"] == __import__("hashlib").sha256(
        outside_model.read_bytes()).hexdigest()  # fmt: skip
    assert manifest["model"]["macs"] == 8 * 8 * 9 * 16 + 8 * 8 * 9 * 16 * 32 + 8 * 8 * 32 * 10
    assert manifest["metrics"]["test_accuracy"] > 0.8
    result = runner.invoke(cli, ["export", str(run_dir), "--mode", "fp32,qat_int8"])
    assert result.exit_code == 0, result.output
    verify = json.loads((run_dir / "export" / "verify.json").read_text())
    assert verify["fp32"]["agreement"] == 1.0 and verify["qat_int8"]["agreement"] > 0.9
    result = runner.invoke(cli, ["verify", str(run_dir)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["bundle", str(run_dir), "-o", str(tmp_path / "dist")])
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "dist").glob("mine-*.tar.gz"))


def test_import_refuses_what_does_not_fit(outside_model, tmp_path):
    runner = CliRunner()
    out = ["--out", str(tmp_path / "runs")]
    result = runner.invoke(cli, ["import", str(outside_model), "-c", DIGITS, *out,
                                 "--set", "data.image_size=[12,12]"])  # fmt: skip
    assert result.exit_code == 2 and "input shape (8, 8, 1) does not fit" in result.output
    h5 = tmp_path / "model.keras"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # an HDF5 file named .keras
    result = runner.invoke(cli, ["import", str(h5), "-c", DIGITS, *out])
    assert result.exit_code == 2 and "an HDF5 file, not a Keras v3" in result.output
    result = runner.invoke(cli, ["import", str(tmp_path / "none.keras"), "-c", DIGITS, *out])
    assert result.exit_code == 2 and "no such model file" in result.output
    result = runner.invoke(cli, ["import", str(outside_model), "-c", DIGITS, *out,
                                 "--set", "data.name=synthetic", "--set",
                                 "data.synthetic_shape=[8,8,1]", "--set",
                                 "data.synthetic_classes=4"])  # fmt: skip
    assert result.exit_code == 2 and "10 outputs, but the data has 4 classes" in result.output
    result = runner.invoke(cli, ["import", str(outside_model), "-c", DIGITS, *out,
                                 "--custom-objects", "nomodule"])  # fmt: skip
    assert result.exit_code == 2 and "expected module:Name" in result.output
    assert not (tmp_path / "runs").exists()  # nothing half-made


def test_a_model_that_takes_0_255_pixels_is_imported_for_unit_pixels(tmp_path):
    """The Keras tutorials' way: Rescaling(1/255) as the model's first layer, fitted on
    0-255 pixels. liteconv feeds [0, 1]; imported as it came, the model would see images
    255 times too dark."""
    from sklearn.datasets import load_digits

    from liteconv.pipeline.import_run import for_unit_pixels, pixel_rescaling

    digits = load_digits()
    x255 = (digits.images[..., None] / 16.0 * 255.0).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.RandomFlip("horizontal"),  # augmentation before it: still the input
        keras.layers.Rescaling(1.0 / 127.5, offset=-1.0),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ], name="pixels_255")  # fmt: skip
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x255, digits.target, epochs=8, batch_size=32, verbose=0)
    path = tmp_path / "pixels_255.keras"
    model.save(path)

    rescaling = pixel_rescaling(model)
    assert rescaling is not None and rescaling.name == model.layers[1].name
    unit = for_unit_pixels(model, rescaling)
    np.testing.assert_allclose(unit.predict(x255[:64] / 255.0, verbose=0),
                               model.predict(x255[:64], verbose=0), rtol=1e-5, atol=1e-6)  # fmt: skip
    # The transfer-learning way: a backbone holding the Rescaling, nested as a layer.
    backbone = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Rescaling(1.0 / 255),
                                 keras.layers.Conv2D(4, 3)], name="backbone")  # fmt: skip
    inputs = keras.Input((8, 8, 1))
    nested = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(backbone(inputs))))
    assert pixel_rescaling(nested) is backbone.layers[0]
    np.testing.assert_allclose(
        for_unit_pixels(nested, backbone.layers[0]).predict(x255[:8] / 255.0, verbose=0),
        nested.predict(x255[:8], verbose=0), rtol=1e-5, atol=1e-6)  # fmt: skip
    # A model whose Rescaling does not take 0-255 pixels, or comes after other work: none.
    for late in ([keras.layers.Rescaling(2.0)],
                 [keras.layers.Conv2D(4, 3), keras.layers.Rescaling(1.0 / 255)]):  # fmt: skip
        assert pixel_rescaling(keras.Sequential([keras.Input((8, 8, 1)), *late])) is None

    result = CliRunner().invoke(cli, ["import", str(path), "-c", DIGITS, "--name", "px",
                                      "--out", str(tmp_path / "runs")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "takes 0-255 pixels" in result.output
    run_dir = next((tmp_path / "runs" / "px").iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["input_rescaled"]["new_scale"] == pytest.approx(2.0)
    assert manifest["metrics"]["test_accuracy"] > 0.8  # ~0.1 if fed [0, 1] as it came
    saved = keras.models.load_model(run_dir / "model.keras", compile=False)
    assert saved.layers[1].get_config()["scale"] == pytest.approx(2.0)
