"""The ``liteconv`` click group, its global flags and its sectioned ``--help``."""

from __future__ import annotations

import os

import click

from liteconv.cli.common import SectionedGroup


@click.group(
    cls=SectionedGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="RUN_DIR, where optional, is the newest finished run under runs/. "
    "'liteconv COMMAND --help' shows a command's options and their defaults.",
)
@click.version_option(package_name="liteconv")
@click.option("-v", "--verbose", is_flag=True,
              help="show TensorFlow's and LiteRT's own log lines (also LITECONV_VERBOSE=1)")  # fmt: skip
@click.option("--debug", is_flag=True, help="show the traceback of an unexpected error")
@click.option("--no-verify-hashes", is_flag=True,
              help="use run files whose SHA-256 differs from the manifest (edited on purpose)")  # fmt: skip
def cli(verbose: bool, debug: bool, no_verify_hashes: bool) -> None:
    """liteconv: flattened and separable convolutions, from Keras training to a measured
    TFLite deployment on phones and embedded boards."""
    if verbose:
        os.environ["LITECONV_VERBOSE"] = "1"  # read when TensorFlow is first imported
    if debug:
        os.environ["LITECONV_DEBUG"] = "1"
    if no_verify_hashes:
        os.environ["LITECONV_NO_VERIFY_HASHES"] = "1"


cli.sections = [
    ("The job: a run folder from training to a bundle",
     ["demo", "train", "import", "flatten", "evaluate", "export", "verify", "bench", "bundle",
      "report", "profile"]),
    ("Models and configs", ["models", "summary", "config"]),
    ("The board: a Raspberry Pi or phone, real or emulated", ["targets", "device", "bench-arm64", "mcu"]),
    ("Studies: the README's tables (written where --out says)", ["study"]),
]  # fmt: skip
