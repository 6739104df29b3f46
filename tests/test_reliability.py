"""Bad input: malformed models that crash the runtime, files read back, configs, leftovers.

Every case must end in a one-line error (exit 2) — never a traceback, never a signal death.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import DIGITS, REPO, copy_run
from liteconv.cli import cli
from liteconv.compat import keras
from liteconv.export.convert import to_tflite


def _one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert fragment in result.output, result.output


def _drop_optional_bias(blob: bytes, opcode: int) -> bytes:
    """The same model with the bias input of every ``opcode`` operator removed
    (structurally valid: the flatbuffer verifier accepts it)."""
    from tensorflow.lite.tools import flatbuffer_utils as fu

    model = fu.read_model_from_bytearray(bytearray(blob))
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) == opcode:
            op.inputs = op.inputs[:2]
    return bytes(fu.convert_object_to_bytearray(model))


DEPTHWISE_CONV_2D = 4


@pytest.fixture(scope="module")
def crashing_model(tmp_path_factory):
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.DepthwiseConv2D(3, padding="same")(inputs)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    path = tmp_path_factory.mktemp("crash") / "crash.tflite"
    path.write_bytes(_drop_optional_bias(to_tflite(model), DEPTHWISE_CONV_2D))
    return path


def test_a_model_that_segfaults_the_runtime_is_a_one_line_error(crashing_model, tmp_path):
    # in a plain process the runtime really dies of it (the reason for the containment)
    code = ("from ai_edge_litert.interpreter import Interpreter\n"
            f"i = Interpreter(model_path={str(crashing_model)!r}); i.allocate_tensors(); i.invoke()")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode < 0
    result = CliRunner().invoke(cli, ["bench", str(crashing_model), "--runs", "2"])
    assert result.exit_code == 2 and "crashed (SIGSEGV)" in result.output, result.output
    assert "operator 0 (DEPTHWISE_CONV_2D), which lacks a required input" in result.output
    proc = subprocess.run([sys.executable, "-m", "liteconv.device", str(crashing_model)],
                          capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and "crashed (SIGSEGV)" in proc.stderr


def _chain():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(x))


def test_a_model_cut_after_each_operator_computes_that_operators_output():
    """flatbuf.truncated against the whole model's own intermediate tensors."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from liteconv.device.flatbuf import operator_count, truncated

    plain = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES  # every operator a node
    blob = to_tflite(_chain())
    full = Interpreter(model_content=blob, experimental_preserve_all_tensors=True,
                       experimental_op_resolver_type=plain)  # fmt: skip
    full.allocate_tensors()
    x = np.random.default_rng(0).uniform(size=(1, 8, 8, 3)).astype("float32")
    full.set_tensor(full.get_input_details()[0]["index"], x)
    full.invoke()
    ops = full._get_ops_details()
    assert operator_count(blob) == len(ops) >= 4
    for k, op in enumerate(ops):
        part = Interpreter(model_content=truncated(blob, k), experimental_op_resolver_type=plain)
        part.allocate_tensors()
        part.set_tensor(part.get_input_details()[0]["index"], x)
        part.invoke()
        got = part.get_tensor(part.get_output_details()[0]["index"])
        np.testing.assert_allclose(got, full.get_tensor(op["outputs"][0]), rtol=1e-6,
                                   err_msg=f"operator {k} ({op['op_name']})")  # fmt: skip


def test_a_crash_is_pinned_to_its_operator_without_the_input_rule(monkeypatch, tmp_path):
    """A crash the missing-input rule does not explain is located by bisection."""
    from liteconv.device import probe

    blob = _drop_optional_bias(to_tflite(_chain()), DEPTHWISE_CONV_2D)
    assert probe.crashing_operator(blob, "chain.tflite") == 1  # CONV_2D, DEPTHWISE_CONV_2D, ...
    assert probe.crashing_operator(to_tflite(_chain()), "fine.tflite") is None
    real = probe._run_child

    def no_suspects(*args):  # the child's input rule names no operator now
        proc = real(*args)
        proc.stdout = "".join(ln for ln in proc.stdout.splitlines(True)
                              if not ln.startswith("suspect "))  # fmt: skip
        return proc

    monkeypatch.setattr(probe, "_run_child", no_suspects)
    with pytest.raises(probe.LiteconvError) as err:
        probe.probe_model(blob, "chain.tflite")
    assert "crashed (SIGSEGV) while running operator 1 (DEPTHWISE_CONV_2D) — " in str(err.value)


