"""`liteconv profile`: blocks as the converter fuses them, their costs, the latency table."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import copy_run
from liteconv.bench import profile as prof
from liteconv.cli import cli
from liteconv.compat import keras, tf
from liteconv.keras_layers import create_model, model_cost

L = keras.layers


def _branchy():
    """Residual add, TF ops, a dense+BN, a non-fusable activation, dropout: not a plain chain."""
    inputs = keras.Input((12, 12, 3))
    x = L.RandomFlip("horizontal")(inputs)  # the identity at inference: no block
    x = L.Conv2D(8, 3, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU(max_value=6.0)(x)
    y = L.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    y = L.BatchNormalization()(y)  # after a fused activation: not folded
    x = L.Add()([x, y])
    x = x * tf.nn.relu6(x + 3.0) / 6.0  # hard-swish as keras.applications' MobileNetV3 writes
    x = L.Activation("swish")(x)  # it: TFOpLambda layers, one of them taking two tensors
    x = L.Dropout(0.3)(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(6)(x)
    x = L.BatchNormalization()(x)
    return keras.Model(inputs, L.Dense(4, activation="softmax")(x))


@pytest.mark.parametrize(
    "build",
    [lambda: create_model("baseline_cnn", input_shape=(28, 28, 1), num_classes=10),
     lambda: create_model("flattened_cnn", input_shape=(28, 28, 1), num_classes=10),
     lambda: create_model("separable_cnn", input_shape=(28, 28, 1), num_classes=10),
     lambda: create_model("mobilenet_v1", input_shape=(64, 64, 3), num_classes=10, alpha=0.5),
     _branchy],
    ids=["baseline", "flattened", "separable", "mobilenet", "branchy"],
)  # fmt: skip
def test_blocks_cover_every_layer_and_all_macs(build):
    model = build()
    blocks = prof.model_blocks(model)
    assert sum(b.macs for b in blocks) == model_cost(model).total_macs
    seen = [layer.name for b in blocks for layer in b.layers]
    expected = [layer.name for layer in model.layers
                if not isinstance(layer, L.InputLayer) and not prof.is_identity(layer)]  # fmt: skip
    assert sorted(seen) == sorted(expected) and len(seen) == len(set(seen))


def test_fusion_follows_the_converter():
    kinds = [b.kind for b in prof.model_blocks(_branchy())]
    assert kinds == ["Conv2D 3x3+BN+ReLU", "DepthwiseConv2D 3x3", "BatchNormalization", "Add",
                     *["TFOpLambda"] * 4, "Activation", "GlobalAveragePooling2D", "Dense", "BatchNormalization",
                     "Dense"]  # fmt: skip
    flat = prof.model_blocks(create_model("flattened_cnn", input_shape=(28, 28, 1),
                                          num_classes=10))  # fmt: skip
    stage = [b.kind for b in flat if b.name.startswith("block2_s1")]
    assert stage == ["Conv2D 1x1", "DepthwiseConv2D 3x1", "DepthwiseConv2D 1x3"]
    # The Keras tutorial's SeparableConv2D + BN + ReLU: the converter folds both into the
    # pointwise CONV_2D (no MUL/ADD left), so they are one block, not three.
    inputs = keras.Input((12, 12, 3))
    x = L.Activation("relu")(L.BatchNormalization()(L.SeparableConv2D(8, 3)(inputs)))
    tutorial = keras.Model(inputs, L.Dense(4)(L.GlobalAveragePooling2D()(x)))
    assert [b.kind for b in prof.model_blocks(tutorial)] == [
        "SeparableConv2D 3x3+BN+Activation", "GlobalAveragePooling2D", "Dense"]  # fmt: skip
    from liteconv.device.graph import list_ops
    from liteconv.export.convert import to_tflite

    ops = [op.name for op in list_ops(to_tflite(tutorial))]
    assert ops == ["DEPTHWISE_CONV_2D", "CONV_2D", "MEAN", "FULLY_CONNECTED"]


def test_each_block_alone_computes_what_it_computes_inside_the_model():
    model = _branchy()
    images = np.random.default_rng(0).uniform(size=(4, 12, 12, 3)).astype("float32")
    blocks = prof.model_blocks(model)
    acts = prof.block_activations(model, blocks, images)
    outputs = keras.Model(model.inputs, [b.layers[-1].output for b in blocks]).predict(
        images, verbose=0
    )
    for block, inputs, expected in zip(blocks, acts, outputs):
        got = prof.block_model(block).predict(inputs if len(inputs) > 1 else inputs[0],
                                              batch_size=1, verbose=0)  # fmt: skip
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=block.name)
    assert len(model.layers[1]._inbound_nodes) == 1  # the original layers were not reused


def test_a_layer_the_model_applies_twice_is_a_block_per_call():
    """A shared Conv2D (one layer, two calls at two map sizes) runs twice in the .tflite:
    profiled once it missed half its time; each call's block computes what it does there."""
    inputs = keras.Input((12, 12, 3))
    x = L.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    shared = L.Conv2D(6, 3, padding="same", activation="relu", name="shared")
    a = shared(x)
    b = shared(L.MaxPooling2D()(a))
    model = keras.Model(inputs, L.Dense(3)(L.GlobalAveragePooling2D()(b)))
    blocks = prof.model_blocks(model)
    calls = [b for b in blocks if b.layers[0] is shared]
    assert [b.name for b in calls] == ["shared", "shared_call2"]
    assert [list(b.inputs[0].shape[1:]) for b in calls] == [[12, 12, 6], [6, 6, 6]]
    assert [b.macs for b in calls] == [12 * 12 * 9 * 6 * 6, 6 * 6 * 9 * 6 * 6]
    assert sum(b.macs for b in blocks) == model_cost(model).total_macs
    images = np.random.default_rng(2).uniform(size=(2, 12, 12, 3)).astype("float32")
    acts = prof.block_activations(model, calls, images)
    expected = keras.Model(model.inputs, [a, b]).predict(images, verbose=0)
    for block, inputs, want in zip(calls, acts, expected):
        got = prof.block_model(block).predict(inputs[0], batch_size=1, verbose=0)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=block.name)


