"""The terminal summary: one row per config, every headline metric, as in a benchmark table."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import TYPE_CHECKING, Any

from shrinktests.judging.aggregate import FLIPS_OF, detectable, flips, pairs
from shrinktests.judging.checks import Degeneration, median
from shrinktests.judging.stats import POWER, significant
from shrinktests.report.data import ConfigMetrics, Example, Power, SummaryData
from shrinktests.report.table import format_table
from shrinktests.run.engine_split import split_rows
from shrinktests.run.numerics import describe as describe_numerics

if TYPE_CHECKING:
    from shrinktests.run.session import ConfigRun, ShrinkSession

COLUMNS = ("config", "tok/s", "vs ref", "MB", "bits/w", "KL", "top-1", "1st div", "near-ties",
           "loops", "empty", "constr", "verdict")
#: prompts per config whose continuations the Markdown and HTML reports show side by side
EXAMPLES = 3


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


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def format_row(m: ConfigMetrics) -> list[str]:
    """One line of the terminal table from :func:`config_metrics`."""
    div = "-"
    if m["prompts"]:
        div = _num(m["div_median"], ".0f") if m["diverged"] else "none"
        if m["identical"] and m["diverged"]:
            div += f"+{m['identical']}="
        if m["near_ties"]:
            div += f"~{m['near_ties']}"
    def count(n: int) -> str:
        return f"{n}/{m['outputs']}" if m["outputs"] else "-"

    ties = "-"
    if m["replayed"]:  # N left at a near-tie, +M real changes (this run's output judged)
        ties = str(m["replay_near_ties"]) + (f"+{m['changed']}!" if m["changed"] else "")

    return [
        m["name"], _num(m["tps"], ".1f") + ("*" if m["tps"] and m["cached_tps"] else ""),
        _num(m["vs_ref"], ".2f") + ("x" if m["vs_ref"] else ""), _num(m["mb"], ".0f"),
        _num(_bits(m), ".2f"), _num(m["kl"], ".3f"), _num(m["top1"], ".2f"), div, ties,
        count(m["loops"]), count(m["empty"]),
        _num(None if m["adherence"] is None else 100 * m["adherence"], ".0f")
        + ("%" if m["adherence"] is not None else ""),
        m["verdict"],
    ]


def output_stats(m: ConfigMetrics) -> str:
    """The failure modes seen over a config's outputs, with length and distinct-2 figures."""
    if not m["outputs"]:
        return ""
    seen = ", ".join(f"{mode} {n}" for mode, n in m["modes"].items()) or "none"
    return (f"modes over budget in {m['outputs']} outputs: {seen}; {m['truncated']} cut off "
            f"mid-sentence; mean length {m['mean_tokens']:.0f} tokens, "
            f"distinct-2 {m['distinct_2']:.2f}")


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


def describe_details(details: dict[str, Any]) -> str:
    """One line of the method-specific figures a config recorded (pruning, rules, EoRA)."""
    parts = []
    if a := details.get("artifact"):
        parts.append(f"{a['kind']} {a['path']}: {a['on_disk'] / 1e6:.1f} MB on disk, layers "
                     f"{a['layers']} (baseline {a['baseline_layers']}), params "
                     f"{a['params'] / 1e6:.1f}M (baseline {a['baseline_params'] / 1e6:.1f}M)")
    if d := details.get("device"):
        parts.append(f"on {d['name']}, peak device memory {d['peak_mb']:.0f} MB")
    if p := details.get("pruning"):
        parts.append(f"layers {p['layers_before']}→{p['layers_after']}, params "
                     f"{p['params_before'] / 1e6:.1f}M→{p['params_after'] / 1e6:.1f}M "
                     f"(-{p['param_reduction_pct']:.2f}%)")
    if (sparsity := details.get("sparsity")) is not None:
        parts.append(f"sparsity {100 * sparsity:.1f}%")
    for r in details.get("rules", []):
        parts.append(f"rule {r['rule']} {r['method']}: {r['tensors']} tensors at "
                     f"{r['bits_per_weight']:.2f} bits/w")
    if "linear_bits_per_weight" in details:
        parts.append(f"{details['untouched_tensors']} untouched; linear layers average "
                     f"{details['linear_bits_per_weight']:.2f} bits/w")
    if e := details.get("eora"):
        parts.append(f"low-rank correction of {e['layers']} layers, rank "
                     f"{'/'.join(map(str, e['ranks']))}, +{e['added_params'] / 1e6:.2f}M params"
                     f"{' (activation-aware)' if e['activation_aware'] else ' (plain SVD)'}")
    return "; ".join(parts)


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


STATS_COLUMNS = ("config", "mean KL [CI]", "top-1 [CI]", "loops +pts [CI]",
                 "adherence -pts [CI]")


def _p(p: float | None) -> str:
    return "" if p is None else " p<.001" if p < 0.001 else f" p={p:.2g}"


