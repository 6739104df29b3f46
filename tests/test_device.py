"""The TensorFlow-free device package: harness, runtime, targets, CLI, core pinning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from liteconv.cli import cli
from liteconv.compat import keras
from liteconv.device import harness
from liteconv.device.errors import LiteconvError
from liteconv.device.harness import benchmark, pin_cores
from liteconv.device.targets import load_target
from liteconv.export.convert import to_tflite

RNG = np.random.default_rng(0)
SRC = Path(harness.__file__).resolve().parents[2]


def _small_model():
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    model = _small_model()
    data = RNG.uniform(size=(16, 12, 12, 3)).astype("float32")
    files = {
        "fp32": to_tflite(model),
        "int8": to_tflite(model, mode="int8", representative_data=data, io_type="int8"),
        "uint8": to_tflite(model, mode="int8", representative_data=data, io_type="uint8"),
    }
    a, b = keras.Input((6,), name="a"), keras.Input((3, 2), name="b")
    merged = keras.layers.Concatenate()([a, keras.layers.Flatten()(b)])
    two = keras.Model([a, b], [keras.layers.Dense(2)(merged), keras.layers.Dense(3)(merged)])
    files["multi"] = to_tflite(two)
    paths = {}
    for name, blob in files.items():
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(blob)
    return paths


def test_bench_measures_every_dtype_and_multi_io_interleaved(models):
    records = benchmark(list(models.values()), threads=[1, 2], runs=20, warmup=2)
    assert [(r["model"], r["threads"]) for r in records] == [
        (name, t) for name in models for t in (1, 2)
    ]
    for r in records:
        assert r["runs"] == 20 and r["p50_ms"] > 0
        assert r["throughput_per_s"] == pytest.approx(1000 / r["mean_ms"], rel=0.01)
        assert r["size_bytes"] == Path(r["file"]).stat().st_size
        assert r["load_ms"] > 0 and r["first_inference_ms"] > 0 and r["cv"] >= 0


def test_statistics_match_numpy_on_known_samples(tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"x" * 10)
    samples = [float(v) for v in RNG.gamma(2.0, 0.5, size=101)]
    case = harness._Case(path, 1, "litert", True, samples=samples, load_ms=1.0, first_ms=2.0)
    rec = harness._stats("m", case, {"macs": 2_000_000}, "litert", "2.3.0")
    ref = np.asarray(samples)
    for q in (50, 90, 99):
        assert rec[f"p{q}_ms"] == pytest.approx(np.percentile(ref, q), abs=1e-6)
    assert rec["mean_ms"] == pytest.approx(ref.mean(), abs=1e-6)
    assert rec["cv"] == pytest.approx(ref.std() / ref.mean(), abs=1e-4)
    assert rec["gmacs_per_s"] == pytest.approx(2e6 / (np.median(ref) / 1e3) / 1e9, rel=1e-3)
    assert rec["runs"] == 101 and rec["size_bytes"] == 10


def test_bench_uses_sidecar_macs_for_gmacs(models, tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(models["fp32"].read_bytes())
    path.with_suffix(".json").write_text(json.dumps({"macs": 1_000_000, "mode": "fp32"}))
    (rec,) = benchmark([path], runs=5, warmup=1)
    assert rec["mode"] == "fp32"
    assert rec["gmacs_per_s"] == pytest.approx(1e6 / (rec["p50_ms"] / 1000) / 1e9, rel=0.01)
    path.with_suffix(".json").write_text("[1, 2]")  # a sidecar that is not a mapping:
    (rec,) = benchmark([path], runs=2, warmup=0)  # the file's own mode and MACs
    macs = 10 * 10 * 8 * 3 * 3 * 3 + 8 * 4  # _small_model's valid 3x3 conv and dense
    assert rec["mode"] == "fp32"
    assert rec["gmacs_per_s"] == pytest.approx(macs / (rec["p50_ms"] / 1000) / 1e9, rel=0.01)


def test_a_model_without_sidecar_shows_the_mode_its_converter_made():
    """Every export mode of the converter, read back from the file's compute operators
    (QAT int8 reads as int8: the file alone cannot tell); MACs as the sidecar would say."""
    from liteconv.device.graph import model_facts, precision

    inputs = keras.Input((12, 12, 3))  # weights over the converter's 1024 elements, under
    x = keras.layers.Conv2D(16, 3, activation="relu")(inputs)  # which dynamic stays fp32
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(16, 3)(x))
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    macs = 10 * 10 * 16 * 27 + 8 * 8 * 16 * 144 + 16 * 4
    data = RNG.uniform(size=(8, 12, 12, 3)).astype("float32")
    for mode in ("fp32", "fp16", "dynamic", "int8", "int16x8"):
        blob = to_tflite(model, mode=mode, representative_data=data, num_calibration=8)
        facts = model_facts(blob)
        assert facts == {"mode": mode, "macs": macs}, (mode, facts)
    assert precision([]) is None


def test_macs_of_transposed_convolutions_matmuls_and_lstms_by_hand():
    """The operators beyond convolutions and dense layers, each against its own count."""
    from liteconv.device.graph import model_macs

    image = keras.Input((8, 8, 4))
    up = keras.layers.Conv2DTranspose(6, 3, strides=2, padding="same")(image)  # 8x8x4 in
    tokens = keras.Input((5, 16))
    scores = keras.layers.Dot(axes=(2, 2))([tokens, tokens])  # (5, 16) x (16, 5): 5*5*16
    seq = keras.Input((7, 3), batch_size=1)
    lstm = keras.layers.LSTM(10)(seq)  # 7 steps x 4 gates x 10 units x (3 + 10)
    cases = {
        "transpose": (keras.Model(image, up), 8 * 8 * 4 * 3 * 3 * 6),
        "matmul": (keras.Model(tokens, scores), 5 * 5 * 16),
        "lstm": (keras.Model(seq, lstm), 7 * 4 * 10 * (3 + 10)),
    }
    for name, (model, expected) in cases.items():
        assert model_macs(to_tflite(model)) == expected, name


def test_delegation_warning_once_per_model_with_a_hint_that_fits_the_runtime():
    record = {"model": "m", "xnnpack": True, "nodes": 3, "delegated_nodes": 1,
              "runtime": "litert", "runtime_version": "2.3.0"}  # fmt: skip
    lines = harness.delegation_warnings([{**record, "threads": 1}, {**record, "threads": 4}])
    assert len(lines) == 1 and "1 of 3" in lines[0] and "try ai-edge-litert" not in lines[0]
    (old,) = harness.delegation_warnings([{**record, "runtime": "tflite_runtime"}], "x86_64")
    assert old.endswith("try ai-edge-litert")
    # on a 32-bit Pi: tflite-runtime's armv7l wheel has no XNNPACK, ai-edge-litert no wheel
    (pi,) = harness.delegation_warnings([{**record, "runtime": "tflite_runtime"}], "armv7l")
    assert "built without XNNPACK" in pi and not pi.endswith("try ai-edge-litert")
    assert harness.delegation_warnings([{**record, "delegated_nodes": 2}]) == []


BLOCK_TF = textwrap.dedent("""
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "tf_keras", "keras"):
                raise ImportError(f"blocked: {name}")
    sys.meta_path.insert(0, Block())
