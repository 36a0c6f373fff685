"""Accepted regressions: a recorded list of the behaviour tests each config is known to fail.

Small models lose many single constraints under compression, and a release gate should fail
on *new* regressions, not on ones a reviewer already saw. ``--shrink-accept-failures``
records the currently failing tests of every config that ran into
``snapshots/known_failures.toml`` (one line per test, with the first line of its failure as a
comment), the way ``--snapshot-update`` records the baseline. Later runs treat those tests as
strict xfails: still failing is expected; passing again is an XPASS(strict) that asks for the
file to be refreshed. The file is reviewed as a diff in pull requests.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

from shrinktests.cache import atomic_write_text
from shrinktests.spec import SpecError

FILE_NAME = "known_failures.toml"
#: reason prefix of the non-strict xfail marker that records failures in accept mode
RECORDING = "recording failures for --shrink-accept-failures"

Accepted = dict[str, dict[str, str]]  # config → test name → first line of its failure


def load(path: Path) -> Accepted:
    """Read the file (missing: nothing accepted). Sections of configs the current configs
    file lacks are kept, not rejected: a second configs file (an atlas recipe) shares the
    snapshot folder; :func:`unused` names them so a renamed config does not go unnoticed."""
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(path, "", "", f"not valid TOML: {exc}") from None
    out: Accepted = {}
    for config, table in data.items():
        entry = f"[{config}]"
        tests = table.get("tests") if isinstance(table, dict) else None
        if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
            raise SpecError(path, entry, "tests", "must be a list of test names")
        if unknown := set(table) - {"tests"}:
            raise SpecError(path, entry, sorted(unknown)[0], "unknown key; known: tests")
        out[config] = dict.fromkeys(tests, "")
    return out


def unused(accepted: Accepted, configs: Iterable[str]) -> list[str]:
    """Configs with recorded failures that the current configs file does not define."""
    return sorted(set(accepted) - set(configs))


def update(old: Accepted, ran: Mapping[str, Iterable[str]],
           failing: Mapping[str, Mapping[str, str]]) -> Accepted:
    """The new record: for each config, what failed now, plus old entries of tests that did
    not run this time (a ``-k`` subset refreshes only what it ran)."""
    new: Accepted = {}
    for config in sorted(set(old) | set(ran) | set(failing)):
        ran_now = set(ran.get(config, ()))
        kept = {t: why for t, why in old.get(config, {}).items() if t not in ran_now}
        merged = {**kept, **failing.get(config, {})}
        if merged:
            new[config] = dict(sorted(merged.items()))
    return new


def render(accepted: Accepted) -> str:
    lines = [
        "# Behaviour tests each config is known to fail on this model: strict xfails.",
        "# Written by `pytest suites/ --shrink-accept-failures`; review changes like snapshot",
        "# diffs. The comment is the first line of the failure when it was recorded.",
    ]
    for config, tests in accepted.items():
        lines += ["", f"[{_key(config)}]", "tests = ["]
        for name, why in tests.items():
            comment = f"  # {why[:120]}" if why else ""
            lines.append(f"  {_string(name)},{comment}")
        lines.append("]")
    return "\n".join(lines) + "\n"


def save(path: Path, accepted: Accepted) -> None:
    atomic_write_text(path, render(accepted))


def _string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _key(s: str) -> str:
    bare = s.replace("-", "").replace("_", "").isalnum() and s.isascii()
    return s if bare else _string(s)


_BOILERPLATE = [  # what the test name already says, so the comment keeps what was found
    (re.compile(r"^config '[^']*' lost a constraint the baseline meets on \S+: "), "lost "),
    (re.compile(r"^drift of config '[^']*' on \S+ exceeds its budget: "), "drift: "),
    (re.compile(r" in config '[^']*' on \S+: "), ": "),
    (re.compile(r"^config '[^']*' breaks its aggregate budgets over "), "aggregate over "),
    (re.compile(r", case_sensitive=False"), ""),
]


def first_line(text: str) -> str:
    """The first non-empty line of a failure report, one line, without the parts the test
    name repeats (config, prompt), for the comment."""
    for line in text.splitlines():
        if line.strip():
            short = " ".join(line.split())
            for pattern, repl in _BOILERPLATE:
                short = pattern.sub(repl, short)
            return short
    return ""
