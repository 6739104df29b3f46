"""Pretrained ``keras.applications`` backbones with a new head: transfer learning.

``create_model("pretrained", backbone="mobilenet_v2", weights="imagenet", ...)`` builds one
flat functional model (no nested model, so tfmot can quantize it and the converter sees
every layer):

    image in [0, 1] (1 or 3 channels)
      -> ``preprocess``: a frozen 1×1 convolution doing the backbone's own input
         preprocessing (scale and offset, RGB→BGR for ResNet50, grey → 3 channels), so
         the exported ``.tflite`` and the device bundle take the same images as training
      -> the backbone without its top (``include_top=False``), weights loaded
      -> ``head_pool`` (global average) -> ``head_dropout`` -> ``head_dense`` (softmax)

Weights: ``"imagenet"`` (Keras' own file, looked up first in ``$KERAS_HOME/models`` or
``~/.keras/models`` and downloaded there only when missing; offline, a missing file is a
``WeightsMissing`` error naming the file, its URL and where to put it), a path to a
weights file Keras can load into the backbone (``.h5``, ``.weights.h5``), a ``.keras``
model holding the backbone's layers (copied by name), or ``None`` (random).

``set_phase`` freezes what the two-phase fine-tune of ``liteconv train`` does not train:
phase 1 everything but the head, phase 2 also the top ``unfreeze`` blocks (BatchNorm stays
frozen, in inference mode, in both phases, as the Keras transfer-learning guide does).

Example:
    >>> model = create_model("pretrained", input_shape=(96, 96, 3), num_classes=5,
    ...                      backbone="mobilenet_v2", alpha=0.35, weights=None)
    >>> set_phase(model, 1) ; [l.name for l in model.layers if l.trainable_weights]
    ['head_dense']
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from liteconv.compat import keras, keras_data_utils
from liteconv.keras_layers._args import positive_int
from liteconv.keras_layers.keras3 import check_keras_v3, is_keras3, load_keras3
from liteconv.keras_layers.models import _check_fraction, _check_width, register_model

PREPROCESS = "preprocess"
HEAD = "head_"
_KERAS_GET_FILE = keras_data_utils.get_file  # the real one (patched while a backbone builds)


@dataclass(frozen=True)
class Backbone:
    """A ``keras.applications`` family as liteconv uses it."""

    app: str  # the keras.applications builder
    scale: float  # preprocessing from [0, 1]: y = scale * x + offset, per output channel
    offset: tuple[float, float, float]
    block: str  # regex: its first group names the block a layer belongs to
    unfreeze: int  # phase 2's default: the top blocks trained again
    alpha: bool = False  # takes a width multiplier
    bgr: bool = False  # expects BGR (caffe-style) inputs
    extra: tuple[tuple[str, object], ...] = ()  # more builder arguments


# Preprocessing as each family's ``preprocess_input`` does it, from images in [0, 1]:
# "tf" style 2x - 1 (MobileNet v1/v2/v3, the latter with its own Rescaling turned off),
# EfficientNet's in-model Rescaling + Normalization fed [0, 255], ResNet50's "caffe" style
# (BGR, ImageNet mean subtracted, no scaling).
_TF_STYLE = (2.0, (-1.0,) * 3)  # "tf" mode from [0, 1]: 2x - 1 on each channel
_V3 = {"block": r"^(expanded_conv(?:_\d+)?)/", "alpha": True,
       "extra": (("include_preprocessing", False),)}  # fmt: skip
BACKBONES: dict[str, Backbone] = {
    "mobilenet": Backbone("MobileNet", *_TF_STYLE, r"^conv_(?:dw|pw|pad)_(\d+)", 4, alpha=True),
    "mobilenet_v2": Backbone("MobileNetV2", *_TF_STYLE, r"^block_(\d+)_", 5, alpha=True),
    "mobilenet_v3_small": Backbone("MobileNetV3Small", *_TF_STYLE, unfreeze=3, **_V3),
    "mobilenet_v3_large": Backbone("MobileNetV3Large", *_TF_STYLE, unfreeze=5, **_V3),
    "efficientnet_b0": Backbone("EfficientNetB0", 255.0, (0.0,) * 3, r"^block(\d[a-z])_", 4),
    "resnet50": Backbone(
        "ResNet50", 255.0, (-103.939, -116.779, -123.68), r"^conv(\d_block\d+)_", 3, bgr=True
    ),  # fmt: skip
}


# Backbones tfmot 0.8's quantize_model refuses (measured: liteconv 2026-12-04, tf-keras 2.21);
# post-training int8 converts all six.
_HARD_SWISH = "its hard-swish is built from TFOpLambda ops (x + 3, x * 1/6) tfmot cannot wrap"
QAT_REFUSED = {
    "mobilenet_v3_small": _HARD_SWISH,
    "mobilenet_v3_large": _HARD_SWISH,
}


class WeightsMissing(ValueError):
    """The ImageNet weights are neither in the Keras cache nor downloadable."""


def keras_cache() -> Path:
    """Where Keras keeps downloaded files: ``$KERAS_HOME`` or ``~/.keras``."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")


