"""liteconv as people install it: the wheel, in a fresh venv with the device extra only
(no TensorFlow), run from a folder outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "--disable-pip-version-check", "-w", str(out), str(REPO)],
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    (found,) = out.glob("liteconv-*.whl")
    return found


def test_the_wheel_carries_targets_configs_and_the_plugin_source(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        f"liteconv/configs/targets/{p.name}" for p in (REPO / "configs/targets").glob("*.yaml")
    }
    shipped |= {f"liteconv/configs/experiments/{p.name}"
                for p in (REPO / "configs/experiments").glob("*.yaml")}  # fmt: skip
    assert shipped and shipped <= names, sorted(shipped - names)
    assert {"liteconv/configs/base.yaml", "liteconv/emulate/count.c",
            "liteconv/studies/published_latency.csv"} <= names  # fmt: skip


@pytest.mark.large
def test_installed_with_the_device_extra_it_benchmarks_by_target_name_from_anywhere(
    wheel, exported_run, tmp_path
):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q",
                    "--disable-pip-version-check", f"{wheel}[device]"],
                   check=True, capture_output=True, timeout=900)  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["LITECONV_HOME"] = str(tmp_path / "home")

    def liteconv(*args):
        return subprocess.run([str(venv / "bin/liteconv"), *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip

    probe = subprocess.run([str(venv / "bin/python"), "-c", "import tensorflow"],
                           capture_output=True, env=env)  # fmt: skip
    assert probe.returncode != 0  # the device extra brings no TensorFlow

    listed = liteconv("targets")
    assert listed.returncode == 0, listed.stderr
    assert "raspberry-pi-4" in listed.stdout and "pixel-4" in listed.stdout
    # a user's own target, found by name from the user folder
    (tmp_path / "home/targets").mkdir(parents=True)
    (tmp_path / "home/targets/my-board.yaml").write_text("description: mine\nthreads: [1, 2]\n")
    assert "my-board" in liteconv("targets").stdout

    model = exported_run / "export" / "int8.tflite"
    bench = liteconv("bench", str(model), "--target", "raspberry-pi-4", "--runs", "3")
    assert bench.returncode == 0, bench.stderr
    assert "| 4 |" in bench.stdout.replace(" ", "").replace("|4|", "| 4 |")
    assert liteconv("bench", str(model), "--target", "my-board", "--runs", "2").returncode == 0

    for args in (["train", "-c", "digits_quick"], ["demo"]):
        result = liteconv(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert lines == [
            "Error: this command needs TensorFlow (module 'tensorflow' is not installed): "
            "pip install 'liteconv[train]'"
        ], result.stderr
