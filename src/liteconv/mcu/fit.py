"""Does a ``.tflite`` fit a microcontroller and run under TensorFlow Lite Micro?

Asked of TFLM's own interpreter (PyPI's ``tflite-micro``: the x86-64 build of TFLM with
its reference kernels and every operator registered):

- **operators**: the model loads only if TFLM registers every one; an operator it lacks is
  named from TFLM's own message ("Didn't find op for builtin opcode").
- **arena**: the smallest tensor arena that allocates, by bisection on its size in bytes,
  checked by the invokes of the parity check at that size; TFLM's allocation report
  (``print_allocations``) with it. TFLM runs in child processes (``probe.py``): its kernels
  can abort or segfault, which ends a probe, not liteconv. This x86-64 build lays out 64-bit pointers: the arena's *head* (the activation
  buffers, planned by TFLM's memory planner) is the same on a 32-bit MCU, its *tail*
  (TFLM's structs — eval tensors, node registrations, quantization parameters) holds
  pointers and size_t's that are half as wide there. So the figure is an upper bound of
  the 32-bit arena, and ``head + tail / 2`` a lower one; the verdict uses the upper.
- **flash**: the model's bytes plus the board's stated allowance for the runtime and one
  allowance per distinct operator's kernel (``boards.py``).
- **parity**: TFLM's outputs against LiteRT's on the same seeded inputs, judged by the
  bundle check's tolerances (``device/check.compare_outputs``: int8, a step or two of the
  output's quantization).

- **latency**: no single number (TFLM's reference kernels and CMSIS-NN differ by about 2x
  on the same board, MLPerf Tiny v0.5, NUCLEO-L4R5ZI: 704.3 vs 389.6 ms for image
  classification, and no Cortex-M cycle model is reachable here); a *range* from the
  model's MACs on the boards of the one calibrated core class (``latency.py``).

Example:
    >>> result = fit_model("int8.tflite", [load_board("nano33-ble-sense")])
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from liteconv.device.check import compare_outputs
from liteconv.device.errors import LiteconvError
from liteconv.device.graph import interpreter_macs, interpreter_ops, precision
from liteconv.device.runtime import invoke, load_interpreter
from liteconv.device.tensors import dequantize, output_step, random_inputs, set_inputs
from liteconv.mcu.boards import Board
from liteconv.mcu.latency import latency_range_ms

SAMPLES = 8
MAX_ARENA = 256 << 20  # beyond any MCU's RAM: a model that needs more does not fit anyway
_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'")


def _signal_name(code: int) -> str:
    import signal

    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _child(path: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        import tflite_micro  # noqa: F401 - only to say which extra is missing
    except ModuleNotFoundError:
        raise LiteconvError("the microcontroller check needs TFLM's interpreter: pip install "
                            "'liteconv[mcu]' (PyPI's tflite-micro, x86-64 Linux)") from None  # fmt: skip
    return subprocess.run([sys.executable, "-m", "liteconv.mcu.probe", str(path), *args],
                          capture_output=True, text=True, timeout=1800)  # fmt: skip


def _bisect(path: Path, low: int, high: int) -> tuple[int, str]:
    """Narrow (low, high] in child processes; a child that dies at a size counts that size
    as not allocating (TFLM crashed on too small an arena) and a new child goes on."""
    while True:
        proc = _child(path, "bisect", str(low), str(high))
        tried = None
        for line in proc.stdout.splitlines():
            word, _, n = line.partition(" ")
            if word == "try":
                tried = int(n)
            elif word == "ok":
                high, tried = int(n), None
            elif word == "fail":
                low, tried = int(n), None
            elif word == "done":
                return int(n), proc.stderr
        if proc.returncode >= 0 or tried is None:
            raise LiteconvError(
                f"TFLM's probe failed ({(proc.stderr.strip().splitlines() or ['no message'])[-1]})"
            )
        low = tried  # it crashed at this size: too small


def _first_message(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith(" ")]
    return lines[0] if lines else "no message"


def smallest_arena(path: str | Path, kinds: list[str] = ()) -> int:
    """The smallest arena (bytes) TFLM allocates the model at ``path`` in (``kinds``: its
    operator names, for the fix an operator TFLM lacks may have).

    Raises:
        LiteconvError: an operator TFLM lacks (named), a model TFLM cannot allocate in
            ``MAX_ARENA``, or one whose kernels crash TFLM at any arena size.
    """
    path = Path(path)
    high = 64 << 10
    while True:
        proc = _child(path, "check", str(high))
        if f"ok {high}" in proc.stdout:
            break
        missing = _MISSING_OP.search(proc.stdout + proc.stderr)
        if missing:
            hint = ("; its SHAPE operator computes shapes from a batch size left open: "
                    "convert with a fixed batch (keras.Input(..., batch_size=1)) and that "
                    "shape arithmetic goes" if "SHAPE" in kinds else "")  # fmt: skip
            raise LiteconvError(f"TFLM has no kernel for {missing.group(1)}: replace that "
                                "operator (e.g. another activation or layer) or register a "
                                f"custom kernel in your firmware{hint}")  # fmt: skip
        if high >= MAX_ARENA:
            why = (f"TFLM crashed ({_signal_name(proc.returncode)}) preparing it"
                   if proc.returncode < 0 else f"{_first_message(proc.stderr)}")  # fmt: skip
            raise LiteconvError(f"TFLM cannot run this model with up to {MAX_ARENA >> 20} MB "
                                f"of arena: {why}")  # fmt: skip
        high *= 4
    return _bisect(path, 0, high)[0]


def _report_bytes(report: str, what: str) -> int | None:
    match = re.search(rf"Arena allocation {what} (\d+) bytes", report)
    return int(match.group(1)) if match else None


def tflm_outputs(
    path: str | Path, arena: int, inputs: list[list[np.ndarray]]
) -> tuple[np.ndarray, str]:
    """TFLM's raw first output for each sample (``inputs``: per sample, one tensor per model
    input, in the model's order; in a child, ``arena`` bytes) and its allocation report."""
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "in.npz", **{f"s{i}_{j}": x for i, sample in enumerate(inputs)
                                          for j, x in enumerate(sample)})  # fmt: skip
        proc = _child(Path(path), "run", str(arena), str(Path(tmp) / "in.npz"),
                      str(Path(tmp) / "out.npy"))  # fmt: skip
        if proc.returncode != 0:
            why = (_signal_name(proc.returncode) if proc.returncode < 0
                   else _first_message(proc.stderr))  # fmt: skip
            raise LiteconvError(f"TFLM failed running the model with a {arena}-byte arena ({why})")
        # TFLM's MicroPrintf writes the report to stderr (stdout on some builds)
        report = proc.stdout.split("=== allocations", 1)[-1] + proc.stderr
        return np.load(Path(tmp) / "out.npy"), report


