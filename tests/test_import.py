"""Bring your own model: a Keras model trained outside liteconv becomes a run folder."""

from __future__ import annotations

import json

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
