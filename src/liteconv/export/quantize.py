"""Model optimization with tensorflow-model-optimization: QAT, pruning, strip.

All functions take and return Keras models (and training data); none writes files.

Example:
    >>> qat = quantization_aware(model, splits, epochs=1, learning_rate=1e-4)
    >>> pruned, report = prune(model, splits, sparsity=0.5, epochs=2, learning_rate=1e-4)
"""

from __future__ import annotations

import gzip
import re

import numpy as np

from liteconv.compat import keras, tfmot
from liteconv.config import TrainConfig
from liteconv.device.errors import LiteconvError, first_line
from liteconv.keras_layers import AUGMENTATION_LAYERS
from liteconv.keras_layers.graph import inline_nested
from liteconv.pipeline.data import DataSplits
from liteconv.pipeline.train import compile_model, one_hot


def _compile(model, learning_rate: float, steps: int, epochs: int) -> None:
    """Adam with cosine decay over the fine-tune, through the training compile."""
    schedule = TrainConfig(epochs=max(1, epochs), learning_rate=learning_rate,
                           lr_schedule="cosine", optimizer="adam")  # fmt: skip
    compile_model(model, schedule, max(1, steps))


def reserve_layer_names(model) -> None:
    """Advance Keras' layer-name counters past every layer name in ``model`` (nested ones
    too), so that a layer tfmot creates gets a name the model does not have.

    A model loaded in a fresh process has its names (``conv2d``) but no counts behind them;
    tfmot's layout transform that splits a ``SeparableConv2D`` then makes a second
    ``conv2d``, and Keras, rebuilding the graph, loops forever on the duplicate (the Keras
    tutorial's model, imported, hung ``export`` at 100 % CPU)."""
    try:
        from tf_keras.src.backend import get_default_graph_uid_map
    except ImportError:  # another Keras layout: nothing to advance
        return
    counts = get_default_graph_uid_map()  # keys: (namespace, name); zero-based numbering
    for layer in [model, *model.submodules]:
        name = getattr(layer, "name", None)
        if not isinstance(name, str):
            continue
        base, number = re.fullmatch(r"(.*?)(?:_(\d+))?", name).groups()
        for key, used in ((("", base), int(number or 0) + 1), (("", name), 1)):
            counts[key] = max(counts[key], used)


# Preprocessing layers tfmot's 8-bit registry lacks: augmentation (AUGMENTATION_LAYERS, left
# unquantized) and ones that compute (their output quantized, as the converter's int8 graph does).
_PREPROCESSING = ("Rescaling", "Normalization", "Resizing", "CenterCrop")


def _quantize_default(model, q):
    """tfmot's default 8-bit QAT of ``model``; a model with preprocessing layers at its top
    level (an imported one: ``Rescaling``, ``RandomFlip``, ...) gets them annotated first,
    augmentation unquantized (an identity at inference), the others with their output
    quantized."""
    kinds = {type(layer).__name__ for layer in model.layers}
    if not kinds & set(AUGMENTATION_LAYERS + _PREPROCESSING):
        return q.quantize_model(model)
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_configs as configs,
    )

    def annotate(layer):
        clone = type(layer).from_config(layer.get_config())
        if type(layer).__name__ in AUGMENTATION_LAYERS:
            return q.quantize_annotate_layer(clone, configs.NoOpQuantizeConfig())
        if type(layer).__name__ in _PREPROCESSING:
            return q.quantize_annotate_layer(clone, configs.Default8BitOutputQuantizeConfig())
        return clone

    annotated = keras.models.clone_model(model, clone_function=annotate)
    annotated.set_weights(model.get_weights())
    scope = {"NoOpQuantizeConfig": configs.NoOpQuantizeConfig,
             "Default8BitOutputQuantizeConfig": configs.Default8BitOutputQuantizeConfig}  # fmt: skip
    with q.quantize_scope(scope):
        return q.quantize_apply(q.quantize_annotate_model(annotated))


