"""Training end to end: CLI, run folder, manifest, determinism, kill/resume, multi-worker."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import DIGITS
from liteconv.cli import cli
from liteconv.compat import keras
from liteconv.pipeline.run import sha256_file

LITECONV = [sys.executable, "-c", "from liteconv.cli import main; main()"]


def _train(tmp_path, *sets, name=None):
    args = ["train", "-c", DIGITS, "--out", str(tmp_path), "--set", "train.verbose=0"]
    for s in sets:
        args += ["--set", s]
    if name:
        args += ["--run-name", name]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    run_dir = Path(result.output.strip().splitlines()[-1].removeprefix("run folder: "))
    return run_dir, result.output


def test_train_writes_a_complete_run_and_evaluate_reads_it(tmp_path):
    run_dir, output = _train(tmp_path, "train.epochs=1")
    assert "devices: cpu" in output and "test accuracy" in output
    for name in ("config.yaml", "manifest.json", "model.keras", "best.keras", "history.csv"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tensorboard").rglob("events.out.tfevents*"))
    assert not (run_dir / "backup").exists()  # removed once the run completed
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["versions"]["tensorflow"].startswith("2.21")
    assert manifest["versions"]["tf-keras"].startswith("2.21")
    assert manifest["dataset"]["name"] == "digits" and len(manifest["dataset"]["fingerprint"]) == 16
    assert manifest["class_names"] == [str(i) for i in range(10)]
    assert manifest["seed"] == 42 and manifest["devices"]["kind"] == "cpu"
    for rel, digest in manifest["artifacts"].items():
        assert sha256_file(run_dir / rel) == digest
    assert {"model.keras", "config.yaml", "history.csv"} <= set(manifest["artifacts"])
    with open(run_dir / "history.csv") as fh:
        assert [row["epoch"] for row in csv.DictReader(fh)] == ["0"]

    result = CliRunner().invoke(cli, ["evaluate", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output and "359 images" in result.output
    result = CliRunner().invoke(cli, ["evaluate", str(run_dir), "--json"])
    data = json.loads(result.output)
    assert abs(data["accuracy"] - manifest["metrics"]["test_accuracy"]) < 1e-6
    assert set(data["per_class_accuracy"]) == set(manifest["class_names"])


@pytest.mark.parametrize("downsample", ["pool", "stride"])
@pytest.mark.parametrize("model", ["baseline_cnn", "flattened_cnn", "separable_cnn"])
def test_each_cnn_learns_digits(tmp_path, model, downsample):
    # Three short epochs on 1,294 images: a model that trains reaches > 90%, one that
    # does not (dead signal, broken BN statistics) stays near 10%. downsample=stride puts
    # stride 2 into the flattened steps: TensorFlow's portable kernels must run them.
    run_dir, _ = _train(tmp_path, f"model.name={model}", "model.kwargs={}",
                        f"model.kwargs.downsample={downsample}")  # fmt: skip
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["metrics"]["test_accuracy"] > 0.9


def test_evaluate_errors_are_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["evaluate", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no such run folder" in result.output
    (tmp_path / "half").mkdir()
    result = runner.invoke(cli, ["evaluate", str(tmp_path / "half")])
    assert result.exit_code == 2 and "not a liteconv run folder" in result.output


def _run_cli(args, env=None, **kwargs):
    return subprocess.run(
        LITECONV + args, capture_output=True, text=True, env={**os.environ, **(env or {})},
        **kwargs,
    )  # fmt: skip


@pytest.mark.large
def test_same_seed_deterministic_runs_give_identical_weights(tmp_path):
    weights = []
    for name in ("a", "b"):
        proc = _run_cli(
            ["train", "-c", DIGITS, "--out", str(tmp_path), "--run-name", name,
             "--set", "train.epochs=1", "--set", "train.deterministic=true",
             "--set", "train.verbose=0"],
            timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        model = keras.models.load_model(tmp_path / "digits_quick" / name / "model.keras")
        weights.append(model.get_weights())
    assert len(weights[0]) == len(weights[1])
    for a, b in zip(weights[0], weights[1]):
        np.testing.assert_array_equal(a, b)


def _history_epochs(run_dir: Path) -> list[int]:
    path = run_dir / "history.csv"
    if not path.exists():
        return []
    with open(path) as fh:
        return [int(row["epoch"]) for row in csv.DictReader(fh) if row.get("epoch")]


@pytest.mark.large
def test_killed_run_resumes_to_the_full_epoch_count(tmp_path):
    """SIGKILL at the end of epoch 2 (injected: LITECONV_CRASH_AT=epoch:2, the same point
    on any machine and load), then the same command again continues to epoch 12."""
    args = ["train", "-c", DIGITS, "--out", str(tmp_path), "--set", "train.epochs=12",
            "--set", "train.verbose=0"]  # fmt: skip
    killed = subprocess.run(LITECONV + args, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "LITECONV_CRASH_AT": "epoch:2"},
                            start_new_session=True)  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert "killed at epoch 2" in killed.stderr
    exp = tmp_path / "digits_quick"
    (run_dir,) = exp.glob("*")
    assert not (run_dir / "model.keras").exists()
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "running"
    done_before = len(_history_epochs(run_dir))
    assert done_before == 2

    # Running the same command again continues the interrupted run.
    again = _run_cli(args, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming: {run_dir}" in again.stdout
    assert list(exp.glob("*")) == [run_dir]
    assert _history_epochs(run_dir) == list(range(12))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["metrics"]["epochs_this_session"] <= 12 - done_before + 1
    model = keras.models.load_model(run_dir / "model.keras")
    assert model.output_shape == (None, 10)
    assert manifest["metrics"]["test_accuracy"] > 0.9


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.large
def test_two_worker_multi_worker_mirrored_run(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(
            subprocess.Popen(
                LITECONV + ["train", "-c", DIGITS, "--out", str(tmp_path),
                            "--set", "train.epochs=1", "--set", "train.verbose=0"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                env={**os.environ, "TF_CONFIG": tf_config, "CUDA_VISIBLE_DEVICES": ""},
            )
        )  # fmt: skip
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    assert all("multi-worker" in out for out in outputs)
    runs = list((tmp_path / "digits_quick").glob("*"))
    assert len(runs) == 1, runs  # only the chief writes the run
    manifest = json.loads((runs[0] / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["devices"]["strategy"] == "MultiWorkerMirroredStrategy"
    assert manifest["devices"]["replicas"] == 2
    assert (runs[0] / "model.keras").is_file()


@pytest.mark.large
def test_study_train_compares_both_kernel_sets_and_the_old_name_still_runs(tmp_path):
    out = tmp_path / "bench"
    result = CliRunner().invoke(
        cli, ["study", "train", "--models", "baseline_cnn,separable_cnn", "--steps", "1",
              "--rounds", "2", "--batch-size", "8", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(out.with_suffix(".json").read_text())
    pairs = [(r["model"], r["onednn"]) for r in data["records"]]
    assert pairs == [("baseline_cnn", "off"), ("baseline_cnn", "on"),
                     ("separable_cnn", "off"), ("separable_cnn", "on")]  # fmt: skip
    assert all(r["speed_vs_off"] > 0 for r in data["records"])
    assert [r["speed_vs_off"] for r in data["records"][::2]] == [1.0, 1.0]
    # where the step goes: separable_cnn has 3×3 depthwise layers, baseline_cnn none
    assert data["layer_ms"]["on"]["separable_cnn"]["DepthwiseConv2D 3×3"] > 0
    assert "DepthwiseConv2D 3×3" not in data["layer_ms"]["off"]["baseline_cnn"]
    text = out.with_suffix(".md").read_text()
    assert "| separable_cnn" in text and "Where a step goes" in text


def test_resume_cli_errors(tmp_path):
    run_dir, _ = _train(tmp_path, "train.epochs=1")
    runner = CliRunner()
    result = runner.invoke(cli, ["train", "--resume", str(run_dir)])
    assert result.exit_code == 2 and "already complete" in result.output
    result = runner.invoke(cli, ["train", "--resume", str(run_dir), "-c", DIGITS])
    assert result.exit_code == 2 and "drop -c/--set" in result.output
    result = runner.invoke(cli, ["train"])
    assert result.exit_code == 2 and "missing -c CONFIG" in result.output


def test_resume_flag_continues_an_interrupted_run(tmp_path):
    # An interrupted run as BackupAndRestore leaves it: status running, no model yet.
    run_dir, _ = _train(tmp_path, "train.epochs=1", name="r")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["status"] = "running"
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    (run_dir / "model.keras").unlink()
    result = CliRunner().invoke(cli, ["train", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert f"resuming: {run_dir}" in result.output
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"
    assert (run_dir / "model.keras").is_file()
