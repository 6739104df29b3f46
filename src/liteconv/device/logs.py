"""Keep native libraries' start-up chatter off the terminal unless asked for.

TensorFlow and LiteRT write C++ log lines straight to file descriptor 2 (``I0000 ...
cudart_stub.cc ...``, ``E0000 ... failed call to cuInit ...`` on every machine without a
GPU, ``INFO: Created TensorFlow Lite XNNPACK delegate``): ``TF_CPP_MIN_LOG_LEVEL`` does not
reach the lines written before absl's logging starts. ``quiet_native_logs()`` points fd 2
at a temporary file for the duration and keeps what was written in ``captured()``.
``LITECONV_VERBOSE=1`` (``liteconv --verbose``) lets everything through.

Example:
    >>> with quiet_native_logs():
    ...     import tensorflow
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

_CAPTURED: list[str] = []


def verbose() -> bool:
    """True when the user asked for the native logs (``LITECONV_VERBOSE=1``)."""
    return os.environ.get("LITECONV_VERBOSE", "").strip().lower() not in ("", "0", "false", "no")


@contextlib.contextmanager
def quiet_native_logs():
    """Capture what native code writes to fd 2 inside the block (nothing when verbose)."""
    if verbose():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (an embedding host): nothing to hide
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except ValueError:
                pass
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode(errors="replace")
            if text:
                _CAPTURED.append(text)


def captured() -> str:
    """Everything native code wrote inside ``quiet_native_logs`` blocks so far."""
    return "".join(_CAPTURED)
