"""Benchmark ``.tflite`` files on this host (``liteconv bench``, the demo's third stage).

The settings come from a config's ``bench:`` section (``-c CONFIG``, else the run the
models belong to, else the defaults), with the command's flags checked against it in one
place (``bench_config``); ``bench_models`` times the models interleaved with the device
harness (no TensorFlow), optionally beside the litert-benchmark tool and emulated board
estimates, and writes the result document and table.

Example:
    >>> opts = bench_config(["runs/x/y/export/int8.tflite"], None, {"bench.threads": [1, 4]})
    >>> records = bench_models(["runs/x/y/export/int8.tflite"], opts.bench.resolve())
"""

from __future__ import annotations

from pathlib import Path

from liteconv.device import caches


def bench_config(models, config_path: str | None, overrides: dict):
    """The config whose ``bench:`` section applies: ``config_path``, else the models' run,
    else the defaults; ``overrides`` (``{"bench.threads": [...], ...}``, the flags) are
    checked with it, in one place."""
    from liteconv.config import config_from_dict, load_config

    if config_path:
        return load_config(config_path, overrides, check_model=False)
    run_config = Path(models[0]).resolve().parent.parent / "config.yaml" if models else None
    data = {}
    if run_config is not None and run_config.is_file():
        from liteconv.pipeline.run import Run

        data = Run(run_config.parent).config().to_dict()
    source = str(run_config) if data else "liteconv bench"
    for key, value in overrides.items():
        data.setdefault("bench", {})[key.split(".", 1)[1]] = value
    return config_from_dict(data, source)


def crosscheck(records: list[dict], runs: int, warmup: int, echo=print) -> None:
    """Time each XNNPACK record again with litert-benchmark; its median and the ratio go
    into the record."""
    from liteconv.bench.crosscheck import litert_benchmark

    for r in records:
        if r["xnnpack"]:
            ref = litert_benchmark(r["file"], threads=r["threads"], runs=runs, warmup=warmup)
            r["litert_benchmark_median_ms"] = ref
            r["ratio_to_litert_benchmark"] = round(r["p50_ms"] / ref, 3)
            echo(f"{r['model']} threads={r['threads']}: p50 {r['p50_ms']:.4f} ms, "
                 f"litert-benchmark median {ref:.4f} ms, "
                 f"ratio {r['ratio_to_litert_benchmark']:.3f}")  # fmt: skip


def bench_models(models: list[str], opts: dict, *, progress=None, litert_crosscheck=False,
                 emulate: list[str] = (), emulate_cache: str = str(caches.EMULATE),
                 json_path: str | None = None, md_path: str | None = None,
                 echo=print, warn=print) -> list[dict]:  # fmt: skip
    """Time ``models`` with ``opts`` (``BenchConfig.resolve()``: threads, warmup, runs,
    runtime, xnnpack, cores, target); print the table (and delegation warnings through
    ``warn``); with ``emulate`` each model's estimate on those targets' cores too; write
    the result document to ``json_path`` and the table to ``md_path``. Returns the records."""
    from liteconv.device import harness
    from liteconv.device.files import atomic_write_text

    records = harness.benchmark(
        list(models), threads=opts["threads"], warmup=opts["warmup"], runs=opts["runs"],
        runtime=opts["runtime"], xnnpack=opts["xnnpack"], cores=opts["cores"],
        progress=progress,
    )  # fmt: skip
    if litert_crosscheck:
        crosscheck(records, opts["runs"], opts["warmup"], echo=echo)
    table = harness.markdown(records)
    echo(table)
    for line in harness.delegation_warnings(records):
        warn(line)
    if emulate:
        from liteconv.emulate.report import add_estimates

        for emulated in add_estimates(records, list(models), list(emulate), cache=emulate_cache,
                                      echo=echo):  # fmt: skip
            echo(emulated)
            table += "\n\n" + emulated
    if json_path:
        target = opts["target"].to_dict() if opts["target"] else None
        harness.write_json(json_path, harness.result_document(records, target=target))
        echo(f"wrote {json_path}")
    if md_path:
        atomic_write_text(md_path, table + "\n")
    return records
