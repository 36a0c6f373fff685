"""How an atlas reads: a ranked terminal table, a heatmap and an MSE-vs-KL scatter, the recipe.

Pure functions of :meth:`shrinktests.atlas.run.AtlasRun.data`, so the pytest summary, the
``--shrink-report`` folder and ``python -m shrinktests atlas`` all render the same data.
"""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shrinktests.atlas.measure import describe_method, parse_scope_id
from shrinktests.report import svg
from shrinktests.report.table import format_table
from shrinktests.run.cache import atomic_write_text

if TYPE_CHECKING:
    from shrinktests.atlas.run import AtlasData

PART_COLOURS = {"attention": "#4a7fb5", "mlp": "#c0504d", "q_proj": "#4a7fb5",
                "k_proj": "#6fa8dc", "v_proj": "#3d85c6", "o_proj": "#1c4587",
                "gate_proj": "#e06666", "up_proj": "#c0504d", "down_proj": "#85200c"}
HEADER = ("rank", "scope", "KL", "top-1", "1st div", "ident", "MSE", "rel err", "params")


def _row(rank: int, d: dict[str, Any]) -> list[str]:
    drift = d["drift"]
    ties = f" ~{drift['near_ties']}" if drift["near_ties"] else ""
    return [str(rank), d["scope"], f"{drift['kl_mean']:.4f}", f"{drift['top1']:.3f}",
            f"{drift['first_divergence']:g}{ties}",
            f"{drift['identical']}/{len(drift['lengths'])}", f"{d['mse']:.2e}",
            f"{d['rel_error']:.3f}", f"{d['params'] / 1e6:.2f}M"]


def correlation_line(data: AtlasData) -> str | None:
    corr = data.get("spearman")
    if not corr:
        return None
    (rho, p), (rho_rel, p_rel) = corr["mse"], corr["rel_error"]
    if math.isnan(rho):
        return "reconstruction MSE vs KL: no rank correlation defined (constant values)"
    return (f"reconstruction error vs behaviour over {len(data['scopes'])} scopes: Spearman "
            f"rho(MSE, KL) = {rho:+.2f} (p = {p:.3g}), rho(relative error, KL) = "
            f"{rho_rel:+.2f} (p = {p_rel:.3g})")


def recipe_lines(data: AtlasData) -> list[str]:
    rec = data.get("recipe")
    if not rec:
        return []
    res = rec["results"]
    widths: dict[int, list[str]] = {}
    for sid, bits in rec["allocation"].items():
        widths.setdefault(int(bits), []).append(sid)
    lines = [f"recipe within {rec['target_bpw']:.2f} bits/weight (scopes per width):"]
    lines += [f"  {b} bits: {_by_part(ids)}" for b, ids in sorted(widths.items(), reverse=True)]
    for name in (rec["recipe"], rec["uniform"], rec["inverse"]):
        r = res[name]
        d = r["drift"]
        lines.append(f"  {name:<24} {r['bits_per_weight']:.2f} bits/w  KL {d['kl_mean']:.4f}  "
                     f"top-1 {d['top1']:.3f}  1st div {d['first_divergence']:g}")
    return lines


