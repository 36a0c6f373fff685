"""The report folder (``--shrink-report DIR``): ``summary.md`` to paste into a pull request and
a self-contained ``index.html`` with plots, both rendered from :func:`report.summary_data`.

Both are pure functions of that data, so an xdist run renders the merged data exactly like a
single process would, and tests render them without a model.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from shrinktests.report import atlas as atlas_report
from shrinktests.report import svg
from shrinktests.report.data import ConfigMetrics, Example, SummaryData
from shrinktests.report.terminal import (
    COLUMNS,
    ENGINE_COLUMNS,
    ENGINE_LEGEND,
    STATS_COLUMNS,
    engine_rows,
    format_row,
    noise_note,
    power_header,
    power_line,
    stats_rows,
)
from shrinktests.run.cache import atomic_write_text

#: regressions shown side by side in summary.md
WORST = 5


def worst_regressions(data: SummaryData, n: int = WORST) -> list[tuple[str, Example]]:
    """The (config, example) pairs that drifted most, one per config, configs expected to
    break left out (their drift is the point), worst first."""
    picks = []
    for name, examples in data["examples"].items():
        if examples and data["configs"][name]["expect"] != "breaks":
            picks.append((name, examples[0]))
    picks.sort(key=lambda p: -(p[1]["kl"] or 0.0))
    return picks[:n]


def _md_cell(text: str) -> str:
    """Text safe inside a Markdown table cell (GitHub renders the ``<br>``)."""
    return escape(text, quote=False).replace("|", "\\|").replace("\n", "<br>") or "&nbsp;"


def _where(ex: Example) -> str:
    if ex["divergence"] is None:
        return "no divergence in the generated window"
    tie = " (near-tie)" if ex["near_tie"] else ""
    return f"first divergence at token {ex['divergence']}{tie}"


def markdown(data: SummaryData) -> str:
    """summary.md: the table, the legend, then the worst regressions side by side."""
    rows = [format_row(m) for m in data["configs"].values()]
    failing = [m["name"] for m in data["configs"].values() if m["verdict"].startswith("FAIL")]
    lines = ["# shrinktests report", "",
             f"Model `{data['model']}`; numerics {data.get('numerics') or 'unknown'}; "
             f"{len(rows)} configs; "
             + (f"**failing: {', '.join(failing)}**" if failing else "no unexpected failures")
             + ".", ""]
    if rows:  # an atlas-only run (-k atlas) has no config table
        lines += ["| " + " | ".join(COLUMNS) + " |",
                  "|" + "|".join("---" if i == 0 else "---:" for i in range(len(COLUMNS))) + "|"]
        lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
        lines += ["", "KL and top-1 are teacher-forced on the baseline continuation; 1st div is "
                  "the median first divergent token (`+N=` prompts identical, `~N` at a near-tie "
                  "of the baseline); near-ties counts outputs that left the accepted ones at a "
                  "near-tie on this machine (`+N!`: real changes); "
                  "loops and empty count degenerate outputs; constr is the share of constraints "
                  "met.", ""]
    if data.get("aggregates"):
        lines += [f"Against the baseline over all prompts, {100 * data['level']:.0f}% intervals "
                  "(bootstrap over prompts; loops and adherence in percentage points, paired, "
                  "with exact McNemar p; *noise*: not significant):", "",
                  "| " + " | ".join(STATS_COLUMNS) + " |",
                  "|---" + "|---:" * (len(STATS_COLUMNS) - 1) + "|"]
        lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |"
                  for r in stats_rows(data["aggregates"])]
        lines += ["", *[f"- {line}" for line in data["judgements"]], ""]
        lines += _power_md(data)
    if data.get("engines"):
        lines += [f"{ENGINE_LEGEND[0].upper()}{ENGINE_LEGEND[1:]}, "
                  f"{100 * data['level']:.0f}% intervals over prompts:", "",
                  "| " + " | ".join(ENGINE_COLUMNS) + " |",
                  "|---|---" + "|---:" * (len(ENGINE_COLUMNS) - 2) + "|"]
        lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |"
                  for r in engine_rows(data["engines"])]
        lines.append("")
    lines += [f"- **{name}**: {text}" for name, text in data["details"].items()]
    lines += machine_dependent(data)
    if atlas := data["atlas"]:
        lines += ["", *atlas_report.markdown(atlas)]
    worst = worst_regressions(data)
    if worst:
        lines += ["", "## Worst regressions", ""]
    for name, ex in worst:
        lines += [f"### {name} on {ex['case']}", "",
                  f"KL {ex['kl']:.3f}, top-1 {ex['top1']:.2f}, {_where(ex)}.", "",
                  f"> {_md_cell(ex['prompt'])}", "",
                  f"Common prefix: {_md_cell(ex['prefix'][-200:])}", "",
                  f"| baseline | {name} |", "|---|---|",
                  f"| {_md_cell(ex['base'][:600])} | {_md_cell(ex['cand'][:600])} |", ""]
    return "\n".join(lines) + "\n"


def _power_md(data: SummaryData) -> list[str]:
    """summary.md's minimum detectable effects and two-way flips, one item per config, and
    the note that a pass within noise is not "no change"."""
    power = data.get("power", {})
    if not power:
        return []
    header = power_header(data["level"], next(iter(power.values()))["power"])
    lines = [header[0].upper() + header[1:], ""]
    lines += [f"- **{name}**: {_md_cell(power_line(p))}" for name, p in power.items()]
    if note := noise_note(power):
        lines += ["", _md_cell(note[0].upper() + note[1:]) + "."]
    return [*lines, ""]


def machine_dependent(data: SummaryData) -> list[str]:
    """summary.md's list of what depended on this machine's float rounding: stale records,
    outputs replayed against the accepted ones, divergences at a near-tie of the baseline."""
    out: list[str] = []
    for title, listed, text in (
        ("Accepted records not applied", data["stale"], ""),
        ("Outputs that left the accepted ones", data["replays"],
         "Leaving the accepted output at a near-tie depends on the machine (its kernels, its "
         "thread count), so the accepted output was judged; a clear-margin change is real and "
         "this run's output was judged."),
        ("Divergences at a near-tie of the baseline", data["near_ties"],
         "Where the baseline's own top-2 margin is below near_tie_epsilon, the divergence is "
         "reported, not counted as drift."),
    ):
        if listed:
            out += ["", f"## {title}", ""] + ([text, ""] if text else [])
            out += [f"- {_md_cell(line)}" for line in listed]
    return out


_CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1200px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.fail { color: #b00; font-weight: bold; }
.charts { display: flex; flex-wrap: wrap; gap: 24px; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.pair pre { white-space: pre-wrap; background: #f6f6f6; padding: 8px; margin: 0; }
.prefix { color: #777; }
mark.base { background: #cde4ff; } mark.cand { background: #ffd6cc; }
"""


