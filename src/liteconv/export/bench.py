"""Latency/memory benchmark of ``.tflite`` models; no TensorFlow import.

Runs on the host (``liteconv bench``) and, copied as is into a device bundle, on a
Raspberry Pi or phone (``python bench.py``), where only numpy and a LiteRT runtime are
installed. Several models/configurations are measured interleaved (A B A B …), so their
ratios hold when a shared machine drifts. Results: one flat record per model × threads ×
runtime × XNNPACK setting, as JSON and a Markdown table.

Example:
    >>> records = benchmark(["fp32.tflite", "int8.tflite"], threads=[1, 2], runs=100)
    $ python bench.py models/*.tflite --threads 1,4 --json results.json
    $ python bench.py --check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    from liteconv.export.runtime import LiteconvError, load_interpreter, resolve_runtime
    from liteconv.machine import machine_info
    from liteconv.tables import format_table
except ImportError:  # standalone inside a device bundle: sibling files
    from machine import machine_info  # type: ignore[no-redef]
    from runtime import LiteconvError, load_interpreter, resolve_runtime  # type: ignore[no-redef]
    from tables import format_table  # type: ignore[no-redef]


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def sidecar_for(path: Path) -> dict:
    """The JSON sidecar written by ``liteconv export`` beside a model, if any."""
    side = Path(path).with_suffix(".json")
    if side.is_file():
        try:
            return json.loads(side.read_text())
        except ValueError:
            return {}
    return {}


def random_inputs(interp, seed: int = 0) -> list[np.ndarray]:
    """One random tensor per model input, of its dtype and shape."""
    rng = np.random.default_rng(seed)
    out = []
    for detail in interp.get_input_details():
        dtype, shape = np.dtype(detail["dtype"]), detail["shape"]
        if dtype.kind == "f":
            out.append(rng.uniform(0, 1, size=shape).astype(dtype))
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            lo, hi = max(info.min, -128), min(info.max, 255)
            out.append(rng.integers(lo, hi + 1, size=shape).astype(dtype))
        elif dtype == np.bool_:
            out.append(rng.integers(0, 2, size=shape).astype(bool))
        else:
            raise LiteconvError(f"input {detail['name']}: unsupported dtype {dtype}")
    return out


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

    def invoke(self) -> float:
        interp = self.interp
        for detail, value in zip(interp.get_input_details(), self.inputs):
            interp.set_tensor(detail["index"], value)
        start = time.perf_counter()
        interp.invoke()
        return (time.perf_counter() - start) * 1000.0


def _setup(case: _Case) -> None:
    before = rss_bytes()
    start = time.perf_counter()
    case.interp = load_interpreter(
        case.path, runtime=case.runtime, num_threads=case.threads, xnnpack=case.xnnpack
    )
    case.load_ms = (time.perf_counter() - start) * 1000.0
    case.inputs = random_inputs(case.interp)
    case.first_ms = case.invoke()
    case.rss_delta = rss_bytes() - before
    case.samples = []


def pin_cores(cores: list[int] | None) -> list[int] | None:
    """Restrict this process to ``cores`` (those that exist); returns the cores used."""
    if not cores or not hasattr(os, "sched_setaffinity"):
        return None
    available = sorted(os.sched_getaffinity(0))
    usable = [c for c in cores if c in available] or available[: len(cores)]
    os.sched_setaffinity(0, usable)
    return usable


def _stats(name: str, case: _Case, sidecar: dict, runtime: str) -> dict:
    ms = np.asarray(case.samples)
    p50 = float(np.percentile(ms, 50))
    macs = sidecar.get("macs")
    return {
        "model": name,
        "file": str(case.path),
        "mode": sidecar.get("mode"),
        "threads": case.threads,
        "runtime": runtime,
        "xnnpack": case.xnnpack,
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
    pin_cores(cores)
    cases = [_Case(Path(p), t, runtime_name, x) for p in paths for t in threads for x in xnnpack]
    for case in cases:
        if not case.path.is_file():
            raise LiteconvError(f"{case.path}: no such file")
        _setup(case)
    for _ in range(warmup):
        for case in cases:
            case.invoke()
    total = runs * len(cases)
    for i in range(runs):
        for case in cases:  # interleaved: A B C A B C ...
            case.samples.append(case.invoke())
        if progress:
            progress((i + 1) * len(cases), total)
    records = []
    for case in cases:
        side = sidecar_for(case.path)
        label = (
            f"{side['experiment']}/{case.path.stem}" if side.get("experiment") else case.path.stem
        )
        records.append(_stats(label, case, side, runtime_name))
    return records


def markdown(records: list[dict]) -> str:
    """The Markdown table of benchmark records."""
    return format_table(
        ["model", "mode", "threads", "xnnpack", "p50 ms", "p90 ms", "p99 ms", "mean ms", "CV",
         "load ms", "first ms", "RSS Δ MB", "size KB", "GMAC/s"],
        [[r["model"], r.get("mode") or "-", r["threads"], "on" if r["xnnpack"] else "off",
          r["p50_ms"], r["p90_ms"], r["p99_ms"], r["mean_ms"], r["cv"], r["load_ms"],
          r["first_inference_ms"], r["rss_delta_mb"], r["size_bytes"] / 1024, r["gmacs_per_s"]]
         for r in records],
        markdown=True,
    )  # fmt: skip


def result_document(
    records: list[dict], *, target: dict | None = None, where: str = "host"
) -> dict:
    """The JSON document a benchmark writes (host and device alike)."""
    return {
        "where": where,
        "machine": machine_info(),
        "target": target,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "records": records,
    }


def write_json(path: str | Path, document: dict) -> None:
    """Write ``document`` atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------- device bundle check


def dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    """Tensor values → float32 (identity for float tensors)."""
    if np.dtype(detail["dtype"]).kind == "f":
        return y.astype(np.float32)
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float inputs → the tensor's dtype (identity for float tensors)."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def output_step(blob: bytes) -> float | None:
    """The quantization step of a model's output, or None for a float graph.

    With float I/O around an integer graph it is the step of the tensor feeding the final
    DEQUANTIZE op: that is the resolution at which two correct int8 kernels may differ.
    """
    interp = load_interpreter(model_content=blob, xnnpack=False)  # delegates hide ops
    index = interp.get_output_details()[0]["index"]
    for op in interp._get_ops_details():  # no public API lists ops
        if index in op["outputs"] and op["op_name"] == "DEQUANTIZE":
            index = op["inputs"][0]
    detail = next(t for t in interp.get_tensor_details() if t["index"] == index)
    if np.dtype(detail["dtype"]).kind == "f":
        return None
    return float(detail["quantization"][0])


def run_samples(path: Path, images: np.ndarray, runtime: str = "auto") -> tuple[np.ndarray, float]:
    """Dequantized outputs for float ``images`` (one at a time) and the output step (0: float)."""
    interp = load_interpreter(path, runtime=runtime, num_threads=1)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    outputs = []
    for image in images:
        interp.set_tensor(inp["index"], quantize(image[None], inp))
        interp.invoke()
        outputs.append(dequantize(interp.get_tensor(out["index"]), out)[0])
    return np.stack(outputs), output_step(Path(path).read_bytes()) or 0.0


# Float models: the same float kernels on another CPU differ only by summation order and
# FMA use, ~1e-6 on softmax outputs; 1e-4 leaves room and still catches any real bug.
FLOAT_TOLERANCE = 1e-4