def ranges(numbers: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` → ``"0-2, 5, 7-8"``."""
    out: list[str] = []
    for n in sorted(numbers):
        if out and out[-1].rpartition("-")[2] == str(n - 1):
            out[-1] = f"{out[-1].partition('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out)


def _by_part(scope_ids: list[str]) -> str:
    layers: dict[str, list[int]] = {}
    for sid in scope_ids:
        s = parse_scope_id(sid)
        layers.setdefault(s.part, []).append(s.layer)
    return "; ".join(f"{part} layers {ranges(ls)}" for part, ls in sorted(layers.items()))


def render(data: AtlasData, top: int = 10) -> list[str]:
    """Terminal lines: the most and least sensitive scopes, the correlation, the recipe."""
    scopes = data["scopes"]
    if not scopes:
        return []
    rows = [_row(i + 1, d) for i, d in enumerate(scopes)]
    shown = rows if len(rows) <= top + 3 else [*rows[:top], ["..."] + [""] * 8, *rows[-3:]]
    lines = [f"sensitivity atlas: {describe_method(data['method'])}, one scope at a time, "
             f"most sensitive first ({len(scopes)} scopes, {data['seconds']:.0f} s of "
             "measuring)", *format_table(shown, HEADER)]
    if line := correlation_line(data):
        lines.append(line)
    lines += recipe_lines(data)
    if data.get("restored"):
        lines.append(f"restore check: {data['restored']}")
    return lines


def heatmap_svg(data: AtlasData) -> str:
    scopes = data["scopes"]
    layers = sorted({d["layer"] for d in scopes})
    parts = [p for p in data["parts"] if any(d["part"] == p for d in scopes)]
    cells = {}
    for d in scopes:
        dr = d["drift"]
        cells[(d["part"], str(d["layer"]))] = (
            dr["kl_mean"], f"{d['scope']}: KL {dr['kl_mean']:.4f}, top-1 {dr['top1']:.3f}, "
            f"MSE {d['mse']:.2e}")
    return svg.heatmap("Mean KL when only this scope is perturbed (columns: layer)", parts,
                       [str(x) for x in layers], cells)


def scatter_svg(data: AtlasData) -> str:
    scopes = data["scopes"]
    points = [(d["scope"], d["mse"], d["drift"]["kl_mean"],
               PART_COLOURS.get(d["part"], "#888")) for d in scopes]
    parts = sorted({d["part"] for d in scopes})
    corr = data.get("spearman")
    rho = f", Spearman rho = {corr['mse'][0]:+.2f}" if corr else ""
    return svg.log_scatter(f"Reconstruction MSE vs mean KL{rho}", points, "weight MSE",
                           "mean KL", labelled=_outliers(scopes),
                           legend=[(p, PART_COLOURS.get(p, "#888")) for p in parts], width=480)


def _outliers(scopes: list[dict[str, Any]]) -> list[str]:
    """The scopes worth a label on the scatter: the two most sensitive, the two largest MSE."""
    by_mse = sorted(scopes, key=lambda d: -d["mse"])
    return [d["scope"] for d in scopes[:2]] + [d["scope"] for d in by_mse[:2]]


def markdown(data: AtlasData) -> list[str]:
    """The atlas section of summary.md (or the whole of atlas.md)."""
    if not data["scopes"]:
        return []
    rows = [_row(i + 1, d) for i, d in enumerate(data["scopes"])]
    lines = ["## Sensitivity atlas", "",
             f"Each scope perturbed alone with `{describe_method(data['method'])}`; KL and "
             "top-1 teacher-forced on the baseline continuations, 1st div is the "
             "median token where greedy decoding would first leave the baseline (`~N` near-ties).",
             "", "| " + " | ".join(HEADER) + " |", "|---" + "|---:" * (len(HEADER) - 1) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if line := correlation_line(data):
        lines += ["", line]
    if rec := recipe_lines(data):
        lines += ["", "```", *rec, "```"]
    return [*lines, ""]


def html_section(data: AtlasData) -> list[str]:
    """The atlas part of index.html: heatmap, scatter, correlation, recipe."""
    if not data["scopes"]:
        return []
    out = ["<h2>Sensitivity atlas</h2>", '<div class="charts">', heatmap_svg(data),
           scatter_svg(data), "</div>"]
    if line := correlation_line(data):
        out.append(f"<p>{escape(line)}</p>")
    if rec := recipe_lines(data):
        out.append('<pre style="white-space: pre-wrap">'
                   f"{escape(chr(10).join(rec))}</pre>")
    return out


def write(folder: Path, data: AtlasData) -> list[Path]:
    """atlas.json, atlas.md, heatmap.svg, scatter.svg and a standalone index.html."""
    page = "\n".join(["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                      "<title>shrinktests atlas</title></head><body>", *html_section(data),
                      "</body></html>"])
    files = {"atlas.json": json.dumps(data, indent=1, default=str),
             "atlas.md": "\n".join(markdown(data)), "heatmap.svg": heatmap_svg(data),
             "scatter.svg": scatter_svg(data), "index.html": page}
    out = []
    for name, text in files.items():
        atomic_write_text(folder / name, text)
        out.append(folder / name)
    return out
