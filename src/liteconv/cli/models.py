"""Models and configs: what is registered, what a model costs, what a config resolves to."""

from __future__ import annotations

import click

from liteconv.cli.common import (
    config_option,
    load_config_from,
    parse_overrides,
    parse_shape,
    set_option,
)
from liteconv.cli.root import cli
from liteconv.device.errors import LiteconvError


@cli.command()
@click.argument("model")
@click.option("--input-shape", default="32,32,3", show_default=True, help="H,W,C")
@click.option("--num-classes", default=10, show_default=True, type=int, help="classes")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="a model argument as in a config, e.g. model.kwargs.width=0.5 "
                   "('liteconv models' lists them)")  # fmt: skip
@click.option("--markdown", is_flag=True, help="print a Markdown table")
def summary(model: str, input_shape: str, num_classes: int, sets: tuple[str, ...], markdown: bool):
    """Per-layer parameters and multiply-accumulates of a registered MODEL."""
    from liteconv.keras_layers import create_model, model_cost

    kwargs = {}
    for key, value in parse_overrides(sets).items():
        if not key.startswith("model.kwargs.") or key == "model.kwargs.":
            raise LiteconvError(
                f"--set {key}=...: summary takes model arguments the way configs do, e.g. "
                f"--set model.kwargs.{key.rsplit('.', 1)[-1]}={value}"
            )
        kwargs[key.removeprefix("model.kwargs.")] = value
    try:
        built = create_model(
            model, input_shape=parse_shape(input_shape), num_classes=num_classes, **kwargs
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


@cli.command()
@config_option
@set_option
def config(config_path, sets):
    """Print the resolved CONFIG (base files and overrides applied)."""
    from liteconv.config import dump_config

    click.echo(dump_config(load_config_from(config_path, sets)), nl=False)
