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
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Union, get_args, get_origin

if TYPE_CHECKING:
    import torch

    from shrinktests.compression.context import StepContext
    from shrinktests.compression.scope import Scope


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
        missing = [m for m in self.requires if not _importable(m)]
        if missing:
            raise MethodUnavailable(
                f"method {self.name!r} needs {', '.join(missing)}: {self.pip_hint}".rstrip(": ")
            )

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``from_pretrained`` (only load-time quantizers return any)."""
        return {}

    def apply(self, model: torch.nn.Module, ctx: StepContext) -> torch.nn.Module:
        """Transform a loaded model; put method-specific figures in ``ctx.stats``. Default: no-op
        (load-time quantizers do their work in ``from_pretrained``)."""
        return model

    def uses_calibration(self) -> bool:
        """Whether the result depends on the calibration prompts (then they join the cache key)."""
        return False

    def params(self) -> dict[str, Any]:
        """Canonical, JSON-able parameters (for fingerprints and reports)."""
        return {"method": self.name, **_jsonable(dataclasses.asdict(self))}  # type: ignore[call-overload]


class ScopedMethod(Method):
    """A method that works layer by layer on the linear modules of a :class:`Scope`.

    Subclasses declare a ``scope`` field and implement :meth:`apply_to`; a mixed-precision rule
    hands :meth:`apply_to` only the modules no earlier rule took.
    """

    if TYPE_CHECKING:  # a dataclass field of each subclass; not evaluated at run time
        scope: Scope
    #: whether it rewrites float weights (it then cannot follow a quantizer on the same layer)
    rewrites_weights: ClassVar[bool] = True

    def apply(self, model: torch.nn.Module, ctx: StepContext) -> torch.nn.Module:
        modules = list(self.scope.linear_modules(model))
        if not modules:
            raise ConfigError("scope", "matches no linear layer of this model")
        self.check_float(modules)
        return self.apply_to(model, modules, ctx)

    def check_float(self, modules: list[tuple[str, torch.nn.Linear]]) -> None:
        """Refuse weights an earlier step already quantized: rounding or pruning packed codes
        would silently measure nonsense."""
        import torch

        if not self.rewrites_weights:
            return
        for name, module in modules:
            w = module.weight
            if type(w) not in (torch.nn.Parameter, torch.Tensor) or not w.is_floating_point():
                raise ConfigError(
                    "method", f"{self.name!r} rewrites float weights, but {name} is already "
                    f"quantized ({type(w).__name__}); put it before the quantizer")

    @abstractmethod
    def apply_to(
        self, model: torch.nn.Module, modules: list[tuple[str, torch.nn.Linear]], ctx: StepContext
    ) -> torch.nn.Module:
        """Compress exactly ``modules`` (name, module) of ``model``."""


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False


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
    if isinstance(hint, type) and issubclass(hint, Method):
        # a nested step (a mixed-precision rule, the quantizer inside another method)
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a table with method = \"...\", got {value!r}")
        method = build_method(value)
        if not isinstance(method, hint):
            usable = [n for n, c in sorted(_REGISTRY.items()) if issubclass(c, hint)]
            raise ConfigError("method", f"{method.name!r} cannot be used here; "
                              f"use one of {', '.join(usable)}")
        return method
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
    from shrinktests.compression import (  # noqa: F401
        ao,
        blockwise,
        bnb,
        dtype,
        lowrank,
        mixed,
        prune,
        quanto,
    )
