"""Reading a ``.keras`` file safely: Keras v3 zips only, safe mode always, explicit custom objects.

A file Keras 3 saved (TensorFlow >= 2.16's default ``import keras``) is loaded by Keras 3
and rebuilt in tf_keras (``keras_layers.keras3``), its outputs checked against the original.

A file that is not a Keras v3 archive (an HDF5 file renamed ``model.keras``, say) would go
through tf_keras's legacy loader, where safe mode does not apply and a ``Lambda`` layer's
code runs: it is refused before any loader sees it. Custom layers are only ever taken from
``module:Name`` references the user gave (``--custom-objects``).

Example:
    >>> model = load_keras_model("model.keras", custom_objects=["mylayers:Mish"])
"""

from __future__ import annotations

import importlib
from pathlib import Path

from liteconv.compat import keras
from liteconv.device.errors import LiteconvError, first_line
from liteconv.keras_layers.keras3 import check_keras_v3, is_keras3, load_keras3
from liteconv.keras_layers.portable import portable_model


def resolve_custom_objects(references: list[str] | tuple[str, ...]) -> dict:
    """``{"Name": object}`` for ``module:Name`` references (imported only because asked)."""
    objects = {}
    for ref in references:
        module_name, sep, name = ref.partition(":")
        if not sep or not module_name or not name:
            raise LiteconvError(
                f"--custom-objects {ref!r}: expected module:Name, e.g. mylayers:Mish"
            )
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise LiteconvError(
                f"--custom-objects {ref}: cannot import {module_name} ({err})"
            ) from None
        if not hasattr(module, name):
            raise LiteconvError(f"--custom-objects {ref}: {module_name} has no {name}")
        objects[name] = getattr(module, name)
    return objects


def load_keras_model(path: str | Path, custom_objects: list[str] | tuple[str, ...] = ()):
    """Load a Keras v3 ``.keras`` file in safe mode (no compile); one-line errors.

    Old strided flattened steps (unequal strides, which only oneDNN runs) come back
    rewritten with equal strides, the same function (``keras_layers.portable``)."""
    metadata = check_keras_v3(path)
    objects = resolve_custom_objects(custom_objects)
    if is_keras3(metadata):  # TensorFlow >= 2.16's default Keras: rebuilt in tf_keras
        return load_keras3(path, objects)
    try:
        model = keras.models.load_model(
            path, compile=False, safe_mode=True, custom_objects=objects or None
        )
    except Exception as err:  # unknown layer, corrupt weights, refused lambda, ...
        first = first_line(err)
        hint = "; custom layers need --custom-objects module:Name" if "Unknown" in first else ""
        raise LiteconvError(f"{path}: cannot load the model ({first[:300]}){hint}") from None
    try:  # a strided flattened model saved before its steps had equal strides
        return portable_model(model)
    except ValueError as err:
        raise LiteconvError(f"{path}: {err}") from None
