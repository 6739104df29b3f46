"""The device command line: ``python -m liteconv.device`` (``python bench.py`` in a bundle).

Benchmarks the bundle's models (or given ``.tflite`` files) with the target's settings, or
checks with ``--check`` that this machine computes what the host computed; ``--profile``
adds the time of every block of the model (bundles made with ``--profile``). Needs numpy
and a LiteRT runtime only.

Example:
    $ python bench.py --check
    $ python bench.py --threads 1,4 --json results.json
    $ python bench.py --profile --json pi.json
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

from .check import check_bundle
from .errors import LiteconvError
from .harness import benchmark, delegation_warnings, markdown, result_document, write_json
from .profile import profile_bundle, profile_markdown, read_profile_manifest
from .runtime import resolve_runtime, runtime_version
from .targets import load_target


def int_list(text: str, option: str = "--threads") -> list[int]:
    """Parse a comma list of positive integers such as ``1,2,4`` (one-line errors)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise LiteconvError(f"{option} {text!r}: expected a comma list such as 1,2,4") from None
    if not values or min(values) < 1:
        raise LiteconvError(f"{option} {text!r}: expected positive integers")
    return values


def progress_printer(stream=sys.stderr):
    """A ``progress(done, total)`` callback drawing a bar (only the last line when not a TTY)."""

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


def _parser(bundle: Path) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench.py", description="Benchmark .tflite models (no TensorFlow)."
    )
    parser.add_argument("models", nargs="*", help="default: every models/*.tflite of the bundle")
    parser.add_argument("--bundle", default=str(bundle), help="the unpacked bundle folder")
    parser.add_argument("--threads", default=None, help="comma list, e.g. 1,2,4")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--runtime", default=None, help="auto | litert | tflite_runtime | tf")
    parser.add_argument("--no-xnnpack", action="store_true")
    parser.add_argument("--target", default=None, help="target JSON (default: the bundle's)")
    parser.add_argument("--json", default=None, help="write results here")
    parser.add_argument("--check", action="store_true", help="compare with reference outputs")
    parser.add_argument("--profile", action="store_true",
                        help="also time every block of the model (a bundle made with "
                             "'liteconv bundle --profile')")  # fmt: skip
    return parser


def check_line(r: dict) -> str:
    """One line for one model's check record (``check.compare_outputs``)."""
    step = r.get("output_step") or 0
    steps = f" = {r['max_abs_diff'] / step:.0f} steps" if step else ""
    ties = r.get("near_ties") or []
    flips = r.get("top1_flips") or []
    if r["top1_identical"]:
        top1 = f"top-1 identical on {r['samples']} samples"
    else:
        parts = [f"top-1 differs on {len(ties) + len(flips)} of {r['samples']} samples"]
        if ties:
            parts.append(f"{len(ties)} near tie(s) the host itself scored within tolerance "
                         f"(sample {ties[0]['sample']}: host margin "
                         f"{ties[0]['host_margin']:.3g}), not counted")  # fmt: skip
        if flips:
            parts.append(
                f"{len(flips)} where the host was sure (sample {flips[0]['sample']}: "
                f"host margin {flips[0]['host_margin']:.3g} > tolerance), counted"
            )
        top1 = ": ".join(parts[:1]) + (": " + "; ".join(parts[1:]) if parts[1:] else "")
    return (f"{'PASS' if r['passed'] else 'FAIL'} {r['model']}: {top1}, max |diff| "
            f"{r['max_abs_diff']:.3g}{steps} (sample {r['worst_sample']}; tolerance "
            f"{r['tolerance']:.3g}), mean |diff| {r['mean_abs_diff']:.3g} (tolerance "
            f"{r['mean_tolerance']:.3g})")  # fmt: skip


def _check(folder: Path, runtime: str) -> int:
    name = resolve_runtime(runtime)
    print(f"runtime: {name} {runtime_version(name)}, Python {platform.python_version()}, "
          f"{platform.machine()}")  # fmt: skip
    results = check_bundle(folder, name)
    for r in results:
        print(check_line(r))
    return 0 if all(r["passed"] for r in results) else 1


def main(argv: list[str] | None = None, *, bundle: Path | None = None) -> int:
    """Run the device CLI; returns the exit status (2 for bad input, one line on stderr)."""
    args = _parser(bundle or Path.cwd()).parse_args(argv)
    folder = Path(args.bundle)
    try:
        target_path = Path(args.target) if args.target else folder / "target.json"
        target = load_target(str(target_path)) if target_path.is_file() else None
        if args.target and target is None:
            raise LiteconvError(f"--target {args.target}: no such file")
        runtime = args.runtime or (target.runtime if target else "auto")
        if args.check:
            return _check(folder, runtime)
        if args.profile:  # a bundle without block models: say so before the benchmark
            read_profile_manifest(folder)
        models = args.models or sorted(str(p) for p in (folder / "models").glob("*.tflite"))
        threads = int_list(args.threads) if args.threads else (target.threads if target else [1])
        xnnpack = [False] if args.no_xnnpack else (target.xnnpack if target else [True])
        records = benchmark(
            models, threads=threads, warmup=args.warmup, runs=args.runs, runtime=runtime,
            xnnpack=xnnpack, cores=target.cores if target else None,
            progress=progress_printer(),
        )  # fmt: skip
        print(markdown(records))
        for line in delegation_warnings(records):
            print(line)
        profiles = None
        if args.profile:
            profiles = profile_bundle(
                folder, threads=threads, runs=args.runs, warmup=args.warmup, runtime=runtime,
                xnnpack=not args.no_xnnpack, cores=target.cores if target else None,
                progress=progress_printer(),
            )  # fmt: skip
            for p in profiles:
                print(f"\n## {p['mode']}, {p['threads']} thread(s)\n\n"
                      f"{profile_markdown(p, p['mode'])}")  # fmt: skip
        if args.json:
            document = result_document(records, target=target.to_dict() if target else None,
                                       where=platform.node() or "device")  # fmt: skip
            if profiles is not None:
                document["profile"] = profiles
            write_json(args.json, document)
            print(f"wrote {args.json}")
        return 0
    except LiteconvError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