def _interval(a: list[Any], fmt: str, scale: float = 1.0) -> str:
    v, lo, hi, p, sig = a
    text = f"{scale * v:{fmt}} [{scale * lo:{fmt}},{scale * hi:{fmt}}]{_p(p)}"
    return text if sig or p is None else text + " noise"


def stats_rows(aggregates: dict[str, dict[str, list[Any]]]) -> list[list[str]]:
    """One row per config: each aggregate with its interval; paired rate changes in
    percentage points with McNemar's p, marked "noise" when not significant."""
    rows = []
    for name, a in aggregates.items():
        rows.append([name,
                     _interval(a["mean_kl"], ".3f") if "mean_kl" in a else "-",
                     _interval(a["mean_top1"], ".2f") if "mean_top1" in a else "-",
                     _interval(a["loop_increase"], "+.0f", 100) if "loop_increase" in a else "-",
                     _interval(a["adherence_drop"], "+.0f", 100)
                     if "adherence_drop" in a else "-"])
    return rows


#: how the power lines name each aggregate, and the article the noise sentence puts before it
POWER_LABELS = {"adherence_drop": ("an", "adherence drop"), "loop_increase": ("a", "loop increase"),
                "empty_increase": ("an", "empty increase"), "mean_kl": ("a", "KL change")}


def power_header(level: float, power: float = POWER) -> str:
    """The line above the per-config power lines."""
    return (f"smallest change each comparison would detect ({100 * power:.0f}% power at "
            f"{100 * level:.0f}%), and flips lost/gained against the baseline:")


def power_line(p: Power) -> str:
    """One config's minimum detectable effects (rates as fractions, like the budgets; KL in
    nats) and its two-way flips, e.g. ``adherence drop ≥ 0.14, ...; flips adherence 5/2``."""
    mde = [f"{POWER_LABELS[k][1]} ≥ {v:.2g}" if k == "mean_kl" else
           f"{POWER_LABELS[k][1]} ≥ {v:.2f}" for k, v in p["mde"].items() if k in POWER_LABELS]
    flipped = [f"{kind} {lost}/{gained}" for kind, (lost, gained) in p["flips"].items()
               if lost or gained]
    return ", ".join(mde) + ("; flips " + ", ".join(flipped) if flipped else "; no flips")


def noise_note(power: dict[str, Power]) -> str | None:
    """Once per summary, where some config's aggregate gate passed: the largest rate change
    those configs could still hide in their noise, so a pass is not read as "no change"."""
    worst = [(v, name, metric, p["pairs"][metric]) for name, p in power.items()
             if p["gate_passed"] for metric, v in p["mde"].items()
             if metric in FLIPS_OF and metric in p["pairs"]]
    if not worst:
        return None
    value, name, metric, n = max(worst)
    article, label = POWER_LABELS[metric]
    what = f"{n} prompts"
    if metric == "adherence_drop":  # paired per constraint; say over how many prompts
        prompts = power[name]["pairs"].get("loop_increase")
        what = f"{prompts} prompts ({n} constraints)" if prompts else f"{n} constraints"
    return (f"a pass within noise is not \"no change\": {what} cannot tell {article} "
            f"{label} below {value:.2f} from noise ({name}, "
            f"{100 * power[name]['power']:.0f}% power)")


ENGINE_COLUMNS = ("comparison", "configs", "mean KL [CI]", "top-1 [CI]")


def engine_rows(engines: list[dict[str, Any]]) -> list[list[str]]:
    """The engine split: one row per comparison (config b against config a), each pair once
    (the engine's own drift is shared by every llama.cpp config)."""
    rows, seen = [], set()
    for r in engines:
        if (r["a"], r["b"]) in seen:
            continue
        seen.add((r["a"], r["b"]))
        figures = ([r["error"], ""] if "error" in r else
                   [_interval(r["kl"], ".4f"), _interval(r["top1"], ".3f")])
        rows.append([r["what"], f"{r['b']} vs {r['a']}", *figures])
    return rows


ENGINE_LEGEND = ("which engine moved what: the same weights under transformers and llama.cpp, "
                 "teacher-forced on the baseline's continuations")


BENCH_COLUMNS = ("config", "prompt tok/s", "gen tok/s", "vs ref", "load+comp s", "peak RSS MB",
                 "MB", "bits/w")


def bench_rows(bench: dict[str, dict[str, Any]]) -> list[list[str]]:
    """One row per benchmarked config. "vs ref" is computed here, from the whole table: a
    config benchmarked before the reference has no ratio in its own ``extra_info``."""
    ref = next((b["generate_tps"] for name, b in bench.items() if b.get("reference") == name),
               None)

    def ratio(b: dict[str, Any]) -> float | None:
        value = b["generate_tps"] / ref if ref else b["vs_reference"]
        return float(value) if value else None

    return [[name, f"{b['prompt_eval_tps']:.1f}", f"{b['generate_tps']:.1f}",
             f"{r:.2f}x" if (r := ratio(b)) else "-",
             f"{b['load_compress_seconds']:.1f}", f"{b['peak_rss_mb']:.0f}",
             f"{b['model_mb']:.0f}", f"{b['bits_per_weight']:.2f}"] for name, b in bench.items()]


