"""The terminal summary: one row per config, every headline metric (seed 002's layout)."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

from shrinktests.checks import median

if TYPE_CHECKING:
    from shrinktests.session import ConfigRun, ShrinkSession

COLUMNS = ("config", "gen tok/s", "vs ref", "MB", "bits/w", "comp s", "rel err", "KL mean",
           "top-1", "1st div", "degen", "constr", "verdict")


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
            f"{sum(bool(d.modes) for d in degs)}/{len(degs)}" if degs else "-",
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


def summary_lines(session: ShrinkSession) -> list[str]:
    rows = config_rows(session)
    if not rows:
        return []
    lines = format_table(rows)
    lines.append(
        "comp s: seconds to compress after loading; rel err: mean relative Frobenius error of "
        "the weights a config changed;")
    lines.append(
        "1st div: median first divergent token (+N= prompts identical, ~N near-ties); "
        "KL/top-1 teacher-forced on the baseline continuation;")
    lines.append("degen: degenerate outputs (loops, empty, too short); constr: constraints met.")
    for name, run in session.runs.items():
        stats = run.stats or session.cached_stats(name)
        if stats is not None and (text := describe_details(stats.details)):
            lines.append(f"{name}: {text}")
    if any(r.cached_timings for r in session.runs.values()):
        lines.append("* speed measured when the cached result was generated (earlier run); "
                     "use --shrink-cache none to measure now.")
    for config, run in session.runs.items():
        for case_id, d in run.drift.items():
            if d.near_tie:
                lines.append(
                    f"near-tie: {config} on {case_id} diverges at token {d.divergence} where the "
                    f"baseline's top-2 margin is {d.base_margin:.3f}: machine-dependent, not "
                    "counted as drift")
    lines.append(f"model {session.source.describe()}; generate calls this run: "
                 f"{session.generate_calls}; cache hits {session.cache.hits}, "
                 f"misses {session.cache.misses}")
    return lines
