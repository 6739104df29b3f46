"""Load a ``.tflite`` and run its first inference in a child process.

A structurally valid flatbuffer can still crash the runtime natively (a
``DEPTHWISE_CONV_2D`` whose optional bias input was dropped passes the verifier and then
segfaults in ``invoke()``, in LiteRT 2.3 and TF 2.21 alike). A crash there would take
liteconv down with it, so every model file is first loaded and run once, with and without
XNNPACK, in a child process (``python -m liteconv.device.probe FILE``); a signal death
becomes a one-line error naming the operator (found by running ever shorter prefixes of
the graph, ``flatbuf.truncated``, only when something crashed). It costs one process start per distinct model and process
(results are cached by content hash). Chosen over re-checking every operator against the
schema: the runtime's own kernels are the only complete list of what crashes them.

Example:
    >>> probe_model(Path("model.tflite").read_bytes(), "model.tflite")
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import LiteconvError

_PASSED: set[str] = set()
# Inputs the builtin kernels dereference without checking (a missing one crashes them):
# the minimum input count per operator, from the TFLite kernels' own Prepare/Eval code.
REQUIRED_INPUTS = {
    "CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "TRANSPOSE_CONV": 3, "FULLY_CONNECTED": 2,
    "ADD": 2, "SUB": 2, "MUL": 2, "DIV": 2, "CONCATENATION": 1, "RESHAPE": 1,
    "AVERAGE_POOL_2D": 1, "MAX_POOL_2D": 1, "MEAN": 2, "SOFTMAX": 1, "QUANTIZE": 1,
    "DEQUANTIZE": 1, "PAD": 2, "RELU": 1, "RELU6": 1, "LOGISTIC": 1, "HARD_SWISH": 1,
}  # fmt: skip


def suspects(ops) -> list[str]:
    """Operators whose required inputs are missing: ``"operator N (NAME)"`` each."""
    out = []
    for op in ops:
        need = REQUIRED_INPUTS.get(op.name, 0)
        given = list(op.inputs)
        if len(given) < need or any(i < 0 for i in given[:need]):
            out.append(f"operator {op.index} ({op.name})")
    return out


_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding liteconv/


def _run_child(blob: bytes, source: str, runtime: str, timeout: float):
    """Load and run ``blob`` once in a child process; the finished process."""
    with tempfile.NamedTemporaryFile(suffix=".tflite", delete=False) as fh:
        fh.write(blob)
        path = fh.name
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")) if p)}  # fmt: skip
    # LITECONV_PYTHON: how to start this Python again where that is not sys.executable alone
    # (an emulated interpreter: "qemu-aarch64-static -L ROOT ROOT/usr/bin/python3.11").
    python = shlex.split(os.environ.get("LITECONV_PYTHON", "")) or [sys.executable]
    try:
        return subprocess.run(
            [*python, "-m", "liteconv.device.probe", path, "--runtime", runtime,
             "--source", source],
            capture_output=True, text=True, timeout=timeout, env=env,
        )  # fmt: skip
    except OSError as err:
        raise LiteconvError(
            f"{source}: cannot start {python[0]} to check the model ({err.strerror}); set "
            "LITECONV_PYTHON to the command that starts this Python"
        ) from None
    except subprocess.TimeoutExpired:
        raise LiteconvError(
            f"{source}: the first inference did not finish in {timeout:.0f} s — the file is "
            "malformed or far too large for this machine"
        ) from None
    finally:
        os.unlink(path)


def crashing_operator(blob: bytes, source: str, runtime: str = "auto",
                      timeout: float = 300) -> int | None:  # fmt: skip
    """The operator whose execution crashes the runtime: the shortest prefix of the graph
    (``flatbuf.truncated``) that still crashes a child process, found by bisection
    (about log2(operators) children); ``None`` when no prefix crashes alone."""
    from .flatbuf import operator_count, truncated

    def crashes(last: int) -> bool:
        return _run_child(truncated(blob, last), source, runtime, timeout).returncode < 0

    try:
        hi = operator_count(blob) - 1
        if hi < 0 or not crashes(hi):
            return None
        lo = 0
        while lo < hi:  # invariant: the prefix ending at hi crashes
            mid = (lo + hi) // 2
            if crashes(mid):
                hi = mid
            else:
                lo = mid + 1
        return hi
    except LiteconvError:
        return None


def probe_model(blob: bytes, source: str, runtime: str = "auto", timeout: float = 300) -> None:
    """Raise a one-line ``LiteconvError`` unless ``blob`` loads and runs in a child process.
    A native crash names the operator: one missing an input its kernel reads, else the
    one found by ``crashing_operator``."""
    digest = hashlib.sha256(blob).hexdigest() + runtime
    if digest in _PASSED:
        return
    proc = _run_child(blob, source, runtime, timeout)
    lines = proc.stdout.strip().splitlines()
    ops = next((json.loads(line[4:]) for line in lines if line.startswith("ops ")), None)
    suspect = next((json.loads(line[8:]) for line in lines if line.startswith("suspect ")), [])
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        if suspect:  # an operator missing an input its kernel reads: the likely culprit
            where = f"running {suspect[0]}, which lacks a required input"
        else:
            index = crashing_operator(blob, source, runtime, timeout)
            if index is not None:
                op = ops[index] if ops and index < len(ops) else "?"
                where = f"running operator {index} ({op})"
            else:
                where = "running the model" + (
                    f" (its operators: {', '.join(dict.fromkeys(ops))})" if ops else "")  # fmt: skip
        raise LiteconvError(
            f"{source}: the LiteRT runtime crashed ({name}) while {where} — the file is "
            "malformed; re-export it"
        )
    if proc.returncode != 0:
        message = (proc.stderr.strip().splitlines() or ["the runtime failed"])[-1]
        if not message.startswith("error: "):
            message = f"{source}: the runtime failed on it ({message[:200]})"
        raise LiteconvError(message.removeprefix("error: "))
    _PASSED.add(digest)


def _child(argv: list[str]) -> int:
    import argparse

    from .graph import interpreter_ops
    from .runtime import invoke, load_interpreter
    from .tensors import random_inputs, set_inputs

    parser = argparse.ArgumentParser(prog="liteconv.device.probe")
    parser.add_argument("model")
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--source", default=None, help="the model's name in messages")
    args = parser.parse_args(argv)
    source = args.source or Path(args.model).name
    try:
        blob = Path(args.model).read_bytes()
        plain = load_interpreter(model_content=blob, runtime=args.runtime, xnnpack=False,
                                 source=source)  # fmt: skip
        ops = interpreter_ops(plain)
        print("ops " + json.dumps([op.name for op in ops]), flush=True)
        print("suspect " + json.dumps(suspects(ops)), flush=True)
        for xnnpack in (False, True):
            interp = plain if not xnnpack else load_interpreter(
                model_content=blob, runtime=args.runtime, xnnpack=True, source=source)  # fmt: skip
            set_inputs(interp, random_inputs(interp))
            invoke(interp, source)
    except LiteconvError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # the runtime's Python layer on a malformed file (names, ...)
        first = (str(err).strip().splitlines() or [""])[0][:200]
        print(f"error: {source}: the runtime cannot read it ({type(err).__name__}: {first}) — "
              "the file is malformed; re-export it", file=sys.stderr)  # fmt: skip
        return 2
    print("ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
