"""Training-throughput benchmark (images/s), models measured interleaved in one process.

Each round trains every model for ``steps`` steps in turn (A B C A B C …) on a fixed
synthetic batch, so drift of a shared machine hits all models alike. Every step is timed
alone and the result is ``batch / median step time`` over all rounds (robust to the
stalls of a throttled VM, which whole-epoch timings absorb), with the ratio to the first
model.

Example:
    >>> records = training_throughput(["baseline_cnn", "flattened_cnn"], rounds=3)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import numpy as np

from liteconv.compat import keras, tf
from liteconv.keras_layers import create_model, model_cost


def training_throughput(
    models: Sequence[str],
    *,
    input_shape: tuple[int, int, int] = (28, 28, 1),
    num_classes: int = 10,
    batch_size: int = 128,
    steps: int = 20,
    rounds: int = 5,
    warmup_steps: int = 5,
    echo=print,
) -> list[dict]:
    """Median training images/s of each registered model, measured side by side."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch_size, *input_shape)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, num_classes, batch_size), num_classes)
    x, y = tf.constant(x), tf.constant(y)
    built = {}
    for name in models:
        model = create_model(name, input_shape=input_shape, num_classes=num_classes)
        model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy")
        for _ in range(warmup_steps):  # trace + warm up
            model.train_on_batch(x, y)
        built[name] = model
    step_s: dict[str, list[float]] = {name: [] for name in models}
    samples: dict[str, list[float]] = {name: [] for name in models}
    for r in range(rounds):
        for name, model in built.items():
            times = []
            for _ in range(steps):
                start = time.perf_counter()
                model.train_on_batch(x, y)
                times.append(time.perf_counter() - start)
            step_s[name] += times
            samples[name].append(batch_size / statistics.median(times))
        echo(
            f"round {r + 1}/{rounds}: "
            + ", ".join(f"{n} {s[-1]:.0f} img/s" for n, s in samples.items())
        )
    medians = {name: batch_size / statistics.median(times) for name, times in step_s.items()}
    reference = medians[models[0]]
    records = []
    for name, model in built.items():
        cost = model_cost(model)
        median = medians[name]
        records.append(
            {
                "model": name,
                "input_shape": list(input_shape),
                "batch_size": batch_size,
                "params": cost.total_params,
                "macs": cost.total_macs,
                "images_per_second_median": round(median, 1),
                "images_per_second_rounds": [round(s, 1) for s in samples[name]],
                "cv": round(statistics.pstdev(step_s[name]) / statistics.mean(step_s[name]), 4),
                f"speed_vs_{models[0]}": round(median / reference, 3),
            }
        )
    return records
