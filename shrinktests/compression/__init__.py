"""Compression methods: one small module each, behind one ABC and one registry."""

from shrinktests.compression.base import (
    ConfigError,
    Method,
    MethodUnavailable,
    TensorError,
    build_method,
    known_methods,
    register,
)
from shrinktests.compression.scope import Scope

__all__ = [
    "ConfigError",
    "Method",
    "MethodUnavailable",
    "Scope",
    "TensorError",
    "build_method",
    "known_methods",
    "register",
]
