"""The registry of compression methods: names in configs files to :class:`Method` classes.

Method modules register themselves with the :func:`register` decorator when they are
imported; the registry imports the built-in ones by name on first use (as transformers'
``quantizers/auto.py`` does), so no module imports all of them at import time and
:mod:`shrinktests.compression.base` stays a leaf. Importing a method module is cheap: torch
and the backends load inside the methods.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Mapping
from typing import Any

from shrinktests.compression.base import Method
from shrinktests.core.schema import NESTED_BUILDERS, ConfigError, coerce_dataclass, nearest_name

#: the modules under shrinktests.compression that define built-in methods
BUILTIN_MODULES = ("ao", "blockwise", "bnb", "dtype", "gptq", "llamacpp", "lowrank", "mixed",
                   "prune", "quanto")

_REGISTRY: dict[str, type[Method]] = {}
_loaded = False

M = typing.TypeVar("M", bound=type[Method])


def register(cls: M) -> M:
    """Class decorator: make a method available by its ``name`` in configs files."""
    if cls.name in _REGISTRY:
        raise ValueError(f"compression method {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin_methods() -> None:
    global _loaded
    if not _loaded:
        for module in BUILTIN_MODULES:
            importlib.import_module(f"shrinktests.compression.{module}")
        _loaded = True


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


def _nested(hint: type, value: Any) -> Method:
    """A step named inside another method's parameters (a mixed-precision rule)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a table with method = \"...\", got {value!r}")
    method = build_method(value)
    if not isinstance(method, hint):
        usable = [n for n, c in sorted(_REGISTRY.items()) if issubclass(c, hint)]
        raise ConfigError("method", f"{method.name!r} cannot be used here; "
                          f"use one of {', '.join(usable)}")
    return method


NESTED_BUILDERS[Method] = _nested
