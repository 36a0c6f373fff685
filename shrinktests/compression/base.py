"""One abstract base and one registry for every compression method.

A method is a frozen dataclass: its fields *are* its parameters, so the configs file is
validated against the field types (unknown keys name the nearest known one) and the canonical
parameters feed the config fingerprint. A method may contribute ``from_pretrained`` keyword
arguments (load-time quantizers such as bitsandbytes) and/or transform a loaded model in place.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import types
import typing
from abc import ABC
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Union, get_args, get_origin

if TYPE_CHECKING:
    import torch


class ConfigError(ValueError):
    """A bad parameter in a config; ``field`` names it so the message can point at it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class MethodUnavailable(RuntimeError):
    """The method cannot run here (missing package, no suitable device): skip, don't crash."""


@dataclass(frozen=True)
class TensorError:
    """Reconstruction error of one tensor the method changed."""

    mse: float
    max_abs: float
    rel_fro: float


class Method(ABC):
    """A compression step. Subclasses are frozen dataclasses registered with :func:`register`."""

    name: ClassVar[str]
    #: import names that must be importable, and the pip line that provides them
    requires: ClassVar[tuple[str, ...]] = ()
    pip_hint: ClassVar[str] = ""

    def check_environment(self) -> None:
        """Raise :class:`MethodUnavailable` with the install line if a dependency is missing."""
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            raise MethodUnavailable(
                f"method {self.name!r} needs {', '.join(missing)}: {self.pip_hint}".rstrip(": ")
            )

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``from_pretrained`` (only load-time quantizers return any)."""
        return {}

    def apply(self, model: torch.nn.Module, stats: dict[str, Any]) -> torch.nn.Module:
        """Transform a loaded model; record what changed in ``stats``. Default: no-op."""
        return model

    def params(self) -> dict[str, Any]:
        """Canonical, JSON-able parameters (for fingerprints and reports)."""
        return {"method": self.name, **_jsonable(dataclasses.asdict(self))}  # type: ignore[call-overload]


_REGISTRY: dict[str, type[Method]] = {}

M = typing.TypeVar("M", bound=type[Method])


def register(cls: M) -> M:
    """Class decorator: make a method available by its ``name`` in configs files."""
    if cls.name in _REGISTRY:
        raise ValueError(f"compression method {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def known_methods() -> list[str]:
    _load_builtin_methods()
    return sorted(_REGISTRY)


def build_method(spec: Mapping[str, Any]) -> Method:
    """Build a method from one table of the configs file (``method = "..."`` plus parameters)."""
    _load_builtin_methods()
    name = spec.get("method")
    if not isinstance(name, str):
        raise ConfigError("method", f"must name one of {', '.join(known_methods())}")
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ConfigError(
            "method", f"unknown method {name!r}{nearest_name(name, _REGISTRY)}; "
            f"known: {', '.join(known_methods())}"
        )
    params = {k: v for k, v in spec.items() if k != "method"}
    return typing.cast(Method, coerce_dataclass(cls, params))


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
            raise ConfigError(f"{key}.{exc.field}" if exc.field else key, exc.problem) from None
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
        return tuple(_coerce(v, item) for v in value)
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
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a table, got {value!r}")
        return coerce_dataclass(hint, value)
    raise TypeError(f"unsupported parameter type {hint!r}")


def nearest_name(name: str, known: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _load_builtin_methods() -> None:
    # Importing the modules runs their @register decorators; cheap (no torch at import time).
    from shrinktests.compression import blockwise, bnb, dtype, prune  # noqa: F401
