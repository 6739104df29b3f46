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
from pathlib import Path

import numpy as np

from liteconv.compat import keras, tf
from liteconv.keras_layers import create_model, model_cost


def _warmed_models(models, input_shape, num_classes: int, batch_size: int, warmup_steps: int):
    """A fixed synthetic batch ``(x, y)`` and each model compiled and warmed on it
    (traced, then ``warmup_steps`` steps), by name."""
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
    return x, y, built


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
    x, y, built = _warmed_models(models, input_shape, num_classes, batch_size, warmup_steps)
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


# ------------------------------------------------------- the same models, both kernel sets
# TensorFlow's CPU kernels are chosen per process (TF_ENABLE_ONEDNN_OPTS is read at import),
# so each setting trains in its own child process; the parent asks them for one round at
# a time, alternately (off on off on …), so machine drift hits both settings alike.

ONEDNN = {"off": "0", "on": "1"}
_TAG = "LITECONV-TRAINING "


def layer_kind(layer) -> str:
    """A short name for what a layer computes: ``Conv2D 3×3``, ``DepthwiseConv2D 3×1``, …"""
    kind = type(layer).__name__
    size = getattr(layer, "kernel_size", None)
    return f"{kind} {size[0]}×{size[1]}" if size else kind


def layer_step_ms(model, batch: int, iters: int = 10) -> dict[str, float]:
    """Forward + backward time of every layer alone (its input a random batch, gradients
    for input and weights), summed per ``layer_kind``; median of ``iters``, in ms."""
    out: dict[str, float] = {}
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        copy = type(layer).from_config(layer.get_config())
        x = tf.constant(rng.normal(size=(batch, *layer.input_shape[1:])).astype("float32"))
        copy(x)  # build

        @tf.function
        def step(x, copy=copy):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(copy(x, training=True))
            return tape.gradient(loss, [x, *copy.trainable_weights])

        step(x)
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            step(x)
            times.append(time.perf_counter() - start)
        kind = layer_kind(layer)
        out[kind] = out.get(kind, 0.0) + 1000 * statistics.median(times)
    return out


def _serve(spec: dict) -> None:
    """The child: build and warm the models, then answer ``round`` / ``layers`` / ``quit``
    lines on stdin with one tagged JSON line each on stdout."""
    import json
    import sys

    batch = spec["batch_size"]
    x, y, built = _warmed_models(spec["models"], tuple(spec["input_shape"]),
                                 spec["num_classes"], batch, spec["warmup_steps"])  # fmt: skip
    print(_TAG + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "round":
            answer = {}
            for name, model in built.items():
                times = []
                for _ in range(spec["steps"]):
                    start = time.perf_counter()
                    model.train_on_batch(x, y)
                    times.append(time.perf_counter() - start)
                answer[name] = times
        elif command == "layers":
            answer = {name: layer_step_ms(model, batch) for name, model in built.items()}
        else:
            break
        print(_TAG + json.dumps(answer), flush=True)


class _Child:
    def __init__(self, setting: str, spec: dict) -> None:
        import json
        import os
        import subprocess
        import sys

        env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=ONEDNN[setting])
        self.setting = setting
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "liteconv.studies.training", json.dumps(spec)], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self.read()

    def read(self):
        import json

        for line in self.proc.stdout:
            if line.startswith(_TAG):
                return json.loads(line[len(_TAG) :])
        raise RuntimeError(f"the oneDNN {self.setting} training child ended early")

    def ask(self, command: str):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def throughput_by_onednn(
    models: Sequence[str],
    settings: Sequence[str] = ("off", "on"),
    *,
    input_shape: tuple[int, int, int] = (28, 28, 1),
    num_classes: int = 10,
    batch_size: int = 128,
    steps: int = 20,
    rounds: int = 5,
    warmup_steps: int = 5,
    layers: bool = True,
    echo=print,
) -> tuple[list[dict], dict]:
    """Median training images/s of each model with oneDNN off and on, side by side.

    Returns ``(records, layer_ms)``: one record per model and setting (``speed_vs_off``:
    this setting's images/s over the ``off`` one's, same model), and ``{setting: {model:
    {layer kind: ms}}}`` from ``layer_step_ms`` when ``layers``.
    """
    spec = {"models": list(models), "input_shape": list(input_shape), "num_classes": num_classes,
            "batch_size": batch_size, "steps": steps, "warmup_steps": warmup_steps}  # fmt: skip
    children = [_Child(s, spec) for s in settings]
    times = {(s, m): [] for s in settings for m in models}
    try:
        for r in range(rounds):
            for child in children:
                for model, step_s in child.ask("round").items():
                    times[(child.setting, model)] += step_s
            echo(f"round {r + 1}/{rounds}: " + ", ".join(
                f"{m} oneDNN {s} {batch_size / statistics.median(times[(s, m)]):.0f} img/s"
                for s in settings for m in models))  # fmt: skip
        layer_ms = {c.setting: c.ask("layers") for c in children} if layers else {}
    finally:
        for child in children:
            child.close()
    records = []
    for model in models:
        cost = model_cost(create_model(model, input_shape=input_shape, num_classes=num_classes))
        base = batch_size / statistics.median(times[(settings[0], model)])
        for setting in settings:
            t = times[(setting, model)]
            median = batch_size / statistics.median(t)
            records.append({
                "model": model, "onednn": setting, "input_shape": list(input_shape),
                "batch_size": batch_size, "params": cost.total_params, "macs": cost.total_macs,
                "images_per_second_median": round(median, 1),
                "cv": round(statistics.pstdev(t) / statistics.mean(t), 4),
                f"speed_vs_{settings[0]}": round(median / base, 3),
            })  # fmt: skip
    return records, layer_ms


