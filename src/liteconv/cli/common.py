"""What every ``liteconv`` command shares: option parsing, one-line errors, common options.

Heavy modules (TensorFlow) are imported inside the commands that need them, so the
benchmark commands run where only numpy and the LiteRT runtime are installed.
"""

from __future__ import annotations

import os

import click
import yaml

# imported for its side effect: it takes the crash-point testing variables out of the
# environment before any command starts a child process
from liteconv.device import files as _files  # noqa: F401
from liteconv.device.errors import LiteconvError


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


def parse_shape(text: str) -> tuple[int, ...]:
    """``H,W,C`` as a tuple of ints; a one-line error otherwise."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError as err:
        raise LiteconvError(f"--input-shape {text!r}: expected H,W,C such as 32,32,3") from err


class UserError(click.ClickException):
    """A ``LiteconvError`` as click shows it: ``Error: <one line>``, exit status 2."""

    exit_code = 2


# A module an optional extra brings -> (the extra, what it is), for one-line errors.
EXTRA_OF = {
    "tensorflow": ("train", "TensorFlow"), "tf_keras": ("train", "tf-keras"),
    "tensorflow_model_optimization": ("train", "tensorflow-model-optimization"),
    "tensorly": ("train", "tensorly"), "sklearn": ("train", "scikit-learn"),
    "tensorboard": ("train", "TensorBoard"), "ai_edge_litert": ("device", "the LiteRT runtime"),
}  # fmt: skip


class SectionedGroup(click.Group):
    """A click group whose ``--help`` lists commands under headed sections, each with its
    whole one-line description (click cuts them at 45 characters), and whose errors are
    one line: ``LiteconvError`` exits 2, anything unexpected exits 1.

    ``sections``: ``[(heading, [command names])]``; commands in no section are listed last
    under "Other commands"; hidden commands (old names) are not listed.
    """

    sections: list[tuple[str, list[str]]] = []

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        shown = {name: cmd for name in self.list_commands(ctx)
                 if (cmd := self.get_command(ctx, name)) is not None and not cmd.hidden}  # fmt: skip
        placed: set[str] = set()
        groups = [(title, [n for n in names if n in shown]) for title, names in self.sections]
        rest = [n for n in shown if not any(n in names for _, names in self.sections)]
        for title, names in [*groups, ("Other commands" if groups else "Commands", rest)]:
            if not names:
                continue
            rows = [(n, one_line(shown[n])) for n in names if n not in placed]
            placed.update(names)
            with formatter.section(title):
                formatter.write_dl(rows, col_max=18)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LiteconvError as err:
            raise UserError(str(err)) from err
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as err:  # last resort: one line, the traceback only on request
            extra = isinstance(err, ModuleNotFoundError) and EXTRA_OF.get(
                (err.name or "").split(".")[0])  # fmt: skip
            if extra:  # an optional extra not installed: say which
                raise UserError(
                    f"this command needs {extra[1]} (module '{err.name}' is not installed): "
                    f"pip install 'liteconv[{extra[0]}]'"
                ) from err
            if _debug():
                raise
            first = (str(err).strip().splitlines() or [""])[0][:300]
            raise InternalError(
                f"unexpected {type(err).__name__}: {first} (LITECONV_DEBUG=1 or "
                "'liteconv --debug ...' shows the traceback; please report it)"
            ) from err


def one_line(cmd: click.Command) -> str:
    """A command's whole first sentence (its ``short_help``, else its docstring's)."""
    if cmd.short_help:
        return cmd.short_help
    text = " ".join((cmd.help or "").split("\n\n")[0].split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


class _RuntimeChoice(click.Choice):
    """A runtime name: ``tflite_runtime`` (the module's and the configs' spelling), with
    ``tflite-runtime`` (the pip package's) accepted as the same value."""

    def convert(self, value, param, ctx):
        return super().convert(value.replace("-", "_") if isinstance(value, str) else value,
                               param, ctx)  # fmt: skip


def runtime_choice(names: list[str]) -> click.Choice:
    """The one spelling of runtime names in every command (``-`` read as ``_``)."""
    return _RuntimeChoice(names)


def _debug() -> bool:
    return os.environ.get("LITECONV_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


class InternalError(click.ClickException):
    """Something liteconv did not expect: one line, exit status 1."""

    exit_code = 1


config_option = click.option(
    "-c", "--config", "config_path", type=click.Path(dir_okay=False), metavar="CONFIG",
    help="experiment YAML, e.g. configs/experiments/fashion_mnist_flattened.yaml",
)  # fmt: skip
set_option = click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE", help="override, e.g. train.epochs=1"
)


def load_config_from(config_path: str | None, sets: tuple[str, ...], *, check_model: bool = True):
    """The experiment config at ``config_path`` with ``--set`` overrides, checked."""
    from liteconv.config import load_config

    if config_path is None:
        raise LiteconvError("missing -c CONFIG, e.g. -c configs/experiments/digits_quick.yaml")
    return load_config(config_path, parse_overrides(sets), check_model=check_model)


def run_dir_or_newest(run_dir: str | None) -> str:
    """RUN_DIR, or the newest finished run under runs/."""
    from liteconv.pipeline.run import Run

    return run_dir or str(Run.newest("runs").path)


def progress_bar(label: str):
    """A ``progress(done, total)`` callback drawing a bar on stderr, opened at its first
    call and closed at ``done == total`` (so what follows prints on its own line)."""
    import sys

    state: dict = {"done": 0}

    def progress(done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = click.progressbar(length=total, label=label, file=sys.stderr)
            state["bar"].__enter__()
        state["bar"].update(done - state["done"])
        state["done"] = done
        if done == total:
            state.pop("bar").__exit__(None, None, None)

    return progress


def bench_options(models, config_path: str | None, flags: dict) -> dict:
    """``bench.host.bench_config``'s resolved ``bench:`` settings for ``models`` with the
    flags that were given (``{"bench.threads": ..., ...}``; None: not given)."""
    from liteconv.bench.host import bench_config

    given = {k: v for k, v in flags.items() if v is not None}
    return bench_config(models, config_path, given).bench.resolve()
