"""The report's data, built from a finished session (or merged from xdist workers' parts):
every figure as plain numbers and strings, the one input of the terminal table
(:mod:`shrinktests.report.terminal`) and the report files (:mod:`shrinktests.report.files`)."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import TYPE_CHECKING, Any

from shrinktests.judging.aggregate import detectable, flips, pairs
from shrinktests.judging.checks import Degeneration, median
from shrinktests.judging.stats import POWER, significant
from shrinktests.report.data import ConfigMetrics, Example, Power, SummaryData
from shrinktests.report.terminal import EXAMPLES, describe_details, output_stats
from shrinktests.run.numerics import describe as describe_numerics
from shrinktests.session.engine_split import split_rows

if TYPE_CHECKING:
    from shrinktests.session.session import ConfigRun, ShrinkSession


def _verdict(run: ConfigRun, expect: str) -> str:
    o = run.outcomes
    if run.error:
        return "crashed"
    if o.get("failed", 0):
        return f"FAIL ({o['failed']})"
    if expect == "breaks":
        return "breaks (expected)"
    if o.get("skipped", 0) and not o.get("passed", 0) and not o.get("xpassed", 0):
        return "skipped"
    if o.get("xfailed", 0):
        return f"ok, {o['xfailed']} xfail"
    return "ok"


def _mean(xs: list[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def config_metrics(session: ShrinkSession, name: str) -> ConfigMetrics:
    """Every figure of one config as plain numbers (None: not measured this run)."""
    ref = session.reference.name
    ref_tps = session.runs[ref].timings.generate_tps if ref in session.runs else 0.0
    run = session.runs[name]
    stats = run.stats or session.cached_stats(name)
    tps = run.timings.generate_tps
    drifts = list(run.drift.values())
    degs: list[Degeneration] = list(run.degeneration.values())
    cons = list(run.constraints.values())
    divs = [float(d.divergence) for d in drifts if d.divergence is not None]
    replays = Counter(r.kind for r in session.replays.get(name, {}).values())
    return {
        "name": name, "expect": session.configs.get(name).expect,
        "verdict": _verdict(run, session.configs.get(name).expect),
        "tps": tps or None, "cached_tps": run.cached_timings,
        "vs_ref": tps / ref_tps if tps and ref_tps else None,
        "mb": stats.mb if stats else None,
        "bits": stats.bits_per_weight if stats else None,
        "quantized_bits": getattr(stats, "quantized_bits", None) if stats else None,
        "compress_s": stats.compress_seconds if stats else None,
        "rel_err": stats.mean_rel_error if stats else None,
        "kl": _mean([d.values["kl_mean"] or 0.0 for d in drifts]),
        "top1": _mean([d.values["top1"] or 0.0 for d in drifts]),
        "div_median": median(divs), "diverged": len(divs), "prompts": len(drifts),
        "identical": sum(1 for d in drifts if d.divergence is None),
        "near_ties": sum(1 for d in drifts if d.near_tie),
        # outputs replayed against the accepted ones: left at a near-tie on this machine
        # (the accepted output judged), real changes (this run's output judged)
        "replayed": sum(replays.values()), "replay_near_ties": replays["machine"],
        "changed": replays["changed"], "unrecorded": replays["unrecorded"],
        "outputs": len(degs),
        "loops": sum("repetition loop" in d.modes for d in degs),
        "empty": sum("silence" in d.modes for d in degs),
        "modes": dict(Counter(m for d in degs for m in d.modes).most_common()),
        "truncated": sum(bool(d.values["truncated"]) for d in degs),
        "mean_tokens": _mean([d.values["min_tokens"] or 0.0 for d in degs]),
        "distinct_2": _mean([d.values["distinct_2"] or 0.0 for d in degs]),
        "constraints": len(cons), "met": sum(cons),
        "adherence": sum(cons) / len(cons) if cons else None,
        "xpassed": run.outcomes.get("xpassed", 0),
        "advisory": session.foreign_cpu(name) is not None,
    }


def _examples(session: ShrinkSession, name: str) -> list[Example]:
    """The prompts where ``name`` drifted most (by mean KL), both continuations split at the
    first divergence, for the side-by-side views of summary.md and index.html."""
    run = session.runs[name]
    cases = {c.id: c for c in session.cases()}
    worst = sorted(run.drift.items(), key=lambda kv: -(kv[1].values["kl_mean"] or 0.0))
    out: list[Example] = []
    for case_id, d in worst[:EXAMPLES]:
        case = cases[case_id]
        base = session.generation(session.reference.name, case).token_ids
        cand = session.generation(name, case).token_ids
        cut = d.divergence if d.divergence is not None else len(base)
        out.append({
            "case": case_id, "prompt": case.prompt.text, "divergence": d.divergence,
            "near_tie": d.near_tie, "kl": d.values["kl_mean"], "top1": d.values["top1"],
            "prefix": session.decode(base[:cut]), "base": session.decode(base[cut:]),
            "cand": session.decode(cand[cut:]),
        })
    return out


def _timeline(session: ShrinkSession, name: str) -> list[list[Any]]:
    """[case id, first divergence or None, baseline length] per prompt, for the timeline."""
    out: list[list[Any]] = []
    cases = {c.id: c for c in session.cases()}
    for case_id, d in session.runs[name].drift.items():
        base = session.generation(session.reference.name, cases[case_id]).token_ids
        out.append([case_id, d.divergence, len(base)])
    return out


def config_power(session: ShrinkSession, name: str) -> Power:
    """What config ``name``'s aggregate comparison could detect (80 % power at the configured
    level) and its two-way flips, from the same per-prompt outcomes its aggregate test used
    (memoized by the session by then: no model runs again)."""
    outcomes = session.prompt_outcomes(name)
    judged = session.runs[name].judgements
    return {"power": POWER, "mde": detectable(outcomes, session.configs.confidence),
            "pairs": pairs(outcomes),
            "flips": {k: [f.lost, f.gained] for k, f in flips(outcomes).items()},
            "gate_passed": bool(judged) and all(j.verdict != "fails" for j in judged)}


def summary_data(session: ShrinkSession) -> SummaryData:
    """Everything the reports show, as plain JSON-able data.

    Under pytest-xdist each worker sends this to the controller, which merges the workers'
    data (:func:`merge_data`); the terminal table, summary.md and index.html all render it.
    """
    names = [c.name for c in session.configs.configs if c.name in session.runs]
    bench = session.configs.benchmark
    tested = [n for n in names
              if sum(session.runs[n].outcomes.values()) or session.runs[n].error]
    metrics = {n: config_metrics(session, n) for n in names}
    details = {}
    for name in names:
        stats = session.runs[name].stats or session.cached_stats(name)
        parts = [describe_details(stats.details) if stats is not None else "",
                 f"rel err {err:.3f}, compressed in {stats.compress_seconds:.1f} s"
                 if stats is not None and (err := stats.mean_rel_error) is not None else "",
                 output_stats(metrics[name])]
        if text := "; ".join(p for p in parts if p):
            details[name] = text
    near_ties = [
        f"near-tie: {config} on {case_id} diverges at token {d.divergence} where the "
        f"baseline's top-2 margin is {d.base_margin:.3f}: machine-dependent, not counted as drift"
        for config, run in session.runs.items() for case_id, d in run.drift.items()
        if d.near_tie]
    replays = [
        f"{config} on {case_id}: this machine's output {r.describe()}"
        + (f" (this machine's own: {'; '.join(verdicts)})"
           if (verdicts := session.flip_verdicts.get((config, case_id))) else "")
        for config, by_case in session.replays.items() for case_id, r in by_case.items()
        if r.kind in ("machine", "changed")]
    stale = [f"{config}: accepted outputs and known failures not applied: {why}; re-record "
             "with --shrink-accept-failures" for config, why in session.stale_records.items()]
    stale += [f"{config}: {n} accepted outputs were recorded for other prompts or decoding "
              "settings and were not applied" for config, n in session.stale_outputs.items()]
    stale += [f"{config}: {why}: its per-prompt checks are advisory here, its aggregate "
              "tests gate" for config, why in session.foreign_records.items()]
    aggregates = {n: {k: [e.value, e.low, e.high, e.p, significant(e)]
                      for k, e in session.runs[n].aggregate.items()}
                  for n in names if session.runs[n].aggregate}
    # only where the aggregate test ran here: its outcomes are known, nothing is recomputed
    power = {n: config_power(session, n) for n in aggregates}
    judged = [f"{n}: {j.describe()}" for n in names for j in session.runs[n].judgements
              if j.verdict != "ok"]
    return {
        "configs": metrics, "tested": tested, "details": details, "near_ties": near_ties,
        "replays": replays, "stale": stale, "aggregates": aggregates, "power": power,
        "judgements": judged, "engines": split_rows(session),
        "reference": [f"reference for {suite}: {note}"
                      for suite, note in session.reference_notes.items()],
        "level": session.configs.confidence,
        "examples": {n: _examples(session, n) for n in names},
        "timeline": {n: _timeline(session, n) for n in names},
        "cached_timings": any(r.cached_timings for r in session.runs.values()),
        "model": session.source.describe() if names or session.atlas_results() else "",
        "numerics": describe_numerics(session.options.threads, session.options.device),
        "generate_calls": session.generate_calls,
        "hits": session.cache.hits, "misses": session.cache.misses, "workers": 1,
        "bench": session.bench_info,
        "workload": f"{bench.prompts} prompts x {bench.new_tokens} new tokens",
        "atlas": session.atlas.data() if session.atlas and session.atlas_results() else None,
        "phases": dict(session.clock.seconds),
        "config_phases": {n: dict(p) for n, p in session.clock.by_config.items()},
    }


def merge_data(parts: list[SummaryData], order: list[str]) -> SummaryData:
    """One summary from several workers' data: a config's figures come from the worker that
    ran its tests (others only computed it as a reference); counters add up."""
    owner: dict[str, SummaryData] = {}
    for part in parts:
        for name in part["configs"]:
            if name not in owner or name in part["tested"]:
                owner[name] = part
    names = [n for n in order if n in owner]
    return {
        "configs": {n: owner[n]["configs"][n] for n in names},
        "aggregates": {n: owner[n]["aggregates"][n] for n in names
                       if n in owner[n]["aggregates"]},
        "power": {n: p for n in names if (p := owner[n].get("power", {}).get(n)) is not None},
        "judgements": sorted({line for p in parts for line in p["judgements"]}),
        "engines": [row for p in parts for row in p.get("engines", [])],
        "reference": sorted({line for p in parts for line in p["reference"]}),
        "level": parts[0]["level"] if parts else 0.95,
        "examples": {n: owner[n]["examples"][n] for n in names},
        "timeline": {n: owner[n]["timeline"][n] for n in names},
        "tested": sorted({n for p in parts for n in p["tested"]}),
        "details": {k: v for p in parts for k, v in p["details"].items()},
        "near_ties": sorted({line for p in parts for line in p["near_ties"]}),
        "replays": sorted({line for p in parts for line in p["replays"]}),
        "stale": sorted({line for p in parts for line in p["stale"]}),
        "cached_timings": any(p["cached_timings"] for p in parts),
        "model": next((p["model"] for p in parts if p["model"]), ""),
        "numerics": next((p["numerics"] for p in parts if p["numerics"]), ""),
        "generate_calls": sum(p["generate_calls"] for p in parts),
        "hits": sum(p["hits"] for p in parts), "misses": sum(p["misses"] for p in parts),
        "workers": sum(p["workers"] for p in parts),
        "bench": {k: v for p in parts for k, v in p["bench"].items()},
        "workload": parts[0]["workload"] if parts else "",
        # the atlas runs on one worker (its tests are grouped with the reference)
        "atlas": max((a for p in parts if (a := p["atlas"]) is not None),
                     key=lambda a: len(a["scopes"]), default=None),
        "phases": {k: sum(p.get("phases", {}).get(k, 0.0) for p in parts)
                   for k in parts[0].get("phases", {})} if parts else {},
        "config_phases": _sum_config_phases([p.get("config_phases", {}) for p in parts]),
    }


def _sum_config_phases(parts: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per config and phase, the seconds of every worker (a config built by two workers,
    once for its own tests and once as another's reference, cost both)."""
    out: dict[str, dict[str, float]] = {}
    for part in parts:
        for name, phases in part.items():
            own = out.setdefault(name, {})
            for phase, seconds in phases.items():
                own[phase] = own.get(phase, 0.0) + seconds
    return out
