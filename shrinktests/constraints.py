"""Constraint checkers: machine-checkable requirements of a prompt, as pure functions of text.

Each checker is a frozen dataclass registered by name; its fields are its parameters (so a
suite file is validated like a configs file) and :meth:`Checker.check` returns whether the
text satisfies it plus a short detail for the failure message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from shrinktests.compression.base import ConfigError, coerce_dataclass, nearest_name


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str


class Checker:
    """Base of every constraint checker."""

    name: ClassVar[str]

    def check(self, text: str) -> Outcome:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{self.name}({params})"


_CHECKERS: dict[str, type[Checker]] = {}


def checker(cls: type[Checker]) -> type[Checker]:
    if cls.name in _CHECKERS:
        raise ValueError(f"checker {cls.name!r} is registered twice")
    _CHECKERS[cls.name] = cls
    return cls


def known_checkers() -> list[str]:
    return sorted(_CHECKERS)


def build_checker(spec: Mapping[str, Any]) -> Checker:
    """Build a checker from a suite table such as ``{check = "contains", value = "391"}``."""
    name = spec.get("check")
    if not isinstance(name, str) or name not in _CHECKERS:
        hint = nearest_name(name, _CHECKERS) if isinstance(name, str) else ""
        raise ConfigError(
            "check", f"unknown checker {name!r}{hint}; known: {', '.join(known_checkers())}"
        )
    params = {k: v for k, v in spec.items() if k != "check"}
    result: Checker = coerce_dataclass(_CHECKERS[name], params)
    return result


def _fold(text: str, case_sensitive: bool) -> str:
    return text if case_sensitive else text.casefold()


@checker
@dataclass(frozen=True)
class Contains(Checker):
    """The output contains ``value`` (case-insensitive unless told otherwise)."""

    name: ClassVar[str] = "contains"
    value: str
    case_sensitive: bool = False

    def check(self, text: str) -> Outcome:
        ok = _fold(self.value, self.case_sensitive) in _fold(text, self.case_sensitive)
        return Outcome(ok, f"{'found' if ok else 'missing'} {self.value!r}")


@checker
@dataclass(frozen=True)
class NotContains(Checker):
    """The output does not mention ``value``."""

    name: ClassVar[str] = "not_contains"
    value: str
    case_sensitive: bool = False

    def check(self, text: str) -> Outcome:
        found = _fold(self.value, self.case_sensitive) in _fold(text, self.case_sensitive)
        return Outcome(not found, f"{'mentions' if found else 'does not mention'} {self.value!r}")


@checker
@dataclass(frozen=True)
class ContainsAny(Checker):
    """At least ``min`` of ``values`` occur in the output (e.g. three Swiss cities)."""

    name: ClassVar[str] = "contains_any"
    values: tuple[str, ...]
    min: int = 1
    case_sensitive: bool = False

    def check(self, text: str) -> Outcome:
        hay = _fold(text, self.case_sensitive)
        found = [v for v in self.values if _fold(v, self.case_sensitive) in hay]
        return Outcome(len(found) >= self.min, f"found {len(found)} of >= {self.min}: {found}")


@checker
@dataclass(frozen=True)
class Regex(Checker):
    """The output matches a regular expression (``re.search``, multiline)."""

    name: ClassVar[str] = "regex"
    pattern: str

    def __post_init__(self) -> None:
        try:
            re.compile(self.pattern)
        except (re.error, OverflowError, RecursionError) as exc:
            raise ConfigError("pattern", f"not a valid regular expression: {exc}") from None

    def check(self, text: str) -> Outcome:
        ok = re.search(self.pattern, text, re.MULTILINE) is not None
        return Outcome(ok, f"{'matches' if ok else 'does not match'} /{self.pattern}/")


@checker
@dataclass(frozen=True)
class WordCount(Checker):
    """The number of whitespace-separated words lies within [min, max]."""

    name: ClassVar[str] = "word_count"
    min: int = 0
    max: int = 1_000_000

    def check(self, text: str) -> Outcome:
        n = len(text.split())
        return Outcome(self.min <= n <= self.max, f"{n} words (allowed {self.min}..{self.max})")
