"""The error type for bad input: the CLI prints its one-line message and exits 2.

The one definition of ``LiteconvError``, in the TensorFlow-free ``device`` package so that
the board and the host raise and catch the same class.
"""


def first_line(err: BaseException) -> str:
    """An exception's first line of text (its class name when it has none), for one-line errors."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


class LiteconvError(Exception):
    """A problem with the user's input (config, file, run folder), said in one line.

    Example:
        >>> raise LiteconvError("configs/x.yaml: unknown key 'trian'; allowed: train, data")
    """

    exit_code = 2


class ConfigError(LiteconvError):
    """A config file or override is wrong; the message names file, key and what is allowed."""