def _table_html(header: tuple[str, ...], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in header)
    body = []
    for cells in rows:
        cls = ' class="fail"' if cells[-1].startswith("FAIL") else ""
        body.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells[:-1])
                    + f"<td{cls}>{escape(cells[-1])}</td></tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _charts(data: SummaryData) -> list[str]:
    cfgs = [m for m in data["configs"].values() if m["prompts"]]  # compared configs
    every = list(data["configs"].values())

    def share(m: ConfigMetrics, n: int) -> float | None:
        return n / m["outputs"] if m["outputs"] else None

    charts = [
        svg.bars("Mean KL(base‖config), log scale", [(m["name"], m["kl"]) for m in cfgs],
                 log=True),
        svg.bars("Top-1 agreement with the baseline", [(m["name"], m["top1"]) for m in cfgs],
                 fmt=".2f", maximum=1.0, colour="#5b9b5b"),
        svg.bars("Outputs in a repetition loop (share)",
                 [(m["name"], share(m, m["loops"])) for m in every], fmt=".2f", maximum=1.0,
                 colour="#c0504d"),
        svg.bars("Empty outputs (share)", [(m["name"], share(m, m["empty"])) for m in every],
                 fmt=".2f", maximum=1.0, colour="#8064a2"),
        svg.bars("Constraint adherence", [(m["name"], m["adherence"]) for m in every],
                 fmt=".2f", maximum=1.0, colour="#4bacc6"),
        svg.scatter("Speed vs size", [(m["name"], m["mb"], m["tps"]) for m in every
                                      if m["mb"] is not None and m["tps"] is not None],
                    "model MB", "generated tokens/s"),
    ]
    timeline = [(name, [(c, d, n) for c, d, n in rows]) for name, rows in data["timeline"].items()
                if rows]
    if timeline:
        charts.append(svg.strip("Where each prompt first left the baseline (green: never; "
                                "red: at the first token)", timeline))
    return charts


