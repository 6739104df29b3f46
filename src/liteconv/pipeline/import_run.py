"""``liteconv import MODEL.keras -c CONFIG``: a run folder for a model trained elsewhere.

Checks that the file is a Keras v3 archive of a functional or sequential model whose input
shape and class count fit the config's data, evaluates it on the config's test split and
writes a run folder (``config.yaml``, ``model.keras``, ``manifest.json`` with
``imported: true``, the source file and its SHA-256, MACs and parameters), so that
``export``, ``verify``, ``bench``, ``bundle``, ``report`` and ``flatten`` work on it.
The folder is created only after every check passed.

liteconv feeds pixels in [0, 1]. A model that rescales 0-255 pixels itself (a
``Rescaling(1/255)`` or ``Rescaling(1/127.5, offset=-1)`` taking its input, as the Keras
tutorials and ``keras.applications``' MobileNetV3 and EfficientNet have) is saved with that
layer's scale times 255: the same function of the image, on liteconv's pixels; the
manifest's ``input_rescaled`` says so.

Example:
    >>> run = import_model("my_model.keras", load_config("configs/experiments/digits_quick.yaml"))
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np

from liteconv.compat import keras
from liteconv.config import Config, dump_config
from liteconv.device.errors import LiteconvError
from liteconv.keras_layers import AUGMENTATION_LAYERS, model_cost
from liteconv.keras_layers.keras3 import check_keras_v3, is_keras3
from liteconv.pipeline import run as runlib
from liteconv.pipeline.data import load_dataset
from liteconv.pipeline.evaluate import classification_metrics
from liteconv.pipeline.model_file import load_keras_model


def _check_fits(model, path: Path, input_shape: tuple, num_classes: int) -> None:
    """One-line errors for a subclassed model or one that does not fit the data."""
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise LiteconvError(
            f"{path}: a subclassed model ({type(model).__name__}); liteconv needs a functional "
            "or sequential Keras model (its layers are converted and decomposed one by one)"
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise LiteconvError(
            f"{path}: {len(model.inputs)} inputs and {len(model.outputs)} outputs; an image "
            "classifier with one input and one output is expected"
        )
    got = tuple(model.input_shape[1:])
    if got != tuple(input_shape):
        raise LiteconvError(
            f"{path}: input shape {got} does not fit the data ({tuple(input_shape)}); set "
            f"data.image_size/data.channels in the config to {list(got[:2])} / {got[2]}"
        )
    classes = model.output_shape[-1]
    if classes != num_classes:
        raise LiteconvError(f"{path}: {classes} outputs, but the data has {num_classes} classes")


# Layers that may stand between the input and its Rescaling without changing the pixel range.
_PIXEL_PRESERVING = ("InputLayer", *AUGMENTATION_LAYERS, "Resizing", "CenterCrop")


def _times_255(scale):
    """A ``Rescaling`` scale (a number or a list) for pixels in [0, 1] instead of 0-255."""
    return (np.asarray(scale, np.float64) * 255.0).tolist()


def pixel_rescaling(model):
    """The ``Rescaling`` layer through which ``model`` takes 0-255 pixels (it maps 255 to at
    most 2.5 in magnitude, and only input, augmentation or resizing layers come before it,
    in ``model`` or in a backbone model nested as its first layer), or None: a model that
    takes its pixels as they come."""
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Rescaling":
            scale = np.abs(np.asarray(layer.get_config()["scale"], np.float64))
            return layer if scale.size and 0 < scale.max() * 255 <= 2.5 else None
        if isinstance(layer, keras.Model):  # a backbone nested as the first layer
            return pixel_rescaling(layer)
        if kind not in _PIXEL_PRESERVING:
            return None
    return None


def for_unit_pixels(model, layer):
    """``model`` with ``layer`` (its ``pixel_rescaling``) scaling by 255 times as much: on
    pixels in [0, 1] the same outputs as ``model`` on the same image in 0-255."""

    def clone(original):
        if isinstance(original, keras.Model) and pixel_rescaling(original) is layer:
            return for_unit_pixels(original, layer)  # the nested backbone holding it
        config = original.get_config()
        if original is layer:
            config["scale"] = _times_255(config["scale"])
        return type(original).from_config(config)

    rebuilt = keras.models.clone_model(model, clone_function=clone)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _probabilities(model, x: np.ndarray) -> tuple[np.ndarray, bool]:
    """Model outputs as probabilities, and whether the model already gave probabilities."""
    out = np.asarray(model.predict(x, batch_size=256, verbose=0), np.float64)
    is_probs = bool(np.all(out >= -1e-6) and np.allclose(out.sum(axis=1), 1.0, atol=1e-3))
    if not is_probs:
        out = np.exp(out - out.max(axis=1, keepdims=True))
        out /= out.sum(axis=1, keepdims=True)
    return out, is_probs


def import_model(
    model_path: str | Path,
    cfg: Config,
    *,
    name: str | None = None,
    out: str | Path = "runs",
    custom_objects: tuple[str, ...] = (),
    echo=print,
) -> runlib.Run:
    """Make a run folder from ``model_path`` with ``cfg``'s data; returns the run."""
    path = Path(model_path)
    metadata = check_keras_v3(path)
    model = load_keras_model(path, custom_objects)
    splits = load_dataset(cfg.data, batch_size=cfg.train.batch_size, seed=cfg.train.seed)
    _check_fits(model, path, splits.input_shape, splits.num_classes)
    rescaling = pixel_rescaling(model)
    rescaled = None
    if rescaling is not None:
        before = rescaling.get_config()["scale"]
        model = for_unit_pixels(model, rescaling)
        rescaled = {"layer": rescaling.name, "scale": before,
                    "new_scale": _times_255(before)}  # fmt: skip
        echo(f"note: {path.name} takes 0-255 pixels (its layer {rescaling.name!r} scales by "
             f"{before}); liteconv feeds pixels in [0, 1], so the run's model.keras scales "
             f"by {rescaled['new_scale']} (the same function of the image)")  # fmt: skip
    x, y = splits.arrays("test")
    probs, is_probs = _probabilities(model, x)
    metrics = classification_metrics(probs, y, splits.class_names)
    cost = model_cost(model)
    echo(f"{path.name}: {model.name}, {cost.total_params:,} parameters, {cost.total_macs:,} MACs; "
         f"test accuracy {metrics['accuracy']:.4f} on {metrics['samples']} images")  # fmt: skip
    experiment = name or cfg.experiment
    cfg = dataclasses.replace(cfg, experiment=experiment)
    cfg.model = dataclasses.replace(cfg.model, name=model.name, kwargs={})
    run = runlib.Run.create(out, experiment, dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    converted = is_keras3(metadata)
    if converted:
        echo(f"note: Keras {metadata.get('keras_version')} saved {path.name}; the run's "
             "model.keras is its Keras 2 (tf_keras) rebuild, same weights and outputs")  # fmt: skip
    if rescaled or converted:
        run.save_model(model)
    else:
        run.write_bytes(runlib.MODEL, path.read_bytes())
    run.write_text(runlib.CONFIG, dump_config(cfg))
    run.update_manifest(
        experiment=experiment, status="complete", imported=True,
        source={"file": str(path.resolve()), "sha256": runlib.sha256_file(path),
                "keras_version": metadata.get("keras_version"),
                "rebuilt_in_keras2": converted},
        custom_objects=list(custom_objects), versions=runlib.versions(),
        input_rescaled=rescaled,
        seed=cfg.train.seed, class_names=splits.class_names,
        input_shape=list(splits.input_shape), outputs="probabilities" if is_probs else "logits",
        dataset={"name": cfg.data.name, "source": splits.source,
                 "fingerprint": splits.fingerprint, "sizes": splits.sizes},
        model={"name": model.name, "kwargs": {}, "params": cost.total_params,
               "macs": cost.total_macs},
        metrics={"test_accuracy": metrics["accuracy"], "test_loss": metrics["loss"]},
    )  # fmt: skip
    run.update_manifest(artifacts=run.artifact_hashes())
    echo(f"run folder: {run.path}")
    return run
