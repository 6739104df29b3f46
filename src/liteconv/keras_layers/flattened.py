"""Flattened convolution (Jin, Dundar & Culurciello, arXiv:1412.5474).

Each 3-D filter of a ``k×k×C_in`` convolution is replaced by a sequence of 1-D filters:
*lateral* (1×1 across channels, ``C_in → filters``), *vertical* (``k×1``, one filter per
channel) and *horizontal* (``1×k``, one filter per channel). One LVH stage therefore
computes a full convolution whose kernel is rank one per output channel,
``K[h, w, i, o] = z[i, o] · y[h, o] · x[w, o]``. The paper cascades two stages.

The layer is composed from stock Keras layers (``Conv2D`` 1×1 and ``DepthwiseConv2D``
with ``(k, 1)`` and ``(1, k)`` kernels), so tfmot quantizes and prunes it out of the box
and a saved model loads without ``custom_objects``.
"""

from __future__ import annotations

import random

from liteconv.compat import keras
from liteconv.keras_layers import _args


def unit_gain_init(taps: int):
    """Uniform init with variance 1/taps: a 1-D filter that preserves its input's variance.

    Keras' glorot default sees a (k,1,C,1) depthwise kernel as fan_in k·C, giving each
    1-D step a gain of ~3/C: over two LVH stages the signal shrinks ~1e5×, below
    BatchNorm's epsilon, and the network does not train.

    A new instance per layer with its own seed, drawn from Python's ``random`` (which
    ``keras.utils.set_random_seed`` seeds): one shared unseeded instance would give every
    layer the same initial filters, and Keras warns about it.
    """
    limit = (3 / taps) ** 0.5
    return keras.initializers.RandomUniform(-limit, limit, seed=random.randrange(2**31))


def flattened_conv(
    x,
    filters: int,
    kernel_size,
    *,
    stages: int = 1,
    strides=1,
    padding: str = "same",
    use_bias: bool = True,
    name: str | None = None,
    later_padding: str | None = None,
):
    """Apply a flattened (LVH) convolution to the Keras tensor ``x``.

    Args:
        x: 4-D Keras tensor, channels last.
        filters: output channels of the lateral (1×1) convolutions.
        kernel_size: ``k`` or ``(k_h, k_w)`` of the convolution being flattened.
        stages: number of cascaded LVH stages; the paper uses 2.
        strides: applied by the vertical (rows) and horizontal (columns) steps of the
            first stage; later stages use stride 1.
        padding: ``"same"`` or ``"valid"``, applied by every vertical/horizontal step.
        use_bias: add a bias after each 1-D convolution (the paper's formulation).
        name: prefix of the inner layer names, ``{name}_s{stage}_{lateral|vertical|
            horizontal}``.
        later_padding: padding of the stages after the first (default: ``padding``);
            ``"same"`` keeps the first stage's output size, as a decomposed ``valid``
            convolution with an identity second stage needs.

    Returns:
        The output Keras tensor; no nonlinearity is applied inside.

    Example:
        >>> inputs = keras.Input((32, 32, 3))
        >>> y = flattened_conv(inputs, 64, 3, stages=2, name="conv1")
    """
    filters = _args.positive_int(filters, "filters")
    k_h, k_w = _args.pair(kernel_size, "kernel_size")
    stages = _args.positive_int(stages, "stages")
    s_h, s_w = _args.pair(strides, "strides")
    padding = _args.padding(padding)
    later_padding = _args.padding(later_padding or padding, "later_padding")
    if not isinstance(use_bias, bool):
        raise ValueError(f"Expected a bool, received use_bias={use_bias!r}")
    name = _args.layer_name(name, "flattened_conv")

    for stage in range(1, stages + 1):
        prefix = f"{name}_s{stage}"
        stride_h, stride_w = (s_h, s_w) if stage == 1 else (1, 1)
        pad = padding if stage == 1 else later_padding
        x = keras.layers.Conv2D(filters, 1, use_bias=use_bias, name=f"{prefix}_lateral")(x)
        x = keras.layers.DepthwiseConv2D(
            (k_h, 1),
            strides=(stride_h, 1),
            padding=pad,
            use_bias=use_bias,
            depthwise_initializer=unit_gain_init(k_h),
            name=f"{prefix}_vertical",
        )(x)
        x = keras.layers.DepthwiseConv2D(
            (1, k_w),
            strides=(1, stride_w),
            padding=pad,
            use_bias=use_bias,
            depthwise_initializer=unit_gain_init(k_w),
            name=f"{prefix}_horizontal",
        )(x)
    return x
