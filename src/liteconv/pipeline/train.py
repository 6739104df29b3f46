"""Training: devices and distribution strategy, compile, ``fit`` with callbacks, resume.

``train(cfg)`` makes (or resumes) a run folder, trains with Keras ``fit`` and its progress
bar, evaluates on the test split and writes the model and manifest atomically. Devices:
a GPU when TensorFlow sees one (memory growth on, mixed precision when asked or ``auto``),
``MirroredStrategy`` for several GPUs, ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG``
is set. An interrupted run continues from its last finished epoch
(``BackupAndRestore``) with ``--resume RUN_DIR`` or by running the same command again.

Example:
    >>> run = train(load_config("configs/experiments/digits_quick.yaml"), out="runs")
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from liteconv.compat import keras, onednn_note, tf
from liteconv.config import Config, TrainConfig, dump_config, validate_model
from liteconv.device.errors import LiteconvError
from liteconv.device.files import crash_point
from liteconv.keras_layers import create_model, model_cost
from liteconv.pipeline import run as runlib
from liteconv.pipeline.data import DataSplits, load_dataset


@dataclass
class Devices:
    """What training runs on."""

    strategy: tf.distribute.Strategy
    kind: str  # "cpu", "gpu", "multi-gpu", "multi-worker"
    gpus: list[str]
    replicas: int
    mixed_precision: bool
    is_chief: bool
    worker: str | None

    @property
    def strategy_name(self) -> str:
        return {
            "multi-worker": "MultiWorkerMirroredStrategy",
            "multi-gpu": "MirroredStrategy",
        }.get(self.kind, "default (one device)")

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "strategy": self.strategy_name,
            "gpus": self.gpus,
            "replicas": self.replicas,
            "mixed_precision": self.mixed_precision,
            "worker": self.worker,
        }


def select_devices(cfg: TrainConfig) -> Devices:
    """Pick devices and the distribution strategy; must run before any other TF op."""
    gpus = tf.config.list_physical_devices("GPU")
    if cfg.device == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")
        gpus = []
    elif cfg.device == "gpu" and not gpus:
        raise LiteconvError(
            "train.device: gpu, but TensorFlow sees no GPU; install 'liteconv[gpu]' "
            "(tensorflow[and-cuda]) and check nvidia-smi, or set train.device=auto"
        )
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised (second call in one process)
            pass
    mixed = cfg.mixed_precision == "on" or (cfg.mixed_precision == "auto" and bool(gpus))
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    worker = None
    if os.environ.get("TF_CONFIG"):
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        resolver = strategy.cluster_resolver
        worker = f"{resolver.task_type}:{resolver.task_id}"
        has_chief = "chief" in resolver.cluster_spec().as_dict()
        is_chief = resolver.task_type == "chief" or (
            not has_chief and resolver.task_type == "worker" and resolver.task_id == 0
        )
        kind = "multi-worker"
    elif len(gpus) > 1:
        strategy, kind, is_chief = tf.distribute.MirroredStrategy(), "multi-gpu", True
    else:
        strategy, kind, is_chief = tf.distribute.get_strategy(), "gpu" if gpus else "cpu", True
    return Devices(
        strategy,
        kind,
        [g.name for g in gpus],
        strategy.num_replicas_in_sync,
        mixed,
        is_chief,
        worker,
    )


def learning_rate(cfg: TrainConfig, steps_per_epoch: int):
    """The learning rate (schedule) of ``cfg``; cosine decay to 0 by default."""
    total = cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_epochs * steps_per_epoch
    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    if cfg.lr_schedule == "step":  # ÷10 at 50% and 75% of training
        bounds = [int(total * 0.5), int(total * 0.75)]
        values = [cfg.learning_rate, cfg.learning_rate / 10, cfg.learning_rate / 100]
        return keras.optimizers.schedules.PiecewiseConstantDecay(bounds, values)
    if warmup:
        return keras.optimizers.schedules.CosineDecay(
            0.0, total - warmup, warmup_target=cfg.learning_rate, warmup_steps=warmup
        )
    return keras.optimizers.schedules.CosineDecay(cfg.learning_rate, total)


def build_optimizer(cfg: TrainConfig, steps_per_epoch: int):
    """The optimizer of ``cfg`` with its schedule and (decoupled) weight decay."""
    lr = learning_rate(cfg, steps_per_epoch)
    decay = cfg.weight_decay or None
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=cfg.momentum, nesterov=True, weight_decay=decay)
    if cfg.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(lr, momentum=cfg.momentum, weight_decay=decay)
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=cfg.weight_decay or 1e-4)
    return keras.optimizers.Adam(lr, weight_decay=decay)


def compile_model(model, cfg: TrainConfig, steps_per_epoch: int, num_classes: int = 0) -> None:
    """Compile with one-hot labels (label smoothing needs them) and accuracy; with
    ``cfg.distill.teacher`` the loss also learns from the teacher (``distill.py``)."""
    if cfg.distill.teacher:
        from liteconv.pipeline.distill import DistillationLoss, label_accuracy

        loss = DistillationLoss(num_classes, cfg.distill.temperature, cfg.distill.alpha,
                                label_smoothing=cfg.label_smoothing)  # fmt: skip
        metrics = [label_accuracy(num_classes)]
    else:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    model.compile(
        optimizer=build_optimizer(cfg, steps_per_epoch), loss=loss, metrics=metrics,
        jit_compile=cfg.xla,
    )  # fmt: skip


def one_hot(ds, num_classes: int):
    """Map integer labels to one-hot vectors."""
    return ds.map(lambda x, y: (x, tf.one_hot(y, num_classes)), num_parallel_calls=tf.data.AUTOTUNE)


def build_model(cfg: Config, splits: DataSplits, mixed_precision: bool, base: Path = Path(".")):
    """The configured model for the data's input shape (or the ``model.init_from`` file,
    relative to ``base``); float32 output under mixed precision."""
    if cfg.model.init_from:
        from liteconv.pipeline.model_file import load_keras_model

        model = load_keras_model(base / cfg.model.init_from)
        if tuple(model.input_shape[1:]) != tuple(splits.input_shape):
            raise LiteconvError(
                f"model.init_from {cfg.model.init_from}: input shape {model.input_shape[1:]} "
                f"does not fit the data ({splits.input_shape})"
            )
    else:
        try:
            model = create_model(cfg.model.name, input_shape=splits.input_shape,
                                 num_classes=splits.num_classes, **cfg.model.kwargs)  # fmt: skip
        except ValueError as err:  # a bad argument, a backbone's missing weights file
            raise LiteconvError(f"model {cfg.model.name}: {err}") from None
    if mixed_precision:  # softmax in float16 loses probability mass: keep the output float32
        out = keras.layers.Activation("linear", dtype="float32", name="float32_output")(
            model.output
        )
        model = keras.Model(model.input, out, name=model.name)
    return model


def _teacher(cfg: Config, splits: DataSplits, base: Path):
    """The ``train.distill.teacher`` model (relative to ``base``), checked, or ``None``."""
    if not cfg.train.distill.teacher:
        return None
    from liteconv.pipeline.model_file import load_keras_model

    teacher = load_keras_model(base / cfg.train.distill.teacher)
    teacher.trainable = False
    shape, out = tuple(teacher.input_shape[1:]), teacher.output_shape[-1]
    if shape != tuple(splits.input_shape) or out != splits.num_classes:
        raise LiteconvError(
            f"train.distill.teacher {cfg.train.distill.teacher}: input {shape} and {out} "
            f"outputs do not fit the data ({tuple(splits.input_shape)}, {splits.num_classes} "
            "classes)"
        )
    return teacher


class AtomicBestCheckpoint(keras.callbacks.Callback):
    """Save the model whenever ``monitor`` improves, atomically (temp file + rename)."""

    def __init__(self, path: Path, monitor: str = "val_accuracy"):
        super().__init__()
        self.path, self.monitor, self.best = Path(path), monitor, -math.inf

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value > self.best:
            self.best = float(value)
            runlib.save_model_atomic(self.model, self.path)


class PhaseTag(keras.callbacks.Callback):
    """Adds ``phase`` (1: head, 2: top blocks) to each epoch's logs (``history.csv``)."""

    def __init__(self, phase: int):
        super().__init__()
        self.phase = phase

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["phase"] = self.phase


