"""``liteconv flatten``: decompose a trained model's convolutions, fine-tune, write a new run.

The parent is a run folder (``liteconv train`` or ``liteconv import``) or a Keras file with
a config. Steps: decompose (``keras_layers.decompose.flatten_model``), re-estimate the
BatchNorm statistics on training images (the decomposed layers' outputs have slightly
different statistics), evaluate, then fine-tune N epochs with the parent's schedule through
``pipeline.train`` (so an interrupted fine-tune resumes like training: run the same command
again, or ``liteconv train --resume NEW_RUN``). The new run's manifest names its parent and
records the method, ranks, per-layer relative reconstruction error, MACs and parameters
before and after, and the accuracy right after decomposition.

Example:
    >>> run = flatten_run("runs/fashion_mnist_baseline/20261123-101500", method="lvh", epochs=3)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from liteconv.compat import keras
from liteconv.config import Config, DistillConfig, dump_config
from liteconv.device.errors import LiteconvError
from liteconv.keras_layers import model_cost
from liteconv.keras_layers.data_aware import fit_to_outputs
from liteconv.keras_layers.decompose import flatten_model
from liteconv.keras_layers.graph import inline_nested
from liteconv.pipeline import run as runlib
from liteconv.pipeline.data import DataSplits, load_dataset
from liteconv.pipeline.evaluate import classification_metrics, load_run_model
from liteconv.pipeline.model_file import load_keras_model
from liteconv.pipeline.train import config_hash, train

INIT_MODEL = "init.keras"
TEACHER_MODEL = "teacher.keras"  # the parent, the fine-tune's distillation teacher


def reestimate_batchnorm(model, images: np.ndarray, batch_size: int = 256) -> int:
    """Set every BatchNorm layer's moving mean/variance to the statistics of its input on
    ``images`` (layer by layer, each seeing the ones before it already re-estimated).
    Returns how many layers were updated."""
    layers = [lyr for lyr in model.layers if isinstance(lyr, keras.layers.BatchNormalization)]
    for bn in layers:
        acts = keras.Model(model.inputs, bn.input).predict(images, batch_size=batch_size,
                                                           verbose=0)  # fmt: skip
        axes = tuple(i for i in range(acts.ndim) if i != acts.ndim - 1)
        bn.moving_mean.assign(acts.mean(axes).astype(np.float32))
        bn.moving_variance.assign(acts.var(axes).astype(np.float32))
    return len(layers)


def accuracy(model, splits: DataSplits) -> float:
    """Test accuracy of ``model`` on the split's test images."""
    x, y = splits.arrays("test")
    probs = model.predict(x, batch_size=256, verbose=0)
    return classification_metrics(probs, y, splits.class_names)["accuracy"]


def _parent(run_dir, model_path, cfg: Config | None):
    """(model, config, parent description) of a run folder or of a Keras file + config."""
    if run_dir is not None:
        parent = runlib.Run.open(run_dir)
        manifest = parent.manifest()
        info = {"run": str(parent.path), "experiment": manifest.get("experiment"),
                "test_accuracy": (manifest.get("metrics") or {}).get("test_accuracy")}  # fmt: skip
        return load_run_model(parent), parent.config(), info
    if cfg is None:
        raise LiteconvError("--model needs -c CONFIG (the data to fine-tune and evaluate on)")
    info = {"model_file": str(Path(model_path).resolve()),
            "sha256": runlib.sha256_file(model_path) if Path(model_path).is_file() else None}  # fmt: skip
    return load_keras_model(model_path), cfg, info


class TestAccuracyPerEpoch(keras.callbacks.Callback):
    """Test accuracy after every fine-tune epoch, appended to the run's manifest."""

    def __init__(self, run: runlib.Run, splits: DataSplits):
        super().__init__()
        self.run, self.splits = run, splits

    def on_epoch_end(self, epoch, logs=None):
        done = dict((self.run.manifest().get("flatten") or {}).get("test_accuracy_per_epoch", {}))
        done[str(epoch + 1)] = accuracy(self.model, self.splits)
        self.run.update_manifest(flatten={"test_accuracy_per_epoch": done})


