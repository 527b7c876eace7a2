"""Runs that differ only in ``--seed`` folded into one row, with the interval of the seeds' mean."""
from __future__ import annotations

import dataclasses

import pandas as pd

from .rows import LeaderboardRow


def seed_groups(rows: list[LeaderboardRow]) -> list[LeaderboardRow]:
    """Runs that differ only in ``--seed`` as one row: each metric's mean over the seeds, the spread
    between seeds (``sd``, the sample standard deviation) and the runs it folds (``seed_members``). A
    seed moves a trained method's numbers as much as a method change can, so one seed's row says too
    little."""
    groups: dict[tuple, list[LeaderboardRow]] = {}
    for row in rows:
        # Only seeds may differ: the same table, method, concepts and scored metrics.
        scored = tuple(sorted(k for k, v in row.metrics.items() if v is not None))
        groups.setdefault((row.key, row.method, row.concept_set, scored), []).append(row)
    out = []
    for members in groups.values():
        seeds = {m.seed for m in members}
        if len(members) < 2 or len(seeds) != len(members) or members[0].published:
            out += members
            continue
        first = members[0]
        ordered = sorted(members, key=lambda m: m.seed)
        row = dataclasses.replace(
            first, metrics={}, scored=None, seed=None, seed_members=ordered, sd={}, intervals={}, interval_notes={},
            concepts={}, concept_intervals={}, run_identity="", found_in=1,
            # copying is in the method's label, so in the group's key: every member copies, or none
            copies=any(m.copies for m in members),
            source=f"{len(members)} runs, seeds {', '.join(str(m.seed) for m in ordered)}")
        for metric in {k for m in members for k in m.metrics}:
            values = [m.value(metric) for m in members]
            if all(isinstance(v, float) for v in values):
                row.metrics[metric] = float(pd.Series(values).mean())
                row.sd[metric] = float(pd.Series(values).std(ddof=1))
                found = _seeds_interval(members, metric)
                if found:
                    row.intervals[metric] = (found["lo"], found["hi"])
                    if found.get("note"):
                        row.interval_notes[metric] = found["note"]
            elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                mean = sum(values) / len(values)  # a count per run, as the single-seed rows beside it
                row.metrics[metric] = int(mean) if mean == int(mean) else mean
            else:
                row.metrics[metric] = next((v for v in values if isinstance(v, str)), values[0])
        out.append(row)
    return out


def _seeds_interval(members: list[LeaderboardRow], metric: str) -> dict | None:
    """The interval of a group of seeds' mean (:func:`unifybench.uncertainty.interval_over_runs`):
    the concept sampling and the seed-to-seed spread both inside it."""
    from ..metrics import samples
    from ..uncertainty import interval_over_runs

    task, name = metric.split(".", 1)
    runs = []
    for member in members:
        rows = member.score_rows()
        parts = samples(task, name, rows) if rows else None
        if not parts:
            return None
        runs.append(parts)
    try:
        return interval_over_runs(runs)
    except (KeyError, TypeError, ValueError):  # scores.jsonl rows of the wrong shape: no interval
        return None
