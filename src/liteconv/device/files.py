"""Atomic file writes (temporary file in the same folder, then ``os.replace``).

A writer that dies leaves the previous complete file or none, never half of one. JSON is
written strictly: NaN and infinities become ``null`` (bare ``NaN`` is not JSON).

Example:
    >>> atomic_write_json("results.json", {"p50_ms": 0.25})
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return atomic_write_bytes(path, text.encode())


def finite(obj):
    """``obj`` with every NaN/infinite float replaced by ``None`` (nested lists and dicts)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def atomic_write_json(path: str | Path, obj) -> Path:
    """Write ``obj`` as indented, strictly valid JSON atomically."""
    text = json.dumps(finite(obj), indent=2, allow_nan=False, default=str)
    return atomic_write_text(path, text + "\n")
