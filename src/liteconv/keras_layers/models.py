"""Model registry and builders.

``baseline_cnn``, ``flattened_cnn`` and ``separable_cnn`` share one topology (the table
``CNN_STAGES``) and differ only in the convolution each stage uses, so every comparison
between them is like for like. ``mobilenet_v1`` follows Keras Applications' MobileNet
layer for layer (same parameter count).

Example:
    >>> model = create_model("flattened_cnn", input_shape=(28, 28, 1), num_classes=10)
    >>> list_models()
    ['baseline_cnn', 'flattened_cnn', 'mobilenet_v1', 'separable_cnn']
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from liteconv.compat import keras
from liteconv.keras_layers import _args
from liteconv.keras_layers.flattened import flattened_conv
from liteconv.keras_layers.separable import BN_MOMENTUM, separable_conv


@dataclass(frozen=True)
class Stage:
    """One row of a topology table: a conv block, then optional 2×2 pooling."""

    filters: int
    kernel: int
    stride: int = 1
    pool: str | None = None  # "max" or None


# BN momentum 0.9 (not Keras' 0.99) for this family: its moving statistics settle within
# ~50 steps, so short runs on small data (digits: 21 steps an epoch) validate correctly.
# For 28×28 (Fashion-MNIST) and 32×32 (CIFAR-size) inputs: two 2×2 poolings take the
# maps to 7×7 / 8×8, deep enough for ten classes while most MACs sit in wide 3×3 layers,
# where flattening and separating pay off.
CNN_STAGES: tuple[Stage, ...] = (
    Stage(32, 3),
    Stage(64, 3, pool="max"),
    Stage(128, 3),
    Stage(128, 3, pool="max"),
    Stage(256, 3),
)

# MobileNet v1 (Howard et al. 2017, Table 1): (pointwise filters, depthwise stride).
MOBILENET_V1_STAGES: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)

DOWNSAMPLING = ("pool", "stride")


def strided_stages(stages: Sequence[Stage]) -> tuple[Stage, ...]:
    """The same topology with each 2×2 max pooling replaced by stride 2 in the next
    convolution (same output sizes; ``downsample="stride"``, as ResNets downsample)."""
    out, pending = [], False
    for stage in stages:
        out.append(Stage(stage.filters, stage.kernel, 2 if pending else stage.stride))
        pending = stage.pool == "max"
    if pending:
        raise ValueError("the last stage pools: no later convolution to carry the stride")
    return tuple(out)


_REGISTRY: dict[str, Callable[..., keras.Model]] = {}


def register_model(fn: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
    """Register a builder under its function name (timm style)."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Return the registered model names, sorted."""
    return sorted(_REGISTRY)


def model_kwargs(name: str) -> dict[str, object]:
    """Keyword arguments ``name`` accepts (besides input_shape, num_classes), with defaults."""
    fn = _get(name)
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.name not in ("input_shape", "num_classes")
    }


def nullable_kwargs(name: str) -> set[str]:
    """Keyword arguments of ``name`` that also take ``None`` (``null`` in YAML)."""
    return {p.name for p in inspect.signature(_get(name)).parameters.values()
            if "None" in str(p.annotation)}  # fmt: skip


