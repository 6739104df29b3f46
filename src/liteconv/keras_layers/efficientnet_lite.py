"""EfficientNet-Lite0…4 (tensorflow/tpu ``models/official/efficientnet/lite``) in stock Keras.

Not in ``keras.applications``: built here from the published definition — EfficientNet-B0's
seven MBConv stages scaled by each variant's width and depth coefficients, with the three
changes that make it "Lite": no squeeze-and-excitation, ReLU6 instead of swish, and the
stem (32 channels), the head (1280 channels) and the repeats of the first and last stage
fixed while scaling (``fix_head_stem``). Filters are rounded to multiples of 8 as in
``efficientnet_model.round_filters``. The architecture is the table ``B0_STAGES``;
``VARIANTS`` holds each variant's coefficients and native resolution.

Published sizes (tensorflow/tpu Lite README): 4.7 M / 5.4 M / 6.1 M / 8.2 M / 13.0 M
parameters and 407 M / 631 M / 899 M / 1.44 B / 2.64 B MACs for Lite0…4 at 224 / 240 /
260 / 280 / 300 (``tests/test_models.py`` checks both).

Example:
    >>> model = create_model("efficientnet_lite", input_shape=(224, 224, 3),
    ...                      num_classes=1000, variant=0)
"""

from __future__ import annotations

import math

from liteconv.compat import keras
from liteconv.keras_layers import _args
from liteconv.keras_layers.models import _check_fraction, register_model

# EfficientNet-B0 (Tan & Le 2019, Table 1): (repeats, kernel, stride, expand, in, out).
B0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# variant: (width coefficient, depth coefficient, native resolution, dropout)
VARIANTS: dict[int, tuple[float, float, int, float]] = {
    0: (1.0, 1.0, 224, 0.2),
    1: (1.0, 1.1, 240, 0.2),
    2: (1.1, 1.2, 260, 0.3),
    3: (1.2, 1.4, 280, 0.3),
    4: (1.4, 1.8, 300, 0.3),
}
STEM, HEAD = 32, 1280
# tensorflow/tpu's batch_norm_momentum 0.99 and epsilon 1e-3
BN = {"momentum": 0.99, "epsilon": 1e-3}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """``efficientnet_model.round_filters``: ``filters × width`` to a multiple of
    ``divisor``, never more than 10 % below."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, act: bool = True):
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                            name=f"{name}_conv")(x)  # fmt: skip
    x = keras.layers.BatchNormalization(**BN, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x) if act else x


def _mbconv(x, out: int, kernel: int, stride: int, expand: int, name: str):
    """Inverted residual without squeeze-and-excitation: expand 1×1, depthwise k×k, project
    1×1 (linear), identity shortcut where shapes allow."""
    inputs, channels = x, x.shape[-1]
    if expand != 1:
        x = _conv_bn(x, channels * expand, 1, 1, f"{name}_expand")
    x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                     name=f"{name}_dw")(x)  # fmt: skip
    x = keras.layers.BatchNormalization(**BN, name=f"{name}_dw_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_dw_relu6")(x)
    x = _conv_bn(x, out, 1, 1, f"{name}_project", act=False)
    if stride == 1 and channels == out:
        x = keras.layers.Add(name=f"{name}_add")([inputs, x])
    return x


def backbone(inputs, variant: int) -> list:
    """The stem and the seven MBConv stages of EfficientNet-Lite ``variant`` on ``inputs``,
    without the head: the feature maps at strides 8, 16 and 32 (the last block before each
    stride-2 stage and the last block: ``efficientnet_builder``'s ``reduction_3…5``, the
    features EfficientDet-Lite's BiFPN takes)."""
    width, depth = VARIANTS[variant][:2]
    x = _conv_bn(inputs, STEM, 3, 2, "stem")
    last = len(B0_STAGES) - 1
    features, stride_so_far = [], 2
    for i, (repeats, kernel, stride, expand, _, out) in enumerate(B0_STAGES):
        if 0 < i < last:  # fix_head_stem: the first and last stage keep their repeats
            repeats = int(math.ceil(depth * repeats))
        if stride > 1 and stride_so_far >= 8:
            features.append(x)
        stride_so_far *= stride
        for r in range(repeats):
            x = _mbconv(x, round_filters(out, width), kernel, stride if r == 0 else 1, expand,
                        f"stage{i + 1}_block{r + 1}")  # fmt: skip
    return [*features, x]


@register_model
def efficientnet_lite(*, input_shape, num_classes, variant=0, dropout=None):
    """EfficientNet-Lite ``variant`` (0-4) at the resolution of ``input_shape`` (native:
    ``VARIANTS[variant][2]``); ``dropout`` before the classifier (default: the variant's)."""
    if isinstance(variant, bool) or variant not in VARIANTS:
        raise ValueError(f"Expected variant in 0..4 (EfficientNet-Lite0…4), received "
                         f"variant={variant!r}")  # fmt: skip
    default_dropout = VARIANTS[variant][3]
    dropout = _check_fraction(default_dropout if dropout is None else dropout, "dropout")
    if min(input_shape[:2]) < 32:
        raise ValueError(
            f"efficientnet_lite needs inputs of at least 32×32 (five stride-2 layers), "
            f"received input_shape={tuple(input_shape)!r}"
        )
    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn(backbone(inputs, variant)[-1], HEAD, 1, 1, "head")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(_args.positive_int(num_classes, "num_classes"),
                                 activation="softmax", name="logits")(x)  # fmt: skip
    return keras.Model(inputs, outputs, name=f"efficientnet_lite{variant}_{input_shape[0]}")
