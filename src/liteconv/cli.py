"""The ``liteconv`` command line: a thin click group; each command calls one function.

Heavy modules (TensorFlow) are imported inside the commands that need them, so the
benchmark commands run where only numpy and the LiteRT runtime are installed.
"""

from __future__ import annotations

import click
import yaml

from liteconv.errors import LiteconvError


def parse_overrides(pairs: tuple[str, ...]) -> dict[str, object]:
    """Parse ``key=value`` pairs; values are read as YAML scalars (``1``, ``0.5``, ``true``)."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise LiteconvError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set train.epochs=1")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise LiteconvError(f"--set {pair!r}: value is not valid YAML ({err})") from err
    return out


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError as err:
        raise LiteconvError(f"--input-shape {text!r}: expected H,W,C such as 32,32,3") from err


class UserError(click.ClickException):
    """A ``LiteconvError`` as click shows it: ``Error: <one line>``, exit status 2."""

    exit_code = 2


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LiteconvError as err:
            raise UserError(str(err)) from err


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="liteconv")
def cli() -> None:
    """liteconv: flattened and separable convolutions, from Keras to measured TFLite."""


@cli.command()
@click.argument("model")
@click.option("--input-shape", default="32,32,3", show_default=True, help="H,W,C")
@click.option("--num-classes", default=10, show_default=True, type=int)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="model argument")
@click.option("--markdown", is_flag=True, help="print a Markdown table")
def summary(model: str, input_shape: str, num_classes: int, sets: tuple[str, ...], markdown: bool):
    """Per-layer parameters and multiply-accumulates of a registered MODEL."""
    from liteconv.keras_layers import create_model, model_cost

    kwargs = parse_overrides(sets)
    try:
        built = create_model(
            model, input_shape=_shape(input_shape), num_classes=num_classes, **kwargs
        )
    except ValueError as err:
        raise LiteconvError(str(err)) from err
    cost = model_cost(built)
    click.echo(f"{built.name}: {cost.total_params:,} parameters, {cost.total_macs:,} MACs")
    click.echo(cost.table(markdown=markdown))


@cli.command("models")
def models_cmd() -> None:
    """List the registered models and their arguments."""
    from liteconv.keras_layers import list_models, model_kwargs

    for name in list_models():
        args = ", ".join(f"{k}={v!r}" for k, v in model_kwargs(name).items())
        click.echo(f"{name}({args})")


_config_option = click.option(
    "-c", "--config", "config_path", type=click.Path(dir_okay=False), metavar="CONFIG",
    help="experiment YAML, e.g. configs/experiments/fashion_mnist_flattened.yaml",
)  # fmt: skip
_set_option = click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE", help="override, e.g. train.epochs=1"
)


def _load(config_path: str | None, sets: tuple[str, ...]):
    from liteconv.config import load_config

    if config_path is None:
        raise LiteconvError("missing -c CONFIG, e.g. -c configs/experiments/digits_quick.yaml")
    return load_config(config_path, parse_overrides(sets))


@cli.command()
@_config_option
@_set_option
@click.option("--out", default="runs", show_default=True, help="parent folder of the runs")
@click.option("--resume", type=click.Path(file_okay=False), help="continue an interrupted run")
@click.option("--run-name", help="run folder name (default: timestamp)")
def train(config_path, sets, out, resume, run_name):
    """Train a model from CONFIG into runs/<experiment>/<time>/."""
    from liteconv.config import load_config
    from liteconv.pipeline.train import train as train_fn

    if resume:
        cfg = load_config(config_path, parse_overrides(sets)) if config_path else None
    else:
        cfg = _load(config_path, sets)
    if resume and cfg is None:
        from liteconv.config import Config

        cfg = Config()
    try:
        run = train_fn(cfg, out=out, resume=resume, run_name=run_name, echo=click.echo)
    except KeyboardInterrupt:
        raise LiteconvError(
            "interrupted; the run resumes from its last finished epoch when you run the "
            "same command again (or liteconv train --resume RUN_DIR)"
        ) from None
    click.echo(f"run folder: {run.path}")


@cli.command()
@_config_option
@_set_option
def config(config_path, sets):
    """Print the resolved CONFIG (base files and overrides applied)."""
    from liteconv.config import dump_config

    click.echo(dump_config(_load(config_path, sets)), nl=False)


def _run_dir(run_dir: str | None) -> str:
    """RUN_DIR, or the newest finished run under runs/."""
    from liteconv.pipeline.run import Run

    return run_dir or str(Run.newest("runs").path)


@cli.command()
@click.argument("run_dir", type=click.Path(), required=False)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def evaluate(run_dir, as_json):
    """Test accuracy, loss and per-class accuracy of the model in RUN_DIR (default: newest)."""
    import json

    from liteconv.pipeline.evaluate import evaluate_run
    from liteconv.tables import format_table

    result = evaluate_run(_run_dir(run_dir))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(
        f"{result['run']}: test accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f} "
        f"({result['samples']} images)"
    )
    rows = [[name, acc] for name, acc in result["per_class_accuracy"].items()]
    click.echo(format_table(["class", "accuracy"], rows))


@cli.command("bench-train")
@click.option("--models", default="baseline_cnn,flattened_cnn,separable_cnn", show_default=True)
@click.option("--input-shape", default="28,28,1", show_default=True, help="H,W,C")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1))
@click.option("--steps", default=20, show_default=True, type=click.IntRange(1))
@click.option("--rounds", default=5, show_default=True, type=click.IntRange(1))
@click.option("--out", default="docs/results/bench_train", show_default=True,
              help="writes OUT.json and OUT.md")  # fmt: skip
def bench_train(models, input_shape, batch_size, steps, rounds, out):
    """Training throughput (images/s) of several models, measured side by side."""
    from liteconv.machine import machine_info
    from liteconv.pipeline.run import atomic_write_json, atomic_write_text
    from liteconv.pipeline.throughput import training_throughput
    from liteconv.tables import format_table

    names = [m.strip() for m in models.split(",") if m.strip()]
    records = training_throughput(
        names, input_shape=_shape(input_shape), batch_size=batch_size, steps=steps,
        rounds=rounds, echo=click.echo,
    )  # fmt: skip
    machine = machine_info()
    ratio = f"speed_vs_{names[0]}"
    table = format_table(
        ["model", "params", "MACs", "images/s (median)", "CV", f"× {names[0]}"],
        [[r["model"], r["params"], r["macs"], r["images_per_second_median"], r["cv"], r[ratio]]
         for r in records],
        markdown=True,
    )  # fmt: skip
    header = (
        f"Training throughput, batch {batch_size}, input {input_shape}, median of {rounds} "
        f"interleaved rounds of {steps} steps; {machine['cpu']}, {machine['cores_usable']} cores."
    )
    atomic_write_json(f"{out}.json", {"machine": machine, "records": records})
    atomic_write_text(f"{out}.md", f"{header}\n\n{table}\n")
    click.echo(table)
    click.echo(f"wrote {out}.json and {out}.md")


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