@pytest.fixture
def restore_env(monkeypatch):
    """The CLI's --no-verify-hashes/--debug set environment variables: undo them after."""
    for name in ("LITECONV_NO_VERIFY_HASHES", "LITECONV_DEBUG"):
        monkeypatch.setenv(name, "0")


def test_a_crashing_export_stops_verify_bundle_and_report(
    crashing_model, exported_run, tmp_path, restore_env
):
    run = copy_run(exported_run, tmp_path)
    (run / "export" / "fp32.tflite").write_bytes(crashing_model.read_bytes())
    runner = CliRunner()
    # the manifest's SHA-256 catches the swap first ...
    _one_line_error(
        runner.invoke(cli, ["verify", str(run)]), "differs from the one in the manifest"
    )
    # ... and with the check off, the containment does
    for args in (["verify", str(run)], ["bundle", str(run), "-o", str(tmp_path / "d")],
                 ["report", str(run), "--out", str(tmp_path / "r"), "--runs", "2"]):  # fmt: skip
        result = runner.invoke(cli, ["--no-verify-hashes", *args])
        assert result.exit_code == 2 and "crashed (SIGSEGV)" in result.output, (args, result.output)
    assert not (tmp_path / "d").exists() or not list((tmp_path / "d").glob("*.tar.gz"))


def test_hdf5_model_in_a_run_is_refused_before_loading(run_copy, restore_env):
    h5 = b"\x89HDF\r\n\x1a\n" + b"\0" * 64
    (run_copy / "model.keras").write_bytes(h5)
    result = CliRunner().invoke(cli, ["--no-verify-hashes", "evaluate", str(run_copy)])
    _one_line_error(result, "an HDF5 file, not a Keras v3 .keras file")


@pytest.mark.parametrize(
    ("manifest", "fragment"),
    [("[]", "expected a mapping"), ("{}", "class_names"), ('{"class_names": ["a"]}', "class_names"),
     ("[" * 100000, "nested too deeply"), ('{"a": NaN}', "not a valid manifest"),
     ("\xff\xfe", "not UTF-8")],
)  # fmt: skip
def test_corrupt_manifests_are_one_line_errors(run_copy, manifest, fragment):
    (run_copy / "manifest.json").write_bytes(manifest.encode("latin-1"))
    for command in ("export", "verify", "evaluate", "bundle"):
        _one_line_error(CliRunner().invoke(cli, [command, str(run_copy)]), fragment)


@pytest.mark.parametrize(
    ("document", "fragment"),
    [("[]", "expected a benchmark document"), ('"fast"', "expected a benchmark document"),
     ('{"records": [{"model": "m", "threads": 1}]}', "p50_ms"),
     ('{"records": [{"model": "m", "threads": 1, "p50_ms": NaN}]}', "not a valid benchmark JSON"),
     ('{"records": [{"model": "m", "threads": 1, "p50_ms": Infinity}]}', "not a valid"),
     ('{"records": [{"model": "m", "threads": 1, "p50_ms": "fast"}]}', "p50_ms"),
     ('{"records": [{"model": "m", "threads": 1, "p50_ms": -5}]}', "p50_ms"),
     ('{"records": {}}', "records: expected a list"), ("[" * 100000, "nested too deeply")],
)  # fmt: skip
def test_bad_device_results_are_refused_by_report(exported_run, tmp_path, document, fragment):
    bad = tmp_path / "pi.json"
    bad.write_text(document)
    result = CliRunner().invoke(cli, ["report", str(exported_run), "--bench", str(bad),
                                      "--out", str(tmp_path / "r"), "--runs", "2"])  # fmt: skip
    _one_line_error(result, fragment)
    assert not (tmp_path / "r.json").exists()


