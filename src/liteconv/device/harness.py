"""Latency/memory benchmark of ``.tflite`` models; no TensorFlow import.

Runs on the host (``liteconv bench``) and, shipped in a device bundle, on a Raspberry Pi
or phone (``python bench.py``, i.e. ``python -m liteconv.device``), where only numpy and a
LiteRT runtime are installed. Several models/configurations are measured interleaved (A B A B …), so their
ratios hold when a shared machine drifts. Results: one flat record per model × threads ×
runtime × XNNPACK setting, as JSON and a Markdown table.

Example:
    >>> records = benchmark(["fp32.tflite", "int8.tflite"], threads=[1, 2], runs=100)
    $ python bench.py models/*.tflite --threads 1,4 --json results.json
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import LiteconvError
from .files import atomic_write_json, read_json
from .graph import delegation, model_facts
from .machine import machine_info
from .runtime import (
    INVOKE_ERRORS,
    invoke_failure,
    load_interpreter,
    resolve_runtime,
    runtime_version,
)
from .tables import format_table
from .tensors import random_inputs, set_inputs


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def read_sidecar(path: Path, required: tuple[str, ...] = ()) -> dict:
    """A model's JSON sidecar read back (the one reader of them): a mapping whose ``macs``
    (a non-negative integer) and ``mode``/``experiment`` (strings) are dropped when they
    have the wrong type; each key in ``required`` must be a plain file name (a string
    without ``/``), else a one-line error naming the sidecar."""
    data = read_json(path, "sidecar")
    if not isinstance(data, dict):
        if required:
            raise LiteconvError(f"{path}: expected a mapping with {', '.join(required)}")
        return {}
    for key in required:
        if not isinstance(data.get(key), str) or "/" in data[key] or data[key] in ("", ".."):
            raise LiteconvError(f"{path}: {key}: expected a plain name, got {data.get(key)!r}")
    macs = data.get("macs")
    if isinstance(macs, bool) or not isinstance(macs, int) or macs < 0:
        data.pop("macs", None)
    for key in ("mode", "experiment"):
        if not isinstance(data.get(key), str):
            data.pop(key, None)
    return data


def sidecar_for(path: Path) -> dict:
    """The sidecar ``liteconv export`` wrote beside a model, if any and readable (``{}``
    otherwise: the harness times any model, with or without one)."""
    side = Path(path).with_suffix(".json")
    if not side.is_file():
        return {}
    try:
        return read_sidecar(side)
    except LiteconvError:
        return {}


@dataclass
class _Case:
    path: Path
    threads: int
    runtime: str
    xnnpack: bool
    interp: object = None
    inputs: list | None = None
    load_ms: float = 0.0
    first_ms: float = 0.0
    rss_delta: int = 0
    samples: list | None = None
    delegated: tuple[int, int] = (0, 0)

    def invoke(self) -> float:
        interp = self.interp
        set_inputs(interp, self.inputs)
        start = time.perf_counter()
        try:
            interp.invoke()
        except INVOKE_ERRORS as err:  # inline, not invoke(): no extra call inside the timing
            raise invoke_failure(str(self.path), err) from None
        return (time.perf_counter() - start) * 1000.0


def _setup(case: _Case) -> None:
    before = rss_bytes()
    start = time.perf_counter()
    case.interp = load_interpreter(
        case.path, runtime=case.runtime, num_threads=case.threads, xnnpack=case.xnnpack
    )
    case.load_ms = (time.perf_counter() - start) * 1000.0
    case.delegated = delegation(case.interp)
    case.inputs = random_inputs(case.interp)
    case.first_ms = case.invoke()
    case.rss_delta = rss_bytes() - before
    case.samples = []


@contextlib.contextmanager
def pin_cores(cores: list[int] | None):
    """Restrict this process to ``cores`` (those that exist) inside the block, then restore.

    Yields the cores used (``None`` when nothing was pinned).

    Example:
        >>> with pin_cores([2, 3]) as used:
        ...     records = benchmark(["fp32.tflite"])
    """
    if not cores or not hasattr(os, "sched_setaffinity"):
        yield None
        return
    before = os.sched_getaffinity(0)
    available = sorted(before)
    usable = [c for c in cores if c in available] or available[: len(cores)]
    os.sched_setaffinity(0, usable)
    try:
        yield usable
    finally:
        os.sched_setaffinity(0, before)


def _stats(name: str, case: _Case, sidecar: dict, runtime: str, version: str) -> dict:
    ms = np.asarray(case.samples)
    p50 = float(np.percentile(ms, 50))
    macs = sidecar.get("macs")
    return {
        "model": name,
        "file": str(case.path),
        "mode": sidecar.get("mode"),
        "threads": case.threads,
        "runtime": runtime,
        "runtime_version": version,
        "xnnpack": case.xnnpack,
        "delegated_nodes": case.delegated[0],
        "nodes": case.delegated[1],
        "size_bytes": case.path.stat().st_size,
        "load_ms": round(case.load_ms, 3),
        "first_inference_ms": round(case.first_ms, 3),
        "mean_ms": round(float(ms.mean()), 6),
        "std_ms": round(float(ms.std()), 6),
        "p50_ms": round(p50, 6),
        "p90_ms": round(float(np.percentile(ms, 90)), 6),
        "p99_ms": round(float(np.percentile(ms, 99)), 6),
        "cv": round(float(ms.std() / ms.mean()), 4) if ms.mean() else None,
        "throughput_per_s": round(1000.0 / float(ms.mean()), 2),
        "rss_delta_mb": round(case.rss_delta / 2**20, 2),
        "macs": macs,
        "gmacs_per_s": round(macs / (p50 / 1000.0) / 1e9, 3) if macs else None,
        "runs": int(ms.size),
    }


def _measure(cases: list[_Case], warmup: int, runs: int, progress) -> None:
    """Set every case up, warm them up, then time them interleaved: A B C A B C ..."""
    for case in cases:
        _setup(case)
    for _ in range(warmup):
        for case in cases:
            case.invoke()
    total = runs * len(cases)
    for i in range(runs):
        for case in cases:
            case.samples.append(case.invoke())
        if progress:
            progress((i + 1) * len(cases), total)


def benchmark(
    paths: list[str | Path],
    *,
    threads: list[int] = (1,),
    warmup: int = 10,
    runs: int = 100,
    runtime: str = "auto",
    xnnpack: list[bool] = (True,),
    cores: list[int] | None = None,
    progress=None,
) -> list[dict]:
    """Benchmark every model × threads × XNNPACK setting, interleaved.

    Args:
        paths: ``.tflite`` files (any model: float, int8, uint8, several inputs).
        threads: interpreter thread counts to measure.
        warmup: untimed invocations per case before timing.
        runs: timed invocations per case.
        runtime: ``auto``, ``litert``, ``tflite_runtime`` or ``tf``.
        xnnpack: which XNNPACK settings to measure (``[True, False]`` for both).
        cores: CPU cores to pin this process to (a target's big cores, say).
        progress: callable(done, total) for a progress display.

    Raises:
        LiteconvError: a missing, truncated or non-TFLite file (one line).
    """
    if not paths:
        raise LiteconvError("no .tflite files given")
    if runs < 1 or warmup < 0 or any(t < 1 for t in threads):
        raise LiteconvError("--runs must be >= 1, --warmup >= 0 and --threads positive")
    runtime_name = resolve_runtime(runtime)
    version = runtime_version(runtime_name)
    cases = [_Case(Path(p), t, runtime_name, x) for p in paths for t in threads for x in xnnpack]
    for case in cases:
        if not case.path.is_file():
            raise LiteconvError(f"{case.path}: no such file")
    with pin_cores(cores):
        _measure(cases, warmup, runs, progress)
    records, facts = [], {}
    for case in cases:
        side = sidecar_for(case.path)
        if "mode" not in side or "macs" not in side:  # a model from elsewhere: read its file
            if case.path not in facts:
                facts[case.path] = _facts(case.path, case.runtime)
            side = {**facts[case.path], **side}
        label = (
            f"{side['experiment']}/{case.path.stem}" if side.get("experiment") else case.path.stem
        )
        records.append(_stats(label, case, side, runtime_name, version))
    return records


def _facts(path: Path, runtime: str) -> dict:
    """``model_facts`` of the file at ``path`` (its mode and MACs), without the keys it
    cannot tell: nothing for a model the walk cannot load (the timings stand without)."""
    try:
        facts = model_facts(path.read_bytes(), runtime)
    except (LiteconvError, ValueError, RuntimeError, KeyError, IndexError):
        return {}
    return {k: v for k, v in facts.items() if v is not None and (k != "macs" or v > 0)}


def _xnnpack_cell(record: dict) -> str:
    if not record.get("xnnpack"):
        return "off"
    if not isinstance(record.get("nodes"), int):  # a document from before the count existed
        return "on"
    return f"{record.get('delegated_nodes', 0)}/{record['nodes']}"


def delegation_warnings(records: list[dict], machine: str | None = None) -> list[str]:
    """One line per record whose XNNPACK delegate took less than half of the operators:
    those run on the runtime's builtin kernels, often far slower (an int8 graph under an
    old runtime, say), so its timings do not say what XNNPACK would do. ``machine``: where
    the records ran (``platform.machine()`` of this one by default): on 32-bit ARM the
    hint says that runtime has no XNNPACK (tflite-runtime's armv7l wheel is built without
    it, and ai-edge-litert has no armv7l wheel)."""
    armv7 = (machine or platform.machine()).startswith("armv7")
    lines = []
    for r in records:
        total = r.get("nodes")
        if r.get("xnnpack") and isinstance(total, int) and total:
            taken = r.get("delegated_nodes") or 0
            if taken * 2 < total:
                mode = f" ({r['mode']})" if r.get("mode") else ""
                if r.get("runtime") == "litert":
                    hint = "operators XNNPACK has no kernel for (an LSTM's, say)"
                elif armv7:
                    hint = ("this 32-bit ARM runtime is built without XNNPACK; a 64-bit OS "
                            "(aarch64) runs ai-edge-litert with it")  # fmt: skip
                else:
                    hint = "try ai-edge-litert"
                line = (f"warning: {r['model']}{mode}: XNNPACK took {taken} of {total} "
                        f"operators under {r.get('runtime')} {r.get('runtime_version', '')}"
                        f"; the rest run on builtin kernels (slower): {hint}")  # fmt: skip
                if line not in lines:  # once per model, not per thread count
                    lines.append(line)
    return lines


def markdown(records: list[dict]) -> str:
    """The Markdown table of benchmark records (XNNPACK: operators delegated / total)."""
    return format_table(
        ["model", "mode", "threads", "runtime", "XNNPACK", "p50 ms", "p90 ms", "p99 ms", "mean ms", "CV",
         "load ms", "first ms", "RSS Δ MB", "size KB", "GMAC/s"],
        [[r["model"], r.get("mode") or "-", r["threads"],
          f"{r.get('runtime', '?')} {r.get('runtime_version', '')}".strip(), _xnnpack_cell(r),
          r["p50_ms"], r["p90_ms"], r["p99_ms"], r["mean_ms"], r["cv"], r["load_ms"],
          r["first_inference_ms"], r["rss_delta_mb"], r["size_bytes"] / 1024, r["gmacs_per_s"]]
         for r in records],
        markdown=True,
    )  # fmt: skip


def result_document(
    records: list[dict], *, target: dict | None = None, where: str = "host"
) -> dict:
    """The JSON document a benchmark writes (host and device alike)."""
    document = {
        "where": where,
        "machine": machine_info(),
        "target": target,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "records": records,
    }
    emulation = os.environ.get("LITECONV_EMULATION", "").strip()
    if emulation:  # set by an emulator's wrapper (qemu): the timings are not the board's
        document["emulated"] = emulation[:200]
    return document


def read_result_document(path: str | Path) -> dict:
    """A benchmark result document (host or device) read back and checked (see
    ``check_result_document``); one-line errors naming the file and the key."""
    return check_result_document(read_json(path, "benchmark JSON"), str(path))


def is_latency(value) -> bool:
    """A finite, non-negative number of milliseconds (not a bool)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value < 1e9