def fine_tune_phases(cfg: Config, model) -> list[dict] | None:
    """The two-phase plan of a ``pretrained`` backbone model: ``[{"phase", "first",
    "last", "train"}]`` (epochs ``first+1..last``, ``train`` the TrainConfig its optimizer
    and schedule follow); ``None`` for any other model (and for ``model.init_from``)."""
    from liteconv.keras_layers.backbones import backbone_of

    if cfg.model.init_from or backbone_of(model) is None:
        return None
    ft, epochs = cfg.train.fine_tune, cfg.train.epochs
    head = min(ft.head_epochs or max(1, epochs // 2), epochs)
    plan = [{"phase": 1, "first": 0, "last": head,
             "train": dataclasses.replace(cfg.train, epochs=head)}]  # fmt: skip
    if head < epochs:
        lr = ft.learning_rate or cfg.train.learning_rate / 10
        plan.append({"phase": 2, "first": head, "last": epochs,
                     "train": dataclasses.replace(cfg.train, epochs=epochs - head,
                                                  learning_rate=lr, warmup_epochs=0)})  # fmt: skip
    return plan


class EpochCrashPoint(keras.callbacks.Callback):
    """The ``epoch:N`` crash point of ``LITECONV_CRASH_AT`` (a testing aid, see
    ``device/files.py``): last of the callbacks, so epoch N's backup and history row are
    written when the process dies. Nothing happens when the variable is unset."""

    def on_epoch_end(self, epoch, logs=None):
        crash_point("epoch", f"epoch {epoch + 1}")


def config_hash(cfg: Config) -> str:
    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _dedupe_history(path: Path) -> None:
    """Keep the last row of each epoch (a resumed run may log an epoch twice)."""
    if not path.is_file():
        return
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        return
    header, by_epoch = rows[0], {}
    for row in rows[1:]:
        if row and row[0] != header[0]:
            by_epoch[int(row[0])] = row
    lines = [header] + [by_epoch[k] for k in sorted(by_epoch)]
    runlib.atomic_write_text(path, "".join(",".join(r) + "\n" for r in lines))


def saved_config(run_dir: str | Path) -> Config:
    """The config an interrupted run was started with (``--resume``)."""
    run = runlib.Run.open(run_dir, need_model=False)
    if run.manifest().get("status") == "complete":
        raise LiteconvError(f"{run_dir}: this run is already complete; start a new one instead")
    cfg = run.config()
    validate_model(cfg)
    return cfg


def _multiworker_name(cfg: Config) -> str:
    """A run name every worker derives alike: from the cluster spec and the config."""
    cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
    key = json.dumps(cluster, sort_keys=True) + config_hash(cfg)
    return "multiworker-" + hashlib.sha256(key.encode()).hexdigest()[:10]


def _resolve_run(cfg: Config, out, resume, run_name) -> tuple[runlib.Run, bool]:
    """(run, resumed) for --resume, an interrupted twin of the same config, or a new run."""
    if resume is not None:  # "resuming" once training had started (not a fresh flatten child)
        run = runlib.Run(resume)
        run.remove_stale_temporaries()
        return run, run.file("backup").exists() or "devices" in run.manifest()
    if run_name is None and os.environ.get("TF_CONFIG"):
        run_name = _multiworker_name(cfg)
    if run_name is not None:
        existing = runlib.Run(Path(out) / cfg.experiment / run_name)
        if existing.manifest().get("status") == "running":  # other workers may be writing
            return existing, True
        return runlib.Run.create(out, cfg.experiment, run_name), False
    twin = runlib.Run.find_resumable(out, cfg.experiment, config_hash(cfg))
    if twin is not None:
        return twin, True
    return runlib.Run.create(out, cfg.experiment), False


def _callbacks(run: runlib.Run, chosen: runlib.Run, cfg: Config, has_val: bool,
               phase: int | None = None) -> list:  # fmt: skip
    """Backup (to resume), CSV history, TensorBoard, best checkpoint, early stopping. A
    fine-tune phase backs up apart (``backup/`` phase 1, kept until the run completes so a
    kill early in phase 2 resumes from its end; ``backup/phase2``) and tags its epochs."""
    backup = chosen.file("backup") if phase in (None, 1) else chosen.file("backup") / "phase2"
    callbacks = [
        *([PhaseTag(phase)] if phase is not None else []),
        keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=phase != 1),
        keras.callbacks.CSVLogger(str(run.file(runlib.HISTORY)), append=True),
        keras.callbacks.TensorBoard(str(run.file("tensorboard")), write_graph=False,
                                    profile_batch=0),
        keras.callbacks.TerminateOnNaN(),
    ]  # fmt: skip
    if has_val:
        callbacks.append(AtomicBestCheckpoint(run.file(runlib.BEST)))
        if cfg.train.early_stopping_patience:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    "val_accuracy", patience=cfg.train.early_stopping_patience,
                    restore_best_weights=True,
                )
            )  # fmt: skip
    return callbacks