def test_report_json_is_strict_json(exported_run, tmp_path):
    result = CliRunner().invoke(cli, ["report", str(exported_run), "--out", str(tmp_path / "r"),
                                      "--runs", "2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    json.loads((tmp_path / "r.json").read_text(), parse_constant=lambda c: pytest.fail(c))


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(9)
)


@pytest.mark.parametrize(
    ("text", "overrides", "fragment"),
    [
        (b"train: {epochs: 1}\n# \xff\xfe\n", [], "not UTF-8"),
        (ALIAS_BOMB.encode(), [], "YAML aliases"),
        (("x: " + "[" * 5000 + "]" * 5000 + "\n").encode(), [], "nested too deeply"),
        (b"train: {seed: -1}\n", [], "train.seed: -1 is out of range"),
        (b"train: {batch_size: 1e20}\n", [], "train.batch_size: expected an integer"),
        (b"data: {validation_split: .nan}\n", [], "expected a finite number"),
        (b"train: {learning_rate: .nan}\n", [], "expected a finite number"),
        (b"data: {channels: 2}\n", [], "data.channels: expected one of 1, 3"),
        (b"model: {name: baseline_cnn, kwargs: {width: abc}}\n", [], "model.kwargs.width"),
        (b"experiment: ../../escaped\n", [], "not a plain name"),
        (b"experiment: ''\n", [], "not a plain name"),
        (b"train: {epochs: 1}\n", ["--set", "experiment=a/b"], "not a plain name"),
    ],
)
def test_bad_configs_are_refused_at_load(tmp_path, text, overrides, fragment):
    path = tmp_path / "bad.yaml"
    path.write_bytes(text)
    for command in ("config", "train"):
        result = CliRunner().invoke(cli, [command, "-c", str(path), *overrides,
                                          "--out" if command == "train" else "--set",
                                          str(tmp_path / "runs") if command == "train"
                                          else "train.verbose=0"])  # fmt: skip
        _one_line_error(result, fragment)
    assert not (tmp_path / "runs").exists()


def test_symlink_loop_and_no_training_data(tmp_path):
    loop = tmp_path / "loop.yaml"
    os.symlink(loop, loop)
    _one_line_error(CliRunner().invoke(cli, ["config", "-c", str(loop)]), "loop.yaml")
    result = CliRunner().invoke(cli, ["train", "-c", DIGITS, "--set", "data.validation_split=0.9999",
                                      "--out", str(tmp_path / "runs")])  # fmt: skip
    _one_line_error(result, "leaves no training data")
    assert not (tmp_path / "runs").exists()  # the run folder is made only once data is built


def test_a_loss_that_becomes_nan_fails_the_run(tmp_path):
    result = CliRunner().invoke(cli, ["train", "-c", DIGITS, "--out", str(tmp_path),
                                      "--set", "train.learning_rate=1e30", "--set",
                                      "train.optimizer=sgd", "--set", "train.verbose=0",
                                      "--set", "model.name=baseline_cnn", "--set",
                                      "train.epochs=2"])  # fmt: skip
    assert result.exit_code == 2 and "training diverged" in result.output, result.output
    (manifest,) = tmp_path.glob("*/*/manifest.json")
    data = json.loads(manifest.read_text())
    assert data["status"] == "failed" and "diverged" in data["error"]


def test_stale_temporaries_are_removed_when_a_command_opens_the_run(run_copy):
    stale = [run_copy / ".model.1234.tmp.keras", run_copy / "export" / ".fp32.tflite.ab12.tmp"]
    stale[1].parent.mkdir(exist_ok=True)
    for path in stale:
        path.write_bytes(b"partial")
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    fresh = run_copy / ".config.yaml.x.tmp"  # a writer may still be busy with this one
    fresh.write_bytes(b"now")
    from liteconv.pipeline.run import Run

    Run.open(run_copy)
    assert not any(p.exists() for p in stale) and fresh.exists()


def test_the_injected_crash_point_dies_inside_the_chosen_write_and_nowhere_else(tmp_path):
    """LITECONV_CRASH_AT=write:2:5 — the second atomic write leaves exactly 5 bytes in its
    temporary and the process dies by SIGKILL; the first file is whole, the third never
    written, and a child process does not inherit the variable."""
    script = (
        "import os, subprocess, sys\n"
        "from liteconv.device.files import atomic_write_bytes\n"
        "child = subprocess.run([sys.executable, '-c', "
        "'import os; print(os.environ.get(\"LITECONV_CRASH_AT\"))'], capture_output=True, text=True)\n"
        "print('child', child.stdout.strip(), flush=True)\n"
        "for name in ('a.bin', 'b.bin', 'c.bin'):\n"
        "    atomic_write_bytes(name, bytes(range(100)))\n"
    )  # fmt: skip
    env = {**os.environ, "LITECONV_CRASH_AT": "write:2:5"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, start_new_session=True)  # fmt: skip
    assert proc.returncode == -9, proc.stderr
    assert "child None" in proc.stdout
    assert f"killed at write 2: .b.bin.{proc.stderr.split('.b.bin.')[1].split()[0]}" in proc.stderr
    assert (tmp_path / "a.bin").read_bytes() == bytes(range(100))
    assert not (tmp_path / "b.bin").exists() and not (tmp_path / "c.bin").exists()
    (left,) = tmp_path.glob(".b.bin.*.tmp")
    assert left.read_bytes() == bytes(range(5))
    from liteconv.device import files
    from liteconv.device.errors import LiteconvError

    files._CRASH_AT = "sometimes"  # a malformed value: a one-line error at the first write
    try:
        with pytest.raises(LiteconvError, match="LITECONV_CRASH_AT='sometimes': expected write:N"):
            files.atomic_write_bytes(tmp_path / "d.bin", b"x")
    finally:
        files._CRASH_AT = ""
        files._PASSED.clear()
    assert not (tmp_path / "d.bin").exists()


_DET = ["--set", "train.deterministic=true", "--set", "train.verbose=0"]


def _kill_cases(make_cmd, tmp_path_factory, name):
    """The final file names of every write of one clean run of ``make_cmd(folder)``."""
    from kill_points import writes

    cmd, _ = make_cmd(tmp_path_factory.mktemp(f"{name}-clean"))
    listed = [Path(p).name for p in writes(cmd)]
    assert listed, f"{name}: the clean run made no atomic write"
    return listed


def _check_killed_at(row, listed, nth):
    """The kill fell inside write ``nth`` — the same write on every machine and load."""
    assert row["killed"] and row["returncode"] == -9, row
    assert row["mid_write"] and Path(row["final"]).name == listed[nth - 1], (row, listed)
    assert row["temporaries_left"] == [row["at"]], row  # the dead writer's only
    assert row["broken_final_files"] == [] and row["broken_after_rerun"] == [], row
    assert row["rerun_exit"] == 0 and row["temporaries_after_rerun"] == [], row


@pytest.fixture(scope="module")
def export_writes(digits_run, tmp_path_factory):
    return _kill_cases(lambda d: _export_cmd(digits_run, d), tmp_path_factory, "export")


def _export_cmd(digits_run, folder):
    import shutil

    from kill_points import liteconv

    run = folder / digits_run.parent.name / digits_run.name
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("export"))
    return liteconv("export", str(run), "--mode", "fp32,int8"), run


