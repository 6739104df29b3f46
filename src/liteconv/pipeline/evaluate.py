"""Evaluate a run's model on its test split: accuracy, loss and per-class accuracy.

Computed in numpy from the model's predicted probabilities, independently of Keras'
metrics, so the same function scores a TFLite model's outputs (``export.verify``).

Example:
    >>> result = evaluate_run("runs/fashion_mnist_flattened/20261122-101500")
    >>> result["accuracy"]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from liteconv.device.errors import LiteconvError
from liteconv.pipeline import run as runlib
from liteconv.pipeline.data import DataSplits, load_dataset
from liteconv.pipeline.model_file import load_keras_model


def classification_metrics(probs: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, mean cross-entropy and per-class accuracy of predicted probabilities."""
    probs = np.asarray(probs, dtype=np.float64)
    pred = probs.argmax(axis=1)
    eps = 1e-7
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], eps, 1.0))))
    per_class = {}
    for i, name in enumerate(class_names):
        mask = labels == i
        per_class[name] = float((pred[mask] == i).mean()) if mask.any() else float("nan")
    return {
        "accuracy": float((pred == labels).mean()),
        "loss": loss,
        "samples": int(len(labels)),
        "per_class_accuracy": per_class,
    }


def load_run_model(run: runlib.Run):
    """The run's Keras model: a Keras v3 file loaded in safe mode (custom objects only those
    named when the model was imported)."""
    custom = run.manifest().get("custom_objects") or []
    if not isinstance(custom, list) or not all(isinstance(c, str) for c in custom):
        raise LiteconvError(
            f"{run.file(runlib.MANIFEST)}: custom_objects: expected a list of module:Name"
        )
    run.verify_artifact(runlib.MODEL)
    return load_keras_model(run.file(runlib.MODEL), custom)


def float32_run_model(run: runlib.Run):
    """The run's model in float32 (a mixed-precision model converted), for export and verify."""
    return float32_clone(load_run_model(run))


def run_data(run: runlib.Run, batch_size: int | None = None) -> DataSplits:
    """The run's dataset, split exactly as in training (no augmentation)."""
    cfg = run.config()
    return load_dataset(
        cfg.data, batch_size=batch_size or cfg.train.batch_size, seed=cfg.train.seed
    )


def evaluate_run(run_dir: str | Path) -> dict:
    """Test-split metrics of the run in ``run_dir``."""
    run = runlib.Run.open(run_dir)
    model = load_run_model(run)
    splits = run_data(run)
    x, y = splits.arrays("test")
    probs = model.predict(x, batch_size=256, verbose=0)
    result = classification_metrics(probs, y, splits.class_names)
    result["run"] = str(run.path)
    return result


def float32_clone(model):
    """A float32 copy of a mixed-precision model (the same model if it is float32 already).

    Models trained under ``mixed_float16`` compute in float16; TFLite conversion and QAT
    want float32 layers. The copy is rebuilt from the model's config with every layer's
    dtype set to float32, and given the weights cast to float32.
    """
    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model
    config = model.get_config()
    for layer in config["layers"]:
        layer["config"]["dtype"] = "float32"
    clone = model.__class__.from_config(config)
    clone.set_weights([np.asarray(w, np.float32) for w in model.get_weights()])
    return clone
