"""Which tests a run has and how each is expected to end: parametrization over configs,
prompts, constraint checks and atlas scopes; skip, xfail and benchmark decisions at
collection; accepted regressions at setup, once the fingerprints are known."""

from __future__ import annotations

from pathlib import Path

import pytest

from shrinktests.pytest_plugin import expectations
from shrinktests.pytest_plugin.configure import get_session
from shrinktests.pytest_plugin.kinds import AGGREGATE, kind_of
from shrinktests.pytest_plugin.stash import session_key

#: on a behaviour test item: the config whose accepted failures decide whether it is a strict
#: xfail (decided at setup, once the model's and config's fingerprints are known)
accepted_item_key = pytest.StashKey[str]()
#: whether the item judges one prompt (drift, degeneration, constraint), not an aggregate
per_prompt_item_key = pytest.StashKey[bool]()
#: some collected test wants shrinktests' fixtures, but the plugin found no configs file
unconfigured_key = pytest.StashKey[bool]()
#: pytest-benchmark options that mean "I want benchmark numbers": they switch
#: test_throughput on, as --shrink-bench does
_BENCH_OPTIONS = ("benchmark_only", "benchmark_save", "benchmark_autosave",
                  "benchmark_compare", "benchmark_json")
_FIXTURES = ("shrink_config", "shrink_case", "shrink_check", "shrink_scope")


def parametrize(metafunc: pytest.Metafunc) -> None:
    """Each behaviour test over the configs, prompts, constraint checks or atlas scopes it
    asks for (a kind that skips the reference is not run on it)."""
    kind = kind_of(metafunc)
    names = metafunc.fixturenames
    if kind is None and not any(n in names for n in _FIXTURES):
        return
    if metafunc.config.stash.get(session_key, None) is None:
        # raised from pytest_collection_modifyitems instead: raised here, pytest would report
        # it as a collection error of this module (exit code 2), not a usage error (4)
        metafunc.config.stash[unconfigured_key] = True
        return
    session = get_session(metafunc.config)
    if "shrink_config" in names:
        configs = session.configs.names()
        if kind is not None and kind.skips_reference:
            configs = [c for c in configs if c != session.configs.reference]
        metafunc.parametrize("shrink_config", configs, indirect=True, scope="session")
    if "shrink_scope" in names:
        atlas = session.atlas
        if atlas is None:
            metafunc.parametrize("shrink_scope", [pytest.param(None, id="no-atlas", marks=[
                pytest.mark.skip(reason=f"no [settings.atlas] in {session.configs.path.name}")])])
        else:
            metafunc.parametrize("shrink_scope", atlas.scope_ids())
    if "shrink_check" in names:
        pairs = [(c, i) for c in session.cases() for i in range(len(c.prompt.checks))]
        ids = [f"{c.id}-{c.prompt.checks[i].name}" + (f"{i}" if i else "") for c, i in pairs]
        metafunc.parametrize("shrink_check", pairs, ids=ids)
    elif "shrink_case" in names:
        cases = session.cases()
        metafunc.parametrize("shrink_case", cases, ids=[c.id for c in cases])


def benchmarks_requested(config: pytest.Config) -> bool:
    if config.getoption("shrink_bench"):
        return True
    return any(config.getoption(o, default=None) for o in _BENCH_OPTIONS)


def mark_items(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skips, xfails and benchmark opt-ins decided at collection; the items whose accepted
    record decides at setup are marked for :func:`expect_accepted`."""
    session = config.stash.get(session_key, None)
    if session is None:
        if config.stash.get(unconfigured_key, False):
            get_session(config)  # raises the usage error that says what is missing
        return
    bench_on = benchmarks_requested(config)
    atlas = session.configs.atlas
    for item in items:
        kind = kind_of(item)
        if kind is None:
            continue
        if kind.benchmark and not bench_on:
            item.add_marker(pytest.mark.skip(
                reason="throughput benchmarks are opt-in: --shrink-bench, or --benchmark-only "
                "/ --benchmark-autosave / --benchmark-compare"))
        callspec = getattr(item, "callspec", None)
        name = callspec.params.get("shrink_config") if callspec else None
        if name is not None:
            item.user_properties += [("shrink_config", name), ("shrink_behaviour", kind.behaviour)]
        decision = expectations.decide(
            kind, item.name, session.configs.get(name) if name is not None else None,
            atlas_known=atlas.known_failures if atlas else (), accept=session.options.accept)
        if decision.expectation is not None:
            item.add_marker(pytest.mark.xfail(strict=decision.expectation.strict,
                                              reason=decision.expectation.reason))
        if decision.check_accepted and name is not None:
            item.stash[accepted_item_key] = name
            item.stash[per_prompt_item_key] = kind is not AGGREGATE


def expect_accepted(item: pytest.Item) -> None:
    """Accepted regressions are strict xfails. Decided here rather than at collection: only
    a record made for this model and this config applies, and the fingerprints need the model
    source (and, for calibrated methods, the tokenizer). pytest's skipping plugin reads xfail
    marks again when the call starts, so a mark added now counts."""
    name = item.stash.get(accepted_item_key, None)
    session = item.config.stash.get(session_key, None)
    if name is None or session is None:
        return
    from shrinktests.accepted.record import FOLDER, path_for

    where = str(path_for(Path(FOLDER), name))
    foreign = session.foreign_cpu(name)
    if foreign is not None:
        expected = expectations.on_another_cpu(item.name, name, session.accepted_failures(name),
                                               foreign, item.stash[per_prompt_item_key])
    else:
        scope = None if item.stash[per_prompt_item_key] else session.aggregate_scope(name)
        expected = expectations.accepted(item.name, name, session.accepted_failures(name),
                                         where, scope)
    if expected is not None:
        item.add_marker(pytest.mark.xfail(strict=expected.strict, reason=expected.reason))


def count_outcome(item: pytest.Item, report: pytest.TestReport) -> None:
    """Add a behaviour test's outcome to its config's counts (a non-strict xfail that passed
    is an xpass)."""
    name = str(dict(item.user_properties).get("shrink_config", ""))
    session = item.config.stash.get(session_key, None)
    if name and session is not None and (report.when == "call" or report.outcome != "passed"):
        outcome: str = report.outcome
        if hasattr(report, "wasxfail"):  # a non-strict xfail that passed is an xpass
            outcome = "xfailed" if report.skipped else "xpassed" if report.passed else outcome
        session.runs[name].note_outcome(outcome)
