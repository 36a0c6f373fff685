"""The terminal summary: one row per config, every headline metric (seed 002's layout)."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import TYPE_CHECKING, Any

from shrinktests.checks import Degeneration, median

if TYPE_CHECKING:
    from shrinktests.session import ConfigRun, ShrinkSession

COLUMNS = ("config", "tok/s", "vs ref", "MB", "bits/w", "comp s", "rel err", "KL",
           "top-1", "1st div", "loops", "empty", "constr", "verdict")


def _verdict(run: ConfigRun, expect: str) -> str:
    o = run.outcomes
    if run.error:
        return "crashed"
    if o.get("failed", 0):
        return f"FAIL ({o['failed']})"
    if expect == "breaks":
        return "breaks (expected)"
    if o.get("skipped", 0) and not o.get("passed", 0):
        return "skipped"
    if o.get("xfailed", 0):
        return f"ok, {o['xfailed']} xfail"
    return "ok"


def _mode_count(degs: list[Degeneration], mode: str) -> str:
    return f"{sum(mode in d.modes for d in degs)}/{len(degs)}" if degs else "-"


def output_stats(degs: list[Degeneration]) -> str:
    """The failure modes seen over a config's outputs, with length and distinct-2 figures."""
    if not degs:
        return ""
    modes = Counter(m for d in degs for m in d.modes)
    seen = ", ".join(f"{m} {n}" for m, n in modes.most_common()) or "none"
    tokens = statistics.fmean(d.values["min_tokens"] or 0.0 for d in degs)
    distinct = statistics.fmean(d.values["distinct_2"] or 0.0 for d in degs)
    return (f"modes seen over {len(degs)} outputs: {seen}; mean length {tokens:.0f} tokens, "
            f"distinct-2 {distinct:.2f}")


def config_rows(session: ShrinkSession) -> list[list[str]]:
    ref = session.reference.name
    ref_tps = session.runs[ref].timings.generate_tps if ref in session.runs else 0.0
    rows = []
    for config in session.configs.configs:
        if config.name not in session.runs:
            continue
        run = session.runs[config.name]
        stats = run.stats or session.cached_stats(config.name)
        tps = run.timings.generate_tps
        drifts = list(run.drift.values())
        degs = list(run.degeneration.values())
        divs = [float(d.divergence) for d in drifts if d.divergence is not None]
        n_ident = sum(1 for d in drifts if d.divergence is None)
        cons = list(run.constraints.values())
        near = sum(1 for d in drifts if d.near_tie)
        rows.append([
            config.name,
            (f"{tps:.1f}" + ("*" if run.cached_timings else "")) if tps else "-",
            f"{tps / ref_tps:.2f}x" if tps and ref_tps else "-",
            f"{stats.mb:.0f}" if stats else "-",
            f"{stats.bits_per_weight:.2f}" if stats else "-",
            f"{stats.compress_seconds:.1f}" if stats else "-",
            f"{err:.3f}" if stats and (err := stats.mean_rel_error) is not None else "-",
            f"{statistics.fmean(d.values['kl_mean'] or 0.0 for d in drifts):.3f}"
            if drifts else "-",
            f"{statistics.fmean(d.values['top1'] or 0.0 for d in drifts):.2f}" if drifts else "-",
            (f"{median(divs):.0f}" if divs else "none") + (f"+{n_ident}=" if n_ident and divs
                                                           else "") + (f"~{near}" if near else "")
            if drifts else "-",
            _mode_count(degs, "repetition loop"),
            _mode_count(degs, "silence"),
            f"{100 * sum(cons) / len(cons):.0f}%" if cons else "-",
            _verdict(run, config.expect),
        ])
    return rows


def describe_details(details: dict[str, Any]) -> str:
    """One line of the method-specific figures a config recorded (pruning, rules, EoRA)."""
    parts = []
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


