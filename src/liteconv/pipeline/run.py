"""The run folder ``runs/<experiment>/<run name>/`` and everything written into it.

Holds ``config.yaml`` (resolved), ``manifest.json`` (versions, seed, git commit, dataset
fingerprint, devices, metrics, SHA-256 of artifacts), ``model.keras``, ``best.keras``,
``history.csv``, ``tensorboard/`` and, while training, ``backup/`` for resuming. Every
file is written atomically (temporary file in the same folder, then ``os.replace``), so a
run that dies leaves the previous complete file or none, never half of one.

Example:
    >>> run = Run.create("runs", "fashion_mnist_flattened")
    >>> run.write_json("metrics.json", {"accuracy": 0.9})
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
from pathlib import Path

from liteconv.device.errors import LiteconvError
from liteconv.device.files import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    crash_inside_written,
    read_json,
)

CONFIG = "config.yaml"
MANIFEST = "manifest.json"
MODEL = "model.keras"
BEST = "best.keras"
HISTORY = "history.csv"
EXPORT = "export"  # the .tflite files, their sidecars, verify.{json,md}, bench-host.json
VERIFY_JSON = f"{EXPORT}/verify.json"
VERIFY_MD = f"{EXPORT}/verify.md"
BENCH_HOST = f"{EXPORT}/bench-host.json"  # the demo's host benchmark
DEVICE = "device"  # result documents fetched from boards (liteconv device run)
_UNHASHED_DIRS = {"backup", "tensorboard"}


def save_model_atomic(model, path: str | Path) -> Path:
    """Save a Keras model (``.keras``) through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.keras")
    try:
        model.save(tmp)
        crash_inside_written(tmp, path)  # a testing aid; nothing unless LITECONV_CRASH_AT
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def sha256_file(path: str | Path) -> str:
    """SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_commit() -> str | None:
    """The git commit of the liteconv source tree, if it is a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def versions() -> dict[str, str]:
    """Versions of Python and the ML stack (those installed)."""
    from importlib import metadata

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("liteconv", "tensorflow", "tensorflow-cpu", "tf-keras",
                 "tensorflow-model-optimization", "ai-edge-litert", "numpy"):  # fmt: skip
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


