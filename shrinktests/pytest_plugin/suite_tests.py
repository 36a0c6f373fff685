"""The behavioural tests, imported by ``suites/test_behaviour.py``.

They live in the package so a user's own ``suites/`` folder needs one import line, and every
project gets the same checks. Each test reads results the session computed once per
(config, suite); none of them generates text itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import pytest

from shrinktests.core.generation import Generation
from shrinktests.judging import checks
from shrinktests.pytest_plugin import kinds
from shrinktests.pytest_plugin.kinds import test_kind
from shrinktests.pytest_plugin.snapshot import render
from shrinktests.session.session import Case, ShrinkSession

#: what ``from shrinktests.suite_tests import *`` gives a suites folder: the tests, not the
#: ``test_kind`` decorator (pytest would collect it)
__all__ = ["test_aggregate", "test_atlas", "test_atlas_recipe", "test_baseline_snapshot",
           "test_constraint", "test_degeneration", "test_drift", "test_throughput"]


@test_kind(kinds.SNAPSHOT)
def test_baseline_snapshot(shrink_session: ShrinkSession, shrink_case: Case,
                           shrink_snapshot: Any) -> None:
    """The reference config's output equals the committed snapshot (a diff is for review)."""
    # compared explicitly: this module is not assertion-rewritten, so a bare `assert ==`
    # would lose syrupy's diff
    s = shrink_session
    if s.options.record:
        s.record_reference(shrink_case.suite)
    current = render(s.generation(s.reference.name, shrink_case), shrink_case.prompt.text,
                     s.source.describe(), s.reference, s.settings(shrink_case.suite).describe())
    if shrink_snapshot != current:
        recalled = shrink_snapshot.executions[shrink_snapshot.num_executions - 1].recalled_data
        note = _near_tie_note(s, shrink_case, current, recalled)
        if note:
            pytest.xfail(note)
        diff = "\n".join(shrink_snapshot.get_assert_diff())
        pytest.fail(f"baseline output of {shrink_case.id} differs from its snapshot:\n{diff}",
                    pytrace=False)


def _near_tie_note(s: ShrinkSession, case: Case, current: str, recalled: Any) -> str | None:
    """If the recorded baseline leaves this run's at a near-tie, say so instead of failing:
    which of two almost equally likely tokens wins depends on the machine's float rounding."""
    from shrinktests.judging.metrics import first_divergence
    from shrinktests.pytest_plugin.snapshot import UPDATE_HINT, recorded_token_ids, same_header

    if not isinstance(recalled, str) or not same_header(recalled, current):
        return None
    recorded = recorded_token_ids(recalled)
    if recorded is None:
        return None
    gen = s.generation(s.reference.name, case)
    step = first_divergence(recorded, list(gen.token_ids))
    margin = gen.margin(step)
    if margin >= s.configs.near_tie_epsilon:
        return None
    return (f"baseline of {case.id} differs from its snapshot from token {step}, where the top-2 "
            f"margin is {margin:.4f} < near_tie_epsilon: a machine-dependent near-tie, not a "
            f"regression (to record this machine's output: {UPDATE_HINT})")


@test_kind(kinds.DRIFT)
def test_drift(shrink_session: ShrinkSession, shrink_config: str, shrink_case: Case) -> None:
    """The config stays within its drift budgets against the baseline on this prompt."""
    s = shrink_session
    suite = shrink_case.suite
    idx = suite.prompts.index(shrink_case.prompt)
    base = s.generation(s.reference.name, shrink_case)
    cand = s.generation(shrink_config, shrink_case)
    tf = s.teacher_forced(shrink_config, suite)[idx]
    budgets = s.configs.get(shrink_config).budgets
    result = checks.drift(base, cand, tf, budgets, s.configs.near_tie_epsilon)
    s.runs[shrink_config].note_drift(shrink_case.id, result)

    def judge_drift(live: Generation) -> str:
        v = checks.drift(base, live, tf, budgets, s.configs.near_tie_epsilon).violations
        return "drift " + ("; ".join(f"{x.budget} but got {x.value:.4g}" for x in v)
                           if v else "within budget")

    _note_flip(s, shrink_config, shrink_case, judge_drift)
    if not result.bounded:
        pytest.skip(f"no drift budget bounds config {shrink_config!r}: give it budgets such as "
                    '["kl_mean <= 1.5", "top1 >= 0.3"], or put them in [settings] for every config')
    if result.violations:
        div = result.divergence if result.divergence is not None else len(base.token_ids)
        _fail(s, shrink_config, checks.drift_message(
            shrink_config, shrink_case.id, shrink_case.prompt.text, result,
            prefix=s.decode(base.token_ids[:div]),
            base_rest=s.decode(base.token_ids[div:]),
            cand_rest=s.decode(cand.token_ids[div:]),
        ))