def imagenet_file(backbone: str, input_shape=(224, 224, 3), alpha: float = 1.0) -> tuple[str, str]:
    """``(file name, URL)`` of the no-top ImageNet weights Keras loads for ``backbone``
    (read from Keras' own builder, never guessed)."""
    seen: list[tuple[str, str]] = []

    class _Seen(Exception):
        pass

    def record(fname=None, origin=None, **_kwargs):
        seen.append((fname, origin))
        raise _Seen

    with _patched_get_file(record), contextlib.suppress(_Seen):
        _application(backbone, (*input_shape[:2], 3), alpha, "imagenet")
    if not seen:
        raise ValueError(f"backbone {backbone!r}: Keras loads no ImageNet file for it")
    return seen[0]


@contextlib.contextmanager
def _patched_get_file(fn):
    original = keras_data_utils.get_file
    keras_data_utils.get_file = fn
    try:
        yield
    finally:
        keras_data_utils.get_file = original


def _cached_or_download(fname=None, origin=None, cache_subdir="datasets", **kwargs):
    """Keras' ``get_file`` for the ImageNet weights: the cached file when it is there
    (``$KERAS_HOME`` honoured), else Keras' download into that cache; no network is a
    ``WeightsMissing`` error naming the file, the URL and where to put the file."""
    folder = keras_cache() / cache_subdir
    path = folder / fname
    if path.is_file():
        return str(path)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)
    try:
        return _KERAS_GET_FILE(fname, origin, cache_subdir=cache_subdir,
                               cache_dir=str(keras_cache()), **kwargs)  # fmt: skip
    except Exception as err:  # URL, SSL, HTTP or hash errors: all mean "not here"
        reason = " ".join(str(err).split(" -- ")[-1].split())[:120] or type(err).__name__
        raise WeightsMissing(
            f"ImageNet weights {fname} are not in {folder} and could not be downloaded from "
            f"{origin} ({reason}); download that file and put it in {folder} "
            "(or set KERAS_HOME), or set model.kwargs.weights to a weights file or null"
        ) from None
    finally:
        socket.setdefaulttimeout(old)


def _application(name: str, shape, alpha: float, weights, input_tensor=None):
    spec = BACKBONES[name]
    kwargs = dict(spec.extra)
    if spec.alpha:
        kwargs["alpha"] = alpha
    builder = getattr(keras.applications, spec.app)
    if input_tensor is not None:
        return builder(include_top=False, weights=weights, input_tensor=input_tensor, **kwargs)
    return builder(include_top=False, weights=weights, input_shape=tuple(shape), **kwargs)


def _weighted(layers) -> list:
    return [layer for layer in layers if layer.weights]


def _copy_weights(source, target_layers: list, by_name: bool, what: str) -> None:
    """The source model's weights into the backbone's layers of the new model."""
    if by_name:
        names = {layer.name: layer for layer in source.layers}
        missing = [layer.name for layer in target_layers if layer.name not in names]
        if missing:
            raise ValueError(f"{what}: has no layer {missing[0]!r} of the backbone")
        pairs = [(names[layer.name], layer) for layer in target_layers]
    else:
        src = _weighted(source.layers)  # built by the same builder: the same layers in order
        if [type(s) for s in src] != [type(t) for t in target_layers]:
            raise ValueError(f"{what}: its layers do not match the backbone's")
        pairs = list(zip(src, target_layers))
    for src_layer, layer in pairs:
        try:
            layer.set_weights(src_layer.get_weights())
        except ValueError as err:
            raise ValueError(f"{what}: layer {layer.name}: {err}") from None


