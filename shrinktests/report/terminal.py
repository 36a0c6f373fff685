"""The terminal summary: one row per config, every headline metric, as in a benchmark table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shrinktests.judging.aggregate import FLIPS_OF
from shrinktests.judging.stats import POWER
from shrinktests.report.data import ConfigMetrics, Power, SummaryData
from shrinktests.report.table import format_table

if TYPE_CHECKING:
    from shrinktests.run.results import Throughput
    pass

COLUMNS = ("config", "tok/s", "vs ref", "MB", "bits/w", "KL", "top-1", "1st div", "near-ties",
           "loops", "empty", "constr", "verdict")
#: prompts per config whose continuations the Markdown and HTML reports show side by side
EXAMPLES = 3


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


def bench_rows(bench: dict[str, Throughput]) -> list[list[str]]:
    """One row per benchmarked config. "vs ref" is computed here, from the whole table: a
    config benchmarked before the reference has no ratio in its own ``extra_info``."""
    ref = next((b["generate_tps"] for name, b in bench.items() if b["reference"] == name),
               None)

    def ratio(b: Throughput) -> float | None:
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
    from shrinktests.report import atlas as atlas_report

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
