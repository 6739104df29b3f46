"""The one place that chooses Keras: Keras 2 through ``tf_keras``.

tensorflow-model-optimization 0.8 rejects Keras 3 models, so every liteconv module takes
``keras`` (and ``tf``) from here and never imports Keras another way.

Example:
    >>> from liteconv.compat import keras, tf
    >>> keras.layers.Conv2D(8, 3)  # a tf_keras layer
"""

from __future__ import annotations

import os

from liteconv.device.logs import quiet_native_logs, verbose  # noqa: E402

# Must be set before TensorFlow is imported: tf.keras then resolves to tf_keras too.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose() else "2")

# TensorFlow's C++ start-up lines (oneDNN, cudart stub, the cuInit failure on machines
# without a GPU) go to fd 2 before absl logging starts: captured unless LITECONV_VERBOSE=1.
# Listing the GPUs here runs cuInit once, inside the capture.
with quiet_native_logs():
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402

    GPUS = tf.config.list_physical_devices("GPU")
if not verbose():
    tf.get_logger().setLevel("ERROR")

__all__ = ["GPUS", "keras", "tf", "tfmot"]


def tfmot():
    """Return the ``tensorflow_model_optimization`` module (imported on first use)."""
    import tensorflow_model_optimization as _tfmot

    return _tfmot
