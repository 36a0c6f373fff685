"""Compression methods: one small module each, behind one ABC and one registry."""

from shrinktests.compression.base import Method, MethodUnavailable, TensorError
from shrinktests.compression.registry import build_method, known_methods, register
from shrinktests.compression.scope import Scope
from shrinktests.core.schema import ConfigError

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
