"""``liteconv demo``: the whole job in one command, a progress line per stage with its time."""

from __future__ import annotations

import time
from pathlib import Path

import click

from liteconv.cli.common import (
    bench_options,
    config_option,
    load_config_from,
    progress_bar,
    set_option,
)
from liteconv.cli.root import cli
from liteconv.device import caches
from liteconv.device.targets import list_targets
from liteconv.pipeline import run as runlib

DEMO_CONFIG = "configs/experiments/fashion_mnist_demo.yaml"
STAGES = (
    "train",
    "export + verify",
    "benchmark (this host)",
    "estimate (the board, emulated)",
    "bundle",
)


def board_estimates(
    models: list[str],
    target_name: str,
    host_json: Path,
    *,
    cache: str = str(caches.EMULATE),
    echo=click.echo,
) -> str | None:
    """The target board's **estimated** latency of ``models`` (``bench --emulate``) beside
    this host's measured p50 (from ``host_json``), as a table; ``None`` with one line saying
    how to get it when the emulation cannot run here (tools, root, network)."""
    from liteconv.device.errors import LiteconvError, first_line
    from liteconv.device.files import read_json
    from liteconv.device.tables import format_table
    from liteconv.device.targets import load_target
    from liteconv.emulate.estimate import (
        core_model,
        describe_accuracy,
        estimate_models,
        no_estimate,
    )

    target = load_target(target_name)
    try:
        estimates = estimate_models(models, target, cache=cache, echo=echo)
    except (LiteconvError, OSError) as err:
        first = first_line(err)
        echo(f"board estimate skipped ({first}); for it: 'make emulation-tools' as root once, "
             f"then 'liteconv bench {' '.join(models)} --emulate {target.name}'")  # fmt: skip
        return None
    host = {}
    for r in read_json(host_json, "benchmark result").get("records", []):
        if r.get("threads") == 1:
            host.setdefault(r.get("file"), r.get("p50_ms"))
    most = max(target.threads)
    rows = [[Path(e["file"]).stem, host.get(e["file"], ""),
             "" if e["instructions_per_invoke"] is None else f"{e['instructions_per_invoke'] / 1e6:.2f} M",
             no_estimate(e) or e["estimated_ms"],
             e["estimated_ms_threads"].get(str(most)) or ""] for e in estimates]  # fmt: skip
    table = format_table(["model", "this host p50 ms (1 thread, measured)",
                          "instructions / invoke", f"{target.name} ms (1 thread, estimated)",
                          f"{target.name} ms ({most} threads, estimated)"], rows)  # fmt: skip
    echo(table)
    echo(f"estimated, not measured: {core_model(target)} at "
         f"{target.clock_mhz:g} MHz under qemu -cpu {target.qemu_cpu}, constant "
         f"{target.cycle_scale:g} ({target.cycle_scale_source})")  # fmt: skip
    echo(describe_accuracy(target))
    return table


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@cli.command()
@config_option
@set_option
@click.option(
    "--target",
    default="raspberry-pi-4",
    show_default=True,
    help=f"the board profile benchmarked and bundled for: {', '.join(list_targets())}",
)
@click.option("--out", default="runs", show_default=True, help="parent folder of the runs")
@click.option("--dist", default="dist", show_default=True, help="where the bundle goes")
def demo(config_path, sets, target, out, dist):
    """The whole job on the embedded default: train, export fp32 + QAT int8 and verify,
    benchmark for the target, bundle for the board (-c default: the demo config)."""
    from liteconv.bench.host import bench_models
    from liteconv.deploy.bundle import make_bundle
    from liteconv.export.run_export import export_run
    from liteconv.pipeline.train import train as train_fn

    cfg = load_config_from(config_path or DEMO_CONFIG, sets)
    began = time.monotonic()

    def stage(i: int, fn):
        click.echo(f"== [{i}/{len(STAGES)}] {STAGES[i - 1]} ({_clock(time.monotonic() - began)} "
                   "so far)")  # fmt: skip
        start = time.monotonic()
        result = fn()
        click.echo(f"== [{i}/{len(STAGES)}] {STAGES[i - 1]} done in "
                   f"{_clock(time.monotonic() - start)}")  # fmt: skip
        return result

    run = stage(1, lambda: train_fn(cfg, out=out, echo=click.echo))
    stage(2, lambda: export_run(run.path, echo=click.echo))
    models = tuple(sorted(str(p) for p in run.file(runlib.EXPORT).glob("*.tflite")))
    results = run.file(runlib.BENCH_HOST)
    opts = bench_options(models, None, {"bench.target": target})
    stage(3, lambda: bench_models(list(models), opts, json_path=str(results), echo=click.echo,
                                  progress=progress_bar("benchmarking"),
                                  warn=lambda line: click.echo(line, err=True)))  # fmt: skip
    estimated = stage(4, lambda: board_estimates(list(models), target, results))
    bundle = stage(5, lambda: make_bundle(run.path, out=dist, target=target,
                                          emulate=estimated is not None, echo=click.echo))  # fmt: skip
    click.echo(f"== demo finished in {_clock(time.monotonic() - began)}")
    click.echo(f"run:       {run.path}  (model.keras, manifest.json, history.csv)")
    click.echo(f"verified:  {run.path / 'export' / 'verify.md'}  (TFLite vs Keras on the test set)")
    click.echo(
        f"benchmark: {results}  (measured on this host's CPU with the {target} profile: "
        "its threads, not its core)"
    )
    click.echo(f"estimate:  {target} latency above, estimated on its emulated core (not measured)"
               if estimated else f"estimate:  none ({target}'s emulation could not run here; see "
               "the line above)")  # fmt: skip
    click.echo(
        f"bundle:    {bundle}  (copy to the board: tar xzf it, python bench.py --check: "
        "measured on the board)"
    )
    click.echo(f"The full schedule: make train (10 epochs of {cfg.model.name}) && make export-tflite; "
               "the README's three-CNN table: make reproduce")  # fmt: skip
    return Path(bundle)