def _which(position: str, count: int) -> int:
    return {"first": 1, "second": 2, "middle": (count + 1) // 2, "last": count}[position]


@pytest.mark.large
@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_kill_9_inside_an_export_write_leaves_no_broken_file_and_the_rerun_cleans_up(
    digits_run, export_writes, tmp_path, position
):
    """Killed inside its first, middle or last write (injected, so the same write under any
    load): the final files present are whole, and rerunning the command finishes, removes
    the dead writer's temporary at once and leaves every artifact matching the manifest."""
    from kill_points import final_files, scenario

    nth = _which(position, len(export_writes))
    cmd, run = _export_cmd(digits_run, tmp_path)
    row = scenario("export", cmd, [run], nth)
    _check_killed_at(row, export_writes, nth)
    assert {"export/fp32.tflite", "export/int8.tflite"} <= set(final_files(run))
    from liteconv.pipeline.run import Run

    opened = Run.open(run)
    for name in opened.manifest()["artifacts"]:
        opened.verify_artifact(name)  # raises on a file that differs from its hash


def _train_cmd(folder):
    from kill_points import liteconv

    out = folder / "runs"
    return liteconv("train", "-c", DIGITS, "--set", "train.epochs=2", *_DET,
                    "--out", str(out)), out  # fmt: skip


@pytest.fixture(scope="module")
def train_writes(tmp_path_factory):
    return _kill_cases(_train_cmd, tmp_path_factory, "train")


@pytest.mark.large
@pytest.mark.parametrize("position", ["first", "second", "middle", "last"])
def test_kill_9_inside_a_train_write_then_train_again_ends_in_one_complete_run(
    train_writes, tmp_path, position
):
    """Killed inside its first write (the manifest: the run folder holds only that
    temporary), the second (the config: a resumable run; the whole-table sweep found a
    run left without manifest when the config came first), a middle one (a model save) or
    the last (the final manifest): training
    again resumes or starts over, ends in exactly one complete run, and leaves no
    temporaries and no folder without a manifest."""
    from kill_points import scenario

    nth = _which(position, len(train_writes))
    cmd, out = _train_cmd(tmp_path)
    row = scenario("train", cmd, [out], nth, runs=out)
    _check_killed_at(row, train_writes, nth)
    assert row["run_folders_after_rerun"] == 1 and row["folders_without_manifest"] == [], row
    (manifest,) = out.glob("*/*/manifest.json")
    assert json.loads(manifest.read_text())["status"] == "complete"


@pytest.mark.large
def test_kill_9_inside_each_bundle_write_leaves_the_last_bundle_or_none(exported_run, tmp_path):
    """Every write of ``bundle`` killed in turn: no bundle or a whole one, and the rerun
    leaves one readable bundle and no temporary."""
    from kill_points import liteconv, scenario, writes

    def cmd(folder):
        return liteconv("bundle", str(exported_run), "-o", str(folder))

    listed = [Path(p).name for p in writes(cmd(tmp_path / "clean"))]
    assert listed and all(name.endswith(".tar.gz") for name in listed), listed
    for nth in range(1, len(listed) + 1):
        dist = tmp_path / f"dist{nth}"
        row = scenario("bundle", cmd(dist), [dist], nth)
        _check_killed_at(row, listed, nth)
        assert [p.name for p in dist.glob("*.tar.gz")] == [listed[-1]], row


def test_a_dead_writers_temporary_is_removed_at_once_a_live_ones_kept(run_copy):
    from liteconv.pipeline.run import Run

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    left = run_copy / f".manifest.json.{dead}.k2j4_x.tmp"  # fresh, its writer gone
    busy = run_copy / f".model.{os.getpid()}.tmp.keras"  # this process: still writing
    for path in (left, busy):
        path.write_bytes(b"partial")
    Run.open(run_copy)
    assert not left.exists() and busy.exists()


@pytest.mark.parametrize(
    ("change", "fragment"),
    [({"experiment": "../../escaped"}, "experiment: '../../escaped' is not a plain name"),
     ({"experiment": ""}, "is not a plain name"), ({"status": "done"}, "status: expected"),
     ({"metrics": {"test_accuracy": -1}}, "metrics.test_accuracy"),
     ({"metrics": {"test_accuracy": "high"}}, "metrics.test_accuracy"),
     ({"metrics": []}, "metrics: expected a mapping"),
     ({"custom_objects": "Lambda"}, "custom_objects"),
     ({"artifacts": {"model.keras": 5}}, "artifacts")],
)  # fmt: skip
def test_manifest_values_later_used_are_checked(run_copy, change, fragment):
    """Keys a run may lack but commands read (a name that becomes a bundle's file name)."""
    path = run_copy / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    for command in ("bundle", "evaluate"):
        result = CliRunner().invoke(cli, [command, str(run_copy), *(
            ["-o", str(run_copy.parent / "dist")] if command == "bundle" else [])])  # fmt: skip
        _one_line_error(result, fragment)
    assert not (run_copy.parent / "dist").exists()


def test_image_files_that_are_not_images_are_found_before_training(tmp_path, capsys):
    from liteconv.config import DataConfig
    from liteconv.device.errors import LiteconvError
    from liteconv.pipeline.data import load_dataset

    rng = np.random.default_rng(0)
    from liteconv.compat import tf

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(6):
            img = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
            (tmp_path / cls / f"{i}.png").write_bytes(tf.io.encode_png(img).numpy())
    (tmp_path / "a" / "notes.png").write_text("not an image")
    # Photos TensorFlow has no decoder for (a phone's HEIC, a web page's WebP): left out
    # with a note, like the notes file, never counted as images.
    (tmp_path / "b" / "phone.HEIC").write_bytes(b"\0\0\0\x18ftypheic")
    (tmp_path / "b" / "web.webp").write_bytes(b"RIFF\0\0\0\0WEBPVP8 ")
    (tmp_path / "b" / "notes.txt").write_text("not an image, not a photo")
    cfg = DataConfig(name="image_folder", path=str(tmp_path), image_size=[6, 6])
    with pytest.raises(LiteconvError, match="1 file\\(s\\) are not PNG/JPEG/GIF/BMP"):
        load_dataset(cfg, batch_size=4, seed=0)
    cfg.skip_bad_images = True
    splits = load_dataset(cfg, batch_size=4, seed=0)
    assert sum(splits.sizes.values()) == 12
    (tmp_path / "c").mkdir()  # a class of phone photos only: nothing to learn it from
    (tmp_path / "c" / "phone.heic").write_bytes(b"\0\0\0\x18ftypheic")
    with pytest.raises(LiteconvError, match="class folder 'c' holds no image to train on"):
        load_dataset(cfg, batch_size=4, seed=0)
    note = [line for line in capsys.readouterr().out.splitlines() if "leaving out" in line]
    assert note and note[0].startswith(f"note: leaving out 2 .heic, .webp file(s) under {tmp_path}")


def test_image_files_that_do_not_decode_are_named_before_training(tmp_path, monkeypatch):
    """A truncated JPEG (a header TensorFlow reads, a body it cannot decode) and a JPEG
    with no frame header: a one-line error naming them before any run folder exists, or
    dropped with data.skip_bad_images; the decoding pass runs once per folder state."""
    import liteconv.pipeline.data as data
    from liteconv.compat import tf
    from liteconv.config import DataConfig
    from liteconv.device.errors import LiteconvError

    monkeypatch.setattr(data.caches, "IMAGES", tmp_path / "cache")
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for i in range(6):
            img = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
            (folder / cls / f"{i}.jpg").write_bytes(tf.io.encode_jpeg(img).numpy())
    whole = (folder / "b" / "0.jpg").read_bytes()
    (folder / "b" / "0.jpg").write_bytes(whole[: len(whole) // 2])  # an interrupted copy
    (folder / "a" / "header-only.jpg").write_bytes(b"\xff\xd8\xff\xe0 no frame")
    cfg = DataConfig(name="image_folder", path=str(folder), image_size=[8, 8])
    with pytest.raises(LiteconvError, match=r"are not PNG/JPEG/GIF/BMP.*header-only\.jpg"):
        data.load_dataset(cfg, batch_size=4, seed=0)
    (folder / "a" / "header-only.jpg").unlink()
    with pytest.raises(LiteconvError, match=r"1 image file\(s\) cannot be decoded .*b/0\.jpg"):
        data.load_dataset(cfg, batch_size=4, seed=0)

    runs = tmp_path / "runs"
    result = CliRunner().invoke(cli, ["train", "-c", str(REPO / "src/liteconv/configs/experiments/"
                                      "mobilenet_v1_image_folder.yaml"),
                                      "--set", f"data.path={folder}", "--set", "train.epochs=1",
                                      "--set", "data.image_size=[32,32]", "--out", str(runs)])  # fmt: skip
    _one_line_error(result, "b/0.jpg")
    assert not runs.exists()

    def no_second_pass(*_a, **_k):
        raise AssertionError("decoded again although the folder did not change")

    monkeypatch.setattr(data, "undecodable", no_second_pass)
    cfg.skip_bad_images = True
    splits = data.load_dataset(cfg, batch_size=4, seed=0)
    assert sum(splits.sizes.values()) == 11
    read = [len(y) for ds in (splits.train, splits.val, splits.test) if ds for _, y in ds]
    assert sum(read) == 11  # every kept file decodes


def test_unexpected_errors_are_one_line_with_the_traceback_on_request(
    tmp_path, monkeypatch, restore_env
):
    import liteconv.pipeline.evaluate as evaluate

    def boom(*_a, **_k):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(evaluate, "evaluate_run", boom)
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path)])
    assert result.exit_code == 1 and "unexpected ZeroDivisionError: boom" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(cli, ["--debug", "evaluate", str(tmp_path)])
    assert isinstance(result.exception, ZeroDivisionError)