def _flipped(s: ShrinkSession, name: str, case: Case) -> bool:
    """Whether this machine's output of ``name`` on ``case`` left the accepted one at a
    near-tie, so the accepted output is judged and this machine's is only reported."""
    r = s.replay(name, case)
    return r is not None and r.judges_accepted


def _note_flip(s: ShrinkSession, name: str, case: Case, judge: Callable[[Generation], str]) -> None:
    """When this machine's output left the accepted one at a near-tie, judge it too and keep
    what it would have got: reported beside the verdict, which the accepted output decides."""
    if _flipped(s, name, case):
        s.note_flip_verdict(name, case.id, judge(s.live_generation(name, case)))


def _fail(s: ShrinkSession, name: str, message: str) -> NoReturn:
    """Fail with ``message``, saying so when the config's accepted record was not applied."""
    if stale := s.stale_records.get(name):
        message += (f"\nnote: the accepted outputs and known failures of config {name!r} were "
                    f"not applied: {stale}; re-record them with --shrink-accept-failures")
    pytest.fail(message, pytrace=False)


@test_kind(kinds.DEGENERATION)
def test_degeneration(shrink_session: ShrinkSession, shrink_config: str,
                      shrink_case: Case) -> None:
    """No degeneration mode (loop, soup, silence, truncation, overshoot) over its budget that
    the baseline does not show on the same prompt; the baseline's own modes are reported."""
    s = shrink_session
    budgets = s.configs.get(shrink_config).budgets
    max_items = shrink_case.prompt.max_items
    gen = s.generation(shrink_config, shrink_case)
    result = checks.degeneration(gen, budgets, max_items)
    s.runs[shrink_config].note_degeneration(shrink_case.id, result)
    if shrink_config == s.reference.name:
        if result.modes:
            pytest.xfail(f"the baseline itself shows {', '.join(result.modes)}: "
                         "reported, not a regression")
        return
    base = checks.degeneration(s.generation(s.reference.name, shrink_case), budgets, max_items)
    # whether or not the accepted output degenerates
    _note_flip(s, shrink_config, shrink_case, lambda live: ", ".join(checks.new_modes(
        checks.degeneration(live, budgets, max_items), base)) or "no new degeneration")
    if not result.modes:
        return
    modes = checks.new_modes(result, base)
    if not modes:
        pytest.xfail(f"the baseline shows {', '.join(result.modes)} here too: "
                     "reported, not a regression")
    _fail(s, shrink_config, checks.degeneration_message(
        shrink_config, shrink_case.id, shrink_case.prompt.text, gen, result, modes, max_items))


@test_kind(kinds.CONSTRAINT)
def test_constraint(shrink_session: ShrinkSession, shrink_config: str,
                    shrink_check: tuple[Case, int]) -> None:
    """A constraint the baseline meets must still be met; one it misses is only reported."""
    s = shrink_session
    case, index = shrink_check
    checker = case.prompt.checks[index]
    outcome = s.constraint(shrink_config, case, index)
    s.runs[shrink_config].note_constraint(case.id, index, outcome.ok)
    if shrink_config != s.reference.name:
        _note_flip(s, shrink_config, case, lambda live: (
            f"{'meets' if checker.check(live.text).ok else 'loses'} {checker.name}"))
    if outcome.ok:
        return
    if shrink_config == s.reference.name:
        pytest.xfail(f"baseline misses {checker.describe()}: {outcome.detail}")
    base = s.constraint(s.reference.name, case, index)
    if not base.ok:
        pytest.xfail(f"baseline misses {checker.describe()} too: {base.detail}")
    _fail(s, shrink_config,
          f"config {shrink_config!r} lost a constraint the baseline meets on {case.id}: "
          f"{checker.describe()}: {outcome.detail}\n"
          f"prompt: {case.prompt.text!r}\n"
          + checks.side_by_side("baseline", s.generation(s.reference.name, case).text,
                                shrink_config, s.generation(shrink_config, case).text))


@test_kind(kinds.AGGREGATE)
def test_aggregate(shrink_session: ShrinkSession, shrink_config: str) -> None:
    """Config-level comparison with the baseline over every prompt of every suite, with
    intervals; the config's aggregate budgets (``adherence_drop <= 0.1``,
    ``mean_kl.upper <= 0.5``, ...) are judged so that noise alone never fails."""
    from shrinktests.judging.aggregate import estimates, judge

    s = shrink_session
    found = estimates(s.prompt_outcomes(shrink_config), s.configs.confidence)
    judged = judge(s.configs.get(shrink_config).budgets, found)
    s.runs[shrink_config].note_aggregate(found, judged)
    failed = [j for j in judged if j.verdict == "fails"]
    if failed:
        _fail(s, shrink_config, f"config {shrink_config!r} breaks its aggregate budgets over "
              f"{sum(len(x.prompts) for x in s.options.suites)} prompts:\n"
              + "\n".join(j.describe() for j in judged))


