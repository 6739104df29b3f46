"""Atomic file writes (temporary file in the same folder, then ``os.replace``).

A writer that dies leaves the previous complete file or none, never half of one. JSON is
written strictly: NaN and infinities become ``null`` (bare ``NaN`` is not JSON).

Example:
    >>> atomic_write_json("results.json", {"p50_ms": 0.25})

Testing aid — injected crash points (in the manner of SQLite's crash tests): with
``LITECONV_CRASH_AT=KIND:N[:BYTES]`` in its environment, a process kills itself with
SIGKILL at its ``N``-th crash point of ``KIND``, on every machine and under any load:

- ``write:N[:BYTES]``: inside its ``N``-th atomic write, once ``BYTES`` bytes of the
  temporary are on disk (default: half of the file), before the rename;
- ``epoch:N``: at the end of training epoch ``N`` (after the epoch's backup and history
  row), see ``pipeline/train.py``.

The process kills its whole process group when it leads one (``start_new_session``),
else itself, after one line on stderr naming the point (``liteconv crash point: ...``).
``LITECONV_WRITES_LOG=FILE`` appends one line per crash point passed (``KIND N PATH``), so
a test or the kill table can name every write of a command from one clean run. Both
variables are read once, when this module is imported, and removed from the environment
so that child processes do not inherit them; unset, each point costs one comparison.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

CRASH_ENV = "LITECONV_CRASH_AT"
WRITES_LOG_ENV = "LITECONV_WRITES_LOG"
_CRASH_AT = os.environ.pop(CRASH_ENV, "")
_WRITES_LOG = os.environ.pop(WRITES_LOG_ENV, "")
_PASSED: dict[str, int] = {}
_CRASH_FORM = re.compile(r"(write|epoch):([1-9]\d*)(?::(\d+))?")


def _crash_plan() -> tuple[str, int, int | None] | None:
    """(kind, n, bytes kept) from ``LITECONV_CRASH_AT``; ``None`` when unset."""
    if not _CRASH_AT:
        return None
    match = _CRASH_FORM.fullmatch(_CRASH_AT.strip())
    if not match:
        from .errors import LiteconvError

        raise LiteconvError(f"{CRASH_ENV}={_CRASH_AT!r}: expected write:N[:BYTES] or epoch:N "
                            "(a testing aid; unset it for normal use)")  # fmt: skip
    kind, nth, keep = match.groups()
    return kind, int(nth), None if keep is None else int(keep)


def crash_point(kind: str, what: str | Path) -> int | None:
    """Count one crash point of ``kind`` (``write`` or ``epoch``) at ``what`` (the final
    file's path, or a label). Returns ``None`` unless ``LITECONV_CRASH_AT`` chooses this
    point; then, for ``write``, how many bytes of the temporary to keep (``-1``: half),
    and the caller calls :func:`die_inside`; for other kinds the process dies here."""
    if not _CRASH_AT and not _WRITES_LOG:
        return None
    _PASSED[kind] = count = _PASSED.get(kind, 0) + 1
    if _WRITES_LOG:
        with open(_WRITES_LOG, "a", encoding="utf-8") as log:
            log.write(f"{kind} {count} {what}\n")
    plan = _crash_plan()
    if plan is None or plan[:2] != (kind, count):
        return None
    if kind != "write":
        die_inside(f"{kind} {count} ({what})")
    return -1 if plan[2] is None else plan[2]


def die_inside(where: str) -> None:
    """One line on stderr, then SIGKILL: the process group when this process leads it."""
    sys.stderr.write(f"liteconv crash point: {CRASH_ENV}={_CRASH_AT}: killed at {where}\n")
    sys.stderr.flush()
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def crash_inside_written(tmp: str | Path, final: str | Path) -> None:
    """For writers that fill their temporary through a library (``model.save``, tarfile):
    call between the finished temporary and its rename. At the chosen crash point the
    temporary is cut to the planned size (default half) and the process dies."""
    keep = crash_point("write", final)
    if keep is None:
        return
    size = os.path.getsize(tmp)
    os.truncate(tmp, size // 2 if keep < 0 else min(keep, size))
    _die_inside_write(tmp, final)


def _die_inside_write(tmp: str | Path, final: str | Path) -> None:
    die_inside(f"write {_PASSED['write']}: {Path(tmp).name} -> {final}")


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
            keep = crash_point("write", path)
            if keep is not None:  # the testing aid: die with part of the file written
                fh.write(data[: len(data) // 2 if keep < 0 else keep])
                fh.flush()
                os.fsync(fh.fileno())
                _die_inside_write(tmp, path)
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
