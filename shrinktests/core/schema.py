"""TOML tables into typed dataclasses: the one validator behind every section of every file.

A dataclass's fields are its schema. :func:`coerce_dataclass` checks keys (an unknown one names
the nearest known one) and value types by annotation (unions, literals, tuples, nested
dataclasses), and raises :class:`ConfigError` with the path of the bad field, so the caller can
say which file and entry it came from. A type whose tables are built by a registry (a
compression method named inside a mixed-precision rule) registers its builder in
:data:`NESTED_BUILDERS`, which keeps this module a leaf.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Union, get_args, get_origin


class ConfigError(ValueError):
    """A bad parameter in a config; ``field`` names it so the message can point at it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


#: base type -> builder of a value of that type (or a subclass) from its TOML table
NESTED_BUILDERS: dict[type, Callable[[type, Mapping[str, Any]], Any]] = {}


def nearest_name(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or nothing."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def coerce_dataclass(cls: type[Any], params: Mapping[str, Any]) -> Any:
    """Instantiate dataclass ``cls`` from TOML values, checking keys and types by annotation."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in params.items():
        if key not in fields:
            raise ConfigError(
                key, f"unknown parameter{nearest_name(key, fields)}; known: {', '.join(fields)}"
            )
        try:
            kwargs[key] = _coerce(value, hints[key])
        except ConfigError as exc:
            sep = "" if exc.field.startswith("[") else "."
            raise ConfigError(f"{key}{sep}{exc.field}" if exc.field else key, exc.problem) from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(key, str(exc)) from None
    for name, f in fields.items():
        no_default = (f.default is dataclasses.MISSING
                      and f.default_factory is dataclasses.MISSING)
        if no_default and name not in kwargs:
            raise ConfigError(name, "required parameter is missing")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        present = [o for o in options if o is not type(None)]
        if len(present) == 1:  # Optional[X]: X's own errors, with the path of the bad field
            return _coerce(value, present[0])
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if origin is tuple:
        args = get_args(hint)
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected a list, got {type(value).__name__} {value!r}")
        item = args[0]
        out = []
        for i, v in enumerate(value):
            try:
                out.append(_coerce(v, item))
            except ConfigError as exc:
                raise ConfigError(f"[{i}].{exc.field}", exc.problem) from None
            except (TypeError, ValueError) as exc:  # the item itself is bad: name its index
                raise ConfigError(f"[{i}]", str(exc)) from None
        return tuple(out)
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}")
        return value
    if isinstance(hint, type):
        for base, build in NESTED_BUILDERS.items():
            if issubclass(hint, base):
                return build(hint, value)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a table, got {value!r}")
        return coerce_dataclass(hint, value)
    raise TypeError(f"unsupported parameter type {hint!r}")
