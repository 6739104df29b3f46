"""Pretrained ``keras.applications`` backbones: preprocessing inside the model, ImageNet
weights from the Keras cache (fabricated here, never downloaded), the two-phase fine-tune,
and a pretrained run through export, the board estimate, the bundle and flatten."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import DIGITS
from liteconv.cli import cli
from liteconv.compat import keras, keras3
from liteconv.keras_layers import backbones as bb
from liteconv.keras_layers import create_model

# keras.applications' own preprocess_input of each family, on pixel values in [0, 255]
# (MobileNetV3 normally rescales inside its model; liteconv turns that off and does it in
# its preprocess layer, as MobileNetV2's preprocess_input does).
APPS = keras.applications
REFERENCE = {
    "mobilenet": APPS.mobilenet.preprocess_input,
    "mobilenet_v2": APPS.mobilenet_v2.preprocess_input,
    "mobilenet_v3_small": APPS.mobilenet_v2.preprocess_input,
    "mobilenet_v3_large": APPS.mobilenet_v2.preprocess_input,
    "efficientnet_b0": APPS.efficientnet.preprocess_input,  # pass-through: inside the model
    "resnet50": APPS.resnet50.preprocess_input,  # caffe: BGR, ImageNet mean
}
ALPHA = {"mobilenet": 0.25, "mobilenet_v2": 0.35, "mobilenet_v3_small": 0.75,
         "mobilenet_v3_large": 0.75}  # fmt: skip
# phase 2 of a 2-epoch run: the top blocks of MobileNet v1 (alpha 0.25) at 32x32
SHAPE = (32, 32, 3)


@pytest.mark.parametrize("backbone", sorted(bb.BACKBONES))
def test_the_preprocess_layer_is_keras_own_preprocess_input(backbone):
    rng = np.random.default_rng(0)
    rgb = rng.uniform(size=(2, 32, 32, 3)).astype("float32")
    model = create_model("pretrained", input_shape=(32, 32, 3), num_classes=3, backbone=backbone,
                         weights=None, alpha=ALPHA.get(backbone, 1.0))  # fmt: skip
    pre = keras.Model(model.input, model.get_layer(bb.PREPROCESS).output)
    expected = REFERENCE[backbone](rgb.copy() * 255.0)
    np.testing.assert_allclose(pre.predict(rgb, verbose=0), expected, rtol=1e-5, atol=1e-3)
    grey = create_model("pretrained", input_shape=(32, 32, 1), num_classes=3, backbone=backbone,
                        weights=None, alpha=ALPHA.get(backbone, 1.0))  # fmt: skip
    pre = keras.Model(grey.input, grey.get_layer(bb.PREPROCESS).output)
    np.testing.assert_allclose(pre.predict(rgb[..., :1], verbose=0),
                               REFERENCE[backbone](np.repeat(rgb[..., :1], 3, -1) * 255.0),
                               rtol=1e-5, atol=1e-3)  # fmt: skip
    assert not model.get_layer(bb.PREPROCESS).trainable
    # one flat graph: no nested model for tfmot or the converter to stumble on
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)


def test_blocks_cover_the_backbone_and_phases_freeze_what_they_should():
    model = create_model("pretrained", input_shape=(32, 32, 3), num_classes=4,
                         backbone="mobilenet_v2", weights=None, alpha=0.35)  # fmt: skip
    parts = bb.blocks(model, "mobilenet_v2")
    names = [layer.name for part in parts for layer in part]
    body = [layer.name for layer in model.layers[2:] if not layer.name.startswith(bb.HEAD)]
    assert names == body and len(parts) == 17  # the stem and block_1 .. block_16
    assert parts[-1][0].name == "block_16_expand" and parts[-1][-1].name == "out_relu"
    info = bb.set_phase(model, 1)
    assert {w.name.split("/")[0] for w in model.trainable_weights} == {"head_dense"}
    assert info == {"blocks": 17, "unfrozen": 0,
                    "trainable_params": sum(int(np.prod(w.shape))
                                            for w in model.get_layer("head_dense").weights)}  # fmt: skip
    bb.set_phase(model, 2, unfreeze=2)
    trained = {w.name.split("/")[0] for w in model.trainable_weights}
    top = {layer.name for part in parts[-2:] for layer in part if layer.trainable_weights}
    assert trained == top | {"head_dense"}
    assert all(not isinstance(model.get_layer(n), keras.layers.BatchNormalization) for n in trained)
    assert any(n.startswith("block_15_") for n in trained)
    assert not any(n.startswith("block_14_") for n in trained)


def _fabricate_imagenet(home, backbone="mobilenet", alpha=0.25, shape=SHAPE):
    """The file Keras would download for ``backbone``, written with a random backbone."""
    name, url = bb.imagenet_file(backbone, shape, alpha)
    source = bb._application(backbone, shape, alpha, None)
    rng = np.random.default_rng(7)
    for w in source.weights:
        if "moving_variance" in w.name:
            w.assign(rng.uniform(0.5, 1.5, size=w.shape).astype("float32"))
        else:
            w.assign(w.numpy() + rng.normal(0, 0.01, size=w.shape).astype("float32"))
    (home / "models").mkdir(parents=True, exist_ok=True)
    source.save_weights(str(home / "models" / name))
    return source, name, url


PRETRAINED = ["--set", "model.name=pretrained", "--set", "model.kwargs={backbone: mobilenet, "
              "alpha: 0.25, weights: imagenet}", "--set", "data.image_size=[32, 32]"]  # fmt: skip


def test_imagenet_weights_missing_offline_is_one_line_and_leaves_no_run(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # no network, whatever the machine
    monkeypatch.setenv("no_proxy", "")
    name, url = bb.imagenet_file("mobilenet", SHAPE, 0.25)
    result = CliRunner().invoke(cli, ["train", "-c", DIGITS, *PRETRAINED, "--out",
                                      str(tmp_path / "runs")])  # fmt: skip
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Error: model pretrained: ImageNet weights " + name)
    assert url in line and str(tmp_path / "keras" / "models") in line
    assert not (tmp_path / "runs").exists()
    result = CliRunner().invoke(cli, ["train", "-c", DIGITS, *PRETRAINED, "--set",
                                      f"model.kwargs.weights={tmp_path / 'none.h5'}"])  # fmt: skip
    assert result.exit_code == 2 and "none.h5: no such file" in result.output


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    """A digits run (32x32) of MobileNet v1 (alpha 0.25) from fabricated ImageNet weights:
    phase 1 (epoch 1) the head, phase 2 (epoch 2) the top 4 blocks; the backbone's weights
    snapshot after phase 1."""
    from liteconv.config import load_config
    from liteconv.pipeline.train import train

    home = tmp_path_factory.mktemp("keras")
    snapshots = {}

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots[epoch + 1] = {x.name: [w.copy() for w in x.get_weights()]
                                    for x in self.model.layers if x.weights}  # fmt: skip

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_HOME", str(home))
        source, _, _ = _fabricate_imagenet(home)
        loaded = create_model("pretrained", input_shape=(32, 32, 1), num_classes=10,
                              backbone="mobilenet", alpha=0.25)  # fmt: skip
        cfg = load_config(DIGITS, {"model.name": "pretrained", "model.kwargs": {
            "backbone": "mobilenet", "alpha": 0.25}, "data.image_size": [32, 32],
            "train.epochs": 2, "train.verbose": 0})  # fmt: skip
        run = train(cfg, out=tmp_path_factory.mktemp("runs"), callbacks=[Snapshot()],
                    echo=lambda *_: None)  # fmt: skip
    return {"run": run.path, "source": source, "loaded": loaded, "snapshots": snapshots}


def _backbone_layers(model):
    return [x for x in model.layers
            if x.weights and x.name != bb.PREPROCESS and not x.name.startswith(bb.HEAD)]  # fmt: skip


@pytest.mark.large
def test_imagenet_weights_load_exactly_and_the_two_phases_train_what_they_say(pretrained_run):
    source, loaded = pretrained_run["source"], pretrained_run["loaded"]
    body = _backbone_layers(loaded)
    assert [x.name for x in body] == [x.name for x in source.layers if x.weights]
    for mine, theirs in zip(body, [x for x in source.layers if x.weights]):
        for a, b in zip(mine.get_weights(), theirs.get_weights()):
            np.testing.assert_array_equal(a, b, err_msg=mine.name)
    after1, after2 = pretrained_run["snapshots"][1], pretrained_run["snapshots"][2]
    for layer in body:  # phase 1: the backbone (BatchNorm statistics too) did not move
        for a, b in zip(after1[layer.name], layer.get_weights()):
            np.testing.assert_array_equal(a, b, err_msg=layer.name)
    start = loaded.get_layer("head_dense").get_weights()[0]
    assert not np.allclose(after1["head_dense"][0], start)
    top = {x.name for part in bb.blocks(loaded, "mobilenet")[-4:] for x in part}
    for layer in body:
        moved = any(
            not np.array_equal(a, b) for a, b in zip(after1[layer.name], after2[layer.name])
        )
        should = layer.name in top and not isinstance(layer, keras.layers.BatchNormalization)
        assert moved == should, layer.name
    run = pretrained_run["run"]
    manifest = json.loads((run / "manifest.json").read_text())
    ft = manifest["fine_tune"]
    assert ft["backbone"] == "mobilenet" and ft["weights"] == "imagenet"
    assert ft["phase1"]["epochs"] == [1, 1] and ft["phase2"]["epochs"] == [2, 2]
    assert ft["phase2"]["unfrozen"] == 4 and ft["phase2"]["learning_rate"] == pytest.approx(3e-4)
    assert ft["phase1"]["trainable_params"] < ft["phase2"]["trainable_params"]
    history = (run / "history.csv").read_text().splitlines()
    phase = history[0].split(",").index("phase")
    assert [row.split(",")[phase] for row in history[1:]] == ["1", "2"]


@pytest.mark.large
def test_a_pretrained_run_exports_verifies_estimates_bundles_and_flattens(pretrained_run,
                                                                         tmp_path):  # fmt: skip
    import shutil
    import tarfile

    run = tmp_path / "runs" / "digits_quick" / pretrained_run["run"].name
    shutil.copytree(pretrained_run["run"], run)
    runner = CliRunner()
    result = runner.invoke(cli, ["export", str(run), "--mode", "fp32,int8,qat_int8"])
    assert result.exit_code == 0, result.output
    verify = json.loads((run / "export" / "verify.json").read_text())
    assert verify["fp32"]["agreement"] == 1.0 and verify["fp32"]["max_abs_diff"] < 1e-4
    assert verify["int8"]["agreement"] > 0.8 and verify["qat_int8"]["agreement"] > 0.8
    result = runner.invoke(cli, ["bench", str(run / "export" / "fp32.tflite"), "--threads", "1",
                                 "--runs", "2", "--emulate", "raspberry-pi-4"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "estimated" in result.output and "cortex-a72" in result.output
    result = runner.invoke(cli, ["bundle", str(run), "-o", str(tmp_path / "dist")])
    assert result.exit_code == 0, result.output
    bundle = next((tmp_path / "dist").glob("*.tar.gz"))
    with tarfile.open(bundle) as tar:
        assert any(n.endswith("fp32.tflite") for n in tar.getnames())
    result = runner.invoke(cli, ["flatten", str(run), "--epochs", "1", "--out",
                                 str(tmp_path / "child")])  # fmt: skip
    assert result.exit_code == 0, result.output
    child = next((tmp_path / "child").glob("*/*/manifest.json"))
    flat = json.loads(child.read_text())["flatten"]
    assert [row["layer"] for row in flat["layers"]] == ["conv1"]  # its one standard 3x3 conv
    assert flat["macs_after"] < flat["macs_before"]


@pytest.mark.parametrize("backbone", sorted(bb.QAT_REFUSED))
def test_qat_names_the_backbones_tfmot_refuses_and_tfmot_does_refuse_them(backbone):
    from liteconv.compat import tfmot
    from liteconv.device.errors import LiteconvError
    from liteconv.export.quantize import quantization_aware

    model = create_model("pretrained", input_shape=(32, 32, 3), num_classes=3, backbone=backbone,
                         weights=None, alpha=ALPHA.get(backbone, 1.0))  # fmt: skip
    with pytest.raises(Exception):  # noqa: B017 - the claim in QAT_REFUSED still holds
        tfmot().quantization.keras.quantize_model(model)
    with pytest.raises(LiteconvError, match=f"the {backbone} backbone .*--mode int8"):
        quantization_aware(model, None, epochs=0, learning_rate=1e-4)
    with pytest.raises(LiteconvError, match=f"the {backbone} backbone .*--mode int8"):
        quantization_aware(model, None, epochs=0, learning_rate=1e-4, per_channel=False)


def test_qat_of_the_efficientnet_b0_backbone_converts_to_integer_only_int8():
    """EfficientNetB0 was refused (its SE Multiply and in-model Rescaling / Normalization
    have no tfmot config); their outputs are now quantized, and the int8 file computes what
    the fake-quant model does."""
    from liteconv.config import DataConfig
    from liteconv.export.convert import float_ops, to_tflite
    from liteconv.export.quantize import quantization_aware
    from liteconv.export.verify import tflite_predict
    from liteconv.pipeline.data import load_dataset

    cfg = DataConfig(name="synthetic", synthetic_shape=[32, 32, 3], synthetic_samples=32,
                     synthetic_classes=3)  # fmt: skip
    splits = load_dataset(cfg, batch_size=16, seed=0)
    model = create_model("pretrained", input_shape=(32, 32, 3), num_classes=3,
                         backbone="efficientnet_b0", weights=None)  # fmt: skip
    qat = quantization_aware(model, splits, epochs=0, learning_rate=1e-4, verbose=0)
    kinds = {type(layer.layer).__name__ for layer in qat.layers if hasattr(layer, "layer")}
    assert {"Multiply", "Rescaling", "Normalization"} <= kinds
    x, _ = splits.arrays("train", limit=16)
    blob = to_tflite(qat, mode="int8", representative_data=x)
    assert float_ops(blob) == []
    assert np.abs(tflite_predict(blob, x) - qat.predict(x, verbose=0)).max() < 2 / 256


@pytest.mark.large
def test_a_pretrained_run_killed_in_phase_2_resumes_there(tmp_path):
    """SIGKILL at the end of epoch 2 (phase 2 of head 1 + 2 epochs), then the same command:
    phase 1 is not trained again, phase 2 goes on from its own backup to epoch 3."""
    import csv
    import os
    import subprocess
    import sys

    _fabricate_imagenet(tmp_path / "keras")
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras")}
    cmd = [sys.executable, "-c", "from liteconv.cli import main; main()", "train", "-c", DIGITS,
           *PRETRAINED, "--set", "train.epochs=3", "--set", "train.fine_tune.head_epochs=1",
           "--set", "train.verbose=0", "--out", str(tmp_path / "runs")]  # fmt: skip
    killed = subprocess.run(cmd, capture_output=True, text=True, timeout=600, start_new_session=True,
                            env={**env, "LITECONV_CRASH_AT": "epoch:2"})  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]
    (run,) = (tmp_path / "runs" / "digits_quick").glob("*")
    assert (run / "backup" / "phase2").is_dir()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming: {run}" in again.stdout and "phase 2: epochs 2-3" in again.stdout
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["metrics"]["epochs_this_session"] == 1
    with open(run / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["epoch"], r["phase"]) for r in rows] == [("0", "1"), ("1", "2"), ("2", "2")]
    assert not (run / "backup").exists()


def test_weights_from_a_keras_model_or_a_weights_file_load_into_the_backbone(tmp_path):
    source = bb._application("mobilenet", SHAPE, 0.25, None)
    rng = np.random.default_rng(3)
    for w in source.weights:
        w.assign(w.numpy() + rng.normal(0, 0.01, size=w.shape).astype("float32"))
    source.save(tmp_path / "backbone.keras")
    source.save_weights(str(tmp_path / "backbone.h5"))
    expected = [x for x in source.layers if x.weights]
    k3 = keras3()  # the same backbone saved by Keras 3 (TensorFlow >= 2.16's default Keras)
    twin = k3.applications.MobileNet(input_shape=SHAPE, alpha=0.25, include_top=False,
                                     weights=None)  # fmt: skip
    twin.set_weights(source.get_weights())
    twin.save(tmp_path / "backbone_keras3.keras")
    for path in (tmp_path / "backbone.keras", tmp_path / "backbone.h5",
                 tmp_path / "backbone_keras3.keras"):  # fmt: skip
        model = create_model("pretrained", input_shape=SHAPE, num_classes=3, backbone="mobilenet",
                             alpha=0.25, weights=str(path))  # fmt: skip
        for mine, theirs in zip(_backbone_layers(model), expected, strict=True):
            for a, b in zip(mine.get_weights(), theirs.get_weights()):
                np.testing.assert_array_equal(a, b, err_msg=f"{path.name}: {mine.name}")
    (tmp_path / "other.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="other.h5: does not load into mobilenet"):
        create_model("pretrained", input_shape=SHAPE, num_classes=3, backbone="mobilenet",
                     alpha=0.25, weights=str(tmp_path / "other.h5"))  # fmt: skip


def test_a_legacy_file_named_keras_is_refused_before_its_code_runs(tmp_path):
    """weights=X.keras that is an HDF5 file (a legacy save renamed): tf_keras's legacy
    loader ignores safe mode and runs a Lambda's code while rebuilding the model, so the
    file is refused before any loader sees it, as ``liteconv import`` refuses it; the
    Lambda's side effect never happens."""
    from liteconv.compat import keras

    marker = tmp_path / "code-ran"
    inputs = keras.Input(SHAPE)
    step = eval(f"lambda t: (__import__('pathlib').Path({str(marker)!r}).write_text('x'), t)[1]")
    model = keras.Model(inputs, keras.layers.Lambda(step)(inputs))
    marker.unlink()  # building the model above ran it once
    legacy = tmp_path / "legacy.h5"
    model.save(legacy)
    renamed = tmp_path / "backbone.keras"
    renamed.write_bytes(legacy.read_bytes())
    # the hazard is real: tf_keras loads the renamed file and runs the Lambda
    keras.models.load_model(renamed, compile=False, safe_mode=True)
    assert marker.is_file()
    marker.unlink()
    with pytest.raises(ValueError, match="an HDF5 file, not a Keras v3 .keras file"):
        create_model("pretrained", input_shape=SHAPE, num_classes=3, backbone="mobilenet",
                     alpha=0.25, weights=str(renamed))  # fmt: skip
    assert not marker.exists()
