"""The error type for bad input: the CLI prints its one-line message and exits 2."""


class LiteconvError(Exception):
    """A problem with the user's input (config, file, run folder), said in one line.

    Example:
        >>> raise LiteconvError("configs/x.yaml: unknown key 'trian'; allowed: train, data")
    """

    exit_code = 2