def test_a_nested_backbone_is_profiled_layer_by_layer():
    """The Keras transfer-learning pattern (a functional backbone called as one layer, with
    training=False) was refused; its layers are now blocks of their own, as the converter
    inlines them, and each computes what it computes inside the whole model."""
    b_in = keras.Input((10, 10, 3))
    y = L.Conv2D(4, 3, padding="same", use_bias=False)(b_in)
    y = L.ReLU(6.0)(L.BatchNormalization()(y))
    y = L.DepthwiseConv2D(3, padding="same", activation="relu")(y)
    backbone = keras.Model(b_in, L.Add()([y, L.Conv2D(4, 1)(b_in)]), name="backbone")
    backbone.trainable = False
    inputs = keras.Input((10, 10, 3))
    x = backbone(L.Rescaling(2.0, -1.0)(inputs), training=False)
    model = keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling2D()(x)))
    blocks = prof.model_blocks(model)
    assert [b.kind for b in blocks] == ["Rescaling", "Conv2D 3x3+BN+ReLU", "DepthwiseConv2D 3x3",
                                        "Conv2D 1x1", "Add", "GlobalAveragePooling2D", "Dense"]  # fmt: skip
    assert sum(b.macs for b in blocks) == model_cost(model).total_macs
    images = np.random.default_rng(3).uniform(size=(2, 10, 10, 3)).astype("float32")
    acts = prof.block_activations(model, blocks, images)
    inner = keras.Model(backbone.inputs, [backbone.get_layer(index=i).output for i in (3, 4, 5, 6)])
    scaled = images * 2.0 - 1.0
    expected = [scaled, *inner.predict(scaled, verbose=0)]
    for block, got_in, want in zip(blocks[1:5], acts[1:5], expected[1:]):
        got = prof.block_model(block).predict(got_in[0] if len(got_in) == 1 else got_in,
                                              batch_size=1, verbose=0)  # fmt: skip
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=block.name)
    np.testing.assert_allclose(acts[1][0], scaled, rtol=1e-6, atol=1e-6)


