"""Constraint checkers: machine-checkable requirements of a prompt, as pure functions of text.

Each checker is a frozen dataclass registered by name; its fields are its parameters (so a
suite file is validated like a configs file) and :meth:`Checker.check` returns whether the
text satisfies it plus a short detail for the failure message.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from shrinktests.core.schema import NESTED_BUILDERS, ConfigError, coerce_dataclass, nearest_name


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


def _nested_checker(cls: type, spec: Any) -> Checker:
    """A check inside a dataclass field (a prompt's ``checks``), built by its ``check`` name."""
    if not isinstance(spec, Mapping):
        raise TypeError(f"expected a table like {{check = \"contains\", value = \"...\"}}, "
                        f"got {spec!r}")
    return build_checker(spec)


NESTED_BUILDERS[Checker] = _nested_checker


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

    def __post_init__(self) -> None:
        if not 1 <= self.min <= len(self.values):
            raise ConfigError("min", f"must be in 1..{len(self.values)} (the number of "
                              f"values), got {self.min}")

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
class StartsWith(Checker):
    """The output, after leading whitespace and Markdown emphasis, starts with ``value``."""

    name: ClassVar[str] = "starts_with"
    value: str
    case_sensitive: bool = False

    def __post_init__(self) -> None:
        if not self.value.strip():
            raise ConfigError("value", "must not be empty: every answer starts with ''")

    def check(self, text: str) -> Outcome:
        head = text.lstrip().lstrip("*_#> ").lstrip()
        ok = _fold(head, self.case_sensitive).startswith(_fold(self.value, self.case_sensitive))
        return Outcome(ok, f"starts with {head[:len(self.value) + 10]!r}")


# ----------------------------------------------------------------------- counting text units

_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+(?=\S)")
_ITEM = re.compile(r"^\s*(?:[-*•+]|\d{1,3}[.)])\s+\S", re.MULTILINE)


def sentences(text: str) -> list[str]:
    """Sentences of prose: split after ``.``, ``!``, ``?`` or ``…`` followed by whitespace.

    A crude rule on purpose (no abbreviation list): the baseline is counted the same way, so a
    miscount shows up in both and is reported rather than failed.
    """
    body = text.strip()
    return [s for s in _SENTENCE_END.split(body) if s.strip()] if body else []


def list_items(text: str) -> int:
    """Lines that start a bulleted (``-``, ``*``, ``•``, ``+``) or numbered (``1.``, ``1)``)
    list item."""
    return len(_ITEM.findall(text))


def lines(text: str) -> list[str]:
    """Non-empty lines, stripped."""
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


@dataclass(frozen=True)
class Count(Checker):
    """Base of the counting checkers: the count of some unit lies within [min, max]
    (``min = max = 3``: exactly three)."""

    unit: ClassVar[str] = "units"
    min: int = 0
    max: int = 1_000_000

    def __post_init__(self) -> None:
        if self.min < 0:
            raise ConfigError("min", f"must be >= 0, got {self.min}")
        if self.max < self.min:
            raise ConfigError("max", f"must be >= min ({self.min}), got {self.max}")

    def count(self, text: str) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def check(self, text: str) -> Outcome:
        n = self.count(text)
        allowed = str(self.min) if self.min == self.max else f"{self.min}..{self.max}"
        unit = self.unit if n != 1 else self.unit.removesuffix("s")
        return Outcome(self.min <= n <= self.max, f"{n} {unit} (allowed {allowed})")


@checker
@dataclass(frozen=True)
class WordCount(Count):
    """The number of whitespace-separated words lies within [min, max]."""

    name: ClassVar[str] = "word_count"
    unit: ClassVar[str] = "words"

    def count(self, text: str) -> int:
        return len(text.split())


@checker
@dataclass(frozen=True)
class SentenceCount(Count):
    """The number of sentences (see :func:`sentences`) lies within [min, max]."""

    name: ClassVar[str] = "sentence_count"
    unit: ClassVar[str] = "sentences"

    def count(self, text: str) -> int:
        return len(sentences(text))


@checker
@dataclass(frozen=True)
class ListItems(Count):
    """The number of list items lies within [min, max]; more than ``max`` is an overshoot."""

    name: ClassVar[str] = "list_items"
    unit: ClassVar[str] = "list items"

    def count(self, text: str) -> int:
        return list_items(text)


@checker
@dataclass(frozen=True)
class LineCount(Count):
    """The number of non-empty lines lies within [min, max] (a haiku has three)."""

    name: ClassVar[str] = "line_count"
    unit: ClassVar[str] = "non-empty lines"

    def count(self, text: str) -> int:
        return len(lines(text))


# ----------------------------------------------------------------------- structured answers

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_START = re.compile(r"^(?:def |class |import |from |async def |@)", re.MULTILINE)


def extract_code(text: str) -> str | None:
    """The Python code of an answer: the first fenced block (``python``/``py`` or unlabelled;
    an unclosed fence runs to the end), else everything from the first line that starts a
    definition or import. ``None`` when the answer holds no code."""
    for lang, body in _FENCE.findall(text):
        if lang.lower() in ("", "python", "py", "python3"):
            return str(body)
    m = _CODE_START.search(text)
    return text[m.start():] if m else None


def _parse_python(text: str) -> tuple[ast.Module | None, str]:
    code = extract_code(text)
    if code is None:
        return None, "no Python code in the output"
    try:
        return ast.parse(code), "parses"
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        msg = exc.msg if isinstance(exc, SyntaxError) else type(exc).__name__
        line = exc.lineno if isinstance(exc, SyntaxError) else "?"
        return None, f"code does not parse: {msg} (line {line})"


@checker
@dataclass(frozen=True)
class PythonParses(Checker):
    """The answer contains Python code that parses (``ast.parse``; nothing is run)."""

    name: ClassVar[str] = "python_parses"

    def check(self, text: str) -> Outcome:
        tree, detail = _parse_python(text)
        return Outcome(tree is not None, detail)


def _functions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


@checker
@dataclass(frozen=True)
class HasDocstring(Checker):
    """The function ``function`` (or, if empty, the first function) has a docstring."""

    name: ClassVar[str] = "has_docstring"
    function: str = ""

    def check(self, text: str) -> Outcome:
        tree, detail = _parse_python(text)
        if tree is None:
            return Outcome(False, detail)
        funcs = [f for f in _functions(tree) if not self.function or f.name == self.function]
        if not funcs:
            return Outcome(False, f"no function {self.function or 'at all'} in the code")
        doc = ast.get_docstring(funcs[0])
        return Outcome(bool(doc), f"{funcs[0].name} {'has' if doc else 'has no'} docstring")


def _expression(field: str, source: str) -> None:
    try:
        ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise ConfigError(field, f"not a Python expression: {source!r} ({exc.msg})") from None
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
        raise ConfigError(field, f"not a usable Python expression ({type(exc).__name__})"
                          ) from None


@checker
@dataclass(frozen=True)
class PythonCall(Checker):
    """Run the answer's code in the sandbox, evaluate ``call`` and compare with ``expect``.

    ``call`` and ``expect`` are Python expressions from the suite (``is_palindrome("abba")``,
    ``True``); without ``expect`` the call only has to return. See
    :mod:`shrinktests.judging.sandbox` for the limits.
    """

    name: ClassVar[str] = "python_call"
    call: str
    expect: str | None = None
    timeout: float = 5.0

    def __post_init__(self) -> None:
        _expression("call", self.call)
        if self.expect is not None:
            _expression("expect", self.expect)
        if not 0 < self.timeout <= 60:
            raise ConfigError("timeout", f"must be in (0, 60] seconds, got {self.timeout}")

    def check(self, text: str) -> Outcome:
        from shrinktests.judging.sandbox import run_python

        tree, detail = _parse_python(text)
        code = extract_code(text)
        if tree is None or code is None:
            return Outcome(False, detail)
        result = run_python(code, self.call, self.expect, timeout=self.timeout)
        return Outcome(result.ok, result.detail)


@checker
@dataclass(frozen=True)
class HandlesEmptyInput(Checker):
    """``function`` accepts the empty input (``empty``, default ``""``) without raising, and
    returns ``expect`` when one is given; run in the sandbox like ``python_call``."""

    name: ClassVar[str] = "handles_empty_input"
    function: str
    empty: str = '""'
    expect: str | None = None

    def __post_init__(self) -> None:
        if not self.function.isidentifier():
            raise ConfigError("function", f"not a Python function name: {self.function!r}")
        _expression("empty", self.empty)
        if self.expect is not None:
            _expression("expect", self.expect)

    def check(self, text: str) -> Outcome:
        return PythonCall(f"{self.function}({self.empty})", self.expect).check(text)


_JSON_FENCE = re.compile(r"```[ \t]*(?:json)?[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def extract_json(text: str) -> Any:
    """The first JSON object of an answer: a fenced block, else the span from the first ``{``
    to the last ``}``. Raises ``ValueError`` with the reason when there is none."""
    candidates = [b for b in _JSON_FENCE.findall(text) if "{" in b]
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        candidates.append(text[start:end + 1])
    if not candidates:
        raise ValueError("no JSON object in the output")
    try:
        return json.loads(candidates[0])
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"not valid JSON: {exc}") from None


@checker
@dataclass(frozen=True)
class JsonKeys(Checker):
    """The answer is (or contains) a JSON object with at least the given keys."""

    name: ClassVar[str] = "json_keys"
    keys: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ConfigError("keys", "list at least one key")

    def check(self, text: str) -> Outcome:
        try:
            obj = extract_json(text)
        except ValueError as exc:
            return Outcome(False, str(exc))
        if not isinstance(obj, dict):
            return Outcome(False, f"JSON is a {type(obj).__name__}, not an object")
        missing = [k for k in self.keys if k not in obj]
        return Outcome(not missing, f"missing keys {missing}" if missing
                       else f"has keys {list(self.keys)}")
