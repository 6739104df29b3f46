"""TFLM in a child process: its kernels may abort or segfault (an int8 SOFTMAX whose input
scale overflows TFLM's fixed-point preprocessing aborts; arenas too small to hold a temp
tensor can segfault), and that must end a probe, not liteconv.

``python -m liteconv.mcu.probe MODEL check N``: ``ok N`` or ``fail N``.
``python -m liteconv.mcu.probe MODEL bisect LOW HIGH``: the smallest arena in (LOW, HIGH]
that allocates, printing ``try N`` before and ``ok N`` / ``fail N`` after each attempt
(so a parent that sees the child die knows at which size), then ``done N``.
``python -m liteconv.mcu.probe MODEL run ARENA INPUTS.npy OUTPUTS.npy``: TFLM's outputs for
each input, then its allocation report on stdout.
"""

from __future__ import annotations

import sys

import numpy as np


def _allocates(runtime, blob: bytes, size: int) -> bool:
    try:
        runtime.Interpreter.from_bytes(blob, arena_size=size)
    except RuntimeError:
        return False
    return True


def main(argv: list[str]) -> int:
    from tflite_micro.python.tflite_micro import runtime

    blob = open(argv[0], "rb").read()  # noqa: SIM115 - read whole, closed at exit
    if argv[1] == "check":
        size = int(argv[2])
        print(f"{'ok' if _allocates(runtime, blob, size) else 'fail'} {size}", flush=True)
        return 0
    if argv[1] == "bisect":
        low, high = int(argv[2]), int(argv[3])
        while high - low > 1:
            mid = (low + high) // 2
            print(f"try {mid}", flush=True)
            ok = _allocates(runtime, blob, mid)
            print(f"{'ok' if ok else 'fail'} {mid}", flush=True)
            low, high = (low, mid) if ok else (mid, high)
        print(f"done {high}", flush=True)
        return 0
    arena, inputs = int(argv[2]), np.load(argv[3])
    interp = runtime.Interpreter.from_bytes(blob, arena_size=arena)
    outs = []
    for x in inputs:
        interp.set_input(x, 0)
        interp.invoke()
        outs.append(np.array(interp.get_output(0)).reshape(-1))
        interp.reset()
    np.save(argv[4], np.stack(outs))
    print("=== allocations", flush=True)
    interp.print_allocations()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