""")


def test_every_device_module_imports_and_checks_with_tensorflow_blocked(exported_run, tmp_path):
    from liteconv.deploy.bundle import make_bundle

    modules = sorted(p.stem for p in (SRC / "liteconv" / "device").glob("*.py"))
    code = (
        BLOCK_TF
        + "\n".join(
            f"import liteconv.device.{m}" if m != "__init__" else "import liteconv.device"
            for m in modules
        )
        + "\nassert 'tensorflow' not in sys.modules\nprint('imported', len(sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    # the device CLI's --check runs there too, on an unpacked bundle
    import tarfile

    bundle = make_bundle(exported_run, out=tmp_path, samples=4)
    with tarfile.open(bundle) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    folder = next((tmp_path / "x").iterdir())
    check = BLOCK_TF + (
        "import runpy; sys.argv = ['liteconv.device', '--check']\n"
        "runpy.run_module('liteconv.device', run_name='__main__')"
    )
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          cwd=folder, env={**os.environ, "PYTHONPATH": str(folder)})  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASS") == 2


def test_pin_cores_restores_the_affinity():
    before = os.sched_getaffinity(0)
    first = min(before)
    with pin_cores([first]) as used:
        assert used == [first] and os.sched_getaffinity(0) == {first}
    assert os.sched_getaffinity(0) == before
    with pytest.raises(RuntimeError), pin_cores([first]):
        raise RuntimeError("restored on errors too")
    assert os.sched_getaffinity(0) == before
    with pin_cores(None) as used:
        assert used is None and os.sched_getaffinity(0) == before


def _flex_model() -> bytes:
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 3, 3], tf.float32)])
    def invert(x):
        return tf.linalg.inv(x + 4.0 * tf.eye(3))

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [invert.get_concrete_function()], invert
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                           tf.lite.OpsSet.SELECT_TF_OPS]  # fmt: skip
    return converter.convert()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "0 bytes, too short"),
        (b"hello world, not a model", "not a TFLite model"),
        ("truncated", "cannot load it"),
        ("flex", "uses TensorFlow (Select-TF / Flex) op(s) MatrixInverse"),
    ],
)
def test_bad_model_files_are_one_line_errors(models, tmp_path, content, message):
    path = tmp_path / "bad.tflite"
    if content == "flex":  # a Select-TF op: LiteRT (as on a board) has no kernel for it
        path.write_bytes(_flex_model())
    elif content == "truncated":
        blob = models["fp32"].read_bytes()
        path.write_bytes(blob[: len(blob) // 2])
    elif content is not None:
        path.write_bytes(content)
    result = CliRunner().invoke(cli, ["bench", str(path), "--runs", "2"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    # The device CLI, in its own process: exit 2 with one line, never a crash.
    proc = subprocess.run(
        [sys.executable, "-m", "liteconv.device", str(path), "--runs", "2"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_flex_ops_are_named_by_every_command_that_loads_a_model(tmp_path):
    from liteconv.export.convert import custom_ops

    path = tmp_path / "flex.tflite"
    path.write_bytes(_flex_model())
    # read from the flatbuffer: no runtime can load this model to list its operators
    assert custom_ops(path.read_bytes()) == ["FlexMatrixInverse"]
    assert custom_ops(Path(__file__).read_bytes()) == []  # not a model: nothing to name
    result = CliRunner().invoke(cli, ["mcu", str(path), "--board", "pico-2"])
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"Error: {path}: uses TensorFlow (Select-TF / Flex) op(s) MatrixInverse")


def test_integer_inputs_that_are_ids_get_valid_ids(models, tmp_path):
    """A text model's int32 token ids feed an embedding (a GATHER of 100 rows): random
    values from -128 on failed the runtime ('gather index out of bounds') in bench and
    mcu. Ids are drawn below the table's rows; quantized image inputs keep their range."""
    import tensorflow as tf

    from liteconv.device.runtime import load_interpreter
    from liteconv.device.tensors import INDEX_BOUND, random_inputs

    table = tf.constant(RNG.normal(size=(100, 8)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([1, 20], tf.int32),
                                  tf.TensorSpec([1, 4], tf.int32)])  # fmt: skip
    def text(tokens, counts):  # counts index no table: small ids
        pooled = tf.reduce_mean(tf.gather(table, tokens), axis=1)
        return pooled + tf.reduce_sum(tf.cast(counts, tf.float32))

    path = tmp_path / "text.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions(
        [text.get_concrete_function()], text).convert())  # fmt: skip
    interp = load_interpreter(path)
    for seed in range(3):
        for detail, value in zip(interp.get_input_details(), random_inputs(interp, seed)):
            bound = 100 if detail["shape"][1] == 20 else INDEX_BOUND
            assert value.min() >= 0 and value.max() < bound, (detail["name"], value.max())
    result = CliRunner().invoke(cli, ["bench", str(path), "--runs", "3"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["mcu", str(path), "--board", "pico-2"])
    assert result.exit_code == 0 and "| ok " in result.output, result.output
    int8 = load_interpreter(models["int8"])  # a quantized image input: its whole range
    (value,) = random_inputs(int8, 0)
    assert value.min() < 0 < value.max()


def test_cli_bench_with_target_writes_json(models, tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        cli, ["bench", str(models["fp32"]), str(models["int8"]), "--target",
              "single-core-embedded", "--runs", "5", "--json", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["target"]["name"] == "single-core-embedded"
    # single-core-embedded measures XNNPACK on and off, one thread.
    assert {(r["model"], r["xnnpack"]) for r in doc["records"]} == {
        (m, x) for m in ("fp32", "int8") for x in (True, False)
    }
    assert doc["machine"]["cores_usable"] >= 1


def test_cli_bench_takes_its_defaults_from_the_config(models, tmp_path):
    cfg = tmp_path / "bench.yaml"
    cfg.write_text("bench:\n  threads: [2]\n  runs: 3\n  xnnpack: false\n")
    out = tmp_path / "b.json"
    result = CliRunner().invoke(cli, ["bench", str(models["fp32"]), "-c", str(cfg),
                                      "--json", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    (rec,) = json.loads(out.read_text())["records"]
    assert (rec["threads"], rec["runs"], rec["xnnpack"]) == (2, 3, False)
    # a flag overrides the section, and is checked by the same config code
    result = CliRunner().invoke(cli, ["bench", str(models["fp32"]), "-c", str(cfg),
                                      "--runs", "0"])  # fmt: skip
    assert result.exit_code == 2 and "bench.runs: 0 is out of range" in result.output


def test_targets_load_and_bad_target_is_explained(tmp_path):
    assert load_target("raspberry-pi-4").threads == [1, 2, 4]
    with pytest.raises(LiteconvError, match="unknown target; known: android-big-cores"):
        load_target("toaster")
    bad = tmp_path / "t.yaml"
    bad.write_text("threads: [0]\n")
    with pytest.raises(LiteconvError, match="threads: expected positive"):
        load_target(str(bad))
    bad.write_text("treads: [1]\n")
    with pytest.raises(LiteconvError, match="unknown key 'treads'"):
        load_target(str(bad))
    bad.write_text("runtime: fast\n")
    with pytest.raises(LiteconvError, match="runtime: expected one of 'auto'"):
        load_target(str(bad))


def test_delegation_counts_the_operators_xnnpack_took(models):
    from liteconv.device.graph import delegation, list_ops
    from liteconv.device.runtime import load_interpreter

    ops = {name: [op.name for op in list_ops(models[name].read_bytes())] for name in models}
    for name in models:  # no delegate: none taken, every operator counted
        assert delegation(load_interpreter(models[name], xnnpack=False)) == (0, len(ops[name]))
    # LiteRT 2.x's XNNPACK runs the whole float graph and all of the int8 one but its
    # softmax (no int8 softmax kernel in XNNPACK): it stays on the builtin kernel.
    assert delegation(load_interpreter(models["fp32"])) == (len(ops["fp32"]),) * 2
    int8 = ops["int8"]
    assert "SOFTMAX" in int8
    assert delegation(load_interpreter(models["int8"])) == (len(int8) - 1, len(int8))
    records = benchmark([models["int8"]], runs=3, warmup=0)
    assert (records[0]["delegated_nodes"], records[0]["nodes"]) == (len(int8) - 1, len(int8))
