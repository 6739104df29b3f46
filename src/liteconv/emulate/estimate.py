"""Estimated latency of ``.tflite`` models on a target core, emulated; cached by model hash.

For each model: inputs drawn from a fixed seed (the same on the host), instructions per
invoke counted under ``qemu-aarch64 -cpu <target.qemu_cpu>`` (``qemu-arm`` for a 32-bit
target, see ``EMULATED_RUNTIME_ARMV7``), cycles from llvm-mca's
``<target.core>`` model, and, where the target gives its caches, every load and store run
through a model of its L1D and last-level cache (``count.c``): the lines read from DRAM
and written back to it per invoke. The runtime's symbols split the counted blocks
(``symbols``): what XNNPACK's tasks run on every thread (parallel), what runs on the
calling thread only (serial: interpreter, operator setup, dispatch), and how many times an
invoke dispatches to the thread pool. The time (``time_ms``):

    ms(T threads) = cycle_scale × ((serial + max(parallel / T, shared L2)) / clock
                                   + dispatches × SYNC_CYCLES × (T − 1) / clock
                                   + DRAM bytes / bandwidth(T))

    shared L2 = L1D misses × 64 bytes / SHARED_L2_BYTES_PER_CYCLE   (``l2_shared`` targets)

Each dispatch at T > 1 costs ``SYNC_CYCLES`` per extra thread (waking the pool and waiting
for its slowest thread: one count for every core, fitted on published 1- vs 2-thread
pairs). On a core whose L1Ds miss into one L2 that the cluster's cores share (the
Cortex-A53's and A72's; YAML ``l2_shared``, from the core's TRM; not DynamIQ cores such as
the A55 and A76, whose L2 is each core's own), the threads' parallel work cannot run faster
than that L2 returns their L1 misses: ``SHARED_L2_BYTES_PER_CYCLE`` for all of them
together, one count for every such core (fitted once, on the Pi 4's EfficientDet-Lite 1- vs
2- and 4-thread pairs; ``liteconv study emulation``). At one thread the bound stays under
the compute; at four it is what holds back the models that miss L1 most (the full SSD).
Memory (``dram_bandwidth``): one thread sustains ``dram_mb_s`` (its STREAM figure:
what one core's outstanding misses can draw, well under the bus's peak on these cores);
T threads draw T times that, up to the bus's peak ``dram_peak_mb_s`` (transfer rate ×
width, from the datasheet; a target without it keeps one thread's bandwidth at any T), or
up to ``dram_all_threads_mb_s`` where a board's threads are known to sustain less together:
the Raspberry Pi 4 and 5, whose one core already draws what their 32-bit buses deliver
(their published 1-, 2- and 4-thread figures speed up so; ``liteconv study emulation``).
The DRAM bytes are the one-thread access stream's at any T. The cache model also counts
the re-reads (misses on lines the invoke had already read from memory: data streamed
through the last-level cache more than once, a GEMM's weights once per tile of rows);
threads running neighbouring tiles at once could share them through the shared cache
(``dram_bytes(memory, shared_by=T)``), but the published 1- vs N-thread pairs do not
show it: shared, at T threads' bandwidth, they overshoot every held-out speed-up
(``liteconv study emulation``, "Which terms the figures ask for"), so the estimate pays
them in full. The terms add: llvm-mca assumes every load hits L1, so the cycles carry no
miss time for the traffic term to overlap with. An estimate counts only if the emulated
outputs match the host's (the bundle check's tolerances; a detector's class scores,
``compare_detector``); otherwise the record says so and carries no estimate. Every figure
is an estimate: the emulated runtime is ai-edge-litert 2.0.2 (older than the host's). With
``xnnpack=False`` (``bench --no-xnnpack --emulate``) it runs its builtin kernels instead,
counted and split by their own names (``symbols``): they make no pthreadpool dispatch, so
no dispatch term.

Example:
    >>> records = estimate_models(["fp32.tflite"], load_target("raspberry-pi-4"))
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from liteconv.device import caches
from liteconv.device.check import compare_outputs, max_tolerance
from liteconv.device.errors import LiteconvError
from liteconv.device.files import atomic_write_json, read_json
from liteconv.device.runtime import invoke, load_interpreter
from liteconv.device.targets import Target
from liteconv.device.tensors import dequantize, output_step, random_inputs, set_inputs
from liteconv.emulate import counts, cycles, symbols, tools
from liteconv.emulate.tools import PLUGIN_SOURCE

EMULATED_RUNTIME = "ai-edge-litert 2.0.2 (aarch64, under qemu-user 7.2)"
# A 32-bit target (``arch: armv7l``, Raspberry Pi OS 32-bit): PyPI's only armv7 runtime,
# under qemu-arm. LLVM has no scheduling model of a Cortex-A53 (nor an A7) running 32-bit
# code (llvm-mca -mtriple=armv7a: "unable to find instruction-level scheduling information"),
# so such a target's cycles are its instructions (one per cycle; the board's constant holds
# the core's mean cycles per instruction). Its armv7 wheel is built without XNNPACK (the
# delegate is optional and not linked: no ``xnn_`` code in the library; a model's operators
# stay TFLite's with the default resolver), so every estimate there, fp32 and int8, is
# TFLite's builtin kernels, standing in for XNNPACK's armv7 kernels on a board that has
# them. Its library keeps its symbols, so an invoke is split as the 64-bit runtime's is, by
# the kernels' names (``symbols.PARALLEL_ARMV7``: Eigen's and gemmlowp's GEMMs and the
# depthwise convolutions on every thread), and its dispatches are the graph's operators that
# compute (``graph_dispatches``: on the 64-bit runs they equal the counted ones ± 1: the
# board's XNNPACK dispatches), none with ``xnnpack=False`` (the board's builtin kernels make
# no pthreadpool dispatch).
EMULATED_RUNTIME_ARMV7 = (
    "tflite-runtime 2.14.0 (armv7l, under qemu-arm 7.2; "
    "builtin kernels: its armv7 wheel has no XNNPACK)"
)
# Operators that move no data through XNNPACK's thread pool (shapes, views).
NO_DISPATCH = {"RESHAPE", "SHAPE", "STRIDED_SLICE", "PACK", "SQUEEZE", "EXPAND_DIMS"}


def is_32bit(target: Target) -> bool:
    """True for a target emulated as 32-bit ARM (``arch: armv7l``)."""
    return target.arch == "armv7l"


def emulated_runtime(target: Target, xnnpack: bool = True) -> str:
    """What runs the emulated models of ``target``, in words (``xnnpack`` False: its
    builtin kernels, as ``bench --no-xnnpack``)."""
    if is_32bit(target):  # builtin kernels either way (the wheel has no XNNPACK)
        return EMULATED_RUNTIME_ARMV7 if xnnpack else f"{EMULATED_RUNTIME_ARMV7}, XNNPACK off"
    runtime = EMULATED_RUNTIME if xnnpack else f"{EMULATED_RUNTIME}, builtin kernels (XNNPACK off)"
    return f"{runtime}, the kernels it picks for MIDR {target.midr}" if target.midr else runtime


def core_model(target: Target) -> str:
    """The core and what its cycles come from, in words: ``cortex-a72 (LLVM 16)``."""
    if is_32bit(target):
        return f"{target.core} (32-bit: no LLVM model)"
    return f"{target.core} (LLVM {target.llvm})"


def cycles_source(target: Target) -> str:
    """Where ``target``'s estimated cycles come from, in words (every estimate's title)."""
    if is_32bit(target):
        return ("cycles = instructions (LLVM has no 32-bit Cortex-A53 model: the constant "
                "holds the mean cycles per instruction)")  # fmt: skip
    return f"cycles from LLVM {target.llvm}'s llvm-mca {target.core} model"


def describe_accuracy(target: Target) -> str:
    """How far ``target``'s estimates fell from published figures no fit saw, in words
    (its YAML's ``held_out_absolute`` / ``held_out_ratios``, from the committed study):
    printed beside every estimate, so a reader knows what to plan with."""
    absolute, ratios = target.held_out_absolute, target.held_out_ratios
    if not (absolute.rows or ratios.rows):
        why = target.held_out_source or "not in make bench-emulation's tables"
        return f"Held out from every fit: nothing to check it on ({why})."

    def part(held, what: str) -> str:
        if not held.rows:
            return f"{what}: none held out"
        return (f"{what} median |error| {held.median_pct:g} % (worst {held.worst_pct:+g} %) "
                f"over {held.rows} figure{'s' if held.rows > 1 else ''}")  # fmt: skip

    return (f"Held out from every fit, on published figures: "
            f"{part(absolute, 'absolute (this board)')}; "
            f"{part(ratios, 'model to model (one constant per table)')} "
            f"({target.held_out_source}).")  # fmt: skip


def accuracy_cell(target: Target) -> str:
    """``describe_accuracy`` in a table cell: the median |error| and how many figures,
    absolute / model to model (``13.9 % of 22 / 4.4 % of 75``; ``none`` for no figure)."""

    def one(held) -> str:
        return f"{held.median_pct:g} % of {held.rows}" if held.rows else "none"

    return f"{one(target.held_out_absolute)} / {one(target.held_out_ratios)}"


def graph_dispatches(path: str | Path) -> int:
    """The operators of the model at ``path`` that dispatch work (all but ``NO_DISPATCH``)."""
    from liteconv.device.graph import list_ops

    return sum(op.name not in NO_DISPATCH for op in list_ops(Path(path).read_bytes()))


CACHE_VERSION = 4  # 3: serial / parallel cycles and dispatches; 4: re-reads counted


def caches_of(target: Target) -> dict | None:
    """The plugin's cache model for ``target`` (None when its YAML gives no caches)."""
    if not (target.l1d_kb and target.l1d_ways and target.l2_kb and target.l2_ways):
        return None
    return {
        "l1d": (target.l1d_kb, target.l1d_ways, target.l1d_policy),
        "l2": (target.l2_kb, target.l2_ways, target.l2_policy),
    }


def describe_memory(target: Target) -> str:
    """How the memory term of ``target``'s estimates is made, in words (for every table)."""
    if not target.dram_mb_s:
        return "no memory term (the target YAML gives no dram_mb_s)"
    if target.dram_all_threads_mb_s:
        peak = (
            " at any thread count (the board's threads together sustain no more)"
            if target.dram_all_threads_mb_s == target.dram_mb_s
            else f", T threads T × that up to {target.dram_all_threads_mb_s:g} MB/s together"
        )
    elif target.dram_peak_mb_s:
        peak = f", T threads T × that up to the bus's {target.dram_peak_mb_s:g} MB/s peak"
    else:
        peak = " at any thread count"
    return (f"DRAM traffic from a {target.l1d_kb} KB L1D + {target.l2_kb} KB last-level cache "
            f"model at {target.dram_mb_s:g} MB/s for one thread{peak}")  # fmt: skip


def dram_bandwidth(target: Target, threads: int, bus_peak: bool = False) -> float:
    """MB/s that ``threads`` threads draw from ``target``'s DRAM together: each sustains
    one thread's ``dram_mb_s``, all of them at most ``dram_all_threads_mb_s`` where the YAML
    gives it (a board whose bus one core nearly saturates), else the bus's
    ``dram_peak_mb_s`` (one thread's figure at any count where it gives neither); 0 without
    ``dram_mb_s``. ``bus_peak``: up to the bus's peak even where the YAML gives less (the
    study's comparison)."""
    cap = target.dram_peak_mb_s if bus_peak else (target.dram_all_threads_mb_s
                                                  or target.dram_peak_mb_s)  # fmt: skip
    if not cap:
        return target.dram_mb_s
    return min(threads * target.dram_mb_s, cap)


def dram_bytes(memory: dict | None, shared_by: int = 1) -> float:
    """Bytes moved between the last-level cache and DRAM per invoke (64-byte lines read
    and dirty lines written back); with ``shared_by`` T > 1, what T threads would move if
    they shared the re-read lines (``l2_rereads``: each read once for all of them)."""
    if not memory:
        return 0.0
    rereads = memory.get("l2_rereads", 0)
    reads = memory["l2_misses"] - rereads + rereads / shared_by
    return 64.0 * (reads + memory["l2_writebacks"])


def dram_ms(target: Target, memory: dict | None, threads: int, shared_by: int = 1) -> float:
    """Milliseconds per invoke moving ``dram_bytes(memory, shared_by)`` at
    ``dram_bandwidth(target, threads)``; 0 for a target without ``dram_mb_s``."""
    bandwidth = dram_bandwidth(target, threads)
    return dram_bytes(memory, shared_by) / (bandwidth * 1e3) if bandwidth else 0.0


# Cycles each pthreadpool dispatch costs per extra thread (waking the workers, waiting for
# the slowest): fitted once, on XNNPACK's Pixel 3a 1- vs 2-thread pairs (google/XNNPACK
# README, March 2020), by ``liteconv study emulation``; a count of cycles, so it applies to
# every core at its clock and scale. Not a per-board constant.
SYNC_CYCLES = 8000
# Bytes per cycle that a cluster's shared L2 returns to the L1D misses of all its cores
# together (``l2_shared`` targets), at the target's clock and scale: fitted once, on the
# Raspberry Pi 4's EfficientDet-Lite0-2 1- vs 2- and 4-thread pairs (TFLite 2.18,
# NobuoTsukamoto/benchmarks), by ``liteconv study emulation``; a count per cycle, so it
# applies to every such core. Not a per-board constant.
SHARED_L2_BYTES_PER_CYCLE = 8.6


def thread_split(counted: dict) -> tuple[float, float, int]:
    """``(serial cycles, parallel cycles, dispatches)`` per invoke of an estimate record:
    what runs on the calling thread only, what XNNPACK splits over the threads, and how
    many times it dispatches to them (``symbols.split_blocks``). A record counted before
    the split (no ``parts``) is all parallel, with no dispatches."""
    parts = (counted.get("cycle_model") or {}).get("parts")
    if not parts:
        return 0.0, float(counted["estimated_cycles"]), 0
    return (float(parts.get("serial", {}).get("cycles", 0)),
            float(parts.get("parallel", {}).get("cycles", 0)),
            int(counted.get("dispatches") or 0))  # fmt: skip


def shared_l2_cycles(target: Target, counted: dict, bytes_per_cycle: float | None = None) -> float:
    """Cycles the L1D misses of one invoke take through ``target``'s shared L2 at
    ``bytes_per_cycle`` (default ``SHARED_L2_BYTES_PER_CYCLE``) for all threads together;
    0 where the target's L2 is not shared (``l2_shared``) or no miss was counted."""
    memory = counted.get("memory") or {}
    rate = SHARED_L2_BYTES_PER_CYCLE if bytes_per_cycle is None else bytes_per_cycle
    if not (target.l2_shared and rate > 0 and memory.get("l1_misses")):
        return 0.0
    return 64.0 * memory["l1_misses"] / rate


def time_ms(
    target: Target,
    counted: dict,
    threads: int = 1,
    sync_cycles: float | None = None,
    l2_bytes_per_cycle: float | None = None,
) -> dict:
    """``{"compute_ms", "shared_l2_ms", "sync_ms", "memory_ms", "estimated_ms"}`` on
    ``target`` at ``threads`` for the counts of one model (``estimated_cycles``,
    ``cycle_model``'s serial / parallel ``parts``, ``dispatches``, ``memory``; see the
    module docstring). ``compute_ms``: the serial part and the larger of the parallel part
    ÷ ``threads`` and ``shared_l2_ms`` (what the L1D misses take through a shared L2,
    ``shared_l2_cycles``; 0 where the L2 is each core's own). ``memory_ms`` (at
    ``dram_bandwidth``) is 0 for a target without ``dram_mb_s``; ``sync_cycles``: the
    cycles per dispatch and extra thread (default ``SYNC_CYCLES``); ``l2_bytes_per_cycle``:
    the shared L2's (default ``SHARED_L2_BYTES_PER_CYCLE``)."""
    serial, parallel, dispatches = thread_split(counted)
    sync_cycles = SYNC_CYCLES if sync_cycles is None else sync_cycles
    khz = target.clock_mhz * 1e3
    shared = shared_l2_cycles(target, counted, l2_bytes_per_cycle)
    compute = (serial + max(parallel / threads, shared)) / khz
    sync = dispatches * sync_cycles * (threads - 1) / khz
    memory_ms = dram_ms(target, counted.get("memory"), threads)
    total = target.cycle_scale * (compute + sync + memory_ms)
    return {"compute_ms": round(compute, 4), "shared_l2_ms": round(shared / khz, 4),
            "sync_ms": round(sync, 4), "memory_ms": round(memory_ms, 4),
            "estimated_ms": round(total, 4)}  # fmt: skip


def as_rows(output: np.ndarray) -> np.ndarray:
    """An output tensor as ``(rows, values)`` for ``compare_outputs``: its first axis kept
    (a batch), the rest flattened (a feature map, a sequence); a 0-D or 1-D tensor is one row."""
    return output.reshape(output.shape[0] if output.ndim > 1 else 1, -1)


def host_reference(path: str | Path, seed: int = 0, xnnpack: bool = True) -> dict:
    """One interpreter on the host for the model at ``path``: deterministic inputs, one per
    model input in its own dtype and shape (``tensors.random_inputs``), the host's
    dequantized first output for them (``as_rows``), that output's detail (to dequantize the
    emulated output alike) and its quantization step. A detector's output here is the class
    scores its post-processing operator reads (every anchor × class, ``detection_scores``),
    with ``control``: the same tensor for other inputs (``seed + 1``), which
    ``compare_detector`` measures the emulated run against (None for other models).
    ``xnnpack`` False: the host's builtin kernels, the family the emulated run uses then
    (XNNPACK's int8 kernels round otherwise)."""
    blob = Path(path).read_bytes()
    scores = detection_scores(blob)
    interp = load_interpreter(path, num_threads=1, xnnpack=xnnpack)
    if scores:
        detail = next(d for d in interp.get_tensor_details() if d["index"] == scores[1])
    else:
        detail = interp.get_output_details()[0]

    def run(inputs_seed: int) -> tuple[list, np.ndarray]:
        inputs = random_inputs(interp, inputs_seed)
        set_inputs(interp, inputs)
        invoke(interp, str(path))
        return inputs, as_rows(dequantize(interp.get_tensor(detail["index"]), detail))

    inputs, output = run(seed)
    step = output_step(blob, "auto", index=scores[1] if scores else None)
    control = run(seed + 1)[1] if scores else None
    return {"inputs": inputs, "output": output, "detail": detail, "step": step or 0.0,
            "control": control}  # fmt: skip


def detection_scores(blob: bytes) -> tuple[int, int] | None:
    """``(scores out, scores in)``: a detector's ``TFLite_Detection_PostProcess`` scores
    output (its third) and input (its second, every anchor × class), None for any other
    model. The emulated run's check compares the input (``compare_detector``): the output
    holds only the top few scores, sorted, which scarcely depend on the image (a random-weight
    SSDLite's ten best differ by about one quantization step between unrelated inputs)."""
    from liteconv.device.flatbuf import custom_codes
    from liteconv.device.graph import POSTPROCESS_OP, list_ops

    if POSTPROCESS_OP not in custom_codes(blob):  # read from the flatbuffer: no interpreter
        return None
    for op in list_ops(blob):
        if op.name == POSTPROCESS_OP and len(op.outputs) > 2 and len(op.inputs) > 1:
            return op.outputs[2], op.inputs[1]
    return None


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r of two arrays' values (1.0 for two equal constant arrays, 0.0 where one
    is constant and they differ)."""
    x, y = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = float(np.sqrt((x * x).sum() * (y * y).sum()))
    if denom > 0:
        return float((x * y).sum() / denom)
    return 1.0 if np.array_equal(a, b) else 0.0


def compare_detector(outputs: np.ndarray, expected: np.ndarray, control: np.ndarray,
                     step: float) -> dict:  # fmt: skip
    """A detector's emulated class scores (every anchor × class) against the host's for the
    same inputs: ``passed`` when they agree within the bundle check's tolerance everywhere
    (float kernels; XNNPACK's int8 kernels, which round alike on every ISA), or else when they
    are nearer the host's than the host's own scores for other inputs (``control``) are:
    Pearson's r at least halfway from the control's r to 1. TFLite's builtin int8 kernels
    round otherwise on each ISA and a deep detector compounds it: on the SSDLite MobileNet v2
    twin (random weights, full integer), aarch64 and armv7 runs against this host's builtin
    kernels differ by about 10 steps on average (up to 109), r 0.82 / 0.85, where other inputs
    give r 0.36 (needed: 0.68). Returns ``passed``, ``max_abs_diff``, ``tolerance``,
    ``correlation``, ``control_correlation`` and ``needed_correlation``."""
    tol = max_tolerance(step)
    diff = float(np.abs(outputs.astype(np.float64) - expected).max())
    r, r_control = pearson(outputs, expected), pearson(control, expected)
    needed = (1.0 + r_control) / 2
    return {"passed": diff <= tol or r >= needed, "max_abs_diff": diff, "tolerance": tol,
            "correlation": round(r, 4), "control_correlation": round(r_control, 4),
            "needed_correlation": round(needed, 4)}  # fmt: skip


def _key(blob: bytes, target: Target, xnnpack: bool = True) -> str:
    digest = hashlib.sha256(blob)
    digest.update(PLUGIN_SOURCE.read_bytes())
    if not xnnpack:  # other kernels, other counts (XNNPACK's keys stay as they were)
        digest.update(b"builtin kernels")
    if is_32bit(target):  # no llvm-mca; the runtime and qemu differ; split by its symbols
        digest.update(json.dumps([CACHE_VERSION, "armv7l", target.qemu_cpu,
                                  caches_of(target), "split"]).encode())  # fmt: skip
        return digest.hexdigest()[:24]
    digest.update(json.dumps([CACHE_VERSION, target.core, target.qemu_cpu, caches_of(target),
                              tools.llvm_mca_version(target.llvm), target.midr]).encode())  # fmt: skip
    return digest.hexdigest()[:24]


# What a record's check keeps (a detector's also its correlations, ``compare_detector``).
CHECK_KEYS = ("passed", "max_abs_diff", "tolerance", "correlation", "control_correlation",
              "needed_correlation")  # fmt: skip

# What the cache keeps: the counts, not the times (those follow from the target's YAML).
STORED = (
    "instructions_per_invoke",
    "estimated_cycles",
    "cycle_model",
    "dispatches",
    "memory",
    "check",
)


def _record(target: Target, counted: dict | None, cached: dict | None,
            xnnpack: bool = True) -> dict:  # fmt: skip
    base = cached or {}
    if counted is not None and is_32bit(target):  # see EMULATED_RUNTIME_ARMV7
        n = counted["instructions_per_invoke"]
        split = symbols.split_blocks(counted["blocks"], counted["symbolizer"], armv7=True)
        serial, parallel = split["serial"]["instructions"], split["parallel"]["instructions"]
        detail = {"instructions": n, "mca_cpu": None, "llvm": None, "cpi": 1.0,
                  "kernels": split["kernels"],
                  "parts": {"serial": {"instructions": serial, "cycles": serial},
                            "parallel": {"instructions": parallel, "cycles": parallel}}}  # fmt: skip
        base = {"instructions_per_invoke": round(n), "estimated_cycles": round(n),
                "cycle_model": detail, "dispatches": counted["dispatches"],
                "memory": counted.get("memory")}  # fmt: skip
    elif counted is not None:
        split = symbols.split_blocks(counted["blocks"], counted["symbolizer"], xnnpack)
        cyc, detail = cycles.estimate_cycles(counted["blocks"], target.core, target.llvm,
                                             kinds=split["kinds"])  # fmt: skip
        detail["kernels"] = split["kernels"]  # what the runtime picked for target.midr's core
        base = {"instructions_per_invoke": round(counted["instructions_per_invoke"]),
                "estimated_cycles": round(cyc), "cycle_model": detail,
                "dispatches": split["dispatches"], "memory": counted.get("memory")}  # fmt: skip
    one = time_ms(target, base)
    threads = {str(t): time_ms(target, base, t)["estimated_ms"]
               for t in sorted(set(target.threads) | {1})}  # fmt: skip
    return {**base, "dram_bytes": round(dram_bytes(base.get("memory"))), **one,
            "estimated_ms_threads": threads}  # fmt: skip


def _not_run(target: Target, error: str) -> dict:
    """The record of a model the emulated runtime could not load or run: no counts, no
    estimates, ``error`` (the runtime's words, shortened)."""
    threads = {str(t): None for t in sorted(set(target.threads) | {1})}
    none = dict.fromkeys(("instructions_per_invoke", "estimated_cycles", "cycle_model",
                          "dispatches", "memory", "dram_bytes", "compute_ms", "sync_ms",
                          "memory_ms", "estimated_ms"))  # fmt: skip
    return {**none, "estimated_ms_threads": threads, "error": error[:400],
            "check": {"passed": False, "max_abs_diff": None, "tolerance": None}}  # fmt: skip


def check_words(check: dict) -> str:
    """A check record in a few words: max |diff| against its tolerance, and a detector's
    correlation against the one it needed."""
    words = f"max |diff| {check['max_abs_diff']:.3g}, tolerance {check['tolerance']:.3g}"
    if "correlation" in check:
        words += (f"; r {check['correlation']:.2f}, needed {check['needed_correlation']:.2f} "
                  f"(other inputs: {check['control_correlation']:.2f})")  # fmt: skip
    return words


def no_estimate(record: dict) -> str | None:
    """Why an ``estimate_models`` record has no estimate, in a few words for a table cell
    (None when it has one)."""
    if record.get("error"):
        return "emulated runtime cannot run it"
    return "outputs differ" if record["estimated_ms"] is None else None


def estimate_models(models: list[str], target: Target, *, cache: str | Path = str(caches.EMULATE),
                    arm64_cache: str | Path = str(caches.ARM64), xnnpack: bool = True,
                    echo=print) -> list[dict]:  # fmt: skip
    """One record per model: ``target``, ``core``, ``instructions_per_invoke``,
    ``estimated_cycles``, ``memory`` (per-invoke accesses, misses, write-backs; None without
    a cache model), ``dram_bytes``, ``compute_ms``, ``memory_ms``, ``estimated_ms`` (1
    thread), ``estimated_ms_threads`` (``{"T": ms}`` for the target's thread counts) and
    ``check`` (emulated vs host outputs); the estimates are ``None`` when the outputs do
    not match, and the counts too, with ``error``, when the emulated runtime cannot load or
    run the model (an operator newer than it, say: a warning line, the other models go on;
    see ``no_estimate``). ``xnnpack`` False: the runtime's builtin kernels are emulated
    (``bench --no-xnnpack``; their own thread split, ``symbols``), each record's
    ``runtime`` says so."""
    if not target.core or not target.qemu_cpu or not target.clock_mhz:
        raise LiteconvError(
            f"target {target.name}: no core/qemu_cpu/clock_mhz for emulation; add them to its "
            "YAML (see configs/targets/raspberry-pi-4.yaml)"
        )
    arch = "armv7l" if is_32bit(target) else "aarch64"
    qemu = Path(tools.qemu_user(arch=arch)).name  # the tools first: a missing one is a
    # one-line error before any work
    if arch == "aarch64":
        tools.llvm_tool("llvm-mca", target.llvm)
        tools.llvm_tool("llvm-mc", target.llvm)
    tools.llvm_tool("llvm-nm", target.llvm)  # names the blocks (``symbols``), both ISAs
    cache = Path(cache)
    paths = [Path(m) for m in models]
    keys, detectors = [], []
    for path in paths:  # each file read once: its key, and whether it is a detector
        blob = path.read_bytes()
        keys.append(_key(blob, target, xnnpack))
        detectors.append(detection_scores(blob) is not None)
    cached = {}
    for key, detector in zip(keys, detectors):
        file = cache / f"{key}.json"
        if file.is_file():
            entry = read_json(file, "emulation cache entry")
            check = entry.get("check") or {}
            # one whose outputs did not match is counted again: the mismatch may have been
            # this program's (before 2026-12, a model's second input was never set); so is a
            # detector checked on its sorted top scores (before 2026-12-07), which scarcely
            # depend on the inputs (``detection_scores``)
            recheck = detector and "correlation" not in check
            if check.get("passed") and not recheck:
                cached[key] = entry
    todo = [i for i, k in enumerate(keys) if k not in cached]
    # the host's reference, for the models to count only (a cached estimate was checked when
    # it was counted), runs the emulated kernels' family: builtin where the emulated runtime
    # runs them (``xnnpack`` False, and a 32-bit target's wheel, which has no XNNPACK)
    refs = {i: host_reference(paths[i], xnnpack=xnnpack and not is_32bit(target)) for i in todo}
    counted: dict[int, dict] = {}
    if todo:
        echo(f"emulating {len(todo)} model(s) on {target.qemu_cpu} ({qemu}; first time for "
             "these files: up to a few minutes)")  # fmt: skip
        results = counts.count_models([str(paths[i]) for i in todo], [refs[i]["inputs"] for i in todo],
                                      outputs=[int(refs[i]["detail"]["index"]) for i in todo],
                                      qemu_cpu=target.qemu_cpu, cache=cache,
                                      arm64_cache=Path(arm64_cache),
                                      caches=caches_of(target), arch=arch,
                                      xnnpack=xnnpack, midr=target.midr)  # fmt: skip
        counted = dict(zip(todo, results))
        ran = {i: one for i, one in counted.items() if "error" not in one}
        if ran:
            first = next(iter(ran.values()))
            library = symbols.LIBRARY if arch == "aarch64" else symbols.LIBRARY_ARMV7
            names = symbols.Symbolizer(first["maps"], library=library, root=first["root"],
                                       llvm=target.llvm)  # fmt: skip
            for one in ran.values():
                one["symbolizer"] = names
        if arch != "aarch64":  # builtin kernels (--no-xnnpack) make no pthreadpool dispatch
            for i, one in ran.items():
                one["dispatches"] = graph_dispatches(paths[i]) if xnnpack else 0
    records = []
    for i, path in enumerate(paths):
        if i in counted and "error" in counted[i]:  # not cached: a later runtime may run it
            entry = _not_run(target, counted[i]["error"])
            echo(f"warning: {path.name}: {emulated_runtime(target, xnnpack)} cannot run it, so no "
                 f"estimate on {target.name}: {entry['error']}")  # fmt: skip
        elif i in counted:
            ref = refs[i]
            emulated = as_rows(dequantize(counted[i]["output"], ref["detail"]))
            if ref["control"] is not None:  # a detector: its class scores
                check = compare_detector(emulated, ref["output"], ref["control"], ref["step"])
            else:
                check = compare_outputs(emulated, ref["output"], ref["step"])
            entry = _record(target, counted[i], None, xnnpack)
            entry["check"] = {k: check[k] for k in CHECK_KEYS if k in check}
            atomic_write_json(cache / f"{keys[i]}.json", {k: entry[k] for k in STORED})
            if not check["passed"]:
                echo(f"warning: {path.name}: the emulated outputs differ from the host's "
                     f"({check_words(check)}), so no estimate on {target.name}")  # fmt: skip
        else:
            entry = _record(target, None, cached[keys[i]], xnnpack)
        if not entry["check"]["passed"]:
            entry["estimated_ms"] = None  # outputs differ: not a faithful run of the model
            entry["estimated_ms_threads"] = {t: None for t in entry["estimated_ms_threads"]}
        records.append({"file": str(path), "target": target.name, "core": target.core,
                        "llvm": None if is_32bit(target) else target.llvm,
                        "qemu_cpu": target.qemu_cpu, "clock_mhz": target.clock_mhz,
                        "cycle_scale": target.cycle_scale, "dram_mb_s": target.dram_mb_s,
                        "dram_peak_mb_s": target.dram_peak_mb_s,
                        "dram_all_threads_mb_s": target.dram_all_threads_mb_s,
                        "l2_shared": target.l2_shared,
                        "runtime": emulated_runtime(target, xnnpack), "xnnpack": xnnpack,
                        **entry})  # fmt: skip
    return records
