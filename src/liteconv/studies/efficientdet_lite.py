"""EfficientDet-Lite0…2 (google/automl ``efficientdet``) as TFLite exports them: the
latency twins of published EfficientDet-Lite figures (``liteconv study emulation``).

Built from the published definition (``hparams_config.efficientdet_lite_param_dict`` and
``keras/efficientdet_keras.py``): the EfficientNet-Lite backbone's stride-8/16/32 features
(``efficientnet_lite.backbone``); P6 from P5 by a 1×1 convolution + batch norm and a 3×3
stride-2 max pool, P7 from P6 by another pool; ``fpn_cell_repeats`` BiFPN cells of
``fpn_num_filters`` channels (eight nodes each: inputs resampled to the node's level — a 1×1
convolution + batch norm where channels differ, a max pool down, a nearest-neighbour resize
up — summed (``fpn_weight_method='sum'``), ReLU, a 3×3 separable convolution, batch norm);
class and box nets of ``box_class_repeats`` separable convolutions shared across the five
levels (a batch norm per level), 9 anchors × 90 classes and × 4 box coordinates; the
levels' outputs reshaped, concatenated, the class logits through a sigmoid, and the
TFLite export's ``TFLite_Detection_PostProcess`` operator (box decoding against the
anchors, fast non-max suppression over every anchor — score threshold −∞ — down to 25
boxes; it runs on TFLite's own kernel on the calling thread, outside XNNPACK).

What the twin cannot copy: the trained weights. Random ones give other scores and boxes,
so the non-max suppression suppresses otherwise (its work is bounded by 25 × the anchors).
Its batch norms carry one forward pass's statistics (``calibrate_batch_norms``), so its
scores and boxes depend on every layer (with the untrained ones every score was 0.5 and
every box its anchor), and the emulated run's check compares outputs the layers shaped.
Its size, checked against the published ``.tflite`` files (NobuoTsukamoto/benchmarks'
logs, benchmark_model's "input model file size (MB)", 10^6 bytes: 13.68 / 18.17 / 22.80
for Lite0 / 1 / 2, fp32; the twins' files are 13.68 / 18.17 / 22.79 MB, within 0.05 %):
``tests/test_studies.py``. The twins have 3.29 / 4.31 / 5.32 M parameters; google/automl's
README lists 4.3 / 5.8 / 7.2 M, a count that the published files' sizes do not bear out.
"""

from __future__ import annotations

import math

import numpy as np

from liteconv.compat import keras
from liteconv.keras_layers.efficientnet_lite import backbone
from liteconv.studies.detection import DetectionPostProcess, calibrate_batch_norms

# variant: (backbone variant, image size, fpn_num_filters, fpn_cell_repeats, box_class_repeats)
VARIANTS: dict[int, tuple[int, int, int, int, int]] = {
    0: (0, 320, 64, 3, 3),
    1: (1, 384, 88, 4, 3),
    2: (2, 448, 112, 5, 3),
}
NUM_CLASSES, NUM_ANCHORS = 90, 9  # COCO's 90 ids; 3 scales × 3 aspect ratios
MAX_DETECTIONS = 25  # hparams_config: tflite_max_detections
BN = {"momentum": 0.99, "epsilon": 1e-3}
# fpn_configs.bifpn_config, levels 3-7: (node level, inputs as offsets into the growing list
# of feature maps, P3…P7 first)
BIFPN_NODES = ((6, (3, 4)), (5, (2, 5)), (4, (1, 6)), (3, (0, 7)),
               (4, (1, 7, 8)), (5, (2, 6, 9)), (6, (3, 5, 10)), (7, (4, 11)))  # fmt: skip


def _resample(x, level_size: int, channels: int, name: str):
    """``ResampleFeatureMap``: a 1×1 convolution + batch norm where channels differ, then a
    3×3 stride-2 max pool down or a nearest-neighbour resize up to ``level_size``."""
    if x.shape[-1] != channels:
        x = keras.layers.Conv2D(channels, 1, padding="same", name=f"{name}_conv")(x)
        x = keras.layers.BatchNormalization(**BN, name=f"{name}_bn")(x)
    size = x.shape[1]
    if size > level_size:
        stride = (size - 1) // level_size + 1
        x = keras.layers.MaxPooling2D(stride + 1, stride, padding="same", name=f"{name}_pool")(x)
    elif size < level_size:
        x = keras.layers.Resizing(level_size, level_size, interpolation="nearest",
                                  name=f"{name}_up")(x)  # fmt: skip
    return x


