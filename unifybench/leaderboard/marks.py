"""The best value of a column and the rows not significantly different from it (``compare``'s paired
tests)."""
from __future__ import annotations

import math

import pandas as pd

from ..metrics import DIRECTIONS
from .cells import is_count
from .rows import LeaderboardRow


# The level of the paired test that marks a row "not significantly different from the best".
SIGNIFICANCE = 0.05


def column_marks(records: list[LeaderboardRow], metric: str) -> dict[int, str]:
    """Row position -> ``best`` (the best value of the column) or ``tie`` (not significantly
    different from the best by ``compare``'s paired tests at ``SIGNIFICANCE``: its interval holds 0
    and its permutation p-value is not below). Overlapping
    intervals are not a test of a difference (Schenker & Gentleman 2001), so only rows that can be
    paired with the best (single runs on the same concepts) are ever marked ``tie``. A run that copies
    its reference photos is never marked."""
    values = [None if r.copies else r.value(metric) for r in records]
    best = best_positions(pd.Series(values, dtype=object), DIRECTIONS.get(metric, "higher"))
    marks = {i: "best" for i in best}
    if not best or is_count(metric):
        return marks
    top = records[min(best)]
    for i, row in enumerate(records):
        if i not in marks and isinstance(values[i], float):
            found = _paired_with(top, row, metric)
            if found is not None and min(found["p"], found["p_t"]) >= SIGNIFICANCE:
                marks[i] = "tie"
    return marks


def _paired_with(a: LeaderboardRow, b: LeaderboardRow, metric: str) -> dict | None:
    """``compare``'s paired test of two rows on ``metric``, or None when they cannot be paired: a
    published row or a group of seeds, other concepts, no readable scores."""
    if a.seeds or b.seeds or a.concept_set != b.concept_set:
        return None
    rows_a, rows_b = a.score_rows(), b.score_rows()
    if not rows_a or not rows_b:
        return None
    from ..metrics import paired_metric

    task, name = metric.split(".", 1)
    try:
        return paired_metric(rows_a, rows_b, task, name)
    except (KeyError, TypeError, ValueError):  # scores.jsonl rows of the wrong shape: not paired
        return None


def best_positions(values: pd.Series, direction: str) -> set[int]:
    """Row positions holding the best value of a column (ties all marked); none when fewer than two
    values, or when every value is the same (a column where no row is better marks no row best)."""
    numbers = {i: float(v) for i, v in enumerate(values) if isinstance(v, (int, float)) and not isinstance(v, bool)
               and not math.isnan(float(v))}
    if len(numbers) < 2 or max(numbers.values()) - min(numbers.values()) < 1e-12:
        return set()
    best = max(numbers.values()) if direction == "higher" else min(numbers.values())
    return {i for i, v in numbers.items() if abs(v - best) < 1e-12}