def _get(name: str) -> Callable[..., keras.Model]:
    if name not in _REGISTRY:
        raise ValueError(f"Unknown model {name!r}; available models: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name: str, *, input_shape: Sequence[int], num_classes: int, **kwargs):
    """Build the registered model ``name``.

    Args:
        name: one of ``list_models()``.
        input_shape: ``(height, width, channels)``.
        num_classes: size of the softmax output.
        **kwargs: builder options (see ``model_kwargs(name)``).

    Raises:
        ValueError: unknown name, unknown keyword or bad value; the message lists what is
            available.
    """
    fn = _get(name)
    allowed = model_kwargs(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        accepted = ", ".join(f"{k}={v!r}" for k, v in allowed.items())
        raise ValueError(
            f"Model {name!r} got unknown argument(s) {unknown}; it accepts: {accepted}"
        )
    shape = _input_shape(input_shape)
    num_classes = _args.positive_int(num_classes, "num_classes")
    if num_classes < 2:
        raise ValueError(f"Expected at least 2 classes, received num_classes={num_classes}")
    return fn(input_shape=shape, num_classes=num_classes, **kwargs)


def _input_shape(shape) -> tuple[int, int, int]:
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        dims = ()
    if len(dims) != 3 or min(dims) <= 0:
        raise ValueError(
            f"Expected input_shape=(height, width, channels) of positive ints, received "
            f"input_shape={shape!r}"
        )
    return dims


def _head(x, num_classes: int, dropout: float, classifier_activation):
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    return keras.layers.Dense(num_classes, activation=classifier_activation, name="logits")(x)


def _check_fraction(value, arg: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"Expected a number in [0, 1), received {arg}={value!r}")
    return float(value)


def _check_width(value, arg: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"Expected a positive number, received {arg}={value!r}")
    return float(value)


def _cnn(
    conv: str,
    *,
    input_shape,
    num_classes,
    width: float,
    dropout: float,
    activation,
    convert_first: bool,
    bn_momentum: float,
    lvh_stages: int = 2,
    downsample: str = "pool",
    name: str,
):
    width = _check_width(width, "width")
    if downsample not in DOWNSAMPLING:
        raise ValueError(
            f"Expected downsample to be one of {DOWNSAMPLING}, received downsample={downsample!r}"
        )
    dropout = _check_fraction(dropout, "dropout")
    bn_momentum = _check_fraction(bn_momentum, "bn_momentum")
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    stages = CNN_STAGES if downsample == "pool" else strided_stages(CNN_STAGES)
    for i, stage in enumerate(stages, start=1):
        filters = max(1, int(stage.filters * width))
        block = f"block{i}"
        kind = conv if (i > 1 or convert_first) else "standard"
        if kind == "separable":
            x = separable_conv(
                x, filters, stage.kernel, strides=stage.stride, activation=activation,
                bn_momentum=bn_momentum, name=block,
            )  # fmt: skip
        else:
            if kind == "flattened":
                x = flattened_conv(
                    x, filters, stage.kernel, stages=lvh_stages, strides=stage.stride, name=block
                )
            else:
                x = keras.layers.Conv2D(
                    filters,
                    stage.kernel,
                    strides=stage.stride,
                    padding="same",
                    use_bias=False,
                    name=f"{block}_conv",
                )(x)
            x = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"{block}_bn")(x)
            act = _args.activation_layer(activation, f"{block}_act")
            if act is not None:
                x = act(x)
        if stage.pool == "max":
            x = keras.layers.MaxPooling2D(2, name=f"{block}_pool")(x)
    outputs = _head(x, num_classes, dropout, "softmax")
    return keras.Model(inputs, outputs, name=name)


@register_model
def baseline_cnn(
    *,
    input_shape,
    num_classes,
    width=1.0,
    dropout=0.2,
    activation="relu",
    bn_momentum=0.9,
    downsample="pool",
):
    """Standard ``k×k`` convolutions on the shared ``CNN_STAGES`` topology.

    ``downsample="stride"`` replaces each max pooling by stride 2 in the next convolution.
    """
    return _cnn(
        "standard",
        input_shape=input_shape,
        num_classes=num_classes,
        width=width,
        dropout=dropout,
        activation=activation,
        convert_first=False,
        bn_momentum=bn_momentum,
        downsample=downsample,
        name="baseline_cnn",
    )


@register_model
def flattened_cnn(
    *,
    input_shape,
    num_classes,
    width=1.0,
    dropout=0.2,
    activation="relu",
    bn_momentum=0.9,
    lvh_stages=2,
    flatten_first=False,
    downsample="pool",
):
    """Flattened (LVH) convolutions on ``CNN_STAGES``; two LVH stages per layer (the paper).

    ``flatten_first=False`` keeps the first layer a standard convolution: with one or
    three input channels its lateral step has nothing to compress. ``downsample="stride"``
    replaces each max pooling by stride 2 in the next (flattened) convolution.
    """
    return _cnn(
        "flattened",
        input_shape=input_shape,
        num_classes=num_classes,
        width=width,
        dropout=dropout,
        activation=activation,
        convert_first=bool(flatten_first),
        bn_momentum=bn_momentum,
        lvh_stages=_args.positive_int(lvh_stages, "lvh_stages"),
        downsample=downsample,
        name="flattened_cnn",
    )


@register_model
def separable_cnn(
    *,
    input_shape,
    num_classes,
    width=1.0,
    dropout=0.2,
    activation="relu",
    bn_momentum=0.9,
    separable_first=False,
    downsample="pool",
):
    """Depthwise-separable blocks on ``CNN_STAGES`` (first layer standard, as MobileNet);
    ``downsample="stride"``: stride 2 in the depthwise step after each pooling instead."""
    return _cnn(
        "separable",
        input_shape=input_shape,
        num_classes=num_classes,
        width=width,
        dropout=dropout,
        activation=activation,
        convert_first=bool(separable_first),
        bn_momentum=bn_momentum,
        downsample=downsample,
        name="separable_cnn",
    )


@register_model
def mobilenet_v1(
    *,
    input_shape,
    num_classes,
    alpha=1.0,
    depth_multiplier=1,
    dropout=1e-3,
    activation="relu6",
):
    """MobileNet v1 with width multiplier ``alpha``; input resolution from ``input_shape``.

    Layer for layer as Keras Applications' ``MobileNet`` (same 4,253,864 parameters at
    alpha=1.0, 224×224×3, 1000 classes); ``same`` padding replaces its explicit
    ``ZeroPadding2D`` before strided layers, which changes neither shapes nor costs.
    """
    alpha = _check_width(alpha, "alpha")
    dropout = _check_fraction(dropout, "dropout")
    depth_multiplier = _args.positive_int(depth_multiplier, "depth_multiplier")
    if min(input_shape[:2]) < 32:
        raise ValueError(
            f"mobilenet_v1 needs inputs of at least 32×32 (five stride-2 layers), received "
            f"input_shape={tuple(input_shape)!r}"
        )
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(
        int(32 * alpha), 3, strides=2, padding="same", use_bias=False, name="conv1"
    )(inputs)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name="conv1_bn")(x)
    act = _args.activation_layer(activation, "conv1_act")
    if act is not None:
        x = act(x)
    for i, (filters, stride) in enumerate(MOBILENET_V1_STAGES, start=1):
        x = separable_conv(
            x,
            int(filters * alpha),
            3,
            strides=stride,
            depth_multiplier=depth_multiplier,
            activation=activation,
            name=f"conv_dw_{i}",
        )
    outputs = _head(x, num_classes, dropout, "softmax")
    return keras.Model(inputs, outputs, name=f"mobilenet_v1_{alpha:g}_{input_shape[0]}")
