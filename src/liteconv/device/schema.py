"""Typed sections checked against their dataclass: the one validation path.

``build(cls, data, prefix, source)`` turns plain data (parsed YAML or JSON) into a
dataclass, checking every key (unknown keys are errors), type (``Literal``, lists,
optionals, nested sections) and numeric range (``field(metadata=check(...))``); errors
name the source, the dotted key and what is allowed. Experiment configs
(``liteconv.config``) and deployment targets (``device.targets``) both load through it.
Pure Python: runs on a board.

Example:
    >>> @dataclass
    ... class Section:
    ...     runs: int = field(default=100, metadata=check(1))
    >>> build(Section, {"runs": 0}, "bench", "x.yaml")
    Traceback (most recent call last):
    ConfigError: x.yaml: bench.runs: 0 is out of range; allowed: [1, inf]
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Literal

from .errors import ConfigError


def check(minimum=None, maximum=None, *, exclusive_min=False, exclusive_max=False) -> dict:
    """Field metadata for a numeric range (NaN and infinities are always refused)."""
    return {"min": minimum, "max": maximum, "xmin": exclusive_min, "xmax": exclusive_max}


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
        return build(tp, value, where, source)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if not math.isfinite(value):
            raise ConfigError(f"{source}: {where}: expected a finite number, got {value!r}")
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


def build(cls, data: dict, prefix: str, source: str):
    """Check ``data`` against the dataclass ``cls`` and return an instance (see module doc)."""
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
