"""One config value as text and back: :func:`parse_value` reads it with the field's type and
checks its range, :func:`format_value` writes it the way the config files spell it."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from typing import Any

from pipeline.config.checks import check_value, field_map

# ================================================================ values


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _suggest(key: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def parse_value(cls: type, key: str, text: str) -> Any:
    """Parse ``text`` as the type of ``cls.key`` and check its range; ValueError if not."""
    f = field_map(cls)[key]
    hint = _hints(cls)[key]
    raw = text.strip()
    optional = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = True, args[0]
    if optional and raw.lower() in ("auto", "none", ""):
        return None
    if raw == "":
        raise ValueError("is empty")
    if typing.get_origin(hint) is tuple:
        (item_type, _ellipsis) = typing.get_args(hint)
        items = [s.strip() for s in raw.split(",")]
        if any(s == "" for s in items):
            raise ValueError(f"{raw!r} has an empty item; expected a comma-separated list")
        value: Any = tuple(_parse_scalar(item_type, s) for s in items)
    else:
        value = _parse_scalar(hint, raw)
    check_value(f, value)
    return value


def _parse_scalar(typ: type, raw: str) -> Any:
    if typ is bool:
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"{raw!r} is not a boolean; expected true or false")
    if typ is int:
        try:
            return int(raw.replace("_", ""))
        except ValueError:
            try:
                as_float = float(raw)
            except ValueError:
                as_float = None
            if as_float is not None and as_float.is_integer():
                return int(as_float)
            raise ValueError(f"{raw!r} is not an integer") from None
    if typ is float:
        try:
            return float(raw.replace("_", ""))
        except ValueError:
            raise ValueError(f"{raw!r} is not a number") from None
    return raw


def format_value(value: Any) -> str:
    """A config value as the file format writes it (``auto``, ``a, b``, ``true``), inverse of
    :func:`parse_value`."""
    if value is None:
        return "auto"
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
