"""SSD and SSDLite detectors on MobileNet v2 / v3 (TensorFlow 1's object detection API, COCO)
as ``export_tflite_ssd_graph`` exports them: the latency twins of published SSD figures
(``liteconv study emulation``).

Built from the published definition (``models/research/object_detection``: the
``ssd_mobilenet_v2`` / ``ssd_mobilenet_v3`` feature extractors, ``feature_map_generators``'
``multi_resolution_feature_maps``, ``ConvolutionalBoxPredictor`` and the COCO sample
configs ``ssd_mobilenet_v2_coco``, ``ssdlite_mobilenet_v2_coco``,
``ssdlite_mobilenet_v3_{large,small}_320x320_coco``):

- the backbone (``keras.applications``' MobileNetV2 / MobileNetV3 blocks, its
  preprocessing left out: the export takes the image already scaled) tapped where the
  API's ``feature_map_layout`` taps it: MobileNet v2's ``layer_15/expansion_output`` (the
  first 160-channel block's expansion, 576 channels at stride 16) and ``layer_19`` (the
  last 1×1 convolution, 1280); for v3 the API's detection backbones
  (``V3_LARGE_DETECTION`` / ``V3_SMALL_DETECTION``: the last stage's blocks and the last
  1×1 convolution at half their outputs), v3-Large's ``layer_14/expansion_output`` (672)
  and ``layer_17`` (480), v3-Small's ``layer_10/expansion_output`` (288) and
  ``layer_13`` (288);
- four more maps (``layer_depth`` 512, 256, 256, 128), each a 1×1 convolution to half the
  depth then a stride-2 separable 3×3 (depthwise + 1×1: the configs' ``use_depthwise``,
  SSD's too); batch norm and ReLU6 after every convolution;
- the box predictor on each of the six maps: 3 anchors per cell on the first, 6 on the
  others (``ssd_anchor_generator``: scales 0.2…0.95, aspect ratios 1, 2, ½, 3, ⅓ and an
  interpolated scale, ``reduce_boxes_in_lowest_layer``): SSDLite a 3×3 depthwise (batch
  norm, ReLU6) then a 1×1 convolution to 4 box coordinates / 91 class logits per anchor;
  SSD (its predictor without ``use_depthwise``) a full 3×3 convolution to them;
- the logits through a sigmoid and the export's ``TFLite_Detection_PostProcess`` (box
  coder scales 10, 10, 5, 5; score threshold 1e-8, IoU 0.6, 10 detections, fast
  non-max suppression), on TFLite's own kernel on the calling thread.

What the twin cannot copy: the trained weights (random ones give other boxes; the non-max
suppression's work is bounded by 10 × the anchors either way). Its batch norms carry one
forward pass's statistics (``calibrate_batch_norms``), so its outputs depend on every layer
(the emulated run's check compares them). Its anchors (1917 at 300
px, 2034 at 320), parameters and multiply-adds are checked in ``tests/test_studies.py``
against the MobileNetV2 and V3 papers' SSDLite rows (4.3 M / 0.8 B, and for V3 with the
halved last stage, 3.22 M / 0.51 B and 1.77 M / 0.16 B).
"""

from __future__ import annotations

import importlib
import math

import numpy as np

from liteconv.compat import keras
from liteconv.studies.detection import DetectionPostProcess, calibrate_batch_norms