def test_a_block_converts_to_the_same_bytes_every_time():
    """Estimates are cached by the .tflite's hash: a block (and the one-RELU model) built a
    second time, after other models have taken Keras' default names, converts to the very
    same bytes, so a second profile finds the first one's estimates (CI once saw 0.1066 ms
    against 0.1065 ms from an identical block re-emulated under a new name)."""
    model = _branchy()
    images = np.random.default_rng(0).uniform(size=(4, 12, 12, 3)).astype("float32")
    blocks = prof.model_blocks(model)
    acts = prof.block_activations(model, blocks, images)
    items = [(prof.block_model(b), a[0] if len(a) == 1 else a) for b, a in zip(blocks[:3], acts)]
    first = [prof._convert(m, "int8", d[:2]) for m, d in items] + [
        prof._convert(prof.call_model(), "fp32", None)]  # fmt: skip
    _branchy()  # more default names taken
    items = [(prof.block_model(b), a[0] if len(a) == 1 else a) for b, a in zip(blocks[:3], acts)]
    again = [prof._convert(m, "int8", d[:2]) for m, d in items] + [
        prof._convert(prof.call_model(), "fp32", None)]  # fmt: skip
    assert [hash(b) for b in again] == [hash(b) for b in first]


@pytest.mark.large
def test_second_profile_comes_from_the_latency_table(tmp_path, monkeypatch):
    model = create_model("separable_cnn", input_shape=(8, 8, 1), num_classes=3)
    images = np.random.default_rng(1).uniform(size=(16, 8, 8, 1)).astype("float32")
    kw = dict(calibration=images, modes=["fp32", "int8"], runs=3, warmup=0, cache=tmp_path)
    first = prof.profile_model(model, **kw)
    n = len(prof.model_blocks(model))
    timed = len(prof.timing_order(n))  # the blocks, the whole model, 2+ one-RELU models
    assert timed >= n + 3
    assert [first[m]["measured"] for m in ("fp32", "int8")] == [timed, timed]

    def no_measuring(*_a, **_k):
        raise AssertionError("measured although the latency table holds every figure")

    monkeypatch.setattr(prof, "benchmark", no_measuring)
    second = prof.profile_model(model, **kw)
    assert [second[m]["measured"] for m in ("fp32", "int8")] == [0, 0]
    for mode in ("fp32", "int8"):
        assert second[mode]["blocks"] == first[mode]["blocks"]
        r = second[mode]
        assert r["predicted_ms"] == pytest.approx(
            r["sum_ms"] - (n - 1) * r["invoke_overhead_ms"], abs=1e-5)  # fmt: skip
        warm, cold = r["invoke_overhead_range_ms"]
        assert r["invoke_overhead_ms"] == pytest.approx((warm + cold) / 2, abs=1e-6)
        low, high = r["predicted_range_ms"]
        assert low - 1e-6 <= r["predicted_ms"] <= high + 1e-6
        assert sum(b["share"] for b in r["blocks"]) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(AssertionError, match="measured although"):
        prof.profile_model(model, **kw, refresh=True)