@test_kind(kinds.THROUGHPUT)
def test_throughput(shrink_session: ShrinkSession, shrink_config: str, benchmark: Any) -> None:
    """Time the fixed token workload of ``[settings.benchmark]`` on this config.

    Opt-in (``--shrink-bench`` or a ``--benchmark-*`` save/compare option). The model is built
    before the timed rounds; a warm-up round pays first-call costs (kernel repacking, lazy
    init) so they do not count. ``extra_info`` carries the figures a quantization benchmark
    tabulates (tok/s, speed vs reference, memory, bits per weight), and
    ``--benchmark-compare-fail=mean:10%`` turns a slower release into a failed test.
    """
    from shrinktests.run.engine import ZERO_TIMINGS
    from shrinktests.run.resources import peak_rss_mb, reset_peak_rss

    if getattr(benchmark, "disabled", False):
        pytest.skip("pytest-benchmark is disabled here (it turns itself off under pytest-xdist "
                    "and with --benchmark-disable): run the benchmarks without -n")
    s = shrink_session
    bench = s.configs.benchmark
    s.variant(shrink_config)  # load and compress outside the timed rounds
    rounds: list[Any] = []
    windowed = reset_peak_rss()
    benchmark.group = f"throughput: {bench.prompts} prompts x {bench.new_tokens} new tokens"
    benchmark.pedantic(lambda: rounds.append(s.run_workload(shrink_config)),
                       rounds=bench.rounds, warmup_rounds=bench.warmup_rounds, iterations=1)
    measured = sum(rounds[bench.warmup_rounds:], ZERO_TIMINGS)
    benchmark.extra_info.update(s.record_throughput(
        shrink_config, measured, peak_rss_mb(), "workload" if windowed else "process"))


def _atlas(s: ShrinkSession) -> Any:
    from shrinktests.atlas.measure import AtlasError

    run = s.atlas
    if run is None:
        pytest.skip(f"no [settings.atlas] in {s.configs.path.name}: no atlas to measure")
    try:
        run.suites()
    except AtlasError as exc:  # e.g. --shrink-suite picked other suites
        pytest.skip(str(exc))
    return run


@test_kind(kinds.ATLAS)
def test_atlas(shrink_session: ShrinkSession, shrink_scope: str) -> None:
    """Perturbing only this scope (one layer's attention or MLP) with the atlas method keeps
    the drift within the ``[settings.atlas]`` budgets; a scope that breaks them is one a
    recipe should keep at higher precision."""
    from shrinktests.judging.budgets import violations

    run = _atlas(shrink_session)
    r = run.scope(shrink_scope)
    bad = violations(run.budgets, r.drift.values())
    if bad:
        from shrinktests.atlas.measure import describe_method

        method = describe_method(run.settings.method.params())
        ties = f" ({r.drift.near_ties} at near-ties)" if r.drift.near_ties else ""
        pytest.fail(
            f"scope {shrink_scope} is too sensitive to {method}: "
            + "; ".join(f"{v.budget.metric} = {v.value:.4g} breaks {v.budget}" for v in bad)
            + f"\n  top-1 {r.drift.top1:.3f}; greedy output would leave the baseline at token "
            f"{r.drift.first_divergence:g} (median of {len(r.drift.lengths)} prompts){ties}; "
            f"reconstruction MSE {r.mse:.3g}, relative error {r.rel_error:.3f} over "
            f"{r.tensors} tensors ({r.params / 1e6:.2f}M weights)"
            "\n  keep it at higher precision (python -m shrinktests atlas suggests a recipe)",
            pytrace=False)


@test_kind(kinds.ATLAS)
def test_atlas_recipe(shrink_session: ShrinkSession) -> None:
    """The recipe suggested from the full atlas fits the bits per weight of the uniform config
    it replaces and drifts less than it: the atlas' ranking is worth its measurement."""
    run = _atlas(shrink_session)
    if not run.settings.recipe_possible:
        pytest.skip(f"no recipe for method {run.settings.method.name!r}: a recipe varies "
                    "the blockwise quantizer's bits")
    rec = run.compare_recipe()
    run.check_restored()
    mine, uniform = rec.results[rec.recipe], rec.results[rec.uniform]
    table = "\n".join(f"  {n:<24} {x.bits_per_weight:.3f} bits/w, KL {x.drift.kl_mean:.4f}, "
                      f"top-1 {x.drift.top1:.3f}" for n, x in rec.results.items())
    if mine.bits_per_weight > uniform.bits_per_weight + 1e-9:
        pytest.fail(f"recipe {rec.recipe} uses more bits than {rec.uniform}:\n{table}",
                    pytrace=False)
    if mine.drift.kl_mean > uniform.drift.kl_mean:
        pytest.fail(f"recipe {rec.recipe} drifts more than {rec.uniform} at the same bits per "
                    f"weight: the atlas ranking does not carry over to the whole model\n{table}",
                    pytrace=False)
