"""A value as text, shared by the renderers: its interval at the decimals the interval supports, its
notes, a seed group's spread; and the notes a table carries."""
from __future__ import annotations

import math

from ..metrics import is_reason
from ..pages import esc
from .rows import LeaderboardRow
from .tables import Table

_ROW = object()  # value_parts: the row's own value


INTERVAL_NOTE = ("95% interval: value ± h where symmetric, else value [lo, hi]; the concepts are the unit (concept "
                 "jackknife, t on concepts − 1 df; README 'Uncertainty'); decimals as many as the interval "
                 "supports. A group of seeds: each concept averaged over the seeds, then the same interval, plus "
                 "the variance of the seeds' mean; sd: the spread between its seeds. Published rows report no interval.")


def decimals(lo: float, hi: float) -> int:
    """The decimals an interval supports: two significant digits of its half-width (1 to 4). A
    bound moves by about 5% of the half-width with the data's noise; more digits would be noise."""
    half = (hi - lo) / 2
    if not math.isfinite(half) or half <= 0:
        return 3
    return min(4, max(1, 1 - math.floor(math.log10(half))))


def interval_parts(value: float, lo: float, hi: float, signed: bool = False) -> tuple[str, str]:
    """``(value, "± h")`` where the interval is symmetric at the shown decimals, else ``(value,
    "[lo, hi]")`` (an interval clipped at a bound of the metric is not symmetric)."""
    places, sign = decimals(lo, hi), "+" if signed else ""
    if abs((value - lo) - (hi - value)) < 0.5 * 10 ** -places:
        return f"{value:{sign}.{places}f}", f"± {(hi - lo) / 2:.{places}f}"
    return f"{value:{sign}.{places}f}", f"[{lo:{sign}.{places}f}, {hi:{sign}.{places}f}]"


def interval_text(value: float, lo: float, hi: float, signed: bool = False) -> str:
    return " ".join(interval_parts(value, lo, hi, signed))


def value_parts(row: LeaderboardRow | None, metric: str, notes: dict[str, int], value=_ROW) -> tuple[str, str]:
    """A metric's cell as ``(value, what follows it)``: its interval, the interval's note (fewer
    than 5 concepts, one concept) as a numbered note, and for a group of seeds their spread.
    ``value``: the value shown when not the row's own; ``row`` None: a bare value (a per-concept cell)."""
    value = row.value(metric) if value is _ROW else value
    if not isinstance(value, float) or math.isnan(value) or row is None:
        return cell_text(value, notes), ""
    ci = row.intervals.get(metric)
    shown, after = interval_parts(value, *ci) if ci else (cell_text(value, notes), "")
    note = row.interval_notes.get(metric)
    if note:
        after += f" [note {notes.setdefault(note, len(notes) + 1)}]"
    if metric in row.sd:
        after += f" (sd {row.sd[metric]:.3f}, {row.seeds} seeds)"
    return shown, after.strip()


def cell_text(value, notes: dict[str, int]) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    if is_reason(text):
        number = notes.setdefault(text, len(notes) + 1)
        return f"n/s [{number}]"
    return md_text(text)


def md_text(text: str) -> str:
    """Text in a Markdown table or heading: markup from a name (``<script>``) shown, never rendered;
    a line break cannot end the row. Quotes stay (outside a tag they are plain text; "Yo'Chameleon"
    reads as written in a terminal)."""
    return esc(text, quote=False).replace("|", "/").replace("\r", " ").replace("\n", " ")


CHOICE_NOTE = ("choice.accuracy asks each multiple-choice item once: the always-first row is what answering the "
               "first option scores, a floor a row must clear to show it reads the question. "
               "choice.circular_accuracy (--choice-eval circular, MMBench's CircularEval) asks every rotation of "
               "the options and counts an item only if all are right: another metric, not comparable with "
               "choice.accuracy.")


def wants_choice_note(table: Table) -> bool:
    """A table with the floor row or a circular row says what they show."""
    return "choice.circular_accuracy" in table.metrics or any(
        r.method.startswith("always-first") for r in table.rows)


def is_count(metric: str) -> bool:
    """A count of items (unparsed replies, missing faces, copies), not a mean: no interval, no plot."""
    return metric.endswith(("unparsed", "missing", "missing_refs", "copies"))