@pytest.mark.large
def test_fuzzed_models_never_kill_or_traceback(exported_run, tmp_path):
    """Seeded mutants of the exported fp32 and int8 models: every one ends in a result or a
    one-line error (exit 2) — zero signal deaths (the process running the test would die),
    zero tracebacks."""
    from fuzz_tflite import byte_mutants, structural_mutants

    mutants = []
    for name in ("fp32", "int8"):
        blob = (exported_run / "export" / f"{name}.tflite").read_bytes()
        mutants += [(f"{name}-{m}", b) for m, b in byte_mutants(blob, 60, seed=len(name))]
        mutants += [(f"{name}-{m}", b) for m, b in structural_mutants(blob, 40, seed=len(name))]
    assert len(mutants) >= 150
    outcomes = {"ran": 0, "clean error": 0}
    runner = CliRunner()
    for label, blob in mutants:
        path = tmp_path / f"{label}.tflite"
        path.write_bytes(blob)
        result = runner.invoke(cli, ["bench", str(path), "--runs", "1", "--warmup", "0"])
        assert result.exit_code in (0, 2), (label, result.output, result.exception)
        assert "Traceback" not in result.output and not (
            result.exception and not isinstance(result.exception, SystemExit)
        ), (label, result.output)
        if result.exit_code == 2:  # one error line (besides the progress bar's label)
            errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
            assert len(errors) == 1 and path.name in errors[0], (label, result.output)
        outcomes["ran" if result.exit_code == 0 else "clean error"] += 1
        path.unlink()
    assert outcomes["clean error"] > len(mutants) // 3, outcomes


