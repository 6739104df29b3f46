"""Typed experiment configuration loaded from YAML.

A config file may name a ``base:`` file (path relative to itself) whose values it
overrides; command-line ``--set section.key=value`` overrides come last. Every key is
checked: an unknown key, a wrong type or an impossible value is a ``ConfigError`` naming
the file, the key and what is allowed.

Example:
    >>> cfg = load_config("configs/experiments/digits_quick.yaml", {"train.epochs": 1})
    >>> cfg.model.name, cfg.train.epochs
    ('flattened_cnn', 1)
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from liteconv.device.errors import ConfigError
from liteconv.device.schema import build, check
from liteconv.device.targets import RUNTIME_NAMES, packaged_configs

# Conversion modes of ``export.convert.to_tflite`` and, with ``qat_int8`` (QAT, then int8),
# of ``liteconv export``; the converter and the config check the same tuples.
CONVERT_MODES = ("fp32", "fp16", "dynamic", "int8", "int16x8")
EXPORT_MODES = (*CONVERT_MODES, "qat_int8")
IO_TYPES = ("float32", "int8", "uint8")  # model input/output dtype of the integer modes
SEED_RANGE = check(0, 2**32, exclusive_max=True)


@dataclass
class ModelConfig:
    """``model:`` — a registered model and its builder arguments."""

    name: str = "flattened_cnn"
    kwargs: dict[str, Any] = field(default_factory=dict)
    # A .keras file whose architecture and weights training starts from (fine-tuning);
    # relative paths are taken from the run folder when resuming, else the working folder.
    init_from: str | None = None


@dataclass
class DataConfig:
    """``data:`` — which dataset, how it is split and fed to the model."""

    name: Literal["fashion_mnist", "digits", "image_folder", "tfds", "synthetic"] = "fashion_mnist"
    path: str | None = None  # fashion_mnist IDX folder or image_folder root
    train_path: str | None = None  # image_folder: explicit split folders (else found in path)
    val_path: str | None = None
    test_path: str | None = None
    skip_bad_images: bool = False  # image folders: skip non-images and undecodable files
    tfds_name: str | None = None
    image_size: list[int] | None = None  # [height, width] the model sees; null: native
    channels: Literal[1, 3] | None = None  # null: native
    validation_split: float = field(default=0.1, metadata=check(0, 1, exclusive_max=True))
    test_split: float = field(
        default=0.2, metadata=check(0, 1, exclusive_min=True, exclusive_max=True)
    )
    split_seed: int = field(default=0, metadata=SEED_RANGE)  # independent of the training seed
    limit: int | None = field(default=None, metadata=check(1))  # cap on training samples
    cache: bool = True
    shuffle_buffer: int = field(default=10000, metadata=check(1))
    synthetic_samples: int = field(default=512, metadata=check(8))
    synthetic_shape: list[int] = field(default_factory=lambda: [28, 28, 1])
    synthetic_classes: int = field(default=10, metadata=check(2))


@dataclass
class AugmentConfig:
    """``train.augmentation:`` — on-the-fly training augmentation."""

    flip: bool = False  # random left-right flip (not for digits or text)
    translate: int = field(default=0, metadata=check(0))  # max shift in pixels


@dataclass
class DistillConfig:
    """``train.distill:`` — learn from a teacher's softened outputs as well as the labels
    (Hinton et al. 2015): ``(1 - alpha) · CE(labels) + alpha · T² · KL(teacher_T ‖ student_T)``
    with both softmaxes at temperature ``T``. ``liteconv flatten`` sets the teacher to the
    parent model (``teacher.keras`` in the child run)."""

    teacher: str | None = None  # a .keras file, relative to the run folder
    temperature: float = field(default=4.0, metadata=check(0, exclusive_min=True))
    alpha: float = field(default=0.5, metadata=check(0, 1))


@dataclass
class FineTuneConfig:
    """``train.fine_tune:`` — the two phases of a ``pretrained`` backbone model (other models
    ignore it): phase 1 trains the new head on the frozen backbone for ``head_epochs``,
    phase 2 the head and the backbone's top ``unfreeze`` blocks for the rest of
    ``train.epochs`` at ``learning_rate``; BatchNorm stays frozen (inference mode) in both."""

    head_epochs: int | None = field(default=None, metadata=check(1))  # null: half the epochs
    unfreeze: int | None = field(default=None, metadata=check(0))  # null: the backbone's default
    learning_rate: float | None = field(  # null: train.learning_rate / 10
        default=None, metadata=check(0, exclusive_min=True)
    )


@dataclass
class TrainConfig:
    """``train:`` — the fit schedule and the devices it runs on."""

    epochs: int = field(default=10, metadata=check(1))
    batch_size: int = field(default=128, metadata=check(1, 65536))
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    learning_rate: float = field(default=1e-3, metadata=check(0, exclusive_min=True))
    momentum: float = field(default=0.9, metadata=check(0, 1, exclusive_max=True))
    lr_schedule: Literal["cosine", "constant", "step"] = "cosine"
    warmup_epochs: int = field(default=0, metadata=check(0))
    label_smoothing: float = field(default=0.0, metadata=check(0, 1, exclusive_max=True))
    weight_decay: float = field(default=0.0, metadata=check(0))
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = field(default=42, metadata=SEED_RANGE)
    deterministic: bool = False
    mixed_precision: Literal["auto", "on", "off"] = "auto"  # auto: on when a GPU is used
    xla: bool = False
    device: Literal["auto", "cpu", "gpu"] = "auto"
    early_stopping_patience: int | None = field(default=None, metadata=check(1))
    verbose: int = field(default=1, metadata=check(0, 2))
    distill: DistillConfig = field(default_factory=DistillConfig)
    fine_tune: FineTuneConfig = field(default_factory=FineTuneConfig)


@dataclass
class ExportConfig:
    """``export:`` — read by ``liteconv export``."""

    modes: list[Literal[EXPORT_MODES]] = field(default_factory=lambda: ["fp32", "qat_int8"])
    qat_epochs: int = field(default=1, metadata=check(0))
    qat_learning_rate: float = field(default=1e-4, metadata=check(0, exclusive_min=True))
    prune_sparsity: float | None = field(
        default=None, metadata=check(0, 1, exclusive_min=True, exclusive_max=True)
    )
    prune_epochs: int = field(default=2, metadata=check(1))
    prune_learning_rate: float = field(default=5e-4, metadata=check(0, exclusive_min=True))
    io_type: Literal[IO_TYPES] = "float32"
    per_channel: bool = True  # false: one weight scale per tensor (smaller depthwise-heavy files)
    calibration_samples: int = field(default=300, metadata=check(1))


@dataclass
class BenchConfig:
    """``bench:`` — read by ``liteconv bench`` (its flags override these)."""

    threads: list[int] | None = None  # null: the target's thread counts, else [1]
    warmup: int = field(default=10, metadata=check(0))
    runs: int = field(default=100, metadata=check(1))
    runtime: Literal[RUNTIME_NAMES] = "auto"  # auto: the target's runtime, else the best found
    xnnpack: bool = True  # false: the builtin kernels only
    target: str | None = None

    def resolve(self) -> dict:
        """The benchmark's settings: this section, completed by its target (if any)."""
        from liteconv.device.targets import Target, load_target

        target = load_target(self.target) if self.target else Target()
        return {
            "threads": self.threads or target.threads,
            "warmup": self.warmup,
            "runs": self.runs,
            "runtime": self.runtime if self.runtime != "auto" else target.runtime,
            "xnnpack": target.xnnpack if self.xnnpack else [False],
            "cores": target.cores,
            "target": target if self.target else None,
        }