def _start_manifest(run: runlib.Run, cfg: Config, devices: Devices, splits: DataSplits, cost):
    """Write the manifest of a run that starts (or resumes), then ``config.yaml``: with the
    manifest first, a run killed inside either write is either a folder holding only a dead
    writer's temporary (``Run.abandoned``) or a resumable run (``find_resumable``)."""
    run.update_manifest(
        experiment=cfg.experiment, status="running", config_hash=config_hash(cfg),
        versions=runlib.versions(), git_commit=runlib.git_commit(), seed=cfg.train.seed,
        deterministic=cfg.train.deterministic, devices=devices.describe(),
        dataset={"name": cfg.data.name, "source": splits.source, "fingerprint":
                 splits.fingerprint, "sizes": splits.sizes},
        class_names=splits.class_names, input_shape=list(splits.input_shape),
        model={"name": cfg.model.name, "kwargs": cfg.model.kwargs,
               "params": cost.total_params, "macs": cost.total_macs},
    )  # fmt: skip
    run.write_text(runlib.CONFIG, dump_config(cfg))


def _finish(run: runlib.Run, cfg: Config, history, test, seconds: float, train_size: int):
    """Dedupe the history, mark the run complete with its metrics and artifact hashes in one
    manifest write (a kill before it leaves a resumable run, after it a complete one), then
    drop the backup (only needed to resume)."""
    _dedupe_history(run.file(runlib.HISTORY))
    epochs_run = len(history.history.get("loss", []))
    run.update_manifest(
        status="complete",
        metrics={
            "test_accuracy": float(test[1]),
            "test_loss": float(test[0]),
            "epochs": cfg.train.epochs,
            "epochs_this_session": epochs_run,
            "train_seconds_this_session": round(seconds, 1),
            "images_per_second": round(epochs_run * train_size / seconds, 1)
            if epochs_run
            else None,
        },
        artifacts=run.artifact_hashes(),
    )
    shutil.rmtree(run.file("backup"), ignore_errors=True)


