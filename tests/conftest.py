"""Shared fixtures: a clean Keras session per test, one trained digits run for the whole
session (copied for tests that change it; built once and shared by pytest-xdist's
workers), and numpy reference convolutions.

Paths are built from this file, so ``pytest`` runs from any folder.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from liteconv.compat import keras

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "configs" / "experiments"
DIGITS = str(EXPERIMENTS / "digits_quick.yaml")


def quiet(*_args, **_kwargs) -> None:
    """An ``echo`` that prints nothing."""


def pytest_report_header(config):
    """Which TensorFlow kernels this run exercises, and on what CPU: a passing test says
    little without it (oneDNN accepts ops the portable kernels refuse)."""
    import os
    import platform

    flags = ""
    try:
        with open("/proc/cpuinfo") as fh:
            words = set(next((ln for ln in fh if ln.startswith("flags")), "").split())
        flags = " ".join(
            sorted(w for w in words if w.startswith(("avx512f", "avx2", "avx512_vnni")))
        )
    except OSError:
        pass
    setting = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (TensorFlow's default for this CPU)")
    return f"TF_ENABLE_ONEDNN_OPTS={setting}; CPU {platform.machine()} {flags or '(flags unknown)'}"


@pytest.fixture(autouse=True)
def _clear_keras_session():
    keras.backend.clear_session()
    yield


def built_once(tmp_path_factory, name: str, build) -> Path:
    """``build(folder)``'s path, built once per test session: under pytest-xdist the first
    worker to ask builds it in the session's folder (above every worker's) while the others
    wait on a lock, then all read the same one."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return build(tmp_path_factory.mktemp(name))
    shared = tmp_path_factory.getbasetemp().parent
    done = shared / f"{name}.path"
    with open(shared / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        if done.is_file():
            return Path(done.read_text())
        folder = shared / name
        shutil.rmtree(folder, ignore_errors=True)  # a worker that failed building it
        folder.mkdir()
        path = build(folder)
        done.write_text(str(path))
        return path


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """A 2-epoch digits_quick run, trained once per session. Read it, never change it:
    tests that write into a run take ``run_copy``."""
    from liteconv.config import load_config
    from liteconv.pipeline.train import train

    def build(folder: Path) -> Path:
        cfg = load_config(DIGITS, {"train.epochs": 2, "train.verbose": 0})
        return train(cfg, out=folder, echo=quiet).path

    return built_once(tmp_path_factory, "runs", build)


def copy_run(run_dir: Path, dest: Path) -> Path:
    """A private copy of a run folder (same experiment/name layout under ``dest``)."""
    target = dest / run_dir.parent.name / run_dir.name
    shutil.copytree(run_dir, target)
    return target


@pytest.fixture
def run_copy(digits_run, tmp_path) -> Path:
    """This test's own copy of the session's digits run."""
    return copy_run(digits_run, tmp_path)


@pytest.fixture(scope="session")
def exported_run(digits_run, tmp_path_factory) -> Path:
    """A copy of the digits run with fp32 and int8 exports (read-only for tests)."""
    from liteconv.export.run_export import export_run

    def build(folder: Path) -> Path:
        run = copy_run(digits_run, folder)
        export_run(run, modes=["fp32", "int8"], echo=quiet)
        return run

    return built_once(tmp_path_factory, "exported", build)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding (extra row/column at the end), as (before, after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def np_conv2d(x, kernel, strides=(1, 1), padding="valid", bias=None):
    """Reference 2-D convolution in plain numpy: x (N,H,W,C), kernel (kh,kw,C,M)."""
    kh, kw, _, m = kernel.shape
    sh, sw = strides
    if padding == "same":
        ph, pw = same_padding(x.shape[1], kh, sh), same_padding(x.shape[2], kw, sw)
        x = np.pad(x, ((0, 0), ph, pw, (0, 0)))
    n, h, w, _ = x.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.zeros((n, oh, ow, m), dtype=np.float64)
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * sh : i * sh + kh, j * sw : j * sw + kw, :]
            out[:, i, j, :] = np.tensordot(patch, kernel, axes=([1, 2, 3], [0, 1, 2]))
    return out if bias is None else out + bias


def np_depthwise2d(x, kernel, strides=(1, 1), padding="valid", bias=None):
    """Reference depthwise convolution: kernel (kh,kw,C,dm); output channel c*dm+d."""
    kh, kw, c, dm = kernel.shape
    full = np.zeros((kh, kw, c, c * dm))
    for ch in range(c):
        for d in range(dm):
            full[:, :, ch, ch * dm + d] = kernel[:, :, ch, d]
    return np_conv2d(x, full, strides, padding, bias)
