"""``liteconv demo``: the whole job in one command, a progress line per stage with its time."""

from __future__ import annotations

import time
from pathlib import Path

import click

from liteconv.cli.common import config_option, load_config_from, set_option
from liteconv.cli.root import cli
from liteconv.device.targets import list_targets

DEMO_CONFIG = "configs/experiments/fashion_mnist_demo.yaml"
STAGES = ("train", "export + verify", "benchmark", "bundle")


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
@click.pass_context
def demo(ctx, config_path, sets, target, out, dist):
    """The whole job on the embedded default: train, export fp32 + QAT int8 and verify,
    benchmark for the target, bundle for the board (-c default: the demo config)."""
    from liteconv.cli.deploy import bench
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
    models = tuple(sorted(str(p) for p in (run.path / "export").glob("*.tflite")))
    results = run.path / "export" / "bench-host.json"
    stage(3, lambda: ctx.invoke(bench, models=models, target=target, json_path=str(results)))
    bundle = stage(4, lambda: make_bundle(run.path, out=dist, target=target, echo=click.echo))
    click.echo(f"== demo finished in {_clock(time.monotonic() - began)}")
    click.echo(f"run:       {run.path}  (model.keras, manifest.json, history.csv)")
    click.echo(f"verified:  {run.path / 'export' / 'verify.md'}  (TFLite vs Keras on the test set)")
    click.echo(f"benchmark: {results}  (this host's CPU with the {target} profile)")
    click.echo(f"bundle:    {bundle}  (copy to the board: tar xzf it, python bench.py --check)")
    click.echo(f"The full schedule: make train (10 epochs of {cfg.model.name}) && make export-tflite; "
               "the README's three-CNN table: make reproduce")  # fmt: skip
    return Path(bundle)