GENTLE_STEPS = 1000  # fine-tune steps from which the gentle schedule has room to work


def default_schedule(method: str, data_aware: bool, steps: int) -> tuple[float, int]:
    """The fine-tune's learning rate (a fraction of the parent's) and warm-up epochs when
    none are given, for a fine-tune of ``steps`` optimizer steps in all. Measured,
    distilled, 3 epochs (docs/results/flatten.md, flatten_resnet.md):

    - CP after a data-aware fit (starts within 0.4 point of the Fashion-MNIST parent), with
      ``steps`` >= 1,000: a hundredth after one warm-up epoch. Fashion-MNIST
      ``baseline_cnn`` (1,266 steps): CP-0.5 keeps 92.24 % after epoch 1, ends at 92.47 %
      (a tenth, no warm-up: 89.42 % after epoch 1, 92.34 % after 3); CP-0.4 92.14 %.
    - CP after a data-aware fit, fewer steps: a tenth, no warm-up. The plain-Keras ResNet
      (102 steps): CP-0.5 97.75 % (a hundredth + warm-up: 96.25 %, too slow to recover).
    - LVH after a data-aware fit (starts 5 points below on Fashion-MNIST): a tenth, it has
      ground to make up. LVH-1 90.29 % (a hundredth + warm-up: 88.50 %); ResNet LVH-2
      97.58 % (94.50 %).
    - kernel fit: a tenth for CP (a quarter collapses to 75.2 % in epoch 1 without
      distillation), a quarter for LVH (starts below 40 %).
    """
    if data_aware and method == "cp" and steps >= GENTLE_STEPS:
        return 0.01, 1
    if data_aware or method == "cp":
        return 0.1, 0
    return 0.25, 0


def _child_config(cfg: Config, experiment: str, epochs: int, learning_rate: float,
                  distill: DistillConfig | None = None, warmup_epochs: int = 0) -> Config:  # fmt: skip
    train = dataclasses.replace(cfg.train, epochs=max(1, epochs), learning_rate=learning_rate,
                                warmup_epochs=warmup_epochs,
                                distill=distill or DistillConfig())  # fmt: skip
    model = dataclasses.replace(cfg.model, init_from=INIT_MODEL)
    return dataclasses.replace(cfg, experiment=experiment, train=train, model=model)


