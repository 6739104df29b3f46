"""Estimated figures beside the host's: what ``bench --emulate`` adds to records and prints.

Each host record (a model at some thread count) gets, per target, ``estimates``: the core,
instructions per invoke, estimated cycles and milliseconds for one thread, and for the
record's thread count the one-thread estimate divided by the speed-up the host measured
for that model at that thread count (the emulation runs one thread; the host's scaling is
the stand-in, and the table says so).

Example:
    >>> tables = add_estimates(records, ["fp32.tflite"], ["raspberry-pi-4"])
"""

from __future__ import annotations

from liteconv.device.tables import format_table
from liteconv.device.targets import load_target
from liteconv.emulate.estimate import EMULATED_RUNTIME, estimate_models


def add_estimates(records: list[dict], models: list[str], targets: list[str], *,
                  cache: str = ".cache/emulate", echo=print) -> list[str]:  # fmt: skip
    """Add ``estimates`` to every record in place; returns one Markdown table per target."""
    tables = []
    one_thread = {(r["file"], r["xnnpack"]): r["p50_ms"] for r in records if r["threads"] == 1}
    for name in [t.strip() for t in targets if t.strip()]:
        target = load_target(name)
        estimates = {e["file"]: e for e in estimate_models(models, target, cache=cache, echo=echo)}
        rows = []
        for r in records:
            est = estimates.get(r["file"])
            if est is None:
                continue
            host_1 = one_thread.get((r["file"], r["xnnpack"]))
            ms_1 = est["estimated_ms"]
            scaled = (ms_1 * r["p50_ms"] / host_1) if (ms_1 is not None and host_1) else None
            entry = {k: est[k] for k in ("target", "core", "qemu_cpu", "clock_mhz", "runtime",
                                         "instructions_per_invoke", "estimated_cycles",
                                         "estimated_ms", "check")}  # fmt: skip
            entry["estimated_ms_at_threads"] = None if scaled is None else round(scaled, 4)
            r.setdefault("estimates", []).append(entry)
            r.update({"target": target.name, "core": target.core,
                      "instructions_per_invoke": est["instructions_per_invoke"],
                      "estimated_cycles": est["estimated_cycles"],
                      "estimated_ms": ms_1})  # fmt: skip
            rows.append([r["model"], r["mode"], r["threads"],
                         f"{est['instructions_per_invoke'] / 1e6:.3f} M",
                         f"{est['estimated_cycles'] / 1e6:.3f} M",
                         "outputs differ" if ms_1 is None else ms_1,
                         "" if scaled is None else round(scaled, 4), r["p50_ms"]])  # fmt: skip
        title = (
            f"**Estimated** on {target.name}: {target.core} at {target.clock_mhz:g} MHz "
            f"(qemu -cpu {target.qemu_cpu}, {EMULATED_RUNTIME}; cycles from llvm-mca, no "
            f"cache/memory term; scale {target.cycle_scale:g}: {target.cycle_scale_source}). "
            "N-thread estimates scale the one-thread one by the host's measured speed-up."
        )
        tables.append(title + "\n\n" + format_table(
            ["model", "mode", "threads", "instructions/invoke", "estimated cycles",
             "estimated ms (1 thread)", "estimated ms (these threads)", "host p50 ms"],
            rows, markdown=True))  # fmt: skip
    return tables
