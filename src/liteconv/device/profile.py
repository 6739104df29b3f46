"""Per-block latency on the board: ``python bench.py --profile`` (no TensorFlow).

A bundle made with ``liteconv bundle --profile`` carries, for each mode, every block of
the run's model converted alone (as ``liteconv profile`` cuts it on the host), the whole
model and a one-RELU model (what one ``invoke()`` costs with nothing to compute), listed
in ``profile/profile.json``. This module times them interleaved with the device harness
and turns the timings into the same table the host prints: ms per block, share, GMAC/s,
and the sum of the blocks (less the per-invoke cost each extra block pays) against the
whole model. ``summarise`` and ``profile_markdown`` are the one implementation of that
table for the host and the board.

Example:
    $ python bench.py --profile --threads 1,4 --json pi.json
"""

from __future__ import annotations

from pathlib import Path

from .errors import LiteconvError
from .files import read_json
from .harness import benchmark, is_latency, is_thread_count
from .tables import format_table

PROFILE_DIR = "profile"
MODES = ("fp32", "int8")
BLOCK_KEYS = {"block": str, "type": str, "group": str, "input": str}


CALL_EVERY = 10  # a one-RELU model among the blocks every this many blocks


def timing_order(n_blocks: int) -> list[tuple]:
    """The order in which one run times ``n_blocks`` blocks, the whole model and the
    one-RELU model: ``("block", i)``, ``("call_warm",)`` among the blocks every
    ``CALL_EVERY`` (at least once), ``("whole",)``, then ``("call_cold",)``.

    What one ``invoke()`` costs depends on what ran before it: measured here, the
    one-RELU model right after the whole model (caches evicted) costs 2–3× what it costs
    among small blocks. A block timed alone pays somewhere in between, so both are taken
    in the same run and the prediction uses their mean (``summarise``)."""
    order: list[tuple] = []
    for i in range(n_blocks):
        if i % CALL_EVERY == CALL_EVERY // 2:
            order.append(("call_warm",))
        order.append(("block", i))
    if not any(t == ("call_warm",) for t in order):
        order.insert(len(order) // 2, ("call_warm",))
    return [*order, ("whole",), ("call_cold",)]


def overheads(order: list[tuple], ms: list[float]) -> tuple[float, float]:
    """``(warm, cold)`` per-invoke cost from timings taken in ``timing_order``: the median
    of the one-RELU model among the blocks, and the one right after the whole model."""
    warm = sorted(m for t, m in zip(order, ms) if t == ("call_warm",))
    cold = [m for t, m in zip(order, ms) if t == ("call_cold",)]
    return warm[len(warm) // 2], cold[0]


def summarise(
    blocks: list[dict], block_ms: list[float], whole_ms: float,
    call_ms: float | tuple[float, float], *, threads: int, measured: int,
) -> dict:  # fmt: skip
    """The profile of one mode from its timings.

    Args:
        blocks: per block ``block``, ``type``, ``group``, ``input`` and ``macs``.
        block_ms: the median latency of each block alone.
        whole_ms: the whole model's median latency, measured in the same run.
        call_ms: one ``invoke()`` of a model with nothing to compute: ``(warm, cold)``
            (``overheads``) or one figure.
        threads: the interpreter threads of these timings.
        measured: how many of the timings were taken now (0 = all from a cache).

    Returns:
        ``{"blocks": rows, "sum_ms", "whole_ms", "invoke_overhead_ms", "predicted_ms",
        "predicted_range_ms", "error_pct", "raw_sum_error_pct", "measured", "threads"}``;
        the prediction is the sum of the blocks less ``(blocks - 1)`` per-invoke costs
        (each block timed alone pays what the whole model pays once), the mean of the warm
        and cold cost; the range uses each of them.
    """
    warm, cold = call_ms if isinstance(call_ms, (tuple, list)) else (call_ms, call_ms)
    call_ms = (warm + cold) / 2
    rows = []
    for block, ms in zip(blocks, block_ms):
        macs = int(block.get("macs") or 0)
        rows.append({**{k: block[k] for k in BLOCK_KEYS}, "macs": macs, "p50_ms": ms,
                     "gmacs_per_s": round(macs / (ms / 1e3) / 1e9, 3)
                     if ms > 0 and macs else None})  # fmt: skip
    total = sum(r["p50_ms"] for r in rows)
    for r in rows:
        r["share"] = round(r["p50_ms"] / total, 4) if total else None
    predicted = max(total - (len(rows) - 1) * call_ms, 0.0)
    low, high = sorted(max(total - (len(rows) - 1) * c, 0.0) for c in (cold, warm))

    def error(value: float) -> float | None:
        return round(100 * (value - whole_ms) / whole_ms, 2) if whole_ms else None

    return {"blocks": rows, "sum_ms": round(total, 6), "whole_ms": whole_ms,
            "invoke_overhead_ms": call_ms,  # not rounded: x (blocks - 1) in the prediction
            "invoke_overhead_range_ms": [round(warm, 6), round(cold, 6)],
            "predicted_ms": round(predicted, 6),
            "predicted_range_ms": [round(low, 6), round(high, 6)],
            "error_pct": error(predicted), "raw_sum_error_pct": error(total),
            "measured": measured, "threads": threads}  # fmt: skip


def profile_markdown(result: dict, mode: str) -> str:
    """The per-block table of one mode, with the sum against the whole model."""
    rows = result["blocks"]
    emulated = result.get("emulated")
    table = format_table(
        ["block", "type", "input", "MACs", "estimated ms" if emulated else "p50 ms",
         "% of model", "GMAC/s"],
        [[r["block"], r["type"], r["input"], r["macs"], r["p50_ms"],
          f"{100 * r['share']:.1f}%" if r["share"] is not None else "-", r["gmacs_per_s"]]
         for r in rows],
        markdown=True,
    )  # fmt: skip
    err = result.get("error_pct")
    raw = result.get("raw_sum_error_pct")
    errors = (f"prediction error {err:+.1f} % (raw sum {raw:+.1f} %)"
              if err is not None and raw is not None else "no prediction error (whole 0 ms)")  # fmt: skip
    span = result.get("predicted_range_ms")
    span = f" (range {span[0]:.4f}–{span[1]:.4f})" if span else ""
    where = ""
    if emulated:
        where = (f"**Estimated** for {emulated['target']} ({emulated['core']} at "
                 f"{emulated['clock_mhz']:g} MHz, emulated: {emulated['runtime']}; instruction "
                 f"counts, {emulated.get('cycles', 'llvm-mca cycles')} and the board's DRAM term "
                 "where its target YAML gives one), not measured.\n\n")  # fmt: skip
    return (
        f"{where}{table}\n\n{mode}, {result['threads']} thread(s): sum of {len(rows)} blocks "
        f"{result['sum_ms']:.4f} ms, less {len(rows) - 1} × the per-invoke cost "
        f"{result['invoke_overhead_ms']:.4f} ms = {result['predicted_ms']:.4f} ms predicted"
        f"{span}; whole model {'estimated' if emulated else 'measured'} "
        f"{result['whole_ms']:.4f} ms: {errors}"
    )


def _relative_file(folder: Path, value, where: str) -> Path:
    """A model file named by the profile manifest: relative, inside ``folder``, present."""
    if not isinstance(value, str) or not value.endswith(".tflite"):
        raise LiteconvError(f"{where}: expected a .tflite path relative to the profile folder")
    path = (folder / value).resolve()
    if folder.resolve() not in path.parents:
        raise LiteconvError(f"{where}: {value!r} points outside the bundle's profile folder")
    if not path.is_file():
        raise LiteconvError(f"{where}: {value}: no such file; unpack the bundle again")
    return path


def read_profile_manifest(bundle: str | Path) -> dict:
    """``profile/profile.json`` of a bundle, checked: for each mode its ``blocks`` (the
    keys of ``BLOCK_KEYS``, non-negative integer ``macs`` and an existing ``file``), the
    ``whole`` model and the ``invoke`` model, all inside the profile folder."""
    folder = Path(bundle) / PROFILE_DIR
    path = folder / "profile.json"
    if not path.is_file():
        raise LiteconvError(
            f"{Path(bundle)}: this bundle carries no block models (no {PROFILE_DIR}/"
            "profile.json); make it with 'liteconv bundle RUN_DIR --profile'"
        )
    doc = read_json(path, "profile manifest")
    modes = doc.get("modes") if isinstance(doc, dict) else None
    if not isinstance(modes, dict) or not modes:
        raise LiteconvError(f"{path}: modes: expected a mapping of mode to block models")
    for mode, spec in modes.items():
        where = f"{path}: modes.{mode}"
        if mode not in MODES:
            raise LiteconvError(f"{where}: unknown mode (expected one of {', '.join(MODES)})")
        if not isinstance(spec, dict) or not isinstance(spec.get("blocks"), list):
            raise LiteconvError(f"{where}.blocks: expected a list of blocks")
        if not spec["blocks"]:
            raise LiteconvError(f"{where}.blocks: empty")
        for i, block in enumerate(spec["blocks"]):
            key = f"{where}.blocks[{i}]"
            if not isinstance(block, dict):
                raise LiteconvError(f"{key}: expected a mapping")
            for name, kind in BLOCK_KEYS.items():
                if not isinstance(block.get(name), kind):
                    raise LiteconvError(f"{key}.{name}: expected a string")
            macs = block.get("macs")
            if isinstance(macs, bool) or not isinstance(macs, int) or macs < 0:
                raise LiteconvError(f"{key}.macs: expected a non-negative integer")
            block["path"] = _relative_file(folder, block.get("file"), f"{key}.file")
        spec["whole_path"] = _relative_file(folder, spec.get("whole"), f"{where}.whole")
        spec["invoke_path"] = _relative_file(folder, spec.get("invoke"), f"{where}.invoke")
    return doc


def profile_bundle(
    bundle: str | Path,
    *,
    threads: list[int] = (1,),
    runs: int = 100,
    warmup: int = 10,
    runtime: str = "auto",
    xnnpack: bool = True,
    cores: list[int] | None = None,
    progress=None,
) -> list[dict]:
    """Time the bundle's block models, whole model and invoke model interleaved, per mode
    and thread count; one ``summarise`` result per (mode, threads) with ``mode`` added."""
    doc = read_profile_manifest(bundle)
    results = []
    for mode, spec in doc["modes"].items():
        order = timing_order(len(spec["blocks"]))
        where = {"whole": spec["whole_path"], "call_warm": spec["invoke_path"],
                 "call_cold": spec["invoke_path"]}  # fmt: skip
        paths = [spec["blocks"][t[1]]["path"] if t[0] == "block" else where[t[0]]
                 for t in order]  # fmt: skip
        for t in threads:
            records = benchmark(paths, threads=[t], runs=runs, warmup=warmup, runtime=runtime,
                                xnnpack=[xnnpack], cores=cores, progress=progress)  # fmt: skip
            ms = [r["p50_ms"] for r in records]
            block_ms = [m for o, m in zip(order, ms) if o[0] == "block"]
            whole = next(m for o, m in zip(order, ms) if o == ("whole",))
            result = summarise(spec["blocks"], block_ms, whole, overheads(order, ms),
                               threads=t, measured=len(paths))  # fmt: skip
            results.append({"mode": mode, "model": doc.get("model"), **result})
    return results


def check_profiles(value, source: str) -> list[dict]:
    """The ``profile`` list of a benchmark document, checked: each entry a mode, positive
    threads, finite non-negative ``whole_ms`` and blocks with a name and ``p50_ms``."""
    if not isinstance(value, list):
        raise LiteconvError(f"{source}: profile: expected a list of per-block profiles")
    for i, entry in enumerate(value):
        key = f"{source}: profile[{i}]"
        if not isinstance(entry, dict) or entry.get("mode") not in MODES:
            raise LiteconvError(f"{key}.mode: expected one of {', '.join(MODES)}")
        if not is_thread_count(entry.get("threads")):
            raise LiteconvError(f"{key}.threads: expected a positive integer")
        for name in ("whole_ms", "predicted_ms"):
            if not is_latency(entry.get(name)):
                raise LiteconvError(f"{key}.{name}: expected a finite non-negative number")
        blocks = entry.get("blocks")
        if not isinstance(blocks, list):
            raise LiteconvError(f"{key}.blocks: expected a list")
        for j, block in enumerate(blocks):
            if not isinstance(block, dict) or not isinstance(block.get("block"), str):
                raise LiteconvError(f"{key}.blocks[{j}].block: expected a string")
            if not is_latency(block.get("p50_ms")):
                raise LiteconvError(
                    f"{key}.blocks[{j}].p50_ms: expected a finite non-negative number"
                )
    return value
