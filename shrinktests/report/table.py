"""Plain-text tables for the terminal: the config table, the statistics, the atlas ranking."""

from __future__ import annotations


def format_table(rows: list[list[str]], header: tuple[str, ...]) -> list[str]:
    """Left-aligned first column, right-aligned figures, a dashed rule under the header."""
    widths = [max(len(str(r[i])) for r in [list(header), *rows]) for i in range(len(header))]
    def line(cells: list[str] | tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]
