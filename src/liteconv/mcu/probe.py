"""TFLM in a child process: its kernels may abort or segfault (an int8 SOFTMAX whose input
scale overflows TFLM's fixed-point preprocessing aborts; arenas too small to hold a temp
tensor can segfault), and that must end a probe, not liteconv.

``python -m liteconv.mcu.probe MODEL check N``: ``ok N`` or ``fail N``.
``python -m liteconv.mcu.probe MODEL bisect LOW HIGH``: the smallest arena in (LOW, HIGH]
that allocates, printing ``try N`` before and ``ok N`` / ``fail N`` after each attempt
(so a parent that sees the child die knows at which size), then ``done N``.
``python -m liteconv.mcu.probe MODEL run ARENA INPUTS.npz OUTPUTS.npy``: TFLM's first output
for each sample (``s{sample}_{input}`` arrays: every model input set), then its allocation
report on stdout.
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
    arena, arrays = int(argv[2]), np.load(argv[3])
    samples: dict[int, dict[int, np.ndarray]] = {}
    for key in arrays.files:
        sample, _, index = key[1:].partition("_")
        samples.setdefault(int(sample), {})[int(index)] = arrays[key]
    interp = runtime.Interpreter.from_bytes(blob, arena_size=arena)
    outs = []
    for sample in sorted(samples):
        for index, x in sorted(samples[sample].items()):
            interp.set_input(x, index)
        interp.invoke()
        outs.append(np.array(interp.get_output(0)).reshape(-1))
        interp.reset()
    np.save(argv[4], np.stack(outs))
    print("=== allocations", flush=True)
    interp.print_allocations()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
