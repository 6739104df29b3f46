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


# Layers tfmot's 8-bit registry refuses that QAT can still take with their output quantized
# (the converter's int8 graph quantizes them so): weightless elementwise merges (a
# squeeze-and-excitation's Multiply) and a BatchNormalization no convolution folds (a
# pre-activation or NASNet's BN after a concatenation: MUL + ADD in int8).
_OUTPUT_ONLY = ("Multiply", "Subtract", "Maximum", "Minimum", "Average", "BatchNormalization")
_FOLDS_BN = ("Conv2D", "DepthwiseConv2D", "Dense")
# Layers whose int8 kernel keeps its input's scale (TFLite's AVERAGE_POOL_2D): tfmot
# quantizes their output with a range of its own, which the converter refuses ("violate
# the same scale constraint": DenseNet's transitions); left unquantized, they keep the
# input's scale.
_SAME_SCALE = ("AveragePooling1D", "AveragePooling2D")
_UNSUPPORTED = re.compile(r"Layer (\S+?):<class '[\w.]*?\.(\w+)'> is not supported")


def _output_only(model) -> set[str]:
    """Names of ``model``'s layers QAT quantizes at their output only (``_OUTPUT_ONLY``;
    a BatchNormalization right after a convolution is left to tfmot, which folds it)."""
    names = set()
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "BatchNormalization":
            parents = {type(node.inbound_layers).__name__ for node in layer.inbound_nodes
                       if not isinstance(node.inbound_layers, list)}  # fmt: skip
            if parents and parents <= set(_FOLDS_BN):
                continue  # tfmot folds it into its convolution
        if kind in _PREPROCESSING + _OUTPUT_ONLY:
            names.add(layer.name)
    return names


def _quantize(model, q, scheme=None):
    """tfmot's QAT wrapping of ``model`` (``scheme``: tfmot's default 8-bit one when None).
    Layers its registry refuses are annotated first: augmentation (an identity at inference)
    and ``_SAME_SCALE`` layers unquantized; preprocessing (``Rescaling``, ...) and
    ``_OUTPUT_ONLY`` layers with their output quantized. A layer tfmot still refuses is
    named in the error."""
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_configs as configs,
    )

    schemes = () if scheme is None else (scheme,)
    output_only = _output_only(model)
    unquantized = {layer.name for layer in model.layers
                   if type(layer).__name__ in AUGMENTATION_LAYERS + _SAME_SCALE}  # fmt: skip
    if not output_only and not unquantized:
        return q.quantize_apply(q.quantize_annotate_model(model), *schemes)
    scope = {"NoOpQuantizeConfig": configs.NoOpQuantizeConfig,
             "Default8BitOutputQuantizeConfig": configs.Default8BitOutputQuantizeConfig}  # fmt: skip
    while True:

        def annotate(layer):
            clone = type(layer).from_config(layer.get_config())
            if layer.name in unquantized:
                return q.quantize_annotate_layer(clone, configs.NoOpQuantizeConfig())
            if layer.name in output_only:
                return q.quantize_annotate_layer(clone, configs.Default8BitOutputQuantizeConfig())
            return clone

        annotated = keras.models.clone_model(model, clone_function=annotate)
        annotated.set_weights(model.get_weights())
        try:
            with q.quantize_scope(scope):
                return q.quantize_apply(q.quantize_annotate_model(annotated), *schemes)
        except RuntimeError as err:  # a BatchNormalization tfmot did not fold after all
            refused = _UNSUPPORTED.search(str(err))
            if not refused or refused[2] not in _OUTPUT_ONLY or refused[1] in output_only:
                raise
            output_only.add(refused[1])


_MIN_RANGE = 1e-3  # of a calibrated activation range


def calibrate_ranges(qat, batches, max_batches: int = 16, training: bool = True) -> int:
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
    (``epochs=0``) — starts from ranges that fit the model. The pass runs the model with
    no fake quantization, so each range sees the float tensors, and as it will run next:
    ``training`` (a fine-tune follows: BatchNormalization on each batch's statistics, as
    tfmot's own moving average sees them; the moving statistics and every other variable
    the pass updates are put back) or not (the model is converted as it is). An untrained
    DenseNet121 shows why: in inference mode its last ReLU ranges came out 0.08 wide
    against the 3.9 its training-mode tensors span, and its fine-tune diverged (gradients
    of 1e20 at step 2); an untrained EfficientNetB0's training-mode ranges, converted with
    no fine-tune, gave an int8 file XNNPACK refused to prepare."""
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

    seen: dict = {}  # min variable's ref -> [min variable, max variable, [minima], [maxima]]
    assigned: set = set()  # the weight ranges' variables
    kept = [(v, v.numpy()) for v in qat.non_trainable_weights]  # BN's moving mean / variance

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
        assigned.update((min_var.ref(), max_var.ref()))
        return inputs

    originals = {name: getattr(quant_ops, name)
                 for name in ("MovingAvgQuantize", "AllValuesQuantize", "LastValueQuantize")}  # fmt: skip
    quant_ops.MovingAvgQuantize = quant_ops.AllValuesQuantize = record
    quant_ops.LastValueQuantize = weights
    try:
        for i, batch in enumerate(batches):
            if i == max_batches:
                break
            qat(batch[0] if isinstance(batch, tuple) else batch, training=training)
    finally:
        for name, fn in originals.items():
            setattr(quant_ops, name, fn)
        for variable, value in kept:
            if variable.ref() not in assigned:
                variable.assign(value)
    for min_var, max_var, minima, maxima in seen.values():
        low = np.minimum(np.mean(minima, axis=0), 0.0)
        high = np.maximum(np.mean(maxima, axis=0), 0.0)
        # a tensor that is 0 on every batch (a dead ReLU) would get a zero range and a zero
        # scale: give it a small one
        high = np.where(high - low < _MIN_RANGE, low + _MIN_RANGE, high)
        min_var.assign(np.reshape(low, min_var.shape))
        max_var.assign(np.reshape(high, max_var.shape))
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
    scheme = None  # tfmot's default 8-bit scheme
    if not per_channel:
        if preserve_sparsity:
            raise ValueError("prune-preserving QAT is per-channel only; drop per_channel=False")
        from tensorflow_model_optimization.quantization.keras.experimental.default_n_bit import (  # noqa: E501
            DefaultNBitQuantizeScheme,
        )

        scheme = DefaultNBitQuantizeScheme(disable_per_axis=True)
    elif preserve_sparsity:
        from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (  # noqa: E501
            default_8bit_prune_preserve_quantize_scheme as pqat,
        )

        scheme = pqat.Default8BitPrunePreserveQuantizeScheme()
    try:
        qat = _quantize(model, q, scheme)
    except (RuntimeError, ValueError, AttributeError, TypeError, KeyError) as err:
        # a layer or layout tfmot cannot quantize; its own cloning of some TFOpLambda layers
        # (MobileNetV3's hard-swish, RegNet's adds) fails with AttributeError
        raise LiteconvError(
            f"quantization-aware training: tfmot cannot quantize this model "
            f"({first_line(err)[:240]}); use post-training int8 (--mode int8)"
        ) from None
    calibrate_ranges(qat, splits.train, training=epochs > 0)
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
