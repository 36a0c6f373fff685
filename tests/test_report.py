"""Merging the summary data of pytest-xdist workers into one table (pure data, no model)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from shrinktests.judging.aggregate import PromptOutcome, judge
from shrinktests.judging.budgets import parse_budget
from shrinktests.judging.stats import Estimate
from shrinktests.report.build import config_power, merge_data
from shrinktests.report.terminal import (
    COLUMNS,
    format_row,
    power_line,
    render,
)
from shrinktests.run.progress import PhaseClock, describe_slowest
from shrinktests.run.results import Throughput


def _part(rows: list[dict[str, Any]], tested: list[str], calls: int,
          **extra: Any) -> dict[str, Any]:
    return {"configs": {m["name"]: m for m in rows}, "tested": tested,
            "examples": {m["name"]: [] for m in rows}, "timeline": {m["name"]: [] for m in rows},
            "details": extra.get("details", {}), "aggregates": extra.get("aggregates", {}),
            "judgements": [], "level": 0.95,
            "near_ties": extra.get("near_ties", []), "cached_timings": False,
            "replays": [], "stale": [], "reference": [], "numerics": "torch x, 2 threads",
            "model": "M@1", "generate_calls": calls, "hits": 1, "misses": 2, "workers": 1,
            "bench": extra.get("bench", {}), "workload": "4 prompts x 32 new tokens",
            "atlas": None, "config_phases": extra.get("config_phases", {}),
            **({"power": extra["power"]} if "power" in extra else {})}


def _row(name: str, verdict: str, **figures: Any) -> dict[str, Any]:
    """A config's metrics as config_metrics() gives them: nothing measured unless given."""
    empty: dict[str, Any] = dict.fromkeys(
        ("tps", "vs_ref", "mb", "bits", "compress_s", "rel_err", "kl", "top1", "div_median",
         "adherence", "mean_tokens", "distinct_2"))
    counts = dict.fromkeys(("diverged", "prompts", "identical", "near_ties", "outputs", "loops",
                            "empty", "truncated", "constraints", "met", "replayed",
                            "replay_near_ties", "changed", "unrecorded"), 0)
    return {**empty, **counts, "name": name, "expect": "passes", "verdict": verdict,
            "cached_tps": False, "modes": {}, **figures}


def test_a_row_formats_every_figure() -> None:
    m = _row("nf4", "ok, 2 xfail", tps=52.5, vs_ref=2.28, mb=173.2, bits=10.3, kl=0.2901,
             top1=0.8, div_median=4.0, diverged=35, prompts=41, identical=6, near_ties=2,
             outputs=41, loops=12, empty=1, adherence=0.44)
    assert format_row(m) == ["nf4", "52.5", "2.28x", "173", "10.30", "0.290", "0.80",
                             "4+6=~2", "-", "12/41", "1/41", "44%", "ok, 2 xfail"]
    replayed = format_row({**m, "replayed": 41, "replay_near_ties": 3, "changed": 1})
    assert replayed[COLUMNS.index("near-ties")] == "3+1!"
    assert "flips" not in COLUMNS  # two-way flips are another thing (the power lines)
    assert format_row(_row("x", "ok")) == ["x", *["-"] * (len(COLUMNS) - 2), "ok"]


def test_a_configs_row_comes_from_the_worker_that_tested_it() -> None:
    """Worker 2 only computed the baseline as a reference (its row has no verdicts); worker
    1 ran the baseline's tests, so its row wins whatever the arrival order."""
    w1 = _part([_row("baseline", "ok")], ["baseline"], 1, details={"baseline": "d"})
    w2 = _part([_row("baseline", "skipped"), _row("nf4", "FAIL (1)")], ["nf4"], 2,
               near_ties=["near-tie: nf4 ..."])
    for parts in ([w1, w2], [w2, w1]):
        merged = merge_data(parts, ["baseline", "bf16", "nf4"])
        assert list(merged["configs"]) == ["baseline", "nf4"]
        assert merged["configs"]["baseline"]["verdict"] == "ok"
        assert (merged["generate_calls"], merged["hits"], merged["workers"]) == (3, 2, 2)
        assert merged["details"] == {"baseline": "d"}
    lines = render(merge_data([w1, w2], ["baseline", "nf4"]))
    assert lines[0].split()[0] == "config"
    # one line of counts, not a line per near-tie (the list goes to summary.md)
    assert "near-tie: nf4 ..." not in lines
    assert any(ln.startswith("1 divergences from the baseline were at a near-tie") for ln in lines)
    assert lines[-1] == ("model M@1; generate calls this run: 3 over 2 workers; "
                         "cache hits 2, misses 4")