def _start_phase(model, step: dict, cfg: Config, devices: Devices, splits, run, echo) -> None:
    """Freeze for ``step``'s phase, compile its optimizer, say so and record it."""
    from liteconv.keras_layers.backbones import backbone_of, set_phase

    with devices.strategy.scope():
        info = set_phase(model, step["phase"], cfg.train.fine_tune.unfreeze)
        compile_model(model, step["train"], splits.steps_per_epoch, splits.num_classes)
    what = ("the head on the frozen backbone" if step["phase"] == 1 else
            f"the head and the top {info['unfrozen']} of {info['blocks']} blocks")  # fmt: skip
    echo(f"phase {step['phase']}: epochs {step['first'] + 1}-{step['last']}: {what} "
         f"({info['trainable_params']:,} trainable parameters, BatchNorm frozen), "
         f"learning rate {step['train'].learning_rate:g}")  # fmt: skip
    if devices.is_chief:
        done = dict(run.manifest().get("fine_tune") or {})
        done["backbone"] = backbone_of(model)
        done["weights"] = cfg.model.kwargs.get("weights", "imagenet")
        done[f"phase{step['phase']}"] = {
            "epochs": [step["first"] + 1, step["last"]], "learning_rate":
            step["train"].learning_rate, **info}  # fmt: skip
        run.update_manifest(fine_tune=done)


def _where(cfg: Config, devices: Devices, out, resume, run_name):
    """(run written to, run named in messages, resumed?) for this worker."""
    if devices.is_chief:
        chosen, resumed = _resolve_run(cfg, out, resume, run_name)
        return chosen, chosen, resumed
    # Non-chief workers train in lockstep but write only to a scratch folder they delete;
    # ``chosen`` is where the chief writes (BackupAndRestore derives their paths from it).
    name = run_name or _multiworker_name(cfg)
    chosen = runlib.Run(resume or Path(out) / cfg.experiment / name)
    return runlib.Run(tempfile.mkdtemp(prefix="liteconv-worker-")), chosen, resume is not None


def _describe_devices(devices: Devices) -> str:
    gpus = f"{len(devices.gpus)} GPU(s)" if devices.gpus else "no GPU found, training on the CPU"
    kernels = "" if devices.gpus else f", {onednn_note()}"
    return (
        f"{devices.kind}, {gpus} ({devices.strategy_name}, {devices.replicas} replica(s)"
        f"{', mixed_float16' if devices.mixed_precision else ''}"
        f"{', ' + devices.worker if devices.worker else ''}){kernels}"
    )


