"""MobileNet v1 depthwise-separable block (Howard et al., arXiv:1704.04861).

Depthwise ``k×k`` per channel → BN → activation → pointwise 1×1 → BN → activation, built
from stock Keras layers as Keras Applications builds MobileNet.
"""

from __future__ import annotations

from liteconv.compat import keras
from liteconv.keras_layers import _args

BN_MOMENTUM = 0.99  # Keras Applications' MobileNet default.


def separable_conv(
    x,
    filters: int,
    kernel_size=3,
    *,
    strides=1,
    depth_multiplier: int = 1,
    activation="relu6",
    padding: str = "same",
    use_batch_norm: bool = True,
    bn_momentum: float = BN_MOMENTUM,
    name: str | None = None,
):
    """Apply a depthwise-separable convolution block to the Keras tensor ``x``.

    Args:
        x: 4-D Keras tensor, channels last.
        filters: output channels of the pointwise convolution.
        kernel_size: ``k`` or ``(k_h, k_w)`` of the depthwise convolution.
        strides: stride of the depthwise convolution.
        depth_multiplier: depthwise channels per input channel.
        activation: ``"relu6"`` (MobileNet), ``"relu"``, ``None`` or a Keras activation name.
        padding: ``"same"`` or ``"valid"`` for the depthwise convolution.
        use_batch_norm: BN after each convolution (convolutions then carry no bias).
            With ``False`` the pointwise convolution has a bias, like ``SeparableConv2D``.
        bn_momentum: momentum of the BN moving statistics.
        name: prefix of the inner layer names, ``{name}_{dw|dw_bn|dw_act|pw|pw_bn|pw_act}``.

    Returns:
        The output Keras tensor.

    Example:
        >>> inputs = keras.Input((32, 32, 3))
        >>> y = separable_conv(inputs, 64, strides=2, name="block1")
    """
    filters = _args.positive_int(filters, "filters")
    kernel = _args.pair(kernel_size, "kernel_size")
    strides = _args.pair(strides, "strides")
    depth_multiplier = _args.positive_int(depth_multiplier, "depth_multiplier")
    padding = _args.padding(padding)
    if not isinstance(use_batch_norm, bool):
        raise ValueError(f"Expected a bool, received use_batch_norm={use_batch_norm!r}")
    name = _args.layer_name(name, "separable_conv")
    dw_act = _args.activation_layer(activation, f"{name}_dw_act")
    pw_act = _args.activation_layer(activation, f"{name}_pw_act")

    x = keras.layers.DepthwiseConv2D(
        kernel,
        strides=strides,
        padding=padding,
        depth_multiplier=depth_multiplier,
        use_bias=False,
        name=f"{name}_dw",
    )(x)
    if use_batch_norm:
        x = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_dw_bn")(x)
    if dw_act is not None:
        x = dw_act(x)
    x = keras.layers.Conv2D(filters, 1, use_bias=not use_batch_norm, name=f"{name}_pw")(x)
    if use_batch_norm:
        x = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_pw_bn")(x)
    if pw_act is not None:
        x = pw_act(x)
    return x