def test_a_run_config_cut_off_is_not_filled_with_defaults(run_copy):
    config = run_copy / "config.yaml"
    text = config.read_text()
    config.write_text(text[: text.index("train:") + 30])  # cut off inside train:
    result = CliRunner().invoke(cli, ["evaluate", str(run_copy)])
    _one_line_error(result, "config.yaml: its SHA-256 differs from the one in the manifest")


def test_bundle_check_refuses_a_corrupt_sidecar(exported_run, tmp_path):
    import tarfile

    from liteconv.deploy.bundle import make_bundle
    from liteconv.device.check import check_bundle
    from liteconv.device.errors import LiteconvError

    with tarfile.open(make_bundle(exported_run, out=tmp_path, samples=2)) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    folder = next((tmp_path / "x").iterdir())
    (folder / "models" / "fp32.json").write_text('["not", "a", "sidecar"]')
    with pytest.raises(LiteconvError, match="fp32.json: expected a mapping"):
        check_bundle(folder)


@pytest.mark.large
def test_train_whose_output_pipe_is_closed_leaves_a_resumable_run(tmp_path):
    """``liteconv train ... | head -1``: the reader gone, train dies at its first line of
    output. It used to print before its manifest and leave an empty run folder; now the
    folder is a resumable run, and training again resumes it to one complete run."""
    cmd, out = _train_cmd(tmp_path)
    read, write = os.pipe()
    os.close(read)  # no reader: the first line out is a broken pipe
    try:
        proc = subprocess.run(cmd, stdout=write, stderr=subprocess.PIPE, text=True, timeout=1800)
    finally:
        os.close(write)
    assert proc.returncode != 0
    (folder,) = [p for p in out.glob("*/*") if p.is_dir()]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "running" and (folder / "config.yaml").is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming: {folder}" in again.stdout
    assert [p for p in out.glob("*/*") if p.is_dir()] == [folder]
    assert json.loads((folder / "manifest.json").read_text())["status"] == "complete"
