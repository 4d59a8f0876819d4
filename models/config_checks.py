"""Type and range checks for the frozen config dataclasses, called from their `__post_init__`.

Architecture arguments arrive from a bundle's JSON and `--model-arg KEY=VALUE`, so a
config must refuse a string where it wants an int, a bool where it wants a
number, NaN, and sizes so large that building the model would exhaust memory.

    check_fields(config, {"d_model": (8, 4096), "dropout": (0.0, 0.99)})

checks every field against its annotation (int, float, bool, str, X | None,
nested dataclasses; Any is not checked) and each named field against its
inclusive [low, high] range; the first problem raises TypeError or ValueError
with one line naming the field.
"""
from __future__ import annotations

import math
import types
import typing
from dataclasses import fields
from typing import Any


def _accepts(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is not None:  # tuple[...], dict[...]: check the container type only
        return isinstance(value, origin)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(hint))
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))


def check_fields(config: Any, ranges: dict[str, tuple[float, float]] | None = None) -> None:
    """Raise TypeError/ValueError (one line) for a field of the wrong type or outside its range."""
    hints = typing.get_type_hints(type(config))
    label = type(config).__name__
    for item in fields(config):
        value = getattr(config, item.name)
        hint = hints.get(item.name, Any)
        if not _accepts(value, hint):
            raise TypeError(f"{label}.{item.name} must be {_type_name(hint)}, got {value!r} "
                            f"({type(value).__name__})")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{label}.{item.name} must be a finite number, got {value!r}")
    for name, (low, high) in (ranges or {}).items():
        value = getattr(config, name)
        if value is not None and not low <= value <= high:
            raise ValueError(f"{label}.{name} must be in [{low:g}, {high:g}], got {value!r}")
