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
import re
import tempfile
import time
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename (permissions as
    ``open()`` would give a new file: 0666 less the umask, not mkstemp's 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the writer's pid in the name: a later command can tell a dead writer's leftover
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                               dir=path.parent)  # fmt: skip
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_WRITER_PID = re.compile(r"\.(\d+)\.(?:[^.]*\.)?tmp(?:\.|$)")


def writer_alive(temporary: str | Path) -> bool | None:
    """Whether the process that is writing ``temporary`` (``.<name>.<pid>.<x>.tmp``, as
    this module and ``save_model_atomic`` name them) is alive; ``None`` when the name
    carries no pid. Another user's process counts as alive."""
    match = _WRITER_PID.search(Path(temporary).name)
    if not match:
        return None
    pid = int(match.group(1))
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def remove_stale_temporaries(temporaries, older_than_s: float = 60.0) -> int:
    """Delete those of ``temporaries`` (paths of ``.*.tmp*`` files) a killed writer left:
    at once when their writer (the pid in the name) is dead, after ``older_than_s`` when
    the name carries no pid, after a day in any case (a reused pid); returns how many."""
    now, removed = time.time(), 0
    for tmp in temporaries:
        try:
            alive = writer_alive(tmp)
            age = now - tmp.stat().st_mtime
            stale = alive is False or (alive is None and age > older_than_s)
            if tmp.is_file() and (stale or age > 86400):
                tmp.unlink()
                removed += 1
        except OSError:
            continue
    return removed


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


def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON number")


def read_json(path: str | Path, what: str = "JSON file"):
    """Parse a JSON file strictly (no NaN/Infinity, bounded nesting); one-line errors.

    Raises:
        LiteconvError: missing, unreadable, not UTF-8, not valid JSON, or nested too deep;
            the message names the file.
    """
    from .errors import LiteconvError

    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise LiteconvError(f"{path}: no such {what}") from None
    except OSError as err:
        raise LiteconvError(f"{path}: cannot read the {what} ({err.strerror})") from None
    except UnicodeDecodeError:
        raise LiteconvError(f"{path}: the {what} is not UTF-8 text") from None
    try:
        return json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise LiteconvError(f"{path}: the {what} is nested too deeply") from None
    except ValueError as err:
        raise LiteconvError(f"{path}: not a valid {what} ({err})") from None


def atomic_write_json(path: str | Path, obj) -> Path:
    """Write ``obj`` as indented, strictly valid JSON atomically."""
    text = json.dumps(finite(obj), indent=2, allow_nan=False, default=str)
    return atomic_write_text(path, text + "\n")
