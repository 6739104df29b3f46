"""What the detector twins of ``liteconv study emulation`` share (``efficientdet_lite``,
``ssd_mobilenet``): the TFLite exports' post-processing operator as a Keras layer
(``DetectionPostProcess``), and batch norms given one forward pass's statistics
(``calibrate_batch_norms``) so that a twin with random weights computes outputs its layers
shaped."""

from __future__ import annotations

import numpy as np

from liteconv.compat import keras
from liteconv.device.graph import POSTPROCESS_OP


def _postprocess_signature(max_detections: int, num_classes: int, score_threshold: str,
                           iou_threshold: float, scales: tuple[float, ...]) -> str:  # fmt: skip
    y, x, h, w = scales
    attrs = {"max_detections": ("i", max_detections), "max_classes_per_detection": ("i", 1),
             "detections_per_class": ("i", 1), "use_regular_nms": ("b", "false"),
             "nms_score_threshold": ("f", score_threshold), "nms_iou_threshold": ("f", iou_threshold),
             "y_scale": ("f", y), "x_scale": ("f", x), "h_scale": ("f", h),
             "w_scale": ("f", w), "num_classes": ("i", num_classes)}  # fmt: skip
    return " ".join(
        [f'name: "{POSTPROCESS_OP}"']
        + [f'attr {{ key: "{k}" value {{ {t}: {v} }} }}' for k, (t, v) in attrs.items()]
    )


class DetectionPostProcess(keras.layers.Layer):
    """The TFLite export's ``TFLite_Detection_PostProcess`` (box decoding against the
    anchors, fast non-max suppression, ``max_detections`` boxes): a placeholder in
    TensorFlow that the converter replaces by the operator (``tf.function``'s
    ``experimental_implements``; ``to_tflite(postprocess_op=True)`` allows it). The
    defaults are EfficientDet-Lite's export; ``score_threshold`` as the operator's text
    (``"-inf"``), ``scales``: the box coder's y, x, h, w scales."""

    def __init__(self, anchors: np.ndarray, *, max_detections: int, num_classes: int,
                 score_threshold: str = "-inf", iou_threshold: float = 0.5,
                 scales: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0), **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        import tensorflow as tf

        self._anchors = tf.constant(anchors)
        signature = _postprocess_signature(max_detections, num_classes, score_threshold,
                                           iou_threshold, scales)  # fmt: skip

        @tf.function(experimental_implements=signature)
        def postprocess(boxes, scores, anchors):
            del scores, anchors
            zeros = tf.zeros_like(boxes[:, :max_detections, 0])
            return (tf.zeros_like(boxes[:, :max_detections]), zeros, zeros,
                    tf.zeros_like(boxes[:, 0, 0]))  # fmt: skip

        self._postprocess = postprocess

    def call(self, boxes, scores):
        return self._postprocess(boxes, scores, self._anchors)


def calibrate_batch_norms(model, size: int, seed: int = 0) -> None:
    """Give every batch norm of ``model`` the statistics of one forward pass over a few
    random ``size`` px images, as a trained network's are of its data: each layer's output
    keeps unit scale, so the outputs depend on every layer (with the untrained statistics,
    mean 0 and variance 1, a small initializer such as the TF1 detection configs' shrinks
    the activations layer by layer until a detector's class logits are their biases: every
    score tied, the boxes the anchors, whatever the backbone computes)."""
    norms = [m for m in model.submodules if isinstance(m, keras.layers.BatchNormalization)]
    momenta = [bn.momentum for bn in norms]
    images = np.random.default_rng(seed).uniform(0, 1, (4, size, size, 3)).astype("float32")
    for bn in norms:
        bn.momentum = 0.0  # the moving statistics become this batch's
    model(images, training=True)
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum
