"""The one place that chooses Keras: Keras 2 through ``tf_keras``.

tensorflow-model-optimization 0.8 rejects Keras 3 models, so every liteconv module takes
``keras`` (and ``tf``) from here and never imports Keras another way.

Example:
    >>> from liteconv.compat import keras, tf
    >>> keras.layers.Conv2D(8, 3)  # a tf_keras layer
"""

from __future__ import annotations

import os

# Must be set before TensorFlow is imported: tf.keras then resolves to tf_keras too.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["keras", "tf", "tfmot"]


def tfmot():
    """Return the ``tensorflow_model_optimization`` module (imported on first use)."""
    import tensorflow_model_optimization as _tfmot

    return _tfmot