def calibrate_ranges(qat, batches, max_batches: int = 16) -> int:
    """Start every activation range of the tfmot model ``qat`` where its fine-tune would
    take it, from the float tensors on ``batches`` (``(x, y)`` or ``x``; up to
    ``max_batches``); returns the number of ranges set.

    tfmot starts each activation range at [-6, 6] and moves it towards each training
    batch's min / max by 0.1 % a step (an EMA with decay 0.999): after one epoch of
    digits (41 steps) a ReLU output spanning [0, 1.4] still had [-5.76, 5.81], half the
    int8 levels below zero and 39 of them for its values, and an activation above 6
    stays clipped. Here each range gets the mean of the batches' minima and maxima (the
    EMA's own fixed point at the training batch size; 0 kept inside, as tfmot does), and
    each weight range what tfmot's training step gives it, so a short fine-tune — or none
    (``epochs=0``) — starts from ranges that fit the model. The pass runs the model in
    inference mode with no fake quantization, so each range sees the float tensors."""
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

    seen: dict = {}  # min variable's ref -> [min variable, max variable, [minima], [maxima]]

    def record(inputs, min_var, max_var, per_channel=False, symmetric=False, **_):
        axes = list(range(len(inputs.shape) - 1)) if per_channel else None
        low = tf.reduce_min(inputs, axis=axes).numpy()
        high = tf.reduce_max(inputs, axis=axes).numpy()
        if symmetric:  # as tfmot's own update: a range symmetric about 0
            high = np.maximum(np.abs(low), np.abs(high))
            low = -high
        row = seen.setdefault(min_var.ref(), [min_var, max_var, [], []])
        row[2].append(low)
        row[3].append(high)
        return inputs

    def weights(inputs, min_var, max_var, **kwargs):  # tfmot's own training-mode update
        originals["LastValueQuantize"](inputs, min_var, max_var, **{**kwargs, "is_training": True})
        return inputs

    originals = {name: getattr(quant_ops, name)
                 for name in ("MovingAvgQuantize", "AllValuesQuantize", "LastValueQuantize")}  # fmt: skip
    quant_ops.MovingAvgQuantize = quant_ops.AllValuesQuantize = record
    quant_ops.LastValueQuantize = weights
    try:
        for i, batch in enumerate(batches):
            if i == max_batches:
                break
            qat(batch[0] if isinstance(batch, tuple) else batch, training=False)
    finally:
        for name, fn in originals.items():
            setattr(quant_ops, name, fn)
    for min_var, max_var, minima, maxima in seen.values():
        min_var.assign(np.reshape(np.minimum(np.mean(minima, axis=0), 0.0), min_var.shape))
        max_var.assign(np.reshape(np.maximum(np.mean(maxima, axis=0), 0.0), max_var.shape))
    return len(seen)