def parity(path: str | Path, arena: int, samples: int = SAMPLES, lite=None) -> tuple[dict, str]:
    """TFLM against LiteRT on ``samples`` seeded inputs (the check's tolerance logic), and
    TFLM's allocation report. ``lite``: the model's LiteRT interpreter, if one is open."""
    blob = Path(path).read_bytes()
    lite = lite or load_interpreter(
        model_content=blob, num_threads=1, xnnpack=False, source=str(path)
    )
    inputs = [random_inputs(lite, seed) for seed in range(samples)]  # every model input
    detail = lite.get_output_details()[0]
    expected = []
    for sample in inputs:
        set_inputs(lite, sample)
        invoke(lite, "model")
        expected.append(lite.get_tensor(detail["index"]).reshape(-1))
    here, report = tflm_outputs(path, arena, inputs)
    step = output_step(blob) or 0.0
    check = compare_outputs(dequantize(here, detail), dequantize(np.stack(expected), detail), step)
    return {k: check[k] for k in ("passed", "samples", "max_abs_diff", "mean_abs_diff",
                                  "tolerance", "output_step", "top1_identical")}, report  # fmt: skip


def fit_model(path: str | Path, boards: list[Board]) -> dict:
    """Everything the microcontroller check says of one model: operators, arena, flash,
    parity, and per board whether flash and RAM fit with their margins.

    Raises:
        LiteconvError: a file that is not a model, an operator TFLM lacks, a model TFLM
            cannot allocate: the model cannot run on TFLM (the CLI's exit 2).
    """
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as err:
        raise LiteconvError(f"{path}: cannot read the model ({err.strerror})") from None
    lite = load_interpreter(
        model_content=blob, num_threads=1, xnnpack=False, source=str(path)
    )  # once: operators, io, parity
    ops = interpreter_ops(lite)
    kinds = sorted({op.name for op in ops})
    io = (np.dtype(lite.get_input_details()[0]["dtype"]).name,
          np.dtype(lite.get_output_details()[0]["dtype"]).name)  # fmt: skip
    try:
        arena = smallest_arena(path, kinds)
        checked, report = parity(path, arena, lite=lite)
    except LiteconvError as err:
        raise LiteconvError(f"{path}: {err}") from None
    head, tail = _report_bytes(report, "head"), _report_bytes(report, "tail")
    lower = head + (tail + 1) // 2 if head is not None and tail is not None else None
    macs = interpreter_macs(lite, ops)
    mode = precision(ops)  # the latency range's cycles per MAC are int8 kernels' (MLPerf Tiny)
    record = {"file": str(path), "model_bytes": len(blob), "macs": macs, "mode": mode,
              "operators": len(ops),
              "operator_kinds": kinds, "io": {"input": io[0], "output": io[1]},
              "arena_bytes": arena, "arena_head_bytes": head, "arena_tail_bytes": tail,
              "arena_bytes_32bit_lower_bound": lower, "allocations": report.strip(),
              "parity": checked, "boards": []}  # fmt: skip
    for board in boards:
        flash = len(blob) + 1024 * (board.runtime_flash_kb + board.kernel_flash_kb * len(kinds))
        ram = 1024 * (board.ram_kb - board.ram_reserve_kb)
        record["boards"].append({
            "board": board.name, "flash_bytes": round(flash), "flash_limit": board.flash_kb * 1024,
            "flash_margin": round(board.flash_kb * 1024 - flash),
            "ram_for_arena": round(ram), "ram_margin": round(ram - arena),
            "fits": flash <= board.flash_kb * 1024 and arena <= ram,
            "latency_ms_range": latency_range_ms(macs, board) if mode == "int8" else None,
        })  # fmt: skip
    return record