def format_table(rows: list[list[str]], header: tuple[str, ...] = COLUMNS) -> list[str]:
    widths = [max(len(str(r[i])) for r in [list(header), *rows]) for i in range(len(header))]
    def line(cells: list[str] | tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def summary_data(session: ShrinkSession) -> dict[str, Any]:
    """Everything the summary shows, as plain JSON-able data.

    Under pytest-xdist each worker sends this to the controller, which merges the workers'
    data (:func:`merge_data`) and renders one table (:func:`render`).
    """
    rows = config_rows(session)
    bench = session.configs.benchmark
    names = [r[0] for r in rows]
    tested = [n for n in names
              if sum(session.runs[n].outcomes.values()) or session.runs[n].error]
    details = {}
    for name in names:
        stats = session.runs[name].stats or session.cached_stats(name)
        parts = [describe_details(stats.details) if stats is not None else "",
                 output_stats(list(session.runs[name].degeneration.values()))]
        if text := "; ".join(p for p in parts if p):
            details[name] = text
    near_ties = [
        f"near-tie: {config} on {case_id} diverges at token {d.divergence} where the "
        f"baseline's top-2 margin is {d.base_margin:.3f}: machine-dependent, not counted as drift"
        for config, run in session.runs.items() for case_id, d in run.drift.items()
        if d.near_tie]
    return {
        "rows": rows, "tested": tested, "details": details, "near_ties": near_ties,
        "cached_timings": any(r.cached_timings for r in session.runs.values()),
        "model": session.source.describe() if rows else "",
        "generate_calls": session.generate_calls,
        "hits": session.cache.hits, "misses": session.cache.misses, "workers": 1,
        "bench": session.bench_info,
        "workload": f"{bench.prompts} prompts x {bench.new_tokens} new tokens",
    }


def merge_data(parts: list[dict[str, Any]], order: list[str]) -> dict[str, Any]:
    """One summary from several workers' data: a config's row comes from the worker that ran
    its tests (others only computed it as a reference); counters add up."""
    rows: dict[str, list[str]] = {}
    for part in parts:
        for row in part["rows"]:
            if row[0] not in rows or row[0] in part["tested"]:
                rows[row[0]] = row
    return {
        "rows": [rows[n] for n in order if n in rows],
        "tested": sorted({n for p in parts for n in p["tested"]}),
        "details": {k: v for p in parts for k, v in p["details"].items()},
        "near_ties": sorted({line for p in parts for line in p["near_ties"]}),
        "cached_timings": any(p["cached_timings"] for p in parts),
        "model": next((p["model"] for p in parts if p["model"]), ""),
        "generate_calls": sum(p["generate_calls"] for p in parts),
        "hits": sum(p["hits"] for p in parts), "misses": sum(p["misses"] for p in parts),
        "workers": sum(p["workers"] for p in parts),
        "bench": {k: v for p in parts for k, v in p["bench"].items()},
        "workload": parts[0]["workload"] if parts else "",
    }


BENCH_COLUMNS = ("config", "prompt tok/s", "gen tok/s", "vs ref", "load+comp s", "peak RSS MB",
                 "MB", "bits/w")


def bench_rows(bench: dict[str, dict[str, Any]]) -> list[list[str]]:
    return [[name, f"{b['prompt_eval_tps']:.1f}", f"{b['generate_tps']:.1f}",
             f"{b['vs_reference']:.2f}x" if b["vs_reference"] else "-",
             f"{b['load_compress_seconds']:.1f}", f"{b['peak_rss_mb']:.0f}",
             f"{b['model_mb']:.0f}", f"{b['bits_per_weight']:.2f}"] for name, b in bench.items()]


def render(data: dict[str, Any]) -> list[str]:
    rows = data["rows"]
    if not rows:
        return []
    lines = format_table(rows)
    lines.append(
        "comp s: seconds to compress after loading; rel err: mean relative Frobenius error of "
        "the weights a config changed;")
    lines.append(
        "1st div: median first divergent token (+N= prompts identical, ~N near-ties); "
        "KL/top-1 teacher-forced on the baseline continuation;")
    lines.append("loops/empty: outputs in a repetition loop / silent; constr: share of constraints "
                 "met. Per config below: figures and degeneration modes seen.")
    lines += [f"{name}: {text}" for name, text in data["details"].items()]
    if data["cached_timings"]:
        lines.append("* speed measured when the cached result was generated (earlier run); "
                     "use --shrink-cache none to measure now.")
    lines += data["near_ties"]
    if data["bench"]:
        lines.append("")
        lines.append(f"throughput (pytest-benchmark, fixed workload: {data['workload']}; "
                     "peak RSS over the workload):")
        lines += format_table(bench_rows(data["bench"]), BENCH_COLUMNS)
    workers = f" over {data['workers']} workers" if data["workers"] > 1 else ""
    lines.append(f"model {data['model']}; generate calls this run: {data['generate_calls']}"
                 f"{workers}; cache hits {data['hits']}, misses {data['misses']}")
    return lines


def summary_lines(session: ShrinkSession) -> list[str]:
    return render(summary_data(session))
