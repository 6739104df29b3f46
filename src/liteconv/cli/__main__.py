"""``python -m liteconv.cli``: the same command line as ``liteconv``."""

from liteconv.cli import main

main()