def train(
    cfg: Config | None,
    *,
    out: str | Path = "runs",
    resume: str | Path | None = None,
    run_name: str | None = None,
    callbacks: list | None = None,
    echo=print,
) -> runlib.Run:
    """Train ``cfg`` into a run folder and return it.

    Args:
        cfg: the experiment config (``None`` with ``resume``).
        out: parent of the run folders.
        resume: an interrupted run folder to continue, with the config it was started with.
        run_name: the run folder name (default: a timestamp); every worker of a
            multi-worker run must use the same one (default: derived from TF_CONFIG).
        callbacks: extra Keras callbacks for ``fit``.
        echo: where progress lines go.
    """
    if resume is not None:
        cfg = saved_config(resume)
    elif cfg is None:
        raise LiteconvError("missing -c CONFIG (or --resume RUN_DIR)")
    devices = select_devices(cfg.train)  # before any TF op: MultiWorkerMirroredStrategy needs it
    keras.utils.set_random_seed(cfg.train.seed)
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    splits = load_dataset(
        cfg.data, batch_size=cfg.train.batch_size, seed=cfg.train.seed,
        augmentation=cfg.train.augmentation,
    )  # fmt: skip
    teacher = _teacher(cfg, splits, Path(resume or "."))
    with devices.strategy.scope():
        model = build_model(cfg, splits, devices.mixed_precision, Path(resume or "."))
        compile_model(model, cfg.train, splits.steps_per_epoch, splits.num_classes)
    cost = model_cost(model)
    phases = fine_tune_phases(cfg, model)
    # The run folder is made only now that the data and the model are built.
    run, chosen, resumed = _where(cfg, devices, out, resume, run_name)
    # The manifest before any output: a kill while printing (a closed pipe, ^C) leaves a
    # resumable run, not an empty folder.
    if devices.is_chief:
        _start_manifest(run, cfg, devices, splits, cost)
    echo(
        f"{'resuming' if resumed else 'run'}: {chosen.path}  |  devices: {_describe_devices(devices)}"
    )
    echo(
        f"data: {cfg.data.name} from {splits.source}: {splits.sizes['train']} train / "
        f"{splits.sizes['val']} val / {splits.sizes['test']} test, input {splits.input_shape}"
    )
    if cfg.data.name == "image_folder":
        echo(splits.counts_table())
    what = f"{cfg.model.init_from} ({model.name})" if cfg.model.init_from else cfg.model.name
    if phases is not None:
        from liteconv.keras_layers.backbones import backbone_of

        weights = cfg.model.kwargs.get("weights", "imagenet")
        what = f"{backbone_of(model)} backbone ({weights or 'random'} weights) + new head"
    echo(f"model: {what}: {cost.total_params:,} parameters, {cost.total_macs:,} MACs")
    if teacher is not None:
        d = cfg.train.distill
        echo(f"distilling from {d.teacher} ({teacher.name}): temperature {d.temperature:g}, "
             f"alpha {d.alpha:g} (the rest on the labels)")  # fmt: skip
    n = splits.num_classes
    start = time.perf_counter()
    try:
        train_ds = one_hot(splits.train, n)
        val_ds = one_hot(splits.val, n) if splits.val is not None else None
        if teacher is not None:
            from liteconv.pipeline.distill import with_teacher

            train_ds = with_teacher(train_ds, teacher)
            val_ds = with_teacher(val_ds, teacher) if val_ds is not None else None
        history = keras.callbacks.History()
        history.history = {}
        plan = phases or [{"phase": None, "first": 0, "last": cfg.train.epochs}]
        for step in plan:
            if step["phase"] is not None:
                _start_phase(model, step, cfg, devices, splits, run, echo)
            part = model.fit(
                train_ds,
                validation_data=val_ds,
                initial_epoch=step["first"],
                epochs=step["last"],
                callbacks=[
                    *_callbacks(run, chosen, cfg, splits.val is not None, step["phase"]),
                    *(callbacks or []),
                    EpochCrashPoint(),
                ],
                verbose=cfg.train.verbose,
            )
            for key, values in part.history.items():
                history.history.setdefault(key, []).extend(values)
            losses = part.history.get("loss", [])
            if losses and not math.isfinite(losses[-1]):
                lr = step["train"].learning_rate if step["phase"] else cfg.train.learning_rate
                raise LiteconvError(
                    f"training diverged: the loss became {losses[-1]} in epoch "
                    f"{step['first'] + len(losses)}; lower the learning rate (now {lr:g}: "
                    "train.learning_rate, or train.fine_tune.learning_rate in phase 2) and "
                    "train again"
                )
    except LiteconvError as err:
        if devices.is_chief:
            run.update_manifest(status="failed", error=str(err))
        raise
    seconds = time.perf_counter() - start
    test = model.evaluate(one_hot(splits.test, n), verbose=0)
    echo(f"test accuracy {test[1]:.4f}  loss {test[0]:.4f}")
    run.save_model(model)  # on every worker: saving runs collective ops
    if not devices.is_chief:
        shutil.rmtree(run.path, ignore_errors=True)
        return chosen
    _finish(run, cfg, history, test, seconds, splits.sizes["train"])
    echo(f"saved {run.file(runlib.MODEL)}")
    return run