def check_bundle(folder: Path, runtime: str = "auto") -> list[dict]:
    """Compare this machine's outputs with the host's reference outputs in ``folder``.

    Top-1 must be identical on every reference sample; integer outputs within one
    quantization step, float outputs within ``FLOAT_TOLERANCE``.
    """
    ref_path = folder / "reference.npz"
    if not ref_path.is_file():
        raise LiteconvError(f"{ref_path}: missing; rebuild the bundle with 'liteconv bundle'")
    ref = np.load(ref_path)
    images = ref["images"]
    results = []
    for side_path in sorted((folder / "models").glob("*.json")):
        side = json.loads(side_path.read_text())
        name = side["name"]
        outputs, step = run_samples(folder / "models" / side["file"], images, runtime)
        expected = ref[f"outputs__{name}"]
        diff = float(np.abs(outputs - expected).max())
        # Integer graphs: one output step (two correct kernels may round differently).
        tol = step * 1.0001 if step else FLOAT_TOLERANCE
        top1 = bool((outputs.argmax(1) == expected.argmax(1)).all())
        results.append({
            "model": name, "samples": int(len(images)), "top1_identical": top1,
            "max_abs_diff": diff, "tolerance": tol, "passed": top1 and diff <= tol,
        })  # fmt: skip
    if not results:
        raise LiteconvError(f"{folder / 'models'}: no models with sidecars in the bundle")
    return results


# ----------------------------------------------------------------------- device CLI


def int_list(text: str, option: str = "--threads") -> list[int]:
    """Parse a comma list of positive integers such as ``1,2,4`` (one-line errors)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise LiteconvError(f"{option} {text!r}: expected a comma list such as 1,2,4") from None
    if not values or min(values) < 1:
        raise LiteconvError(f"{option} {text!r}: expected positive integers")
    return values


def _progress_printer(stream=sys.stderr):
    def show(done: int, total: int) -> None:
        if not stream.isatty() and done != total:
            return
        width = 30
        filled = int(width * done / total)
        stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done == total:
            stream.write("\n")
        stream.flush()

    return show


def main(argv: list[str] | None = None) -> int:
    """``python bench.py``: benchmark the bundle's models (or given files), or --check."""
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description="Benchmark .tflite models (no TensorFlow).")
    parser.add_argument("models", nargs="*", help="default: every models/*.tflite beside this")
    parser.add_argument("--threads", default=None, help="comma list, e.g. 1,2,4")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--runtime", default=None, help="auto | litert | tflite_runtime | tf")
    parser.add_argument("--no-xnnpack", action="store_true")
    parser.add_argument("--target", default=str(here / "target.json"), help="target JSON")
    parser.add_argument("--json", default=None, help="write results here")
    parser.add_argument("--check", action="store_true", help="compare with reference outputs")
    args = parser.parse_args(argv)
    try:
        target = {}
        if args.target and Path(args.target).is_file():
            target = json.loads(Path(args.target).read_text())
        runtime = args.runtime or target.get("runtime", "auto")
        if args.check:
            results = check_bundle(here, runtime)
            for r in results:
                print(f"{'PASS' if r['passed'] else 'FAIL'} {r['model']}: top-1 identical on "
                      f"{r['samples']} samples: {r['top1_identical']}, max |diff| "
                      f"{r['max_abs_diff']:.3g} (tolerance {r['tolerance']:.3g})")  # fmt: skip
            return 0 if all(r["passed"] for r in results) else 1
        models = args.models or sorted(str(p) for p in (here / "models").glob("*.tflite"))
        threads = int_list(args.threads) if args.threads else target.get("threads", [1])
        records = benchmark(
            models, threads=threads, warmup=args.warmup, runs=args.runs, runtime=runtime,
            xnnpack=[not args.no_xnnpack] if args.no_xnnpack else target.get("xnnpack", [True]),
            cores=target.get("cores"), progress=_progress_printer(),
        )  # fmt: skip
        print(markdown(records))
        if args.json:
            write_json(args.json, result_document(records, target=target or None,
                                                  where=platform.node() or "device"))  # fmt: skip
            print(f"wrote {args.json}")
        return 0
    except LiteconvError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
