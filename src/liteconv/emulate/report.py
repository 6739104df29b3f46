"""Estimated figures beside the host's: what ``bench --emulate`` adds to records and prints.

Each host record (a model at some thread count) gets, per target, ``estimates``: the core,
instructions per invoke, estimated cycles, DRAM traffic and milliseconds for one thread and
for the record's thread count (``estimate.time_ms``: the parallel part split over the
threads, the serial part not, DRAM at the threads' bandwidth, a cost per dispatch to the
threads).

Example:
    >>> tables = add_estimates(records, ["fp32.tflite"], ["raspberry-pi-4"])
"""

from __future__ import annotations

from liteconv.device import caches
from liteconv.device.tables import format_table
from liteconv.device.targets import load_target
from liteconv.emulate.estimate import (
    SHARED_L2_BYTES_PER_CYCLE,
    SYNC_CYCLES,
    cycles_source,
    describe_accuracy,
    describe_memory,
    emulated_runtime,
    estimate_models,
    no_estimate,
    time_ms,
)


def _timed_with_xnnpack(record: dict) -> bool:
    """Whether a host record was timed with XNNPACK (a record without the key was)."""
    return record.get("xnnpack", True) is not False


def add_estimates(records: list[dict], models: list[str], targets: list[str], *,
                  cache: str = str(caches.EMULATE), echo=print) -> list[str]:  # fmt: skip
    """Add ``estimates`` to every record in place; returns one Markdown table per target
    and kernel setting: a record timed with XNNPACK off (``--no-xnnpack``) gets the
    estimate of the builtin kernels, the others XNNPACK's."""
    tables = []
    settings = sorted({_timed_with_xnnpack(r) for r in records}, reverse=True)
    for name, xnnpack in [(t.strip(), x) for t in targets if t.strip() for x in settings]:
        target = load_target(name)
        estimates = {e["file"]: e for e in estimate_models(models, target, cache=cache,
                                                            xnnpack=xnnpack, echo=echo)}  # fmt: skip
        rows = []
        for r in records:
            est = estimates.get(r["file"])
            if est is None or _timed_with_xnnpack(r) != xnnpack:
                continue
            ms_1 = est["estimated_ms"]
            scaled = None if ms_1 is None else time_ms(target, est, r["threads"])["estimated_ms"]
            entry = {k: est[k] for k in ("target", "core", "qemu_cpu", "clock_mhz", "runtime", "xnnpack",
                                         "instructions_per_invoke", "estimated_cycles",
                                         "memory", "dram_bytes", "compute_ms", "memory_ms",
                                         "estimated_ms", "check")}  # fmt: skip
            if est.get("error"):
                entry["error"] = est["error"]
            entry["estimated_ms_at_threads"] = None if scaled is None else round(scaled, 4)
            r.setdefault("estimates", []).append(entry)
            r.update({"target": target.name, "core": target.core,
                      "instructions_per_invoke": est["instructions_per_invoke"],
                      "estimated_cycles": est["estimated_cycles"],
                      "dram_bytes": est["dram_bytes"], "estimated_ms": ms_1,
                      "estimated_ms_at_threads": entry["estimated_ms_at_threads"]})  # fmt: skip
            ran = est["instructions_per_invoke"] is not None
            rows.append([r["model"], r["mode"], r["threads"],
                         f"{est['instructions_per_invoke'] / 1e6:.3f} M" if ran else "",
                         f"{est['estimated_cycles'] / 1e6:.3f} M" if ran else "",
                         f"{est['dram_bytes'] / 1e6:.2f} MB" if est.get("memory") else "",
                         no_estimate(est) or ms_1,
                         "" if scaled is None else round(scaled, 4), r["p50_ms"]])  # fmt: skip
        tables.append(estimate_title(target, xnnpack) + "\n\n" + format_table(
            ["model", "mode", "threads", "instructions/invoke", "estimated cycles",
             "DRAM traffic/invoke", "estimated ms (1 thread)", "estimated ms (these threads)",
             "host p50 ms"],
            rows, markdown=True))  # fmt: skip
    return tables


def estimate_title(target, xnnpack: bool = True) -> str:
    """One line saying how the estimates for ``target`` were made (above every table)."""
    memory = describe_memory(target)
    dispatch = (
        f"each counted dispatch to the threads {SYNC_CYCLES} cycles per extra thread (fitted "
        "once, on XNNPACK's Pixel 3a 1- vs 2-thread pairs)"
        if xnnpack
        else "no dispatch term (the builtin kernels make no pthreadpool dispatch; ruy's pool "
        "synchronisation is not modelled)"
    )
    shared = (
        " but no faster than the cluster's shared L2 returns the L1D misses "
        f"({SHARED_L2_BYTES_PER_CYCLE:g} bytes per cycle for all threads; fitted once, on the "
        "Pi 4's EfficientDet-Lite 1- vs 2- and 4-thread pairs)"
        if target.l2_shared
        else ""
    )
    return (
        f"**Estimated** on {target.name}: {target.core} at {target.clock_mhz:g} MHz (qemu "
        f"-cpu {target.qemu_cpu}, {emulated_runtime(target, xnnpack)}; {cycles_source(target)}, {memory}; scale "
        f"{target.cycle_scale:g}: {target.cycle_scale_source}). N threads: the parallel part "
        f"split over them{shared}, the serial part not, DRAM traffic at N threads' bandwidth, "
        f"{dispatch}. {describe_accuracy(target)}"
    )