if __name__ == "__main__":
    import json
    import sys

    _serve(json.loads(sys.argv[1]))


def training_study(out: str | Path, names: list[str], settings: list[str], *,
                   input_shape: tuple, batch_size: int, steps: int, rounds: int,
                   echo=print) -> str:  # fmt: skip
    """``liteconv study train``: training throughput of ``names`` side by side with
    oneDNN per ``settings`` (``off``, ``on``; ``["default"]``: this process's setting
    only) and where a step goes; writes OUT.json and OUT.md, returns the tables' text."""
    from liteconv.device.errors import LiteconvError
    from liteconv.device.files import atomic_write_json, atomic_write_text
    from liteconv.device.machine import machine_info
    from liteconv.device.tables import format_table

    layer_ms: dict = {}
    if settings == ["default"]:
        records = training_throughput(names, input_shape=input_shape, batch_size=batch_size,
                                      steps=steps, rounds=rounds, echo=echo)  # fmt: skip
        for r in records:
            r["onednn"] = "default"
    else:
        bad = [s for s in settings if s not in ONEDNN]
        if bad or not settings:
            raise LiteconvError(f"--onednn {','.join(settings)}: expected a comma list of off, "
                                "on (or default)")  # fmt: skip
        records, layer_ms = throughput_by_onednn(
            names, settings, input_shape=input_shape, batch_size=batch_size, steps=steps,
            rounds=rounds, echo=echo,
        )  # fmt: skip
    machine = machine_info()
    ratio = next(k for k in records[0] if k.startswith("speed_vs_"))
    table = format_table(
        ["model", "oneDNN", "params", "MACs", "images/s (median)", "CV", ratio.replace("speed_vs_", "× ")],
        [[r["model"], r["onednn"], r["params"], r["macs"], r["images_per_second_median"],
          r["cv"], r[ratio]] for r in records],
        markdown=True,
    )  # fmt: skip
    shape = ",".join(str(d) for d in input_shape)
    parts = [
        f"Training throughput, batch {batch_size}, input {shape}, median step time over "
        f"{rounds} interleaved rounds of {steps} steps; {machine['cpu']} "
        f"({' '.join(machine['isa']) or 'ISA unknown'}), {machine['cores_usable']} cores.",
        "", table,
    ]  # fmt: skip
    if layer_ms:
        kinds = sorted({k for per in layer_ms.values() for m in per.values() for k in m})
        rows = []
        for model in names:
            for kind in kinds:
                cells = [layer_ms[s][model].get(kind) for s in settings]
                if any(cells):
                    rows.append([model, kind, *[c or 0.0 for c in cells]])
        parts += ["", "Where a step goes: every layer alone, forward + backward on one batch "
                  "(ms, summed per layer kind; a whole step also runs the optimizer and the "
                  "graph's overhead).", "",
                  format_table(["model", "layer kind", *[f"ms oneDNN {s}" for s in settings]],
                               rows, markdown=True)]  # fmt: skip
    atomic_write_json(f"{out}.json", {"machine": machine, "records": records,
                                      "layer_ms": layer_ms})  # fmt: skip
    atomic_write_text(f"{out}.md", "\n".join(parts) + "\n")
    return "\n".join(parts[2:])
