"""Typed configs from plain trees: a nested frozen dataclass is the schema.

`from_dict` builds one from a mapping (a YAML file, a saved config.json), rejecting unknown
keys and wrong types with a one-line error; range checks are each dataclass's
`__post_init__` (kr.errors.check).  Its own module, so kr.config and the generator backends'
sections (kr.generators) both use it without importing each other.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from kr.errors import ConfigError


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build a (nested) config dataclass, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"config {prefix or 'root'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown config key {prefix + str(key)!r}; "
                              f"valid keys here: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(hints[k], v, prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # range checks know only their own key: add the section path
        raise ConfigError(str(exc).replace("config ", f"config {prefix}", 1)) from None


def _coerce(tp: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key + ".")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
    if origin is tuple and args[-1] is Ellipsis:  # a grid: a list, one number, or "1.0,1.5"
        items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
        try:
            return tuple(_coerce(args[0], v.strip() if isinstance(v, str) else v, key)
                         for v in items if not (isinstance(v, str) and not v.strip()))
        except ConfigError:
            raise ConfigError(f"config {key}: {value!r} is not a list of numbers "
                              f"(write [1.0, 1.5] in YAML, or 1.0,1.5)") from None
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 5e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"config {key}: expected {getattr(tp, '__name__', tp)}, got {value!r}")