def test_render_adds_the_throughput_table_when_benchmarks_ran() -> None:
    bench = {"nf4": Throughput(config="nf4", reference="baseline", prompt_eval_tps=300.0,
                               generate_tps=40.0, vs_reference=1.5, load_compress_seconds=2.0,
                               peak_rss_mb=900.0, peak_rss_scope="this config", model_mb=173.0,
                               bits_per_weight=10.3)}
    lines = render(_part([_row("nf4", "ok")], ["nf4"], 1, bench=bench))
    at = next(i for i, ln in enumerate(lines) if ln.startswith("throughput"))
    assert "4 prompts x 32 new tokens" in lines[at]
    assert lines[at + 3].split() == ["nf4", "300.0", "40.0", "1.50x", "2.0", "900", "173",
                                     "10.30"]
    assert render(_part([], [], 0)) == []


def test_every_benchmarked_config_gets_its_ratio_to_the_reference() -> None:
    """A config benchmarked before the reference has no ratio in its own record; the table
    computes it from the reference's row."""
    def row(name: str, tps: float, ratio: float | None) -> Throughput:
        return Throughput(config=name, reference="baseline", prompt_eval_tps=300.0,
                          generate_tps=tps, vs_reference=ratio, load_compress_seconds=2.0,
                          peak_rss_mb=900.0, peak_rss_scope="this config", model_mb=173.0,
                          bits_per_weight=10.3)

    bench = {"nf4": row("nf4", 40.0, None), "bf16": row("bf16", 60.0, None),
             "baseline": row("baseline", 80.0, 1.0)}
    lines = render(_part([_row("nf4", "ok")], ["nf4"], 1, bench=bench))
    at = next(i for i, ln in enumerate(lines) if ln.startswith("throughput"))
    assert [ln.split()[3] for ln in lines[at + 3: at + 6]] == ["0.50x", "0.75x", "1.00x"]


def test_the_statistics_table_marks_noise() -> None:
    aggregates = {"nf4": {"mean_kl": [0.29, 0.21, 0.38, None, True],
                          "mean_top1": [0.8, 0.75, 0.85, None, True],
                          "loop_increase": [0.27, 0.12, 0.41, 0.0002, True],
                          "adherence_drop": [0.03, -0.05, 0.1, 0.55, False]}}
    lines = render(_part([_row("nf4", "ok")], ["nf4"], 1, aggregates=aggregates))
    row = next(ln for ln in lines if ln.startswith("nf4 ") and "[" in ln)
    assert "0.290 [0.210,0.380]" in row
    assert "+27 [+12,+41] p<.001" in row
    assert "+3 [-5,+10] p=0.55 noise" in row


AGGREGATES = {"nf4": {"mean_kl": [0.29, 0.21, 0.38, None, True],
                      "adherence_drop": [0.03, -0.05, 0.1, 0.55, False]},
              "int8": {"mean_kl": [0.01, 0.0, 0.02, None, True]}}


def _power(mde: dict[str, float], n: int, passed: bool,
           **flipped: list[int]) -> dict[str, Any]:
    return {"power": 0.8, "mde": mde, "gate_passed": passed, "flips": flipped,
            "pairs": {k: n * (2 if k == "adherence_drop" else 1) for k in mde}}


POWER = {"nf4": _power({"adherence_drop": 0.137, "loop_increase": 0.0925,
                        "empty_increase": 0.0683, "mean_kl": 0.0219}, 41, True,
                       adherence=[5, 2], loops=[3, 0], empty=[0, 0]),
         "int8": _power({"adherence_drop": 0.12, "loop_increase": 0.2, "mean_kl": 0.0004}, 41,
                        False, adherence=[0, 0])}


def test_each_config_says_what_its_comparison_could_detect() -> None:
    """One line per config under the statistics table, and one sentence, for the largest rate
    bound among the configs whose gate passed, that a pass within noise is not "no change"
    (int8's larger loop bound is left out: its gate failed)."""
    lines = render(_part([_row("nf4", "ok"), _row("int8", "FAIL (1)")], ["nf4", "int8"], 1,
                         aggregates=AGGREGATES, power=POWER))
    at = next(i for i, ln in enumerate(lines) if ln.startswith("smallest change"))
    assert lines[at] == ("smallest change each comparison would detect (80% power at 95%), "
                         "and flips lost/gained against the baseline:")
    assert lines[at + 1] == ("nf4: adherence drop ≥ 0.14, loop increase ≥ 0.09, empty increase "
                             "≥ 0.07, KL change ≥ 0.022; flips adherence 5/2, loops 3/0")
    assert lines[at + 2] == ("int8: adherence drop ≥ 0.12, loop increase ≥ 0.20, KL change ≥ "
                             "0.0004; no flips")
    assert lines[at + 3] == ('a pass within noise is not "no change": 41 prompts (82 '
                             "constraints) cannot tell an adherence drop below 0.14 from noise "
                             "(nf4, 80% power)")
    assert sum("cannot tell" in ln for ln in lines) == 1
    # no gate passed: no sentence; no power data (older data): no lines at all
    failed = {n: {**p, "gate_passed": False} for n, p in POWER.items()}
    assert not any("cannot tell" in ln for ln in render(
        _part([_row("nf4", "ok")], ["nf4"], 1, aggregates=AGGREGATES, power=failed)))
    assert not any(ln.startswith("smallest change") for ln in render(
        _part([_row("nf4", "ok")], ["nf4"], 1, aggregates=AGGREGATES)))


