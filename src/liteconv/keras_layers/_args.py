"""Argument checks shared by the layer builders; messages echo the bad value (Keras style)."""

from __future__ import annotations

from liteconv.compat import keras

PADDINGS = ("same", "valid")


def positive_int(value, arg: str) -> int:
    """Return ``value`` if it is a positive integer, else raise ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Expected a positive integer, received {arg}={value!r}")
    return value


def pair(value, arg: str) -> tuple[int, int]:
    """Normalise an int or a 2-sequence of positive ints to a ``(rows, cols)`` tuple."""
    if isinstance(value, int) and not isinstance(value, bool):
        return positive_int(value, arg), value
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return positive_int(value[0], arg), positive_int(value[1], arg)
    raise ValueError(
        f"Expected a positive integer or a pair of positive integers, received {arg}={value!r}"
    )


def padding(value, arg: str = "padding") -> str:
    """Return the lower-cased padding mode, or raise naming the allowed ones."""
    if not isinstance(value, str) or value.lower() not in PADDINGS:
        raise ValueError(f"Expected padding to be one of {PADDINGS}, received {arg}={value!r}")
    return value.lower()


def layer_name(name: str | None, prefix: str) -> str:
    """Return ``name`` or a fresh unique name ``prefix_N`` in the Keras style."""
    if name is None:
        return f"{prefix}_{keras.backend.get_uid(prefix)}"
    if not isinstance(name, str) or not name:
        raise ValueError(f"Expected a non-empty string, received name={name!r}")
    return name


def activation_layer(activation, name: str):
    """Return a stock Keras layer for ``activation`` (``None`` means no activation)."""
    if activation is None or activation == "linear":
        return None
    if activation == "relu6":
        return keras.layers.ReLU(6.0, name=name)
    if activation == "relu":
        return keras.layers.ReLU(name=name)
    try:
        keras.activations.get(activation)
    except ValueError as err:
        raise ValueError(
            f"Unknown activation={activation!r}; use 'relu6', 'relu', None or a Keras "
            "activation name"
        ) from err
    return keras.layers.Activation(activation, name=name)
