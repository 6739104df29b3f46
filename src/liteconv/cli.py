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


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