NUM_CLASSES = 90  # COCO's ids; the predictor adds a background class
MAX_DETECTIONS = 10  # export_tflite_ssd_graph's default
EXTRA_DEPTHS = (512, 256, 256, 128)
ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 0.3333)
BN = {"momentum": 0.997, "epsilon": 1e-3}  # the sample configs' batch_norm
# ... and their conv_hyperparams' initializer (truncated normal, stddev 0.03; SSD's 3×3
# predictors a third of it, the same logit scale over 9× the inputs). With the batch norms'
# statistics from a forward pass (``calibrate_batch_norms``) the class logits spread about
# ±1: no score saturates at 1.0 nor ties, so the non-max suppression's choice does not
# hang on how two runtimes order tied scores (the emulated run's check)
STDDEV = 0.03
# model: (keras.applications backbone, its tap inside (the block whose expansion output
# is the first map), SSDLite's separable predictor or SSD's full 3×3 one)
MODELS = {
    "ssd_mobilenet_v2": ("v2", "block_13", False),
    "ssdlite_mobilenet_v2": ("v2", "block_13", True),
    "ssdlite_mobilenet_v3_large": ("v3_large", "expanded_conv_12", True),
    "ssdlite_mobilenet_v3_small": ("v3_small", "expanded_conv_8", True),
}


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, depthwise: bool = False):
    if depthwise:
        init = keras.initializers.TruncatedNormal(stddev=STDDEV)
        x = keras.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False,
                                         depthwise_initializer=init,
                                         name=f"{name}_depthwise")(x)  # fmt: skip
    else:
        x = keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False,
                                kernel_initializer=keras.initializers.TruncatedNormal(stddev=STDDEV),
                                name=name)(x)  # fmt: skip
    x = keras.layers.BatchNormalization(**BN, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x)


# slim's V3_LARGE / V3_SMALL blocks (expansion factor, outputs, kernel ("k": the
# non-minimalistic 5), stride, squeeze-excite, hard-swish) as keras.applications builds
# them, and the first block of the stage ``_reduce_consecutive_layers`` halves
V3_BLOCKS = {
    "v3_large": ([(1, 16, 3, 1, False, False), (4, 24, 3, 2, False, False),
                  (3, 24, 3, 1, False, False), (3, 40, "k", 2, True, False),
                  (3, 40, "k", 1, True, False), (3, 40, "k", 1, True, False),
                  (6, 80, 3, 2, False, True), (2.5, 80, 3, 1, False, True),
                  (2.3, 80, 3, 1, False, True), (2.3, 80, 3, 1, False, True),
                  (6, 112, 3, 1, True, True), (6, 112, 3, 1, True, True),
                  (6, 160, "k", 2, True, True), (6, 160, "k", 1, True, True),
                  (6, 160, "k", 1, True, True)], 12),
    "v3_small": ([(1, 16, 3, 2, True, False), (72 / 16, 24, 3, 2, False, False),
                  (88 / 24, 24, 3, 1, False, False), (4, 40, "k", 2, True, True),
                  (6, 40, "k", 1, True, True), (6, 40, "k", 1, True, True),
                  (3, 48, "k", 1, True, True), (3, 48, "k", 1, True, True),
                  (6, 96, "k", 2, True, True), (6, 96, "k", 1, True, True),
                  (6, 96, "k", 1, True, True)], 8),
}  # fmt: skip


def _v3_detection(kind: str, image):
    """MobileNet v3 as the detection API builds it: keras.applications' MobileNetV3 with
    the stage from ``V3_BLOCKS``' halving block on, and so the last 1×1 convolution (six
    times the last block's outputs), at half the outputs."""
    v3 = importlib.import_module(keras.__name__ + ".src.applications.mobilenet_v3")
    blocks, halve_from = V3_BLOCKS[kind]

    def stack(x, kernel, activation, se_ratio):
        for i, (expansion, filters, k, stride, se, swish) in enumerate(blocks):
            filters = filters // 2 if i >= halve_from else filters
            x = v3._inverted_res_block(x, expansion, filters, kernel if k == "k" else k, stride,
                                       se_ratio if se else None,
                                       activation if swish else v3.relu, i)  # fmt: skip
        return x

    return v3.MobileNetV3(stack, 1280 if kind == "v3_large" else 1024, model_type=kind[3:],
                          include_top=False, weights=None, input_tensor=image,
                          include_preprocessing=False)  # fmt: skip


def _backbone(kind: str, tap: str, size: int):
    """``(input, first map, last map)``: the backbone's block ``tap`` expansion output (the
    input of its depthwise convolution, before any padding) and its last feature map. The
    batch is fixed at one, as in the export (static reshapes, no shape arithmetic)."""
    image = keras.Input((size, size, 3), batch_size=1, name="image")
    if kind == "v2":
        net = keras.applications.MobileNetV2(input_tensor=image, include_top=False, weights=None)
        return net.input, net.get_layer(f"{tap}_expand_relu").output, net.output
    net = _v3_detection(kind, image)
    names = {layer.name for layer in net.layers}
    first = f"{tap}/depthwise/pad" if f"{tap}/depthwise/pad" in names else f"{tap}/depthwise"
    return net.input, net.get_layer(first).input, net.output


