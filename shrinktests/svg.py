"""Tiny inline-SVG charts for the HTML report: no plotting library, no network, no scripts.

Each function returns one ``<svg>`` element as text. Values of ``None`` (not measured) are
drawn as an empty row labelled "-", so a chart never hides that a config is missing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

ROW = 18  # pixels per bar
LABEL = 130  # pixels for the row labels
FONT = 'font-family="sans-serif" font-size="11"'


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
            f'<title>{escape(title)}</title>{"".join(body)}</svg>')


def bars(title: str, items: Sequence[tuple[str, float | None]], *, log: bool = False,
         fmt: str = ".3f", width: int = 460, colour: str = "#4a7fb5",
         maximum: float | None = None) -> str:
    """Horizontal bars, one per (label, value); ``log`` for figures spanning decades (KL)."""
    values = [v for _, v in items if v is not None]
    span = width - LABEL - 60
    if log:
        floor = min([v for v in values if v > 0] or [1e-3])
        lo, hi = math.log10(floor) - 0.5, math.log10(max(values or [1.0]) * 1.5)

        def scale(v: float) -> float:
            return 0.0 if v <= 0 else max(0.0, (math.log10(v) - lo) / (hi - lo)) * span
    else:
        top = maximum if maximum is not None else max(values or [1.0]) or 1.0

        def scale(v: float) -> float:
            return v / top * span
    body = [f'<text x="0" y="12" {FONT} font-weight="bold">{escape(title)}</text>']
    for i, (label, v) in enumerate(items):
        y = 20 + i * ROW
        body.append(f'<text x="{LABEL - 6}" y="{y + 12}" {FONT} text-anchor="end">'
                    f'{escape(label)}</text>')
        if v is None:
            body.append(f'<text x="{LABEL + 4}" y="{y + 12}" {FONT} fill="#888">-</text>')
            continue
        w = scale(v)
        body.append(f'<rect x="{LABEL}" y="{y + 2}" width="{w:.1f}" height="{ROW - 5}" '
                    f'fill="{colour}"><title>{escape(label)}: {v:{fmt}}</title></rect>')
        body.append(f'<text x="{LABEL + w + 4:.1f}" y="{y + 12}" {FONT}>{v:{fmt}}</text>')
    return _svg(width, 26 + len(items) * ROW, body, title)


def scatter(title: str, points: Sequence[tuple[str, float, float]], xlabel: str,
            ylabel: str, width: int = 460, height: int = 300) -> str:
    """Labelled points (label, x, y) with axes from zero, e.g. tokens/s against MB."""
    left, bottom, pad = 50, 36, 16
    xs = [p[1] for p in points] or [1.0]
    ys = [p[2] for p in points] or [1.0]
    xmax, ymax = max(xs) * 1.1 or 1.0, max(ys) * 1.1 or 1.0
    pw, ph = width - left - pad - 60, height - bottom - pad - 14

    def at(x: float, y: float) -> tuple[float, float]:
        return left + x / xmax * pw, 14 + pad + ph - y / ymax * ph

    body = [f'<text x="0" y="12" {FONT} font-weight="bold">{escape(title)}</text>',
            f'<line x1="{left}" y1="{14 + pad + ph}" x2="{left + pw}" y2="{14 + pad + ph}" '
            'stroke="#444"/>',
            f'<line x1="{left}" y1="{14 + pad}" x2="{left}" y2="{14 + pad + ph}" stroke="#444"/>',
            f'<text x="{left + pw / 2}" y="{height - 4}" {FONT} text-anchor="middle">'
            f'{escape(xlabel)} (0 to {xmax:.0f})</text>',
            f'<text x="12" y="{14 + pad + ph / 2}" {FONT} text-anchor="middle" '
            f'transform="rotate(-90 12 {14 + pad + ph / 2})">{escape(ylabel)} (0 to {ymax:.0f})'
            '</text>']
    for label, x, y in points:
        cx, cy = at(x, y)
        body.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="#c0504d">'
                    f'<title>{escape(label)}: {x:.0f}, {y:.1f}</title></circle>')
        body.append(f'<text x="{cx + 6:.1f}" y="{cy + 4:.1f}" {FONT}>{escape(label)}</text>')
    return _svg(width, height, body, title)


def _cell_colour(fraction: float | None) -> str:
    """Green where a prompt never left the baseline, through yellow to red for a divergence
    at the first token."""
    if fraction is None:
        return "#3a9d5d"
    hue = 55 * fraction  # 0 = red, 55 = yellow
    return f"hsl({hue:.0f}, 80%, 50%)"


def strip(title: str, rows: Sequence[tuple[str, Sequence[tuple[str, int | None, int]]]],
          cell: int = 12) -> str:
    """Divergence timeline: a row per config, a cell per prompt, coloured by where in the
    continuation the config first left the baseline (hover for prompt and token)."""
    n = max((len(cells) for _, cells in rows), default=0)
    body = [f'<text x="0" y="12" {FONT} font-weight="bold">{escape(title)}</text>']
    for i, (label, cells) in enumerate(rows):
        y = 20 + i * ROW
        body.append(f'<text x="{LABEL - 6}" y="{y + 12}" {FONT} text-anchor="end">'
                    f'{escape(label)}</text>')
        for j, (case, div, length) in enumerate(cells):
            frac = None if div is None else (div / length if length else 0.0)
            where = "identical to the baseline" if div is None else (
                f"first divergence at token {div} of {length}")
            body.append(f'<rect x="{LABEL + j * cell}" y="{y + 2}" width="{cell - 1}" '
                        f'height="{ROW - 5}" fill="{_cell_colour(frac)}">'
                        f'<title>{escape(case)}: {where}</title></rect>')
    return _svg(LABEL + n * cell + 10, 26 + len(rows) * ROW, body, title)