@pytest.mark.large
def test_cli_profile_of_a_run_writes_table_json_and_plot(exported_run, tmp_path):
    run = copy_run(exported_run, tmp_path / "run")
    result = CliRunner().invoke(cli, ["profile", str(run), "--mode", "fp32", "--runs", "3",
                                      "--warmup", "0", "--cache", str(tmp_path / "cache")])  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads((run / "profile.json").read_text())
    blocks = doc["modes"]["fp32"]["blocks"]
    from liteconv.pipeline.evaluate import load_run_model
    from liteconv.pipeline.run import Run

    assert sum(b["macs"] for b in blocks) == model_cost(load_run_model(Run.open(run))).total_macs
    assert (run / "profile.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "prediction error" in (run / "profile.md").read_text()
    bad = CliRunner().invoke(cli, ["profile", str(run), "--mode", "fp64"])
    assert bad.exit_code == 2 and "--mode 'fp64'" in bad.output


@pytest.mark.large
def test_bundle_profile_on_the_device_side_merges_beside_the_hosts(exported_run, tmp_path):
    """`bundle --profile` carries the blocks; `bench.py --profile` times them with
    TensorFlow blocked; `report --bench` puts the board's blocks beside the host's."""
    import os
    import subprocess
    import sys

    from liteconv.deploy.bundle import make_bundle, unpack
    from liteconv.pipeline.evaluate import float32_run_model
    from liteconv.pipeline.run import Run
    from test_device import BLOCK_TF

    run = copy_run(exported_run, tmp_path / "run")
    model = float32_run_model(Run.open(run))
    names = [b.name for b in prof.model_blocks(model)]
    bundle = make_bundle(run, out=tmp_path / "dist", samples=4, profile=True,
                         profile_modes=["fp32", "int8"])  # fmt: skip
    folder = unpack(bundle, tmp_path / "x")
    assert len(list((folder / "profile" / "int8").glob("*.tflite"))) == len(names) + 2
    code = BLOCK_TF + (
        "import runpy; sys.argv = ['liteconv.device', '--profile', '--runs', '5', '--warmup',"
        " '1', '--threads', '1', '--json', 'pi.json']\n"
        "runpy.run_module('liteconv.device', run_name='__main__')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=folder, env={**os.environ, "PYTHONPATH": str(folder)})  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "prediction error" in proc.stdout
    doc = json.loads((folder / "pi.json").read_text())
    assert [p["mode"] for p in doc["profile"]] == ["fp32", "int8"]
    for p in doc["profile"]:
        assert [b["block"] for b in p["blocks"]] == names
        assert sum(b["macs"] for b in p["blocks"]) == model_cost(model).total_macs
        assert p["whole_ms"] > 0 and all(b["p50_ms"] > 0 for b in p["blocks"])
        assert p["predicted_ms"] == pytest.approx(
            p["sum_ms"] - (len(names) - 1) * p["invoke_overhead_ms"], abs=1e-5)  # fmt: skip
    # a bundle without block models: one line naming the fix, before any benchmark
    plain = unpack(make_bundle(run, out=tmp_path / "plain", samples=4), tmp_path / "y")
    bad = subprocess.run([sys.executable, "bench.py", "--profile"], cwd=plain,
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "liteconv bundle RUN_DIR --profile" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1

    # the host's profile, then the report with the board's document
    runner = CliRunner()
    host = runner.invoke(cli, ["profile", str(run), "--runs", "5", "--warmup", "1",
                               "--cache", str(tmp_path / "cache")])  # fmt: skip
    assert host.exit_code == 0, host.output
    (folder / "pi.json").write_text(json.dumps({**doc, "where": "pi"}))
    out = tmp_path / "report"
    result = runner.invoke(cli, ["report", str(run), "--bench", str(folder / "pi.json"),
                                 "--runs", "3", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    sections = json.loads((tmp_path / "report_profile.json").read_text())
    host_doc = json.loads((run / "profile.json").read_text())["modes"]
    assert [(s["mode"], s["columns"]) for s in sections] == [("fp32", ["host", "pi"]),
                                                            ("int8", ["host", "pi"])]  # fmt: skip
    for s in sections:
        pi = {b["block"]: b["p50_ms"] for b in doc["profile"][0 if s["mode"] == "fp32" else 1]
              ["blocks"]}  # fmt: skip
        hosts = {b["block"]: b["p50_ms"] for b in host_doc[s["mode"]]["blocks"]}
        assert [r["block"] for r in s["rows"]] == names
        assert all(r["host"] == hosts[r["block"]] and r["pi"] == pi[r["block"]]
                   for r in s["rows"])  # fmt: skip
    md = (tmp_path / "report_profile.md").read_text()
    assert "pi ÷ host" in md and "host ms" in md
    assert (tmp_path / "report_profile.png").read_bytes()[:4] == b"\x89PNG"
    # a board's profile with a negative block time is refused, naming the key
    broken = json.loads((folder / "pi.json").read_text())
    broken["profile"][0]["blocks"][0]["p50_ms"] = -1
    (folder / "bad.json").write_text(json.dumps(broken))
    bad = runner.invoke(cli, ["report", str(run), "--bench", str(folder / "bad.json")])
    assert bad.exit_code == 2 and "profile[0].blocks[0].p50_ms" in bad.output
