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
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from liteconv.errors import LiteconvError


class ConfigError(LiteconvError):
    """A config file or override is wrong; the message names file, key and what is allowed."""


def _check(minimum=None, maximum=None, *, exclusive_min=False, exclusive_max=False):
    return {"min": minimum, "max": maximum, "xmin": exclusive_min, "xmax": exclusive_max}


@dataclass
class ModelConfig:
    """``model:`` — a registered model and its builder arguments."""

    name: str = "flattened_cnn"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """``data:`` — which dataset, how it is split and fed to the model."""

    name: Literal["fashion_mnist", "digits", "image_folder", "tfds", "synthetic"] = "fashion_mnist"
    path: str | None = None  # fashion_mnist IDX folder or image_folder root
    train_path: str | None = None  # image_folder: explicit split folders (else found in path)
    val_path: str | None = None
    test_path: str | None = None
    tfds_name: str | None = None
    image_size: list[int] | None = None  # [height, width] the model sees; null: native
    channels: int | None = field(default=None, metadata=_check(1, 3))  # null: native
    validation_split: float = field(default=0.1, metadata=_check(0, 1, exclusive_max=True))
    test_split: float = field(
        default=0.2, metadata=_check(0, 1, exclusive_min=True, exclusive_max=True)
    )
    split_seed: int = 0  # the split never depends on the training seed
    limit: int | None = field(default=None, metadata=_check(1))  # cap on training samples
    cache: bool = True
    shuffle_buffer: int = field(default=10000, metadata=_check(1))
    synthetic_samples: int = field(default=512, metadata=_check(8))
    synthetic_shape: list[int] = field(default_factory=lambda: [28, 28, 1])
    synthetic_classes: int = field(default=10, metadata=_check(2))


@dataclass
class AugmentConfig:
    """``train.augmentation:`` — on-the-fly training augmentation."""

    flip: bool = False  # random left-right flip (not for digits or text)
    translate: int = field(default=0, metadata=_check(0))  # max shift in pixels


@dataclass
class TrainConfig:
    """``train:`` — the fit schedule and the devices it runs on."""

    epochs: int = field(default=10, metadata=_check(1))
    batch_size: int = field(default=128, metadata=_check(1))
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    learning_rate: float = field(default=1e-3, metadata=_check(0, exclusive_min=True))
    momentum: float = field(default=0.9, metadata=_check(0, 1, exclusive_max=True))
    lr_schedule: Literal["cosine", "constant", "step"] = "cosine"
    warmup_epochs: int = field(default=0, metadata=_check(0))
    label_smoothing: float = field(default=0.0, metadata=_check(0, 1, exclusive_max=True))
    weight_decay: float = field(default=0.0, metadata=_check(0))
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 42
    deterministic: bool = False
    mixed_precision: Literal["auto", "on", "off"] = "auto"  # auto: on when a GPU is used
    xla: bool = False
    device: Literal["auto", "cpu", "gpu"] = "auto"
    early_stopping_patience: int | None = field(default=None, metadata=_check(1))
    verbose: int = field(default=1, metadata=_check(0, 2))


@dataclass
class ExportConfig:
    """``export:`` — read by ``liteconv export``."""

    modes: list[Literal["fp32", "fp16", "dynamic", "int8", "int16x8", "qat_int8"]] = field(
        default_factory=lambda: ["fp32", "qat_int8"]
    )
    qat_epochs: int = field(default=1, metadata=_check(0))
    qat_learning_rate: float = field(default=1e-4, metadata=_check(0, exclusive_min=True))
    prune_sparsity: float | None = field(
        default=None, metadata=_check(0, 1, exclusive_min=True, exclusive_max=True)
    )
    prune_epochs: int = field(default=2, metadata=_check(1))
    prune_learning_rate: float = field(default=5e-4, metadata=_check(0, exclusive_min=True))
    io_type: Literal["float32", "int8", "uint8"] = "float32"
    per_channel: bool = True  # false: one weight scale per tensor (smaller depthwise-heavy files)
    calibration_samples: int = field(default=300, metadata=_check(1))


@dataclass
class BenchConfig:
    """``bench:`` — read by ``liteconv bench``."""

    threads: list[int] = field(default_factory=lambda: [1, 2, 4])
    warmup: int = field(default=10, metadata=_check(0))
    runs: int = field(default=100, metadata=_check(1))
    runtime: Literal["auto", "litert", "tflite_runtime", "tf"] = "auto"
    target: str | None = None


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


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path in seen:
        raise ConfigError(f"{path}: 'base:' files include each other in a loop")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; see configs/experiments/") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}:{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, found {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: expected a file path, got {base!r}")
    return _merge(_read_yaml((path.parent / base).resolve(), (*seen, path)), data)


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


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, str(tp)
    )


def _coerce(value, tp, where: str, source: str):
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{source}: {where}: expected {_type_name(tp)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where, source)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin is list:
        if not isinstance(value, list):
            raise bad
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad
        return _build(tp, value, where, source)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported config type {tp}")  # a bug in this module, not user input


def _check_range(value, meta, where: str, source: str) -> None:
    if value is None or not meta or isinstance(value, bool):
        return
    lo, hi = meta.get("min"), meta.get("max")
    too_low = lo is not None and (value <= lo if meta.get("xmin") else value < lo)
    too_high = hi is not None and (value >= hi if meta.get("xmax") else value > hi)
    if too_low or too_high:
        left = "(" if meta.get("xmin") else "["
        right = ")" if meta.get("xmax") else "]"
        span = f"{left}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}{right}"
        raise ConfigError(f"{source}: {where}: {value!r} is out of range; allowed: {span}")


def _build(cls, data: dict, prefix: str, source: str):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"{source}: unknown key '{where}{unknown[0]}'; allowed in "
            f"{prefix or 'the top level'}: {', '.join(fields)}"
        )
    values = {}
    for name, value in data.items():
        where = f"{prefix}.{name}" if prefix else name
        coerced = _coerce(value, hints[name], where, source)
        _check_range(coerced, fields[name].metadata, where, source)
        values[name] = coerced
    return cls(**values)


def _validate(cfg: Config, source: str) -> None:
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
    if any(t < 1 for t in cfg.bench.threads):
        raise ConfigError(
            f"{source}: bench.threads: expected positive integers, got {cfg.bench.threads!r}"
        )


def validate_model(cfg: Config) -> None:
    """Check ``model.name`` and ``model.kwargs`` against the registry (imports TensorFlow)."""
    from liteconv.keras_layers import list_models, model_kwargs

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


def config_from_dict(data: dict, source: str = "<dict>") -> Config:
    """Build and validate a ``Config`` from plain data (a run's ``config.yaml``)."""
    cfg = _build(Config, data, "", source)
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
    path = Path(path)
    data = _apply_overrides(_read_yaml(path.resolve()), dict(overrides or {}), str(path))
    data.setdefault("experiment", path.stem)
    cfg = config_from_dict(data, str(path))
    if check_model:
        validate_model(cfg)
    return cfg


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