def _example_html(name: str, ex: Example) -> str:
    prefix = f'<span class="prefix">{escape(ex["prefix"])}</span>'
    return (f"<h3>{escape(name)} on {escape(ex['case'])}</h3>"
            f"<p>KL {ex['kl']:.3f}, top-1 {ex['top1']:.2f}, {escape(_where(ex))}. Prompt: "
            f"<q>{escape(ex['prompt'])}</q></p><div class=\"pair\">"
            f"<pre><b>baseline</b>\n{prefix}<mark class=\"base\">{escape(ex['base'])}</mark>"
            f"</pre><pre><b>{escape(name)}</b>\n{prefix}<mark class=\"cand\">"
            f"{escape(ex['cand'])}</mark></pre></div>")


def _stats_html(data: SummaryData) -> list[str]:
    if not data.get("aggregates"):
        return []
    notes = "".join(f"<li>{escape(line)}</li>" for line in data["judgements"])
    out = [f"<h2>Against the baseline, {100 * data['level']:.0f}% intervals</h2>",
           "<p>Bootstrap over prompts; loops and adherence in percentage points, paired, with "
           "exact McNemar p; <i>noise</i>: not significant.</p>",
           _table_html(STATS_COLUMNS, stats_rows(data["aggregates"])), f"<ul>{notes}</ul>"]
    if power := data.get("power", {}):
        header = power_header(data["level"], next(iter(power.values()))["power"])
        items = "".join(f"<li><b>{escape(name)}</b>: {escape(power_line(p))}</li>"
                        for name, p in power.items())
        note = f"<p>{escape(n)}.</p>" if (n := noise_note(power)) else ""
        out += [f"<p>{escape(header[0].upper() + header[1:])}</p><ul>{items}</ul>{note}"]
    return out


def _engines_html(data: SummaryData) -> list[str]:
    if not data.get("engines"):
        return []
    return [f"<h2>Which engine moved what</h2><p>{escape(ENGINE_LEGEND)}; "
            f"{100 * data['level']:.0f}% intervals over prompts.</p>",
            _table_html(ENGINE_COLUMNS, engine_rows(data["engines"]))]


def _config_html(data: SummaryData) -> list[str]:
    details = "".join(f"<li><b>{escape(k)}</b>: {escape(v)}</li>"
                      for k, v in data["details"].items())
    return [_table_html(COLUMNS, [format_row(m) for m in data["configs"].values()]),
            f"<ul>{details}</ul>", *_stats_html(data), *_engines_html(data),
            '<h2>Plots</h2><div class="charts">', *_charts(data), "</div>"]


def html(data: SummaryData) -> str:
    """index.html: one self-contained file (inline CSS and SVG, no scripts, no network)."""
    examples = "".join(_example_html(name, ex) for name, exs in data["examples"].items()
                       for ex in exs)
    side_by_side = ["<h2>Continuations side by side</h2>",
                    "<p>Grey: the common prefix; highlighted: each model's text after the first "
                    "divergence. The prompts where each config drifted most.</p>", examples]
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>shrinktests report</title>", f"<style>{_CSS}</style></head><body>",
        "<h1>shrinktests report</h1>", f"<p>Model <code>{escape(data['model'])}</code></p>",
        *(_config_html(data) if data["configs"] else []),
        *(atlas_report.html_section(a) if (a := data["atlas"]) else []),
        *(side_by_side if examples else []), "</body></html>",
    ])


def write_report(folder: Path, data: SummaryData) -> list[Path]:
    """Write summary.md, index.html and data.json atomically into ``folder``."""
    files = {"summary.md": markdown(data), "index.html": html(data),
             "data.json": json.dumps(data, indent=1, default=str)}
    out = []
    for name, text in files.items():
        path = folder / name
        atomic_write_text(path, text)
        out.append(path)
    return out