def anchors(sizes: list[int]) -> np.ndarray:
    """``ssd_anchor_generator`` over square feature maps of ``sizes`` cells: per map, per
    cell (row-major), per box: centre y, x, height, width, normalised to the image."""
    layers = len(sizes)
    scales = [0.2 + (0.95 - 0.2) * i / (layers - 1) for i in range(layers)] + [1.0]
    out = []
    for index, cells in enumerate(sizes):
        scale, following = scales[index], scales[index + 1]
        if index == 0:
            specs = [(0.1, 1.0), (scale, 2.0), (scale, 0.5)]
        else:
            specs = [(scale, a) for a in ASPECT_RATIOS] + [(math.sqrt(scale * following), 1.0)]
        for y in range(cells):
            for x in range(cells):
                for box_scale, aspect in specs:
                    root = math.sqrt(aspect)
                    out.append(((y + 0.5) / cells, (x + 0.5) / cells, box_scale / root,
                                box_scale * root))  # fmt: skip
    return np.asarray(out, dtype=np.float32)


def ssd_mobilenet(name: str = "ssdlite_mobilenet_v2", resolution: int | None = None,
                  postprocess: bool = True):  # fmt: skip
    """The COCO detector ``name`` (``MODELS``) at ``resolution`` px (default: the sample
    config's, 300 for v2 and 320 for v3), random weights, ending in the post-processing
    operator (outputs as TFLite orders them: boxes, classes, scores, count); with
    ``postprocess`` False, its inputs: box encodings ``(1, anchors, 4)`` and class scores
    ``(1, anchors, 91)``."""
    if name not in MODELS:
        raise ValueError(f"Expected name in {', '.join(MODELS)}, received name={name!r}")
    kind, tap, lite = MODELS[name]
    size = resolution or (300 if kind == "v2" else 320)
    inputs, first, x = _backbone(kind, tap, size)
    maps = [first, x]
    for i, depth in enumerate(EXTRA_DEPTHS, start=2):
        x = _conv_bn(x, depth // 2, 1, 1, f"extra{i}_1x1")
        x = _conv_bn(x, 0, 3, 2, f"extra{i}_3x3_s2", depthwise=True)
        maps.append(_conv_bn(x, depth, 1, 1, f"extra{i}_3x3_s2_pointwise"))
    boxes, logits = [], []
    for i, fmap in enumerate(maps):
        per_cell = 3 if i == 0 else len(ASPECT_RATIOS) + 1
        cells = fmap.shape[1] * fmap.shape[2] * per_cell
        for outputs, collect, what in ((4, boxes, "box"), (NUM_CLASSES + 1, logits, "class")):
            y = _conv_bn(fmap, 0, 3, 1, f"{what}{i}", depthwise=True) if lite else fmap
            kernel = 1 if lite else 3
            init = keras.initializers.TruncatedNormal(stddev=STDDEV / kernel)
            y = keras.layers.Conv2D(per_cell * outputs, kernel, padding="same",
                                    kernel_initializer=init, name=f"{what}{i}_predict")(y)  # fmt: skip
            collect.append(keras.layers.Reshape((cells, outputs), name=f"{what}{i}_flat")(y))
    boxes = keras.layers.Concatenate(axis=1, name="boxes")(boxes)
    logits = keras.layers.Concatenate(axis=1, name="logits")(logits)
    scores = keras.layers.Activation("sigmoid", name="scores")(logits)
    head = keras.Model(inputs, [boxes, scores], name=name)
    calibrate_batch_norms(head, size)
    if not postprocess:
        return head
    sizes = [m.shape[1] for m in maps]
    detections = DetectionPostProcess(anchors(sizes), max_detections=MAX_DETECTIONS,
                                      num_classes=NUM_CLASSES, score_threshold="1e-08",
                                      iou_threshold=0.6, scales=(10.0, 10.0, 5.0, 5.0),
                                      name="postprocess")(boxes, scores)  # fmt: skip
    return keras.Model(inputs, list(detections), name=name)
