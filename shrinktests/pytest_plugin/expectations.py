"""What a test is expected to do: the one place that turns known failures, accepted
regressions and ``expect = "breaks"`` into xfail marks.

Four sources, one data model (:class:`Expectation`), decided in this order:

1. a test-name glob in the config's own ``known_failures`` (or ``[settings.atlas]
   known_failures`` for an atlas scope): a strict xfail;
2. a config marked ``expect = "breaks"``: its behaviour tests are xfails, strict where the
   kind says so (drift must fail on every prompt);
3. ``--shrink-accept-failures``: every behaviour test is a non-strict xfail, so the run
   records what fails without failing;
4. an accepted regression in ``snapshots/accepted/<config>.toml``: a strict xfail. Decided at
   setup (:func:`accepted`), since only a record made for this model and config applies and
   the fingerprints need the model source. For a config whose weights depend on the CPU
   (GPTQ) and whose record was made on another one, :func:`on_another_cpu` decides instead.

Pure functions of names and settings; the plugin only applies the marks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shrinktests.pytest_plugin.kinds import TestKind

if TYPE_CHECKING:
    from shrinktests.spec.files import CompressionConfig

#: reason prefix of the non-strict xfail marker that records failures in accept mode
RECORDING = "recording failures for --shrink-accept-failures"


@dataclass(frozen=True)
class Expectation:
    """An xfail: ``strict`` ones fail the run when the test passes (XPASS(strict))."""

    strict: bool
    reason: str


@dataclass(frozen=True)
class Decision:
    """What collection decides for one test item."""

    expectation: Expectation | None = None
    #: whether the config's accepted regressions decide the item at setup
    check_accepted: bool = False


def name_matches(name: str, pattern: str) -> bool:
    """Glob match of a test name where only ``*`` and ``?`` are wildcards (``[`` is literal,
    since every parametrized test name contains brackets)."""
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, name) is not None


def _first_match(name: str, globs: Iterable[str]) -> str | None:
    return next((g for g in globs if name_matches(name, g)), None)


def decide(kind: TestKind, test: str, config: CompressionConfig | None, *,
           atlas_known: Iterable[str] = (), accept: bool = False) -> Decision:
    """The expectation of test ``test`` (its full name, with parameters) at collection."""
    if kind.atlas:
        glob = _first_match(test, atlas_known)
        return Decision(Expectation(True, f"known sensitive scope (listed as {glob!r} in "
                                          "[settings.atlas] known_failures)") if glob else None)
    if config is None:
        return Decision()
    glob = _first_match(test, config.known_failures)
    if glob is not None:
        return Decision(Expectation(True, f"known failure of config {config.name!r} (listed as "
                                          f"{glob!r} in known_failures)"))
    if not kind.behaviour:
        return Decision()
    if config.expect == "breaks":
        return Decision(Expectation(kind.strict_when_breaks,
                                    f"config {config.name!r} is marked expect = \"breaks\""))
    if accept:
        return Decision(Expectation(False, RECORDING))
    return Decision(check_accepted=True)


def accepted(test: str, config: str, failures: Mapping[str, str], where: str,
             other_prompts: str | None = None) -> Expectation | None:
    """A strict xfail when ``test`` is among the config's accepted regressions (``where``
    names the record). An aggregate regression recorded over other prompts than this run's
    (``other_prompts`` says how: a run of one suite, say) is non-strict: fewer prompts can
    leave it within noise, which is not a fix to record."""
    if test not in failures:
        return None
    if other_prompts is not None:
        return Expectation(False, f"accepted aggregate regression of config {config!r} (in "
                                  f"{where}), {other_prompts}: not strict here")
    return Expectation(True, f"accepted regression of config {config!r} (in {where}; refresh "
                             "with --shrink-accept-failures)")


def on_another_cpu(test: str, config: str, failures: Mapping[str, str], why: str,
                   per_prompt: bool) -> Expectation | None:
    """A config whose weights follow this CPU's float rounding, recorded on another CPU: its
    per-prompt checks are advisory here (non-strict xfails: reported, never failing the run),
    since one flipped rounding decision makes it another model, not the recorded one at a
    near-tie. Its aggregate tests still gate; a recorded aggregate failure is non-strict."""
    if per_prompt:
        return Expectation(False, f"advisory on this machine: config {config!r}: {why}; its "
                                  "aggregate tests gate (re-record here with "
                                  "--shrink-accept-failures to make them strict)")
    if test in failures:
        return Expectation(False, f"accepted regression of config {config!r}, recorded on "
                                  f"another CPU ({why})")
    return None