def _preprocess_kernel(spec: Backbone, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """The frozen 1×1 convolution's kernel (1, 1, channels, 3) and bias: each output channel
    is ``scale`` times one input channel (BGR order for caffe-style backbones; the grey
    channel for all three when the data has one) plus the offset."""
    kernel = np.zeros((1, 1, channels, 3), np.float32)
    for out in range(3):
        src = 0 if channels == 1 else (2 - out if spec.bgr else out)
        kernel[0, 0, src, out] = spec.scale
    return kernel, np.asarray(spec.offset, np.float32)


@register_model
def pretrained(
    *,
    input_shape,
    num_classes,
    backbone: str = "mobilenet_v2",
    weights: str | None = "imagenet",
    alpha: float = 1.0,
    dropout: float = 0.2,
):
    """A ``keras.applications`` ``backbone`` without its top, its ``weights`` loaded, its
    input preprocessing inside the model, and a new softmax head of ``num_classes``."""
    if backbone not in BACKBONES:
        raise ValueError(f"Unknown backbone {backbone!r}; available: {', '.join(BACKBONES)}")
    spec = BACKBONES[backbone]
    alpha = _check_width(alpha, "alpha")
    dropout = _check_fraction(dropout, "dropout")
    num_classes = positive_int(num_classes, "num_classes")
    h, w, channels = input_shape
    if min(h, w) < 32:
        raise ValueError(
            f"backbone {backbone} needs images of at least 32x32, received {h}x{w}: set "
            "data.image_size (e.g. [96, 96]; its native size is 224x224)"
        )
    source, by_name, what = None, False, f"weights {weights}"
    if weights == "imagenet":
        with _patched_get_file(_cached_or_download):
            source = _application(backbone, (h, w, 3), alpha, "imagenet")
    elif weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise ValueError(f"weights {weights}: no such file (a weights file or a .keras model)")
        if path.suffix == ".keras":  # stock layers only (keras.applications): safe mode
            try:  # a Keras v3 zip only (a legacy file runs a Lambda's code while loading);
                # a file Keras 3 saved is rebuilt in tf_keras
                if is_keras3(check_keras_v3(path)):
                    source = load_keras3(path)
                else:
                    source = keras.models.load_model(path, compile=False, safe_mode=True)
            except Exception as err:  # not a Keras v3 zip, or layers it does not know
                raise ValueError(f"{what}: not a loadable .keras model ({err})") from None
            by_name = True
        else:
            source = _application(backbone, (h, w, 3), alpha, None)
            try:
                source.load_weights(str(path))
            except Exception as err:  # h5py, shape or topology errors
                raise ValueError(f"{what}: does not load into {backbone} ({err})") from None
    inputs = keras.Input((h, w, channels), name="image")
    pre = keras.layers.Conv2D(3, 1, name=PREPROCESS, trainable=False)
    x = pre(inputs)
    pre.set_weights(list(_preprocess_kernel(spec, channels)))
    body = _application(backbone, (h, w, 3), alpha, None, input_tensor=x)
    if source is not None:
        target = [layer for layer in _weighted(body.layers) if layer.name != PREPROCESS]
        _copy_weights(source, target, by_name, what)
    x = keras.layers.GlobalAveragePooling2D(name=f"{HEAD}pool")(body.output)
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"{HEAD}dropout")(x)
    out = keras.layers.Dense(num_classes, activation="softmax", name=f"{HEAD}dense")(x)
    return keras.Model(inputs, out, name=f"{backbone}_pretrained")


def backbone_of(model) -> str | None:
    """The backbone family of a model built by ``pretrained`` (from its name), else None."""
    name = model.name.removesuffix("_pretrained")
    return name if name in BACKBONES and model.name.endswith("_pretrained") else None


def blocks(model, backbone: str) -> list[list]:
    """The backbone's layers of ``model`` in blocks, bottom to top: a layer whose name
    matches the family's block pattern starts (or joins) that block; any other layer
    (stem, padding, the last 1×1 convolution) joins the block before it."""
    pattern = re.compile(BACKBONES[backbone].block)
    out: list[list] = []
    keys: dict[str, int] = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or layer.name == PREPROCESS:
            continue
        if layer.name.startswith(HEAD):
            break
        match = pattern.match(layer.name)
        if match and match.group(1) not in keys:
            keys[match.group(1)] = len(out)
            out.append([])
        if not out:
            out.append([])  # the stem
        index = keys[match.group(1)] if match else len(out) - 1
        out[index].append(layer)
    return out


def set_phase(model, phase: int, unfreeze: int | None = None) -> dict:
    """Freeze ``model`` for phase 1 (head only) or 2 (head and the top ``unfreeze`` blocks,
    default the family's; BatchNorm always frozen); ``{"blocks", "unfrozen",
    "trainable_params"}``. Compile after it."""
    backbone = backbone_of(model)
    if backbone is None:
        raise ValueError(f"{model.name}: not a pretrained-backbone model")
    parts = blocks(model, backbone)
    n = BACKBONES[backbone].unfreeze if unfreeze is None else unfreeze
    n = 0 if phase == 1 else min(positive_int(n, "unfreeze") if n else 0, len(parts))
    open_ = {id(layer) for part in parts[len(parts) - n :] for layer in part}
    for layer in model.layers:
        if layer.name.startswith(HEAD):
            layer.trainable = True
        elif isinstance(layer, keras.layers.BatchNormalization) or layer.name == PREPROCESS:
            layer.trainable = False
        else:
            layer.trainable = id(layer) in open_
    params = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    return {"blocks": len(parts), "unfrozen": n, "trainable_params": params}