def is_thread_count(value) -> bool:
    """A positive integer (not a bool)."""
    return not isinstance(value, bool) and isinstance(value, int) and value >= 1


def check_result_document(doc, source: str) -> dict:
    """``doc`` if it is a benchmark document: a mapping with a ``records`` list whose
    records name a ``model``, positive ``threads`` and a finite, non-negative ``p50_ms``."""
    if not isinstance(doc, dict):
        raise LiteconvError(f"{source}: expected a benchmark document (a mapping with 'records')")
    records = doc.get("records")
    if not isinstance(records, list):
        raise LiteconvError(f"{source}: records: expected a list of benchmark records")
    where = doc.get("where", "device")
    if not isinstance(where, str) or not where:
        raise LiteconvError(f"{source}: where: expected a non-empty string")
    for i, rec in enumerate(records):
        key = f"{source}: records[{i}]"
        if not isinstance(rec, dict):
            raise LiteconvError(f"{key}: expected a mapping")
        if not isinstance(rec.get("model"), str):
            raise LiteconvError(f"{key}.model: expected a string")
        threads = rec.get("threads")
        if not is_thread_count(threads):
            raise LiteconvError(f"{key}.threads: expected a positive integer, got {threads!r}")
        p50 = rec.get("p50_ms")
        if not is_latency(p50):
            raise LiteconvError(f"{key}.p50_ms: expected a finite non-negative number, got {p50!r}")
    if "profile" in doc:
        from .profile import check_profiles  # profile imports this module

        check_profiles(doc["profile"], source)
    return doc


def write_json(path: str | Path, document: dict) -> None:
    """Write a result document atomically as strict JSON."""
    atomic_write_json(path, document)
