"""Deployment targets (``configs/targets/*.yaml``): threads, cores to pin, runtime options.

On the host a target mimics the device's parallelism; the bundle carries it as
``target.json`` so the device runs the same settings. No TensorFlow import.

Example:
    >>> load_target("raspberry-pi-4")["threads"]
    [1, 2, 4]
"""

from __future__ import annotations

from pathlib import Path

import yaml

from liteconv.errors import LiteconvError

_KEYS = {
    "name": str,
    "description": str,
    "arch": str,
    "threads": list,
    "cores": list,
    "runtime": str,
    "xnnpack": list,
}
_RUNTIMES = ("auto", "litert", "tflite_runtime", "tf")


def target_dirs() -> list[Path]:
    """Where target names are looked up: ./configs/targets, then the source checkout's."""
    here = Path(__file__).resolve().parents[2] / "configs" / "targets"
    return [Path("configs/targets"), here]


def list_targets() -> list[str]:
    """Names of the known targets."""
    names = set()
    for folder in target_dirs():
        names.update(p.stem for p in folder.glob("*.yaml"))
    return sorted(names)


def load_target(name_or_path: str) -> dict:
    """Load and check a target by name or YAML path; one-line errors."""
    path = Path(name_or_path)
    if not path.suffix:
        path = next(
            (
                d / f"{name_or_path}.yaml"
                for d in target_dirs()
                if (d / f"{name_or_path}.yaml").is_file()
            ),
            path,
        )
    if not path.is_file():
        raise LiteconvError(
            f"--target {name_or_path}: unknown target; known: {', '.join(list_targets())} "
            "(or give a YAML path)"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise LiteconvError(f"{path}: invalid YAML ({err})") from None
    if not isinstance(data, dict):
        raise LiteconvError(f"{path}: expected a mapping")
    for key, value in data.items():
        if key not in _KEYS:
            raise LiteconvError(f"{path}: unknown key '{key}'; allowed: {', '.join(_KEYS)}")
        if not isinstance(value, _KEYS[key]):
            raise LiteconvError(f"{path}: {key}: expected {_KEYS[key].__name__}, got {value!r}")
    for key in ("threads", "cores"):
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in data.get(key, [])):
            raise LiteconvError(f"{path}: {key}: expected non-negative integers")
    if any(t < 1 for t in data.get("threads", [])):
        raise LiteconvError(f"{path}: threads: expected positive integers")
    if data.get("runtime", "auto") not in _RUNTIMES:
        raise LiteconvError(f"{path}: runtime: expected one of {', '.join(_RUNTIMES)}")
    if any(not isinstance(v, bool) for v in data.get("xnnpack", [])):
        raise LiteconvError(f"{path}: xnnpack: expected a list of true/false")
    data.setdefault("name", path.stem)
    return data