def _separable(filters: int, name: str):
    return keras.layers.SeparableConv2D(filters, 3, padding="same", name=name)


def _bifpn(feats: list, channels: int, cell: int) -> list:
    sizes = {level: feats[level - 3].shape[1] for level in range(3, 8)}
    for n, (level, offsets) in enumerate(BIFPN_NODES):
        name = f"cell{cell}_node{n}"
        nodes = [_resample(feats[o], sizes[level], channels, f"{name}_in{o}") for o in offsets]
        x = keras.layers.Add(name=f"{name}_sum")(nodes)
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
        x = _separable(channels, f"{name}_conv")(x)
        feats = [*feats, keras.layers.BatchNormalization(**BN, name=f"{name}_bn")(x)]
    return [next(f for (lv, _), f in zip(BIFPN_NODES[::-1], feats[::-1]) if lv == level)
            for level in range(3, 8)]  # fmt: skip


def _head(feats: list, channels: int, repeats: int, outputs: int, name: str) -> list:
    convs = [_separable(channels, f"{name}_{i}") for i in range(repeats)]
    predict = _separable(NUM_ANCHORS * outputs, f"{name}_predict")
    results = []
    for level, x in zip(range(3, 8), feats):
        for i, conv in enumerate(convs):
            x = keras.layers.BatchNormalization(**BN, name=f"{name}_{i}_bn{level}")(conv(x))
            x = keras.layers.ReLU(name=f"{name}_{i}_relu{level}")(x)
        cells = x.shape[1] * x.shape[2] * NUM_ANCHORS
        results.append(
            keras.layers.Reshape((cells, outputs), name=f"{name}_flat{level}")(predict(x))
        )
    return results


def anchors(size: int, anchor_scale: float = 3.0) -> np.ndarray:
    """``anchors.Anchors`` of levels 3-7 for a ``size``-pixel image: per level, per grid
    cell (row-major), per scale (2^0, 2^⅓, 2^⅔) × aspect ratio (1, 2, ½): centre y, x,
    height, width, normalised to the image (the post-processing operator's layout)."""
    out = []
    for level in range(3, 8):
        stride = 2**level
        cells = -(-size // stride)
        for y in range(cells):
            for x in range(cells):
                for octave in range(3):
                    base = anchor_scale * stride * 2 ** (octave / 3)
                    for aspect in (1.0, 2.0, 0.5):
                        w, h = base * math.sqrt(aspect), base / math.sqrt(aspect)
                        out.append(((y + 0.5) * stride, (x + 0.5) * stride, h, w))
    return np.asarray(out, dtype=np.float32) / size


def efficientdet_lite(variant: int = 0, postprocess: bool = True):
    """EfficientDet-Lite ``variant`` (0-2) at its published image size, random weights,
    ending in the post-processing operator (``DetectionPostProcess``: its outputs, as
    TFLite orders them, are the detection count, boxes, classes and scores); with
    ``postprocess`` False, its inputs: box encodings ``(1, anchors, 4)`` and class scores
    ``(1, anchors, 90)``."""
    if isinstance(variant, bool) or variant not in VARIANTS:
        raise ValueError(f"Expected variant in 0..2 (EfficientDet-Lite0…2), received "
                         f"variant={variant!r}")  # fmt: skip
    net, size, channels, cells, repeats = VARIANTS[variant]
    inputs = keras.Input((size, size, 3), name="image")
    p3, p4, p5 = backbone(inputs, net)
    p6 = _resample(p5, (size + 63) // 64, channels, "p6")
    p7 = _resample(p6, (size + 127) // 128, channels, "p7")
    feats = [p3, p4, p5, p6, p7]
    for cell in range(cells):
        feats = _bifpn(feats, channels, cell)
    boxes = keras.layers.Concatenate(axis=1, name="boxes")(
        _head(feats, channels, repeats, 4, "box")
    )
    logits = keras.layers.Concatenate(axis=1, name="logits")(
        _head(feats, channels, repeats, NUM_CLASSES, "class")
    )
    scores = keras.layers.Activation("sigmoid", name="scores")(logits)
    head = keras.Model(inputs, [boxes, scores], name=f"efficientdet_lite{variant}")
    calibrate_batch_norms(head, size)
    if not postprocess:
        return head
    detections = DetectionPostProcess(anchors(size), max_detections=MAX_DETECTIONS,
                                      num_classes=NUM_CLASSES, name="postprocess")(boxes, scores)  # fmt: skip
    return keras.Model(inputs, list(detections), name=f"efficientdet_lite{variant}")