def _quiet_counts(data: SummaryData) -> list[str]:
    """One line each for the baseline near-ties and the replayed outputs, not a line per
    prompt: the lists are in summary.md and data.json."""
    lines = []
    if n := len(data["near_ties"]):
        lines.append(f"{n} divergences from the baseline were at a near-tie of the baseline "
                     "(machine-dependent, not counted as drift; listed in summary.md)")
    ties = sum(m.get("replay_near_ties", 0) for m in data["configs"].values())
    changed = sum(m.get("changed", 0) for m in data["configs"].values())
    if ties or changed:
        lines.append(f"accepted outputs: {ties} left at a machine-dependent near-tie (the "
                     f"accepted output judged), {changed} real changes (this run's output "
                     "judged); listed in summary.md")
    if line := _xpassed_line(data):
        lines.append(line)
    return lines


def _xpassed_line(data: SummaryData) -> str | None:
    """Say what pytest's "xpassed" count is made of, so a green run does not read as one that
    hides a defect: checks of configs marked to break that pass anyway, advisory checks."""
    per = {n: m for n, m in data["configs"].items() if m.get("xpassed")}
    if not per:
        return None

    def why(m: ConfigMetrics) -> str:
        if m["expect"] == "breaks":
            return "marked expect = \"breaks\": checks it passes anyway"
        if m.get("advisory"):
            return "advisory here: its accepted record holds for another machine"
        return "non-strict known failures that passed"

    parts = [f"{n} {m['xpassed']} ({why(m)})" for n, m in per.items()]
    return (f"xpassed {sum(m['xpassed'] for m in per.values())}, not defects: "
            + "; ".join(parts))


def _bits(m: ConfigMetrics) -> float | None:
    """The table's bits/w: of the weights the config quantized, else of the whole model."""
    q = m.get("quantized_bits")
    return q if q is not None else m["bits"]


def render(data: SummaryData) -> list[str]:
    """The terminal summary: the table (under 120 columns), legends, per-config lines."""
    from shrinktests.atlas import report as atlas_report

    atlas = atlas_report.render(a) if (a := data["atlas"]) else []
    rows = [format_row(m) for m in data["configs"].values()]
    if not rows:
        return atlas
    lines = format_table(rows, COLUMNS)
    lines.append("MB: the whole model as it ships (embeddings and norms in the reference's "
                 "dtype); bits/w: of the weights the config quantized;")
    lines.append("KL/top-1: teacher-forced on the baseline continuation; 1st div: median first "
                 "divergent token (+N= identical, ~N at a baseline near-tie);")
    lines.append("near-ties: outputs that left the accepted ones at a near-tie on this machine "
                 "(the accepted judged; +N! real changes);")
    lines.append("loops/empty: outputs in a repetition loop / silent; constr: share of constraints "
                 "met. Per config: figures, modes seen.")
    lines += [f"{name}: {text}" for name, text in data["details"].items()]
    if data["cached_timings"]:
        lines.append("* speed measured when the cached result was generated (earlier run); "
                     "use --shrink-cache none to measure now.")
    lines += _quiet_counts(data)
    lines += data.get("stale", [])
    lines += data.get("reference", [])
    if data.get("aggregates"):
        lines.append("")
        lines.append(f"config vs baseline over all prompts, {100 * data['level']:.0f}% intervals "
                     "(bootstrap over prompts; rates paired, exact McNemar p; noise: not "
                     "significant):")
        lines += format_table(stats_rows(data["aggregates"]), STATS_COLUMNS)
        lines += data["judgements"]
        if power := data.get("power"):
            lines.append(power_header(data["level"], next(iter(power.values()))["power"]))
            lines += [f"{name}: {power_line(p)}" for name, p in power.items()]
            if note := noise_note(power):
                lines.append(note)
    if data.get("engines"):
        lines += ["", f"{ENGINE_LEGEND}, {100 * data['level']:.0f}% intervals over prompts:"]
        lines += format_table(engine_rows(data["engines"]), ENGINE_COLUMNS)
    if data["bench"]:
        lines.append("")
        lines.append(f"throughput (pytest-benchmark, fixed workload: {data['workload']}; "
                     "peak RSS over the workload):")
        lines += format_table(bench_rows(data["bench"]), BENCH_COLUMNS)
    if atlas:
        lines += ["", *atlas]
    workers = f" over {data['workers']} workers" if data["workers"] > 1 else ""
    lines.append(f"model {data['model']}; generate calls this run: {data['generate_calls']}"
                 f"{workers}; cache hits {data['hits']}, misses {data['misses']}")
    return lines
