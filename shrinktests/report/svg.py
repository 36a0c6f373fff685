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


def _heat_colour(fraction: float) -> str:
    """Light yellow (0: least sensitive) through orange to dark red (1: most)."""
    f = min(max(fraction, 0.0), 1.0)
    return f"hsl({55 - 55 * f:.0f}, 90%, {92 - 57 * f:.0f}%)"


def heatmap(title: str, rows: Sequence[str], cols: Sequence[str],
            cells: dict[tuple[str, str], tuple[float, str]], cell: int = 16) -> str:
    """A grid coloured by value on a log scale: ``cells[(row, col)] = (value, tooltip)``;
    a missing cell is drawn grey. A legend gives the two ends of the scale."""
    values = [v for v, _ in cells.values() if v > 0]
    lo = math.log10(min(values)) if values else 0.0
    hi = math.log10(max(values)) if values else 1.0
    span = (hi - lo) or 1.0
    top = 34
    body = [f'<text x="0" y="12" {FONT} font-weight="bold">{escape(title)}</text>']
    for j, col in enumerate(cols):
        if j % 5 == 0 or len(cols) <= 12:
            body.append(f'<text x="{LABEL + j * cell + cell / 2:.1f}" y="{top - 4}" {FONT} '
                        f'text-anchor="middle">{escape(col)}</text>')
    for i, row in enumerate(rows):
        y = top + i * cell
        body.append(f'<text x="{LABEL - 6}" y="{y + cell - 4}" {FONT} text-anchor="end">'
                    f'{escape(row)}</text>')
        for j, col in enumerate(cols):
            x = LABEL + j * cell
            found = cells.get((row, col))
            if found is None:
                fill, tip = "#ddd", f"{row} {col}: not measured"
            else:
                v, tip = found
                fill = _heat_colour((math.log10(v) - lo) / span if v > 0 else 0.0)
            body.append(f'<rect x="{x}" y="{y}" width="{cell - 1}" height="{cell - 1}" '
                        f'fill="{fill}"><title>{escape(tip)}</title></rect>')
    ly = top + len(rows) * cell + 10
    steps = 10
    for k in range(steps):
        body.append(f'<rect x="{LABEL + k * 12}" y="{ly}" width="12" height="10" '
                    f'fill="{_heat_colour(k / (steps - 1))}"/>')
    body.append(f'<text x="{LABEL - 6}" y="{ly + 9}" {FONT} text-anchor="end">'
                f'{10 ** lo:.3g}</text>')
    body.append(f'<text x="{LABEL + steps * 12 + 6}" y="{ly + 9}" {FONT}>{10 ** hi:.3g} '
                '(log scale)</text>')
    width = max(LABEL + len(cols) * cell + 10, LABEL + steps * 12 + 120)
    return _svg(width, ly + 16, body, title)


def log_scatter(title: str, points: Sequence[tuple[str, float, float, str]], xlabel: str,
                ylabel: str, labelled: Sequence[str] = (), legend: Sequence[tuple[str, str]] = (),
                width: int = 460, height: int = 320) -> str:
    """Points (label, x, y, colour) on log-log axes with decade gridlines; only the points
    named in ``labelled`` carry their label (hover shows every one). Non-positive values are
    left out, since a log axis has no place for them."""
    pts = [p for p in points if p[1] > 0 and p[2] > 0]
    left, bottom, pad = 56, 36, 16
    pw, ph = width - left - pad - 50, height - bottom - pad - 14
    x0, x1 = _log_range([p[1] for p in pts])
    y0, y1 = _log_range([p[2] for p in pts])

    def at(x: float, y: float) -> tuple[float, float]:
        return (left + (math.log10(x) - x0) / (x1 - x0) * pw,
                14 + pad + ph - (math.log10(y) - y0) / (y1 - y0) * ph)

    base = 14 + pad + ph
    body = [f'<text x="0" y="12" {FONT} font-weight="bold">{escape(title)}</text>']
    for t in _log_ticks(x0, x1):
        gx = left + (math.log10(t) - x0) / (x1 - x0) * pw
        body.append(f'<line x1="{gx:.1f}" y1="{14 + pad}" x2="{gx:.1f}" y2="{base}" '
                    'stroke="#eee"/>')
        body.append(f'<text x="{gx:.1f}" y="{base + 12}" {FONT} text-anchor="middle">'
                    f'{t:.0e}</text>')
    for t in _log_ticks(y0, y1):
        gy = base - (math.log10(t) - y0) / (y1 - y0) * ph
        body.append(f'<line x1="{left}" y1="{gy:.1f}" x2="{left + pw}" y2="{gy:.1f}" '
                    'stroke="#eee"/>')
        body.append(f'<text x="{left - 4}" y="{gy + 4:.1f}" {FONT} text-anchor="end">'
                    f'{t:.0e}</text>')
    body += [f'<line x1="{left}" y1="{base}" x2="{left + pw}" y2="{base}" stroke="#444"/>',
             f'<line x1="{left}" y1="{14 + pad}" x2="{left}" y2="{base}" stroke="#444"/>',
             f'<text x="{left + pw / 2}" y="{height - 4}" {FONT} text-anchor="middle">'
             f'{escape(xlabel)}</text>',
             f'<text x="12" y="{14 + pad + ph / 2}" {FONT} text-anchor="middle" '
             f'transform="rotate(-90 12 {14 + pad + ph / 2})">{escape(ylabel)}</text>']
    for label, x, y, colour in pts:
        cx, cy = at(x, y)
        body.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" fill="{colour}" '
                    f'fill-opacity="0.8"><title>{escape(label)}: {x:.3g}, {y:.3g}</title>'
                    '</circle>')
        if label in labelled:
            body.append(f'<text x="{cx + 5:.1f}" y="{cy - 4:.1f}" {FONT}>{escape(label)}</text>')
    for k, (name, colour) in enumerate(legend):
        body.append(f'<circle cx="{left + pw + 10}" cy="{20 + pad + 14 * k}" r="4" '
                    f'fill="{colour}"/><text x="{left + pw + 17}" y="{24 + pad + 14 * k}" '
                    f'{FONT}>{escape(name)}</text>')
    return _svg(width, height, body, title)


def _log_range(values: Sequence[float]) -> tuple[float, float]:
    """log10 bounds around positive ``values`` with 10% of the span (at least 0.1) to spare."""
    logs = [math.log10(v) for v in values] or [0.0]
    lo, hi = min(logs), max(logs)
    spare = max(0.1, (hi - lo) * 0.1)
    return lo - spare, hi + spare


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks inside [10^lo, 10^hi]; only the decades when those are too many."""
    ticks = [m * 10.0**d for d in range(math.floor(lo), math.ceil(hi) + 1) for m in (1, 2, 5)
             if lo <= math.log10(m * 10.0**d) <= hi]
    return ticks if len(ticks) <= 8 else [t for t in ticks if f"{t:.0e}".startswith("1")]