@dataclass
class Config:
    """A whole experiment."""

    experiment: str = "default"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    source: str = field(default="<defaults>", metadata={"internal": True})

    def to_dict(self) -> dict:
        """The resolved config as plain data (what ``config.yaml`` in a run holds)."""
        out = dataclasses.asdict(self)
        out.pop("source")
        return out


# ---------------------------------------------------------------------------- loading


MAX_ALIASES = 64  # YAML anchors are fine in configs; an alias bomb expands exponentially
MAX_DEPTH = 16  # sections are two levels deep; kwargs a few more
MAX_CONFIG_BYTES = 1 << 20


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a cap on alias uses (no billion-laughs expansion)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases = getattr(self, "_aliases", 0) + 1
            if self._aliases > MAX_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_ALIASES} YAML aliases (*refs)")
        return super().compose_node(parent, index)


def _depth(value, limit: int, level: int = 0) -> int:
    if level > limit:
        return level
    if isinstance(value, dict):
        return max((_depth(v, limit, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, limit, level + 1) for v in value), default=level)
    return level


def _parse_yaml(path: Path):
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        shipped = sorted(p.stem for p in (packaged_configs() / "experiments").glob("*.yaml"))
        raise ConfigError(
            f"{path}: config file not found; shipped experiments (by name): {', '.join(shipped)}"
        ) from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {len(raw):,} bytes; a config is a small YAML file (< 1 MiB)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply (more than {MAX_DEPTH} levels)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0] or "invalid YAML"
        raise ConfigError(f"{path}:{where}: {problem}") from None
    if _depth(data, MAX_DEPTH) > MAX_DEPTH:
        raise ConfigError(f"{path}: nested too deeply (more than {MAX_DEPTH} levels)")
    return data


