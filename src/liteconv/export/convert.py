"""Keras → TFLite conversion: ``to_tflite(model, *, mode, ...) -> bytes``.

Options are validated before any work; nothing here writes files (the run layer does,
atomically). A conversion that needs Select-TF (Flex) ops fails; in the integer modes a
float op left in the graph is an error, in the others it is reported.

Example:
    >>> blob = to_tflite(model, mode="int8", representative_data=x_train[:200])
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from liteconv.compat import tf
from liteconv.config import CONVERT_MODES
from liteconv.config import IO_TYPES as CONFIG_IO_TYPES
from liteconv.device.errors import LiteconvError
from liteconv.device.flatbuf import custom_codes
from liteconv.device.graph import POSTPROCESS_OP, OpInfo, list_ops
from liteconv.device.logs import quiet_native_logs

MODES = CONVERT_MODES
IO_TYPES = (*CONFIG_IO_TYPES, "int16")  # int16 only for int16x8, not offered by the config

# Ops that legitimately carry float tensors at the edges of an integer graph.
_BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}


class ConversionError(LiteconvError, ValueError):
    """The model cannot be converted as asked (unsupported op, float fallback, bad option)."""


def _validate(mode: str, io_type: str, representative_data, is_qat: bool) -> None:
    if mode not in MODES:
        raise ConversionError(f"Unknown mode={mode!r}; choose one of {', '.join(MODES)}")
    if io_type not in IO_TYPES:
        raise ConversionError(f"Unknown io_type={io_type!r}; choose one of {', '.join(IO_TYPES)}")
    if mode == "int8" and representative_data is None and not is_qat:
        raise ConversionError(
            "mode='int8' needs representative_data (a few hundred training inputs) unless "
            "the model was trained with quantization-aware training"
        )
    if mode == "int16x8" and representative_data is None:
        raise ConversionError("mode='int16x8' needs representative_data")
    if io_type != "float32":
        allowed = {"int8": ("int8", "uint8"), "int16x8": ("int16",)}.get(mode, ())
        if io_type not in allowed:
            raise ConversionError(
                f"io_type={io_type!r} is not possible with mode={mode!r}; integer inputs and "
                "outputs need mode='int8' (int8/uint8) or mode='int16x8' (int16)"
            )


def is_qat_model(model) -> bool:
    """True if ``model`` carries tfmot quantization wrappers (quantization-aware trained)."""
    return any(type(layer).__name__.startswith("QuantizeWrapper") for layer in model.layers)


def _representative(data, count: int, names: list[str] | None = None):
    """Calibration samples one at a time; ``data`` is an array, or a list of arrays for a
    model with several inputs (one per input, in the model's input order). With several,
    each sample is a dict by input name (``names``, the model's): the converted model
    orders its inputs its own way (a loaded model.keras with inputs input_2 (64x64x3)
    and input_3 (64x64x1) got input_3 first), and a list would be fed by that order."""
    several = isinstance(data, (list, tuple)) and len(data) > 0 and np.ndim(data[0]) >= 2
    arrays = [np.asarray(a, dtype=np.float32)[:count] for a in (data if several else [data])]
    if arrays[0].shape[0] == 0:
        raise ConversionError("representative_data is empty")
    by_name = names is not None and len(names) == len(arrays) > 1

    def gen():
        for i in range(arrays[0].shape[0]):
            sample = [a[i : i + 1] for a in arrays]
            yield dict(zip(names, sample)) if by_name else sample

    return gen


def to_tflite(
    model,
    *,
    mode: str = "fp32",
    representative_data: Iterable | np.ndarray | None = None,
    num_calibration: int = 300,
    io_type: str = "float32",
    per_channel: bool = True,
    postprocess_op: bool = False,
) -> bytes:
    """Convert a Keras model to a TFLite flatbuffer.

    Args:
        model: a built Keras model (float, or quantization-aware trained for int8).
        mode: ``fp32``, ``fp16`` (float16 weights), ``dynamic`` (int8 weights, float
            activations), ``int8`` (full integer), ``int16x8`` (int16 activations, int8
            weights).
        representative_data: model inputs (N, H, W, C) for calibrating activation ranges;
            required by ``int8`` (unless QAT) and ``int16x8``.
        num_calibration: how many of those samples to use.
        io_type: dtype of the model's input and output tensors (``float32``; ``int8`` or
            ``uint8`` for ``int8``; ``int16`` for ``int16x8``).
        per_channel: per-channel weight scales (default). ``False`` gives one scale per
            tensor: smaller files for models made of depthwise filters, whose per-channel
            scale, int64 zero point and bias metadata outweigh their few weights.
        postprocess_op: let the converter emit ``TFLite_Detection_PostProcess``, the
            custom operator of TFLite's detection models that every TFLite runtime
            registers, where the model implements it (``experimental_implements``, as
            ``studies.efficientdet_lite``); any other custom op is still an error. In the
            integer modes that operator stays in float, behind a ``DEQUANTIZE`` of its
            inputs (TFLite's kernel has no integer path to choose; its outputs are boxes,
            classes and scores in float as in TF1's quantized detection models).

    Returns:
        The ``.tflite`` bytes, builtin ops only (but that one where allowed).

    Raises:
        ConversionError: bad options, an op that needs Select-TF, or (integer modes) an op
            left in float.
    """
    qat = is_qat_model(model)
    _validate(mode, io_type, representative_data, qat)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    names = list(getattr(model, "input_names", None) or [])  # the signature's input keys
    calibration = (_representative(representative_data, num_calibration, names)
                   if representative_data is not None and mode in ("int8", "int16x8") else None)  # fmt: skip
    if mode == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if calibration is not None:
            converter.representative_dataset = calibration
        if not qat:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    elif mode == "int16x8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
    if not per_channel:
        converter._experimental_disable_per_channel = True  # no public switch (TF 2.21)
    if io_type != "float32":
        dtype = getattr(tf, io_type)
        converter.inference_input_type = dtype
        converter.inference_output_type = dtype
    converter.allow_custom_ops = postprocess_op
    try:
        with quiet_native_logs():  # the MLIR converter's C++ INFO/WARNING lines
            blob = converter.convert()
    except Exception as err:  # the converter raises several unrelated types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConversionError(f"TFLite conversion ({mode}) failed: {first}") from err
    other = [c for c in custom_ops(blob) if not (postprocess_op and c == POSTPROCESS_OP)]
    if other:
        raise ConversionError(f"TFLite conversion ({mode}): custom ops {', '.join(other)} in the "
                              "model; build it from builtin ops (TFLite_Detection_PostProcess: "
                              "postprocess_op=True)")  # fmt: skip
    if mode in ("int8", "int16x8"):
        floats = [op for op in float_ops(blob) if not (postprocess_op and op == POSTPROCESS_OP)]
        if floats:
            raise ConversionError(
                f"mode={mode!r}: these ops stayed in float: {', '.join(sorted(set(floats)))}; "
                "they have no integer kernel in TFLite, replace them or use mode='dynamic'"
            )
    return bytes(blob)


def float_ops(blob: bytes, ops: list[OpInfo] | None = None) -> list[str]:
    """Names of ops computing in float32 other than the QUANTIZE/DEQUANTIZE at the edges
    (``ops``: the blob's ``list_ops`` if already at hand)."""
    return [
        op.name
        for op in (list_ops(blob) if ops is None else ops)
        if op.name not in _BOUNDARY_OPS and "float32" in op.output_types
    ]


def custom_ops(blob: bytes) -> list[str]:
    """Codes of the non-builtin (Flex / custom) ops, read from the flatbuffer (a runtime
    cannot load a model with Flex ops); empty for a builtin-only model."""
    return custom_codes(blob)
