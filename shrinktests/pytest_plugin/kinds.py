"""What kind of shrinktests test a function is, declared on the function itself.

The plugin decides parametrization and expectations (known failures, accepted regressions,
``expect = "breaks"``) per kind. The kind is an attribute set by :func:`test_kind`, so a
project may import the tests under any name, and nothing depends on a function's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
_ATTRIBUTE = "shrinktests_kind"


@dataclass(frozen=True)
class TestKind:
    """How the plugin treats one kind of test."""

    __test__ = False  # not a test class, whatever pytest's naming rules say

    name: str
    #: judges a config's behaviour: known failures, accepted regressions and expect = "breaks"
    #: apply to it (a throughput benchmark of a broken config is still measured)
    behaviour: bool = False
    #: a config marked expect = "breaks" must fail it (strict xfail); a broken model may loop
    #: on one prompt and babble fluently on the next, so only drift is strict
    strict_when_breaks: bool = False
    #: compares a config with the reference, so the reference itself is not a parameter
    skips_reference: bool = False
    #: measures a scope of the sensitivity atlas
    atlas: bool = False
    #: a pytest-benchmark test (opt-in)
    benchmark: bool = False


def test_kind(kind: TestKind) -> Callable[[F], F]:
    """Decorator: declare what kind of shrinktests test a function is."""

    def mark(function: F) -> F:
        setattr(function, _ATTRIBUTE, kind)
        return function

    return mark


test_kind.__test__ = False  # type: ignore[attr-defined]


def kind_of(obj: Any) -> TestKind | None:
    """The kind of a test function, a pytest item or a metafunc (None: not one of ours)."""
    function = getattr(obj, "function", obj)
    kind = getattr(function, _ATTRIBUTE, None)
    return kind if isinstance(kind, TestKind) else None


DRIFT = TestKind("drift", behaviour=True, strict_when_breaks=True, skips_reference=True)
DEGENERATION = TestKind("degeneration", behaviour=True)
CONSTRAINT = TestKind("constraint", behaviour=True)
AGGREGATE = TestKind("aggregate", behaviour=True, skips_reference=True)
SNAPSHOT = TestKind("snapshot")
THROUGHPUT = TestKind("throughput", benchmark=True)
ATLAS = TestKind("atlas", atlas=True)