def flatten_run(
    run_dir: str | Path | None = None,
    *,
    model_path: str | Path | None = None,
    cfg: Config | None = None,
    method: str = "lvh",
    stages: int = 1,
    rank: int | None = None,
    rank_ratio: float | None = None,
    layers: list[str] | None = None,
    min_macs: int = 0,
    epochs: int = 3,
    learning_rate: float | None = None,
    out: str | Path = "runs",
    name: str | None = None,
    bn_reestimate: bool = True,
    budget=None,  # a bench.budget.Budget
    distill: bool = True,
    temperature: float = 4.0,
    distill_alpha: float = 0.5,
    warmup_epochs: int | None = None,
    data_aware: bool = True,
    fit_images: int = 2048,
    progress=None,
    echo=print,
) -> runlib.Run:
    """Decompose, evaluate, fine-tune ``epochs`` and write a new run; returns it.

    ``learning_rate`` and ``warmup_epochs`` default per method (``default_schedule``:
    after a data-aware CP fit a hundredth of the parent's learning rate and one warm-up
    epoch when the fine-tune has 1,000 steps or more, else a tenth; a data-aware LVH fit
    and a kernel-fit CP a tenth, a kernel-fit LVH a quarter; then cosine decay; the
    parent's optimizer, batch size and augmentation). ``budget``
    (a ``bench.budget.Budget``: ms, mode, threads, target, emulated or not) chooses the method per
    layer to meet a predicted latency (``bench.budget``); the fine-tuned model is then
    measured against it (same machine, same run) and the result kept in the manifest.
    ``distill`` (default): the fine-tune also learns from the parent's outputs softened at
    ``temperature``, weighted ``distill_alpha`` (the parent is saved in the new run as
    ``teacher.keras`` and named in its config, so a resumed fine-tune distils alike);
    ``warmup_epochs`` ramps the learning rate up linearly before the cosine decay.
    ``data_aware`` (default): after the kernel fit, every decomposed layer's factors are
    refitted to the parent layer's outputs on ``fit_images`` training images, layer after
    layer (``keras_layers.data_aware``; with ``budget`` the plan also ranks candidates by
    that output error); either way the manifest gets each layer's output error.
    """
    model, cfg, parent = _parent(run_dir, model_path, cfg)
    splits = load_dataset(cfg.data, batch_size=cfg.train.batch_size, seed=cfg.train.seed)
    fraction, default_warmup = default_schedule("cp" if method == "cp" else "lvh", data_aware,
                                                splits.steps_per_epoch * epochs)  # fmt: skip
    learning_rate = learning_rate or cfg.train.learning_rate * fraction
    warmup_epochs = default_warmup if warmup_epochs is None else warmup_epochs
    tag = f"{method}{stages}" if method == "lvh" else f"cp{rank or ''}"
    plan = None
    if budget is not None:
        from liteconv.bench.budget import plan_for_budget

        calibration, _ = splits.arrays("train", limit=max(128, fit_images if data_aware else 0))
        source = budget.source()
        plan = plan_for_budget(model, budget.ms, calibration=calibration[:128],
                               fit_images=calibration[:512] if data_aware else None,
                               mode=budget.mode, source=source, echo=echo)  # fmt: skip
        echo(f"plan for {budget.ms:g} ms ({plan.mode}, {budget.threads} thread(s)): "
             f"predicted {plan.predicted_ms:.4f} ms (as it is {plan.baseline_ms:.4f} ms, "
             f"fastest reachable {plan.fastest_ms:.4f} ms); multiple-choice knapsack, least "
             f"summed {plan.error_kind}")  # fmt: skip
        echo(plan.table())
        tag = f"budget{budget.ms:g}ms".replace(".", "p")
    experiment = name or f"{cfg.experiment}_{tag}"
    teaching = DistillConfig(TEACHER_MODEL, temperature, distill_alpha) if distill else None
    child = _child_config(cfg, experiment, epochs, learning_rate, teaching, warmup_epochs)
    resumable = runlib.Run.find_resumable(out, experiment, config_hash(child))
    if (
        resumable is not None
        and bool((resumable.manifest().get("flatten") or {}).get("data_aware")) != data_aware
    ):  # decomposed the other way: not this fine-tune
        resumable = None
    if resumable is not None and epochs and (resumable.path / INIT_MODEL).is_file():
        echo(f"resuming the interrupted fine-tune in {resumable.path}")
        return train(None, out=out, resume=resumable.path, echo=echo,
                     callbacks=[TestAccuracyPerEpoch(resumable, splits)])  # fmt: skip
    try:  # a nested backbone inlined once, for the decomposition and the refit alike
        graph = inline_nested(model)
        flat, report = flatten_model(graph, method=method, stages=stages, rank=rank,
                                     rank_ratio=rank_ratio, layers=layers, min_macs=min_macs,
                                     progress=progress,
                                     plan=plan.choices if plan else None)  # fmt: skip
    except ValueError as err:
        raise LiteconvError(str(err)) from None
    before, after = model_cost(model), model_cost(flat)
    images, _ = splits.arrays("train", limit=max(2048, fit_images))
    if data_aware:
        echo(f"fitting {len(report)} layer(s) to the parent's outputs on "
             f"{min(fit_images, len(images))} training images")  # fmt: skip
    try:
        report = fit_to_outputs(graph, flat, images[:fit_images], report, refit=data_aware,
                                progress=progress if data_aware else None)  # fmt: skip
    except ValueError as err:
        raise LiteconvError(f"{err}") from None
    acc_decomposed = accuracy(flat, splits)
    acc_bn = None
    # A data fit already reproduces the parent's layer outputs, so the parent's BatchNorm
    # statistics apply; re-estimating them cost accuracy here (Fashion-MNIST parent, 2,048
    # images: LVH-1 87.56 -> 85.98 %, CP-0.5 92.51 -> 92.41 %): measured on a copy, not kept.
    keep_bn = bn_reestimate and not data_aware
    if bn_reestimate:
        target = flat
        if not keep_bn:
            target = keras.models.clone_model(flat)
            target.set_weights(flat.get_weights())
        reestimate_batchnorm(target, images[:2048])
        acc_bn = accuracy(target, splits)
        del target
    echo(f"decomposed {len(report)} layer(s): MACs {before.total_macs:,} -> {after.total_macs:,} "
         f"({before.total_macs / after.total_macs:.2f}x fewer), parameters "
         f"{before.total_params:,} -> {after.total_params:,}; test accuracy right after "
         f"{acc_decomposed:.4f}" + (f", after BatchNorm re-estimation {acc_bn:.4f}"
                                    + ("" if keep_bn else " (measured on a copy; the data fit "
                                       "keeps the parent's statistics)")
                                    if acc_bn is not None else ""))  # fmt: skip
    run = runlib.Run.create(out, experiment)
    run.save_model(flat, INIT_MODEL)
    if teaching is not None and epochs:
        run.save_model(model, TEACHER_MODEL)
    run.write_text(runlib.CONFIG, dump_config(child))
    run.update_manifest(
        experiment=experiment, status="running" if epochs else "complete",
        config_hash=config_hash(child), parent=parent,
        flatten={"method": method, "stages": stages if method == "lvh" else None,
                 "ranks": {r["layer"]: r["rank"] for r in report}, "layers": report,
                 "macs_before": before.total_macs, "macs_after": after.total_macs,
                 "params_before": before.total_params, "params_after": after.total_params,
                 "accuracy_decomposed": acc_decomposed, "accuracy_bn_reestimated": acc_bn,
                 "bn_reestimated": keep_bn,
                 "fine_tune_epochs": epochs, "learning_rate": learning_rate,
                 "warmup_epochs": warmup_epochs,
                 "data_aware": {"images": min(fit_images, len(images))} if data_aware else None,
                 "distill": None if teaching is None else {
                     "teacher": TEACHER_MODEL, "temperature": temperature,
                     "alpha": distill_alpha},
                 "budget": None if plan is None else {
                     **budget.record(), "mode": plan.mode, "plan": plan.choices, "predicted_ms": plan.predicted_ms,
                     "fastest_ms": plan.fastest_ms, "parent_predicted_ms": plan.baseline_ms}},
        class_names=splits.class_names, input_shape=list(splits.input_shape),
        model={"name": flat.name, "kwargs": {}, "params": after.total_params,
               "macs": after.total_macs},
    )  # fmt: skip
    if not epochs:
        run.save_model(flat)
        run.update_manifest(metrics={"test_accuracy": acc_bn if keep_bn else acc_decomposed})
        run.update_manifest(artifacts=run.artifact_hashes())
        echo(f"run folder: {run.path}")
    else:
        run = train(None, out=out, resume=run.path, echo=echo,
                    callbacks=[TestAccuracyPerEpoch(run, splits)])  # fmt: skip
    if plan is not None:
        _measure_budget(run, model, budget, source, plan, echo)
    return run


def _measure_budget(run: runlib.Run, parent_model, budget, source, plan, echo) -> None:
    """Time (or estimate) the new model against the parent as converted for the budget's
    mode, side by side, and record whether the budget was met."""
    from liteconv.pipeline.evaluate import load_run_model, run_data

    images, _ = run_data(run).arrays("train", limit=128)
    child = load_run_model(run)
    timings = source.times([(child, images), (parent_model, images)], plan.mode, runs=200,
                           warmup=20, echo=echo)  # fmt: skip
    measured, parent_ms = timings[0]["p50_ms"], timings[1]["p50_ms"]
    met = measured <= budget.ms
    echo(f"budget {budget.ms:g} ms ({plan.mode}, {budget.threads} thread(s)): {source.done} "
         f"{measured:.4f} ms (parent {parent_ms:.4f} ms, predicted {plan.predicted_ms:.4f} ms): "
         f"{'met' if met else 'NOT met'}")  # fmt: skip
    record = dict((run.manifest().get("flatten") or {}).get("budget") or {})
    record.update(
        measured_ms=measured,
        parent_measured_ms=parent_ms,
        met=met,
        estimated_on=source.board.name if source.board is not None else None,
    )
    run.update_manifest(flatten={"budget": record})
