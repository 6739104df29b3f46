"""The device bundle: contents, its check on the host, in a clean venv, on emulated ARM64."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from liteconv.cli import cli
from liteconv.deploy.bundle import bundle_files, make_bundle, unpack
from liteconv.device.check import check_bundle
from liteconv.device.errors import LiteconvError


def test_bundle_contents_and_check_on_host(exported_run, tmp_path):
    path = make_bundle(exported_run, out=tmp_path, target="raspberry-pi-4", samples=8)
    names = set(bundle_files(path))
    device_modules = {f"liteconv/device/{p.name}" for p in
                      (Path(__file__).parents[1] / "src/liteconv/device").glob("*.py")}  # fmt: skip
    assert {"bench.py", "liteconv/__init__.py", "requirements.txt", "README.md", "target.json",
            "labels.txt", "reference.npz", "models/fp32.tflite", "models/fp32.json",
            "models/int8.tflite"} | device_modules <= names  # fmt: skip
    folder = unpack(path, tmp_path / "x")
    results = check_bundle(folder)
    assert [r["passed"] for r in results] == [True, True]
    readme = (folder / "README.md").read_text()
    assert "benchmark_model --graph=/data/local/tmp/int8.tflite" in readme
    # A changed reference must fail the check (the check can fail).
    ref = dict(np.load(folder / "reference.npz"))
    ref["outputs__fp32"] = ref["outputs__fp32"][:, ::-1]
    np.savez(folder / "reference.npz", **ref)
    assert not all(r["passed"] for r in check_bundle(folder))
    # int8: every output 3 steps off keeps top-1 but breaks the 2-step mean tolerance
    ref = dict(np.load(folder / "reference.npz"))
    step = results[1]["output_step"]
    assert step > 0 and results[1]["model"] == "int8"
    ref["outputs__fp32"] = ref["outputs__fp32"][:, ::-1]  # restore fp32
    ref["outputs__int8"] = ref["outputs__int8"] + 3 * step
    np.savez(folder / "reference.npz", **ref)
    again = {r["model"]: r for r in check_bundle(folder)}
    assert again["fp32"]["passed"] and again["int8"]["top1_identical"]
    assert not again["int8"]["passed"]
    assert again["int8"]["mean_abs_diff"] == pytest.approx(3 * step, rel=0.05)


def test_bundle_of_unexported_run_is_an_error(tmp_path):
    result = CliRunner().invoke(cli, ["bundle", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such run folder" in result.output


@pytest.mark.large
def test_bundle_runs_in_a_clean_venv_without_tensorflow(exported_run, tmp_path):
    folder = unpack(make_bundle(exported_run, out=tmp_path, samples=8), tmp_path / "x")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(folder / "requirements.txt")],
                   check=True, timeout=600)  # fmt: skip
    probe = subprocess.run([str(py), "-c", "import tensorflow"], capture_output=True)
    assert probe.returncode != 0  # no TensorFlow there
    check = subprocess.run([str(py), "bench.py", "--check"], cwd=folder, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("PASS") == 2
    run = subprocess.run([str(py), "bench.py", "--runs", "5", "--threads", "1",
                          "--json", "out.json"], cwd=folder, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = json.loads((folder / "out.json").read_text())
    assert {r["model"] for r in doc["records"]} == {"digits_quick/fp32", "digits_quick/int8"}
    # python -m liteconv.device is the same command line
    module = subprocess.run([str(py), "-m", "liteconv.device", "--check"], cwd=folder,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert module.returncode == 0 and module.stdout.count("PASS") == 2, module.stderr


@pytest.mark.large
def test_bundle_passes_its_check_on_emulated_arm64(exported_run, tmp_path):
    from liteconv.deploy.arm64 import NOT_REPRESENTATIVE, run_bundle_arm64

    bundle = make_bundle(exported_run, out=tmp_path, samples=8)
    # The cached user space is reused between runs; CI builds it fresh (about a minute).
    cache = Path(__file__).parents[1] / ".cache" / "arm64"
    doc = run_bundle_arm64(bundle, cache=cache, runs=3, echo=lambda *_: None)
    assert doc["where"] == "qemu-aarch64" and doc["note"] == NOT_REPRESENTATIVE
    assert doc["machine"]["arch"] == "aarch64"
    assert doc["check"][0].startswith("runtime: litert 2.0.2") and "aarch64" in doc["check"][0]
    assert [line.split()[0] for line in doc["check"][1:]] == ["PASS", "PASS"]
    assert {r["model"] for r in doc["records"]} == {"digits_quick/fp32", "digits_quick/int8"}
    assert doc["emulated"] == "qemu-aarch64"
    assert Path(str(bundle).removesuffix(".tar.gz") + "-arm64-emulated.json").is_file()


def test_bench_arm64_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["bench-arm64", str(tmp_path / "none.tar.gz")])
    assert result.exit_code == 2 and "no such bundle" in result.output


def test_check_forgives_a_near_tie_and_catches_a_sure_flip():
    """One quantization step on a near tie may swap top-1 (measured: tflite-runtime 2.14,
    host margin 1 step); a flip on a sample the host was sure of is a wrong model/kernel."""
    from liteconv.device.__main__ import check_line
    from liteconv.device.check import compare_outputs

    step = 1 / 256
    expected = np.zeros((4, 3))
    expected[0] = [120, 119, 17]  # a near tie: 1 step between classes 0 and 1
    expected[1:, 2] = 256  # the host is sure of class 2
    expected *= step
    here = expected.copy()
    here[0, :2] = [119 * step, 120 * step]  # one step each way: the tie swaps
    tie = compare_outputs(here, expected, step)
    assert tie["passed"] and not tie["top1_identical"]
    assert tie["near_ties"] == [{"sample": 0, "host_margin": pytest.approx(step)}]
    assert tie["top1_flips"] == [] and tie["max_abs_diff"] == 0.0  # the tied classes' diff
    # a saturated softmax tied on the host (0.5 / 0.5) that other kernels resolve (0.996 /
    # 0.004, an int8 NASNet with random weights): rounding, whichever way it falls
    tied = np.array([[0.0, 128, 128]]) * step
    for rounded in ([[0.0, 255, 1]], [[0.0, 1, 255]]):
        saturated = compare_outputs(np.array(rounded) * step, tied, step)
        assert saturated["passed"] and saturated["max_abs_diff"] == 0.0, rounded
    off = compare_outputs(np.array([[60.0, 98, 98]]) * step, tied, step)  # mass moved out
    assert not off["passed"] and off["max_abs_diff"] == pytest.approx(60 * step)
    flat = np.full((1, 10), 25.0) * step  # ten classes tied: a shift of all still counts
    shifted = compare_outputs(flat + 3 * step, flat, step)
    assert not shifted["passed"] and shifted["max_abs_diff"] == pytest.approx(30 * step)
    sure_too = compare_outputs(np.array([[0.0, 255, 1], [0, 0, 256]]) * step,
                               np.array([[0.0, 128, 128], [0, 256, 0]]) * step, step)  # fmt: skip
    assert not sure_too["passed"] and [f["sample"] for f in sure_too["top1_flips"]] == [1]
    assert "near tie" in check_line({"model": "int8", **tie}) and "PASS" in check_line(
        {"model": "int8", **tie}
    )
    sure = here.copy()
    sure[1] = [1.0, 0, 0]  # sample 1: the host said class 2 with everything it had
    flip = compare_outputs(sure, expected, step)
    assert not flip["passed"] and [f["sample"] for f in flip["top1_flips"]] == [1]
    assert flip["top1_flips"][0]["host_margin"] > flip["tolerance"]
    line = check_line({"model": "int8", **flip})
    assert line.startswith("FAIL int8") and "host was sure" in line
    # a flip with differences inside the max tolerance still counts when the host's margin
    # was beyond it: 20 steps each way swap classes the host had 40 steps apart
    apart = np.array([[148, 108, 0]]) * step
    swapped = np.array([[128, 128.5, 0]]) * step
    moved = compare_outputs(swapped, apart, step)
    assert moved["max_abs_diff"] <= moved["tolerance"] and not moved["passed"]
    assert [f["sample"] for f in moved["top1_flips"]] == [0] and not moved["near_ties"]
    # float models: the same rule with the float tolerance
    f_expected = np.array([[0.50002, 0.49998, 0.0]])
    assert compare_outputs(np.array([[0.49999, 0.50001, 0.0]]), f_expected, 0.0)["passed"]
    assert not compare_outputs(np.array([[0.4, 0.6, 0.0]]), np.array([[0.6, 0.4, 0.0]]), 0.0)[
        "passed"
    ]


def test_unpack_names_a_file_that_is_not_a_bundle(tmp_path):
    """The bundle format is read in one place: a corrupt file and a tar without the
    bundle's layout are one-line errors naming the fix."""
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(LiteconvError, match="broken.tar.gz: not a readable bundle"):
        unpack(broken, tmp_path / "a")
    with pytest.raises(LiteconvError, match="broken.tar.gz: not a readable bundle"):
        bundle_files(broken)
    other = tmp_path / "other.tar.gz"
    (tmp_path / "src" / "top").mkdir(parents=True)
    (tmp_path / "src" / "top" / "notes.txt").write_text("hello")
    with tarfile.open(other, "w:gz") as tar:
        tar.add(tmp_path / "src" / "top", arcname="top")
    assert bundle_files(other) == {"notes.txt": b"hello"}
    with pytest.raises(LiteconvError, match="not a liteconv bundle .*liteconv bundle RUN_DIR"):
        unpack(other, tmp_path / "b")