def quantization_aware(
    model,
    splits: DataSplits,
    *,
    epochs: int,
    learning_rate: float,
    preserve_sparsity: bool = False,
    per_channel: bool = True,
    verbose: int = 1,
):
    """Wrap ``model`` for quantization-aware training and fine-tune it.

    Per-channel int8 weights, per-tensor int8 activations, BatchNorm folded into the
    preceding convolution (tfmot's default 8-bit scheme). ``preserve_sparsity`` keeps the
    zeros of a pruned model (prune-preserving QAT). Every range starts from the training
    data (``calibrate_ranges``); ``epochs=0`` only wraps and calibrates the model.
    ``per_channel=False`` simulates per-tensor weight scales (tfmot's n-bit scheme with
    per-axis quantization disabled), to match ``to_tflite(..., per_channel=False)``.
    """
    from liteconv.keras_layers.backbones import QAT_REFUSED, backbone_of

    backbone = backbone_of(model)  # refused by every scheme below: say why before trying
    if backbone in QAT_REFUSED:
        raise LiteconvError(
            f"quantization-aware training: tfmot cannot quantize the {backbone} backbone "
            f"({QAT_REFUSED[backbone]}); use post-training int8 (--mode int8)"
        )
    q = tfmot().quantization.keras
    try:  # tfmot refuses a model inside a model (an imported transfer model's backbone):
        model = inline_nested(model)  # its layers are called in its place, same weights
    except ValueError as err:
        raise LiteconvError(f"quantization-aware training: {first_line(err)[:240]}; use "
                            "post-training int8 (--mode int8)") from None  # fmt: skip
    reserve_layer_names(model)
    if not per_channel:
        if preserve_sparsity:
            raise ValueError("prune-preserving QAT is per-channel only; drop per_channel=False")
        from tensorflow_model_optimization.quantization.keras.experimental.default_n_bit import (  # noqa: E501
            DefaultNBitQuantizeScheme,
        )

        qat = q.quantize_apply(
            q.quantize_annotate_model(model), DefaultNBitQuantizeScheme(disable_per_axis=True)
        )
    elif preserve_sparsity:
        from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (  # noqa: E501
            default_8bit_prune_preserve_quantize_scheme as pqat,
        )

        qat = q.quantize_apply(
            q.quantize_annotate_model(model),
            pqat.Default8BitPrunePreserveQuantizeScheme(),
        )
    else:
        try:
            qat = _quantize_default(model, q)
        except (RuntimeError, ValueError) as err:  # a layer or layout tfmot cannot quantize
            first = first_line(err)
            raise LiteconvError(
                f"quantization-aware training: tfmot cannot quantize this model ({first[:240]}); "
                "use post-training int8 (--mode int8) or put BatchNormalization right after "
                "its convolution"
            ) from None
    calibrate_ranges(qat, splits.train)
    _compile(qat, learning_rate, splits.steps_per_epoch, max(epochs, 1))
    if epochs:
        n = splits.num_classes
        qat.fit(
            one_hot(splits.train, n),
            validation_data=one_hot(splits.val, n) if splits.val is not None else None,
            epochs=epochs,
            verbose=verbose,
        )
    return qat


def prune(
    model,
    splits: DataSplits,
    *,
    sparsity: float,
    epochs: int,
    learning_rate: float,
    verbose: int = 1,
):
    """Prune ``model`` to ``sparsity`` with a polynomial schedule, fine-tune, strip.

    Returns:
        (stripped model, per-layer sparsity report ``{layer: fraction of zero weights}``).
    """
    if not 0 < sparsity < 1:
        raise ValueError(f"Expected a sparsity in (0, 1), received sparsity={sparsity!r}")
    sparsity_api = tfmot().sparsity.keras
    steps = splits.steps_per_epoch
    schedule = sparsity_api.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=sparsity,
        begin_step=0,
        end_step=max(1, int(steps * epochs * 0.8)),  # the last 20% recover at full sparsity
        frequency=max(1, steps // 10),
    )
    # a nested backbone is one layer to tfmot, which prunes none of its weights: its layers
    # are called in its place (same weights) so that every convolution is pruned
    try:
        model = inline_nested(model)
    except ValueError as err:
        raise LiteconvError(f"pruning: {first_line(err)[:240]}") from None
    pruned = sparsity_api.prune_low_magnitude(model, pruning_schedule=schedule)
    _compile(pruned, learning_rate, steps, epochs)
    n = splits.num_classes
    pruned.fit(
        one_hot(splits.train, n),
        epochs=epochs,
        callbacks=[sparsity_api.UpdatePruningStep()],
        verbose=verbose,
    )
    stripped = sparsity_api.strip_pruning(pruned)
    return stripped, sparsity_report(stripped)


def sparsity_report(model) -> dict[str, float]:
    """Fraction of exactly-zero weights in each layer's kernel(s)."""
    report = {}
    for layer in model.layers:
        kernels = [
            w.numpy() for w in layer.weights if "kernel" in w.name and "quantize" not in w.name
        ]
        if kernels:
            total = sum(k.size for k in kernels)
            zeros = sum(int((k == 0).sum()) for k in kernels)
            report[layer.name] = round(zeros / total, 4)
    return report


def gzip_size(blob: bytes) -> int:
    """Size of ``blob`` after gzip (level 9): what sparsity buys in a download."""
    return len(gzip.compress(blob, compresslevel=9))
