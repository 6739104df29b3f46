"""The ``liteconv`` command line: one click group, one module per group of commands.

``root`` (the group, global flags, sectioned help), ``common`` (parsing, one-line errors,
shared options), ``train`` and ``deploy`` (the job), ``demo`` (all of it in one command), ``models`` (registry, costs,
configs), ``board`` (SSH/adb boards, emulated ARM), ``study`` (the README's tables).
Each command calls one function of the package; heavy imports live inside the commands.

Example:
    $ liteconv --help
"""

from __future__ import annotations

from liteconv.cli import board, demo, deploy, models, study, train  # noqa: F401 - they register
from liteconv.cli.common import parse_overrides
from liteconv.cli.root import cli

__all__ = ["cli", "main", "parse_overrides"]


def main() -> None:
    """Console-script entry point."""
    cli()
