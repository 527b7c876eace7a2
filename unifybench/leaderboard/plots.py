"""Inline SVG dot plots: a metric's rows with their 95% intervals, drawn here (nothing fetched)."""
from __future__ import annotations

import math

from ..metrics import DIRECTIONS
from ..pages import esc
from .cells import is_count
from .rows import LeaderboardRow


def dot_plot(title: str, labels: list[str], values: list, intervals: list, direction: str = "higher") -> str:
    """One metric as an inline SVG: a dot per row at its value and a line over its 95% interval, on a
    shared axis; rows without a number are left out. Drawn here, nothing fetched when viewed."""
    shown = [(lab, float(v), ci) for lab, v, ci in zip(labels, values, intervals)
             if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(float(v))]
    if not shown:
        return ""
    ends = [x for _, v, ci in shown for x in ([v] + (list(ci) if ci else []))]
    low, high = min(ends), max(ends)
    pad = (high - low) * 0.05 or 0.05
    low, high = low - pad, high + pad
    left, plot, row = 230, 300, 18
    width, height = left + plot + 60, row * len(shown) + 30

    def x(v: float) -> float:
        return left + (v - low) / (high - low) * plot

    parts = [f"<svg class='plot' width='{width}' height='{height}' viewBox='0 0 {width} {height}' role='img' "
             f"aria-label='{esc(title)}'><text x='0' y='12' font-weight='600'>{esc(title)} "
             f"{'(higher is better)' if direction == 'higher' else '(lower is better)'}</text>"]
    for i, (label, value, ci) in enumerate(shown):
        y = 30 + i * row
        short = label if len(label) <= 34 else label[:33] + "…"
        parts.append(f"<text x='0' y='{y + 4}'><title>{esc(label)}</title>{esc(short)}</text>")
        if ci:
            parts.append(f"<line x1='{x(ci[0]):.1f}' x2='{x(ci[1]):.1f}' y1='{y}' y2='{y}' stroke='#5b6475' "
                         f"stroke-width='2'/>")
        parts.append(f"<circle cx='{x(value):.1f}' cy='{y}' r='4' fill='#1f4fb5'><title>{value:.3f}"
                     + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "") + "</title></circle>")
    parts.append(f"<text x='{left}' y='{height - 2}' fill='#5b6475'>{low:.2f}</text>"
                 f"<text x='{left + plot}' y='{height - 2}' text-anchor='end' fill='#5b6475'>{high:.2f}</text></svg>")
    return "".join(parts)


def plots_of(records: list[LeaderboardRow], metrics: list[str]) -> str:
    """Per metric, the table's rows with their intervals."""
    labels = [r.method for r in records]
    svgs = [dot_plot(m, labels, [r.value(m) for r in records], [r.intervals.get(m) for r in records],
                     DIRECTIONS.get(m, "higher")) for m in metrics if not is_count(m)]
    svgs = [s for s in svgs if s]
    return f"<details><summary>plots: each metric with its 95% intervals</summary>{''.join(svgs)}</details>" \
        if svgs else ""
