"""Pure Keras building blocks: flattened and depthwise-separable convolutions, the model
registry (with pretrained ``keras.applications`` backbones) and analytic cost accounting.
No tf.data, no tfmot; the only files read are a backbone's pretrained weights."""

from liteconv.keras_layers.cost import LayerCost, ModelCost, model_cost
from liteconv.keras_layers.flattened import flattened_conv
from liteconv.keras_layers.models import (
    CNN_STAGES,
    Stage,
    create_model,
    list_models,
    model_kwargs,
    register_model,
)
from liteconv.keras_layers.separable import separable_conv

# isort: split
# registers efficientnet_lite (its module imports the registry above)
from liteconv.keras_layers import backbones as _backbones  # noqa: F401  (registers pretrained)
from liteconv.keras_layers import efficientnet_lite as _efficientnet_lite  # noqa: F401

# Keras' training-time augmentation layers, by class name: at inference identities the TFLite
# converter drops (RandomCrop: a center crop); none changes an image's pixel range.
AUGMENTATION_LAYERS = ("RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation",
                       "RandomCrop", "RandomContrast", "RandomBrightness")  # fmt: skip

__all__ = [
    "AUGMENTATION_LAYERS",
    "CNN_STAGES",
    "LayerCost",
    "ModelCost",
    "Stage",
    "create_model",
    "flattened_conv",
    "list_models",
    "model_cost",
    "model_kwargs",
    "register_model",
    "separable_conv",
]
