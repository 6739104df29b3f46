"""Flattened convolution (Jin, Dundar & Culurciello, arXiv:1412.5474).

Each 3-D filter of a ``k×k×C_in`` convolution is replaced by a sequence of 1-D filters:
*lateral* (1×1 across channels, ``C_in → filters``), *vertical* (``k×1``, one filter per
channel) and *horizontal* (``1×k``, one filter per channel). One LVH stage therefore
computes a full convolution whose kernel is rank one per output channel,
``K[h, w, i, o] = z[i, o] · y[h, o] · x[w, o]``. The paper cascades two stages.

The layer is composed from stock Keras layers (``Conv2D`` 1×1 and ``DepthwiseConv2D``
with ``(k, 1)`` and ``(1, k)`` kernels), so tfmot quantizes and prunes it out of the box
and a saved model loads without ``custom_objects``.

Strides: every TensorFlow op here has equal row and column strides. TensorFlow's portable
depthwise kernel (used wherever oneDNN is off: AMD before Zen 4, most laptops, ARM hosts)
and its GPU kernel refuse ``strides=(s, 1)``; only oneDNN accepts them. So a strided stage
runs its vertical step at stride 1 and the horizontal step carries ``(s, s)``, which picks
rows ``0, s, 2s, …`` of the vertical output — exactly the rows a stride-``s`` vertical step
would have computed. Where SAME padding of the full convolution puts fewer rows before the
image than a stride-1 SAME step would (even sizes: ``k=3, s=2`` pads ``(0, 1)``), the rows
are padded explicitly (``ZeroPadding2D``, then a VALID vertical step), so the result is the
full convolution's, not shifted by a row. The price: the vertical step computes ``s×`` the
rows (its MACs ×s; ``cost.py`` counts what runs). Unequal strides ``(s_h, s_w)`` run both
steps at stride 1 and subsample with a 1×1 ``MaxPooling2D``.
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
        prefix = f"{name}_s{stage}"  # vertical_horizontal names prefix_vertical/_horizontal
        x = keras.layers.Conv2D(filters, 1, use_bias=use_bias,
                                name=lvh_names(name, stage)["lateral"])(x)  # fmt: skip
        x = vertical_horizontal(
            x,
            (k_h, k_w),
            strides=(s_h, s_w) if stage == 1 else (1, 1),
            padding=padding if stage == 1 else later_padding,
            use_bias=use_bias,
            name=prefix,
        )
    return x


def lvh_names(name: str, stage: int) -> dict[str, str]:
    """The layer names of stage ``stage`` of ``flattened_conv(..., name=name)``: its
    ``lateral`` 1×1, ``vertical`` k×1 and ``horizontal`` 1×k convolutions (what
    ``liteconv flatten`` and the data-aware fit look the factors up by)."""
    prefix = f"{name}_s{stage}"
    return {"lateral": f"{prefix}_lateral", "vertical": f"{prefix}_vertical",
            "horizontal": f"{prefix}_horizontal"}  # fmt: skip


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding of one dimension as ``(before, after)``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _static_size(x, axis: int, what: str, name: str) -> int:
    size = x.shape[axis]
    if size is None:
        raise ValueError(
            f"{name}: a strided flattened step with padding='same' needs a known input {what} "
            f"(received input shape {tuple(x.shape)}); give keras.Input its spatial size"
        )
    return int(size)


def vertical_horizontal(x, kernel_size, *, strides, padding: str, use_bias: bool, name: str):
    """The ``(k_h×1)`` then ``(1×k_w)`` depthwise steps of a convolution with ``strides``.

    Computes exactly what ``DepthwiseConv2D((k_h, 1), strides=(s_h, 1))`` followed by
    ``DepthwiseConv2D((1, k_w), strides=(1, s_w))`` computes (biases and SAME padding
    included), with equal row and column strides in every op (see the module docstring).
    Layers: ``{name}_vertical``, ``{name}_horizontal`` and, only where needed,
    ``{name}_vpad`` / ``{name}_hpad`` (``ZeroPadding2D``) and ``{name}_subsample``.

    Example:
        >>> y = vertical_horizontal(x, (3, 3), strides=(2, 2), padding="same",
        ...                         use_bias=True, name="conv_s1")
    """
    (k_h, k_w), (s_h, s_w) = kernel_size, strides
    v_pad = h_pad = padding
    h_strides, subsample = (s_h, s_w), None
    if s_h != s_w:  # the horizontal step cannot carry them: subsample after it
        h_strides, subsample = (1, 1), (s_h, s_w)
    if padding == "same" and s_h > 1:
        rows = same_padding(_static_size(x, 1, "height", name), k_h, s_h)
        if rows[0] != (k_h - 1) // 2:  # a stride-1 SAME step would be a row off
            x = keras.layers.ZeroPadding2D((rows, (0, 0)), name=f"{name}_vpad")(x)
            v_pad = "valid"
    x = keras.layers.DepthwiseConv2D(
        (k_h, 1),
        padding=v_pad,
        use_bias=use_bias,
        depthwise_initializer=unit_gain_init(k_h),
        name=f"{name}_vertical",
    )(x)
    if padding == "same" and subsample and s_w > 1:
        cols = same_padding(_static_size(x, 2, "width", name), k_w, s_w)
        if cols[0] != (k_w - 1) // 2:
            x = keras.layers.ZeroPadding2D(((0, 0), cols), name=f"{name}_hpad")(x)
            h_pad = "valid"
    x = keras.layers.DepthwiseConv2D(
        (1, k_w),
        strides=h_strides,
        padding=h_pad,
        use_bias=use_bias,
        depthwise_initializer=unit_gain_init(k_w),
        name=f"{name}_horizontal",
    )(x)
    if subsample:
        x = keras.layers.MaxPooling2D(1, strides=subsample, name=f"{name}_subsample")(x)
    return x