def read_config_file(path: Path):
    """One YAML file parsed with the config limits (UTF-8, aliases, depth, size)."""
    return _parse_yaml(Path(path))


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path in seen:
        raise ConfigError(f"{path}: 'base:' files include each other in a loop")
    data = _parse_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, found {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: expected a file path, got {base!r}")
    return _merge(_read_yaml(_resolve(path.parent / base), (*seen, path)), data)


def find_config(path: str | Path) -> Path:
    """``path`` itself when it exists; else, for ``configs/...`` paths and bare experiment
    names (``digits_quick``), the copy shipped in the package, so an installed liteconv
    runs the README's commands from any folder; else ``path`` (reading it says it is
    missing)."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    parts = path.parts
    if parts and parts[0] == "configs":
        candidate = packaged_configs().joinpath(*parts[1:])
    elif len(parts) == 1:
        candidate = packaged_configs() / "experiments" / path.with_suffix(".yaml").name
    else:
        return path
    return candidate if candidate.is_file() else path


def _resolve(path: Path) -> Path:
    try:
        return path.resolve(strict=False)
    except (OSError, RuntimeError) as err:  # symlink loops: RuntimeError before Python 3.13
        raise ConfigError(f"{path}: cannot resolve the path ({err})") from None


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "kwargs":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _apply_overrides(data: dict, overrides: dict[str, Any], source: str) -> dict:
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{source}: --set {dotted}: '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return data


EXPERIMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_experiment_name(name: str, source: str, key: str = "experiment") -> str:
    """A run folder name: letters, digits, ``._-``; no ``/``, no ``..``, not empty."""
    if not isinstance(name, str) or not EXPERIMENT_NAME.match(name) or ".." in name:
        raise ConfigError(
            f"{source}: {key}: {name!r} is not a plain name (letters, digits, '.', '_', '-'; "
            "no '/' or '..'); it names the folder runs/<experiment>/"
        )
    return name


def _validate(cfg: Config, source: str) -> None:
    check_experiment_name(cfg.experiment, source)
    size = cfg.data.image_size
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ConfigError(f"{source}: data.image_size: expected [height, width], got {size!r}")
    shape = cfg.data.synthetic_shape
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(
            f"{source}: data.synthetic_shape: expected [height, width, channels], got {shape!r}"
        )
    if cfg.data.name == "image_folder" and not (cfg.data.path or cfg.data.train_path):
        raise ConfigError(
            f"{source}: data.path: image_folder needs the folder of class folders "
            "(or data.train_path and data.test_path)"
        )
    if (cfg.data.val_path or cfg.data.test_path) and not cfg.data.train_path:
        raise ConfigError(
            f"{source}: data.train_path: needed with data.test_path/data.val_path "
            "(the folder of training class folders)"
        )
    if cfg.data.train_path and cfg.data.name != "image_folder":
        raise ConfigError(f"{source}: data.train_path: only for data.name image_folder")
    if cfg.data.name == "tfds" and not cfg.data.tfds_name:
        raise ConfigError(f"{source}: data.tfds_name: tfds needs a dataset name, e.g. cifar10")
    if cfg.train.warmup_epochs >= cfg.train.epochs and cfg.train.warmup_epochs:
        raise ConfigError(
            f"{source}: train.warmup_epochs: {cfg.train.warmup_epochs} must be below "
            f"train.epochs ({cfg.train.epochs})"
        )
    if not cfg.export.modes:
        raise ConfigError(
            f"{source}: export.modes: expected at least one of {', '.join(EXPORT_MODES)}"
        )
    if not cfg.export.per_channel and cfg.export.prune_sparsity:
        raise ConfigError(
            f"{source}: export.per_channel: false cannot be combined with export.prune_sparsity "
            "(sparsity-preserving QAT is per-channel)"
        )
    if cfg.bench.threads is not None and (not cfg.bench.threads or min(cfg.bench.threads) < 1):
        raise ConfigError(
            f"{source}: bench.threads: expected positive integers, got {cfg.bench.threads!r}"
        )


def validate_model(cfg: Config) -> None:
    """Check ``model.name`` and ``model.kwargs`` against the registry (imports TensorFlow)."""
    from liteconv.keras_layers import list_models, model_kwargs
    from liteconv.keras_layers.models import nullable_kwargs

    if cfg.model.init_from:  # the architecture comes from the file, not the registry
        return
    if cfg.model.name not in list_models():
        raise ConfigError(
            f"{cfg.source}: model.name: unknown model {cfg.model.name!r}; allowed: "
            f"{', '.join(list_models())}"
        )
    allowed = model_kwargs(cfg.model.name)
    unknown = sorted(set(cfg.model.kwargs) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{cfg.source}: unknown key 'model.kwargs.{unknown[0]}' for {cfg.model.name}; "
            f"allowed: {', '.join(allowed)}"
        )
    nullable = nullable_kwargs(cfg.model.name)
    for key, value in cfg.model.kwargs.items():
        default = allowed[key]
        if value is None and key in nullable:
            continue
        expected = bool if isinstance(default, bool) else (
            (int, float) if isinstance(default, (int, float)) else type(default))  # fmt: skip
        if default is not None and (
            not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool)
        ):
            raise ConfigError(
                f"{cfg.source}: model.kwargs.{key}: expected {type(default).__name__} like the "
                f"default {default!r}, got {value!r}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{cfg.source}: model.kwargs.{key}: expected a finite number")


def config_from_dict(data: dict, source: str = "<dict>") -> Config:
    """Build and validate a ``Config`` from plain data (a run's ``config.yaml``)."""
    cfg = build(Config, data, "", source)
    cfg.source = source
    _validate(cfg, source)
    return cfg


def load_config(
    path: str | Path, overrides: dict[str, Any] | None = None, *, check_model: bool = True
) -> Config:
    """Load a YAML config (following ``base:``), apply dotted overrides and validate.

    Args:
        path: the YAML file.
        overrides: ``{"train.epochs": 1, ...}`` applied after the file.
        check_model: also check the model name and kwargs against the registry.

    Raises:
        ConfigError: one line naming the file, the key and what is allowed.
    """
    path = find_config(path)
    data = _apply_overrides(_read_yaml(_resolve(path)), dict(overrides or {}), str(path))
    data.setdefault("experiment", path.stem)
    cfg = config_from_dict(data, str(path))
    if check_model:
        validate_model(cfg)
    return cfg


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
