"""Declaring a setting and checking a value against it.

:func:`setting` makes a schema field and stores its doc line, group and range checks (``min``,
``max``, ``gt``, ``lt``, ``choices``, ``each_min``, ``each_choice``) in the field's metadata;
:func:`check_value` applies them. The schema classes live in :mod:`pipeline.config.schema`.

One source of truth for the environment and reward settings: the ``env`` and ``reward`` groups of
:class:`PPOConfig` are the only place their defaults and ranges are declared.
``ppo_approach.trading_env.EnvConfig`` and ``ppo_approach.reward_functions.RewardConfig`` list the
same names and types (so the env reads plain typed attributes), take their defaults from here with
:func:`schema_default` and check their values with :func:`check_settings`, which applies the same
metadata; a test checks that their fields are exactly these groups. So a value the env or the reward
would refuse is refused by the config loader first, before step 1.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import field
from typing import Any, TypeVar

from pipeline.config import registry as model_registry

T = TypeVar("T")


def setting(default: Any, doc: str, group: str = "", **checks: Any) -> Any:
    """A dataclass field with its doc line, group and checks (min, max, gt, lt, choices)."""
    meta = {"doc": doc, "group": group, **checks}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for sequence defaults")
    return field(default=default, metadata=meta)


def model_setting(key: str) -> Any:
    """The field of the classifier setting ``key`` (``lstm_units``) of the ``model`` group: its
    default, doc line and bounds are the model registry's (:mod:`pipeline.config.registry`)."""
    s = model_registry.config_setting(key)
    return setting(s.default, s.doc, "model", **s.checks())


# ================================================================ checks


def field_map(cls: type) -> dict[str, dataclasses.Field[Any]]:
    """``{name: Field}`` of a schema dataclass, in declaration order."""
    return {f.name: f for f in dataclasses.fields(cls)}


MAX_INT = 2**31 - 1
"""Largest integer any key accepts: counts, sizes and seeds reach torch, numpy and SB3 as C ints
(``total_timesteps = 1e30`` once parsed as a 31-digit integer and was accepted)."""

MAX_FLOAT = 1e15
"""Largest magnitude any float key accepts; beyond it money, sizes and rates are typos."""


def _show(v: Any) -> str:
    """A number for an error message: ``1e+30`` rather than the 31 digits of ``int(1e30)``."""
    if isinstance(v, int) and abs(v) > MAX_INT:
        return f"{v:.3g}"
    return str(v)


def _expected_range(m: Mapping[str, Any]) -> str:
    """The range a field accepts, e.g. ``> 0 and <= 1`` (empty when it has no bounds)."""
    parts = [
        f"{op} {m[key]}"
        for key, op in (("min", ">="), ("each_min", ">="), ("gt", ">"), ("max", "<="), ("lt", "<"))
        if key in m
    ]
    return " and ".join(parts)


def check_value(f: dataclasses.Field[Any], value: Any) -> None:
    """Raise ValueError, saying what was expected, when ``value`` breaks the range of ``f``."""
    m = f.metadata
    if value is None:
        return
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if isinstance(v, bool) or isinstance(v, str):
            continue
        # NaN compares False with everything, so it would pass every range check below and
        # crash (or delete checkpoints) hours later; inf is as useless.
        if isinstance(v, float) and not math.isfinite(v):
            bounds = _expected_range(m)
            raise ValueError(
                f"{v} is not a finite number; expected " + (bounds if bounds else "a finite number")
            )
        if isinstance(v, int) and abs(v) > MAX_INT:
            raise ValueError(f"{_show(v)} is out of range; expected <= {MAX_INT}")
        if isinstance(v, float) and abs(v) > MAX_FLOAT:
            raise ValueError(f"{_show(v)} is out of range; expected <= {MAX_FLOAT:g}")
        if "min" in m and v < m["min"]:
            raise ValueError(f"{v} is out of range; expected >= {m['min']}")
        if "each_min" in m and v < m["each_min"]:
            raise ValueError(f"{v} is out of range; expected every item >= {m['each_min']}")
        if "gt" in m and v <= m["gt"]:
            raise ValueError(f"{v} is out of range; expected > {m['gt']}")
        if "max" in m and v > m["max"]:
            raise ValueError(f"{v} is out of range; expected <= {m['max']}")
        if "lt" in m and v >= m["lt"]:
            raise ValueError(f"{v} is out of range; expected < {m['lt']}")
    if "choices" in m and value not in m["choices"]:
        raise ValueError(f"{value!r} is not allowed; expected one of {', '.join(m['choices'])}")
    if "each_choice" in m:
        for v in values:
            if v not in m["each_choice"]:
                raise ValueError(
                    f"{v!r} is not allowed; expected items from {', '.join(m['each_choice'])}"
                )


# ================================================================ settings groups used elsewhere


def schema_default(schema: type, name: str) -> Any:
    """The default of ``schema.name``, for a dataclass that reuses a group of its settings."""
    return field_map(schema)[name].default


def _interval(m: Mapping[str, Any]) -> str:
    """The bounds of a field as an interval, e.g. ``in [0, 1)``, or as ``> 0`` when one-sided."""
    low = f"[{m['min']}" if "min" in m else f"({m['gt']}" if "gt" in m else None
    high = f"{m['max']}]" if "max" in m else f"{m['lt']})" if "lt" in m else None
    if low and high:
        return f"in {low}, {high}"
    return _expected_range(m)


def _within_bounds(m: Mapping[str, Any], v: float) -> bool:
    """Whether the number ``v`` is finite and inside the field's min/gt/max/lt bounds."""
    return (
        math.isfinite(v)
        and ("min" not in m or v >= m["min"])
        and ("gt" not in m or v > m["gt"])
        and ("max" not in m or v <= m["max"])
        and ("lt" not in m or v < m["lt"])
    )


@functools.cache
def _type_hints(schema: type) -> dict[str, Any]:
    """``typing.get_type_hints`` of a schema class, once (it re-evaluates every annotation)."""
    return typing.get_type_hints(schema)


def check_settings(obj: Any, schema: type, error: type[Exception], label: str) -> None:
    """Check every field of the dataclass ``obj`` against the same-named field of ``schema``.

    Raises ``error("{label}: {key} = {value!r}, expected {range}")`` for the first value that
    :func:`check_value` refuses, or an int setting given a fractional number; so ``EnvConfig`` and
    ``RewardConfig`` accept exactly what the config loader accepts.
    """
    fields = field_map(schema)
    hints = _type_hints(schema)
    for f in dataclasses.fields(obj):
        key, value = f.name, getattr(obj, f.name)
        m = fields[key].metadata
        try:
            check_value(fields[key], value)
        except (ValueError, TypeError) as exc:
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            bounds = _interval(m)
            if numeric and bounds and not _within_bounds(m, float(value)):
                raise error(f"{label}: {key} = {value!r}, expected {bounds}") from None
            raise error(f"{label}: {key} = {value!r}: {exc}") from None
        whole = isinstance(value, (int, float)) and value == int(value)
        if hints[key] is int and not whole:
            raise error(f"{label}: {key} = {value!r}, expected an integer")


def settings_from(cls: type[T], source: Any) -> T:
    """The dataclass ``cls`` built from the same-named attributes of ``source`` (a
    ``PPOConfig``), each converted to the type of the field's default (int, float, bool)."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    return cls(**{f.name: _type_of(f.default)(getattr(source, f.name)) for f in fields})


def _type_of(default: Any) -> Callable[[Any], Any]:
    """The converter for a field's default value (``int``, ``float`` or ``bool``)."""
    return type(default)
