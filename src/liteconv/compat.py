"""The one place that chooses Keras: Keras 2 through ``tf_keras``.

tensorflow-model-optimization 0.8 rejects Keras 3 models, so every liteconv module takes
``keras`` (and ``tf``) from here and never imports Keras another way.

Example:
    >>> from liteconv.compat import keras, tf
    >>> keras.layers.Conv2D(8, 3)  # a tf_keras layer
"""

from __future__ import annotations

import os
import platform

from liteconv.device.logs import quiet_native_logs, verbose  # noqa: E402

# Must be set before TensorFlow is imported: tf.keras then resolves to tf_keras too.
os.environ["TF_USE_LEGACY_KERAS"] = "1"

# oneDNN: TensorFlow enables it by default only on x86 CPUs with AVX-512-class instruction
# sets; elsewhere its portable kernels run. On x86-64 liteconv turns it on unless the user
# set TF_ENABLE_ONEDNN_OPTS: training the three CNNs with oneDNN on is 1.3-2.3x faster than
# on the portable kernels (docs/results/bench_train.md), with the same layer graph (every
# op has equal strides, so both kernel sets run it).
_ONEDNN_USER = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
if _ONEDNN_USER is None and platform.machine().lower() in ("x86_64", "amd64"):
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose() else "2")

# TensorFlow's C++ start-up lines (oneDNN, cudart stub, the cuInit failure on machines
# without a GPU) go to fd 2 before absl logging starts: captured unless LITECONV_VERBOSE=1.
# Listing the GPUs here runs cuInit once, inside the capture.
with quiet_native_logs():
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402
    from tf_keras.src.utils import data_utils as keras_data_utils  # noqa: E402  (get_file)

    GPUS = tf.config.list_physical_devices("GPU")
if not verbose():
    tf.get_logger().setLevel("ERROR")

__all__ = ["GPUS", "keras", "keras3", "keras_data_utils", "onednn_note", "tf", "tfmot"]


def onednn_note() -> str:
    """Which TensorFlow CPU kernels run and who chose them, for the ``devices:`` line."""
    value = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "")
    if _ONEDNN_USER is not None:
        state = "off" if value.strip().lower() in ("0", "false") else "on"
        return f"oneDNN {state} (TF_ENABLE_ONEDNN_OPTS={_ONEDNN_USER})"
    if value == "1":
        return "oneDNN on (liteconv's default on x86-64; TF_ENABLE_ONEDNN_OPTS=0 turns it off)"
    return "oneDNN: TensorFlow's default for this CPU"


def tfmot():
    """Return the ``tensorflow_model_optimization`` module (imported on first use)."""
    import tensorflow_model_optimization as _tfmot

    return _tfmot


def keras3():
    """Return the Keras 3 package (``keras``), only to read a file Keras 3 saved.

    TensorFlow ≥ 2.16 installs Keras 3 as ``keras`` and saves its ``.keras`` files by
    default; ``keras_layers.keras3`` loads such a file with it and rebuilds the model in Keras 2,
    the one Keras every other module uses."""
    with quiet_native_logs():
        import keras as _keras3

    return _keras3