class Run:
    """A run folder and its manifest."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- creation and lookup
    @classmethod
    def create(cls, out: str | Path, experiment: str, name: str | None = None) -> Run:
        """Make ``out/experiment/<name or timestamp>/`` (a new, empty folder); first remove
        the folders of runs killed before their first file was complete (``abandoned``)."""
        name = name or dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        for left in cls.abandoned(Path(out) / experiment):
            shutil.rmtree(left, ignore_errors=True)
        path = Path(out) / experiment / name
        suffix = 1
        while path.exists() and any(path.iterdir()):
            suffix += 1
            path = Path(out) / experiment / f"{name}-{suffix}"
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @classmethod
    def open(cls, path: str | Path, *, need_model: bool = True) -> Run:
        """Open an existing run folder, checking it is one; one-line errors otherwise."""
        path = Path(path)
        if not path.is_dir():
            raise LiteconvError(
                f"{path}: no such run folder; runs live in runs/<experiment>/<time>/"
            )
        for name in (CONFIG, MANIFEST):
            if not (path / name).is_file():
                raise LiteconvError(f"{path}: not a liteconv run folder (no {name})")
        run = cls(path)
        run.manifest()  # parse check
        run.remove_stale_temporaries()
        if need_model and not (path / MODEL).is_file():
            status = run.manifest().get("status", "unknown")
            raise LiteconvError(
                f"{path}: no {MODEL} (run status: {status}); finish it with "
                f"'liteconv train --resume {path}'"
            )
        if need_model:
            run.check_manifest()
        return run

    @staticmethod
    def newest(out: str | Path = "runs", *, complete: bool = True) -> Run:
        """The most recently modified run under ``out`` (complete ones only by default)."""
        candidates = [
            p.parent
            for p in Path(out).glob(f"*/*/{MANIFEST}")
            if not complete or (p.parent / MODEL).is_file()
        ]
        if not candidates:
            raise LiteconvError(f"no finished run under {out}/; train one first with 'make train'")
        return Run(max(candidates, key=lambda p: (p / MANIFEST).stat().st_mtime))

    @staticmethod
    def abandoned(folder: Path) -> list[Path]:
        """Run folders under ``folder`` with no manifest whose every file is a temporary
        of a writer no longer alive: a run killed while writing its first file."""
        from liteconv.device.files import writer_alive

        if not folder.is_dir():
            return []
        out = []
        for path in folder.iterdir():
            if not path.is_dir() or (path / MANIFEST).exists():
                continue
            files = [p for p in path.rglob("*") if p.is_file()]
            if files and all(p.name.startswith(".") and writer_alive(p) is False for p in files):
                out.append(path)
        return out

    @staticmethod
    def find_resumable(out: str | Path, experiment: str, config_hash: str) -> Run | None:
        """An interrupted run of the same experiment and config, if any (newest first). Every
        run of the experiment with a manifest loses the temporaries of writers no longer
        alive on the way (a run killed inside its last write is complete but for that
        leftover); folders without one are left to ``abandoned``."""
        folder = Path(out) / experiment
        if not folder.is_dir():
            return None
        for path in sorted(folder.iterdir(), reverse=True):
            if (path / MANIFEST).is_file():
                Run(path).remove_stale_temporaries()
            try:
                manifest = json.loads((path / MANIFEST).read_text())
            except (OSError, ValueError, RecursionError):
                continue
            if manifest.get("status") == "running" and manifest.get("config_hash") == config_hash:
                return Run(path)
        return None

    # -- files
    def file(self, name: str) -> Path:
        return self.path / name

    def write_text(self, name: str, text: str) -> Path:
        return atomic_write_text(self.path / name, text)

    def write_json(self, name: str, obj) -> Path:
        return atomic_write_json(self.path / name, obj)

    def write_bytes(self, name: str, data: bytes) -> Path:
        return atomic_write_bytes(self.path / name, data)

    def save_model(self, model, name: str = MODEL) -> Path:
        return save_model_atomic(model, self.path / name)

    def config(self):
        """The run's resolved ``config.yaml`` as a ``Config``."""
        from liteconv.config import config_from_dict, read_config_file

        path = self.path / CONFIG
        self.verify_artifact(CONFIG)  # a config cut off or edited after the run: not defaults
        data = read_config_file(path)
        if not isinstance(data, dict):
            raise LiteconvError(f"{path}: corrupt run config (expected a mapping of sections)")
        return config_from_dict(data, str(path))

    def manifest(self) -> dict:
        """``manifest.json`` (``{}`` before it exists); one-line errors when it is corrupt."""
        path = self.path / MANIFEST
        if not path.exists():
            return {}
        data = read_json(path, "manifest")
        if not isinstance(data, dict):
            raise LiteconvError(f"{path}: corrupt manifest (expected a mapping, found "
                                f"{type(data).__name__}); the run cannot be used")  # fmt: skip
        return data

    def check_manifest(self) -> dict:
        """The manifest of a finished run, with the keys later commands read type-checked."""
        manifest = self.manifest()
        path = self.path / MANIFEST
        names = manifest.get("class_names")
        if (
            not isinstance(names, list)
            or len(names) < 2
            or not all(isinstance(n, str) for n in names)
        ):
            raise LiteconvError(f"{path}: class_names: expected a list of at least 2 names")
        shape = manifest.get("input_shape")
        if not (isinstance(shape, list) and len(shape) == 3 and
                all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):  # fmt: skip
            raise LiteconvError(f"{path}: input_shape: expected [height, width, channels]")
        model = manifest.get("model")
        if not isinstance(model, dict) or not all(
            isinstance(model.get(k), int) and model[k] >= 0 for k in ("macs", "params")
        ):
            raise LiteconvError(f"{path}: model: expected a mapping with integer macs and params")
        artifacts = manifest.get("artifacts", {})
        if not isinstance(artifacts, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in artifacts.items()
        ):
            raise LiteconvError(f"{path}: artifacts: expected a mapping of file -> SHA-256")
        return self._check_optional(manifest, path)

    @staticmethod
    def _check_optional(manifest: dict, path: Path) -> dict:
        """The keys a run may lack but later commands read: names that become file names,
        the status, numbers that end in reports."""
        from liteconv.config import ConfigError, check_experiment_name

        if "experiment" in manifest:  # becomes part of bundle and report file names
            try:
                check_experiment_name(manifest["experiment"], str(path))
            except ConfigError as err:
                raise LiteconvError(str(err)) from None
        if manifest.get("status", "complete") not in ("running", "complete", "failed"):
            raise LiteconvError(f"{path}: status: expected running, complete or failed")
        for key in ("metrics", "parent", "flatten", "dataset", "versions"):
            if manifest.get(key) is not None and not isinstance(manifest[key], dict):
                raise LiteconvError(f"{path}: {key}: expected a mapping")
        for key, value in (manifest.get("metrics") or {}).items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value < 0):  # fmt: skip
                raise LiteconvError(f"{path}: metrics.{key}: expected a finite non-negative number")
        custom = manifest.get("custom_objects")
        if custom is not None and not (isinstance(custom, list)
                                       and all(isinstance(c, str) for c in custom)):  # fmt: skip
            raise LiteconvError(f"{path}: custom_objects: expected a list of names")
        return manifest

    def verify_artifact(self, name: str) -> None:
        """Check ``name`` against its SHA-256 in the manifest (set LITECONV_NO_VERIFY_HASHES=1,
        or ``liteconv --no-verify-hashes``, for files edited on purpose)."""
        if os.environ.get("LITECONV_NO_VERIFY_HASHES", "") not in ("", "0"):
            return
        expected = (self.manifest().get("artifacts") or {}).get(name)
        if expected is None:
            return  # not recorded yet (a run being written, an old run)
        if sha256_file(self.path / name) != expected:
            raise LiteconvError(
                f"{self.path / name}: its SHA-256 differs from the one in the manifest (changed "
                "since it was written); re-export it, or use 'liteconv --no-verify-hashes' if "
                "you edited it on purpose"
            )

    def remove_stale_temporaries(self, older_than_s: float = 60.0) -> int:
        """Delete the ``.*.tmp*`` files killed writers left in the run (see
        ``device.files.remove_stale_temporaries``); returns how many."""
        from liteconv.device.files import remove_stale_temporaries

        return remove_stale_temporaries(self.path.rglob(".*.tmp*"), older_than_s)

    def update_manifest(self, **fields) -> dict:
        """Merge ``fields`` into ``manifest.json`` (nested dicts are merged one level)."""
        manifest = self.manifest()
        for key, value in fields.items():
            if isinstance(value, dict) and isinstance(manifest.get(key), dict):
                manifest[key] = {**manifest[key], **value}
            else:
                manifest[key] = value
        atomic_write_json(self.path / MANIFEST, manifest)
        return manifest

    def artifact_hashes(self) -> dict[str, str]:
        """SHA-256 of every file in the run except the manifest, logs and backups."""
        out = {}
        for f in sorted(self.path.rglob("*")):
            rel = f.relative_to(self.path)
            if (
                f.is_file()
                and rel.parts[0] not in _UNHASHED_DIRS
                and f.name != MANIFEST
                and not f.name.startswith(".")
            ):
                out[str(rel)] = sha256_file(f)
        return out

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"