def test_merged_data_keeps_each_configs_power_from_the_worker_that_tested_it() -> None:
    w1 = _part([_row("nf4", "ok")], ["nf4"], 1, aggregates={"nf4": AGGREGATES["nf4"]},
               power={"nf4": POWER["nf4"]})
    w2 = _part([_row("nf4", "skipped"), _row("int8", "ok")], ["int8"], 1,
               aggregates={"int8": AGGREGATES["int8"]}, power={"int8": POWER["int8"]})
    old = _part([_row("bf16", "ok")], ["bf16"], 1)  # a part without power data
    for parts in ([w1, w2, old], [old, w2, w1]):
        merged = merge_data(parts, ["bf16", "nf4", "int8"])
        assert merged["power"] == {"nf4": POWER["nf4"], "int8": POWER["int8"]}
        assert list(merged["power"]) == ["nf4", "int8"]  # in the configs' order


def test_power_comes_from_the_outcomes_the_aggregate_test_judged() -> None:
    """config_power on a stand-in session: the same PromptOutcome list gives the detectable
    effects, the pairs, the two-way flips, and whether the aggregate gate passed."""
    outcomes = [PromptOutcome(kl=0.1 * (i % 3), top1=0.9, base_loop=False, cand_loop=i < 2,
                              base_empty=False, cand_empty=False, base_met=(i >= 3,),
                              cand_met=(i >= 5 or i == 0,)) for i in range(41)]
    found = {"adherence_drop": Estimate(0.02, -0.05, 0.1, 0.95, 0.6)}
    judged = judge([parse_budget("adherence_drop <= 0.1")], found)
    session = SimpleNamespace(prompt_outcomes=lambda name: outcomes,
                              runs={"nf4": SimpleNamespace(judgements=judged)},
                              configs=SimpleNamespace(confidence=0.95))
    p = config_power(session, "nf4")  # type: ignore[arg-type]
    assert p["flips"] == {"loops": [2, 0], "empty": [0, 0], "adherence": [2, 1]}
    assert p["pairs"] == {"adherence_drop": 41, "loop_increase": 41, "empty_increase": 41,
                          "mean_kl": 41}
    assert p["gate_passed"] and p["power"] == 0.8
    assert power_line(p).startswith("adherence drop ≥ 0.12, loop increase ≥ 0.10, ")
    assert power_line(p).endswith("; flips loops 2/0, adherence 2/1")
    session.runs["nf4"].judgements = []  # no aggregate budget: nothing gated, nothing passed
    assert not config_power(session, "nf4")["gate_passed"]  # type: ignore[arg-type]


def test_the_time_breakdown_names_the_slowest_configs() -> None:
    """Per config and phase, the clock's seconds go into the data; workers' seconds add up
    (a config built by both cost both) and the slowest configs are named with their phases."""
    clock = PhaseClock()
    clock.add("compress", 100.4, "gptq-4bit")
    clock.add("generate", 30.0, "gptq-4bit")
    clock.add("generate", 12.0, "nf4")
    clock.add("atlas", 50.0)  # belongs to no config
    with clock("teacher-forced", "nf4"):
        pass
    assert clock.seconds["atlas"] == 50.0 and clock.seconds["generate"] == 42.0
    assert set(clock.by_config) == {"gptq-4bit", "nf4"}
    w1 = _part([], [], 0, config_phases=clock.by_config)
    w2 = _part([], [], 0, config_phases={"nf4": {"load": 3.0}, "bf16": {"generate": 0.2}})
    merged = merge_data([w1, w2], ["baseline", "nf4"])["config_phases"]
    assert merged["nf4"]["load"] == 3.0 and merged["nf4"]["generate"] == 12.0
    assert describe_slowest(merged, most=2) == (
        "slowest configs: gptq-4bit 130 s (compress 100 · generate 30), "
        "nf4 15 s (generate 12 · load 3)")
    assert describe_slowest({"bf16": {"generate": 0.2}}) == ""
