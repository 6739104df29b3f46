"""Every registered model: builds, trains, saves/loads, quantizes (tfmot), converts."""

from __future__ import annotations

import numpy as np
import pytest

from liteconv.compat import keras, tfmot
from liteconv.export.convert import custom_ops, list_ops, to_tflite
from liteconv.keras_layers import CNN_STAGES, create_model, list_models, model_kwargs

# Small variants keep the suite fast; the topology is the registered one.
SMALL = {"mobilenet_v1": {"alpha": 0.25}, "efficientnet_lite": {"variant": 0},
         "pretrained": {"backbone": "mobilenet", "alpha": 0.25, "weights": None}}  # fmt: skip
SHAPE = (32, 32, 3)


def _small(name):
    kwargs = SMALL.get(name, {"width": 0.25} if "width" in model_kwargs(name) else {})
    return create_model(name, input_shape=SHAPE, num_classes=4, **kwargs)


def _data(n=16):
    rng = np.random.default_rng(0)
    return rng.uniform(size=(n, *SHAPE)).astype("float32"), rng.integers(0, 4, n)


def test_registry_lists_the_required_models():
    assert {"baseline_cnn", "flattened_cnn", "separable_cnn", "mobilenet_v1"} <= set(list_models())


@pytest.mark.large
@pytest.mark.parametrize("name", list_models())
def test_model_trains_saves_loads_quantizes_and_converts(name, tmp_path):
    model = _small(name)
    x, y = _data()
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))

    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects: stock layers only
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)

    qat = tfmot().quantization.keras.quantize_model(model)
    assert np.isfinite(qat.predict(x[:2], verbose=0)).all()

    blob = to_tflite(model, mode="fp32")
    assert custom_ops(blob) == []
    assert all(not op.name.startswith("Flex") for op in list_ops(blob))


@pytest.mark.parametrize("name", ["baseline_cnn", "flattened_cnn", "separable_cnn"])
@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_cnn_family_shares_one_topology(name, shape):
    model = create_model(name, input_shape=shape, num_classes=10)
    assert model.output_shape == (None, 10)
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert len(pools) == sum(stage.pool == "max" for stage in CNN_STAGES)
    assert pools[-1].output_shape[1:3] == (shape[0] // 4, shape[1] // 4)
    assert model.get_layer("gap").input_shape[-1] == CNN_STAGES[-1].filters


def test_flattened_cnn_uses_two_lvh_stages_and_first_layer_option():
    model = create_model("flattened_cnn", input_shape=(28, 28, 1), num_classes=10)
    names = {layer.name for layer in model.layers}
    assert "block1_conv" in names and "block2_s2_horizontal" in names
    assert "block2_s3_lateral" not in names
    model = create_model(
        "flattened_cnn", input_shape=(28, 28, 1), num_classes=10, flatten_first=True, lvh_stages=1
    )
    names = {layer.name for layer in model.layers}
    assert "block1_s1_lateral" in names and "block2_s2_lateral" not in names


def test_mobilenet_v1_matches_keras_applications():
    ours = create_model("mobilenet_v1", input_shape=(224, 224, 3), num_classes=1000)
    ref = keras.applications.MobileNet(weights=None)
    assert ours.count_params() == ref.count_params() == 4_253_864

    # Same weights layer for layer; Keras' classifier is a 1×1 conv, ours a Dense.
    def squeezed(model):
        return sorted(tuple(d for d in w.shape if d != 1) for w in model.weights)

    assert squeezed(ours) == squeezed(ref)
    small = create_model("mobilenet_v1", input_shape=(128, 128, 3), num_classes=10, alpha=0.5)
    ref_small = keras.applications.MobileNet(
        input_shape=(128, 128, 3), alpha=0.5, weights=None, classes=10
    )
    assert small.count_params() == ref_small.count_params()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: create_model("resnet", input_shape=SHAPE, num_classes=10), "available models: "),
        (
            lambda: create_model("mobilenet_v1", input_shape=SHAPE, num_classes=10, width=2),
            r"unknown argument\(s\) \['width'\]; it accepts: alpha=1.0",
        ),
        (lambda: create_model("baseline_cnn", input_shape=(28, 28), num_classes=10), "input_shape"),
        (lambda: create_model("baseline_cnn", input_shape=SHAPE, num_classes=1), "num_classes=1"),
        (
            lambda: create_model("baseline_cnn", input_shape=SHAPE, num_classes=10, width=0),
            "width=0",
        ),
        (
            lambda: create_model("mobilenet_v1", input_shape=(16, 16, 3), num_classes=10),
            "at least 32",
        ),
    ],
)
def test_bad_model_arguments_are_explained(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# tensorflow/tpu models/official/efficientnet/lite/README.md: params (M, one decimal), MACs
EFFICIENTNET_LITE_PUBLISHED = {0: (4.7, 407e6), 1: (5.4, 631e6), 2: (6.1, 899e6),
                               3: (8.2, 1.44e9), 4: (13.0, 2.64e9)}  # fmt: skip


@pytest.mark.parametrize("variant", sorted(EFFICIENTNET_LITE_PUBLISHED))
def test_efficientnet_lite_has_the_published_parameters_and_macs(variant):
    """Trainable parameters round to the published figure (0.1 M). The published MACs
    count the convolutions and the classifier plus about three operations per normalised
    activation (BatchNorm's scale and shift, ReLU6): the convolution MACs alone come 3-6 %
    below, and adding 3 per BatchNorm output element lands within 2 %."""
    from liteconv.keras_layers import model_cost
    from liteconv.keras_layers.efficientnet_lite import VARIANTS

    size = VARIANTS[variant][2]
    model = create_model("efficientnet_lite", input_shape=(size, size, 3), num_classes=1000,
                         variant=variant)  # fmt: skip
    params, macs = EFFICIENTNET_LITE_PUBLISHED[variant]
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert round(trainable / 1e6, 1) == params, trainable
    conv_macs = model_cost(model).total_macs
    assert 0.93 * macs <= conv_macs < macs, conv_macs
    normalised = sum(int(np.prod(layer.output_shape[1:])) for layer in model.layers
                     if isinstance(layer, keras.layers.BatchNormalization))  # fmt: skip
    assert conv_macs + 3 * normalised == pytest.approx(macs, rel=0.02)
    assert not any(isinstance(layer, keras.layers.Multiply) for layer in model.layers)  # no SE


def test_efficientnet_lite_refuses_an_unknown_variant():
    with pytest.raises(ValueError, match="variant in 0..4.*variant=5"):
        create_model("efficientnet_lite", input_shape=(64, 64, 3), num_classes=4, variant=5)
