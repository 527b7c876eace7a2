"""Runs that differ only in ``--seed`` folded into one row, with the interval of the seeds' mean."""
from __future__ import annotations

import pandas as pd

from .rows import is_published, run_scores
from .tables import GROUP_FIELDS


def seed_groups(rows: list[dict]) -> list[dict]:
    """Runs that differ only in ``--seed`` as one row: each metric's mean over the seeds, the spread
    between seeds (``_sd``, the sample standard deviation) and their number (``_seeds``). A seed moves
    a trained method's numbers as much as a method change can, so one seed's row says too little."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        # Only seeds may differ: the same table, method, concepts and scored metrics.
        scored = tuple(sorted(k for k, v in row.items() if "." in k and v is not None))
        key = (*(row.get(f, "") for f in GROUP_FIELDS), row["method"], row.get("_concept_set"), scored)
        groups.setdefault(key, []).append(row)
    out = []
    for members in groups.values():
        seeds = {m.get("_seed") for m in members}
        if len(members) < 2 or len(seeds) != len(members) or is_published(members[0]):
            out += members
            continue
        row = {k: v for k, v in members[0].items() if not k.startswith("_") and "." not in k}
        row["_seeds"], row["_sd"], row["_intervals"], row["_concepts"] = len(members), {}, {}, {}
        row["_interval_notes"] = {}
        row["_concept_set"], row["_counts"] = members[0].get("_concept_set"), members[0].get("_counts")
        row["_random_method"] = members[0].get("_random_method")
        row["source"] = f"{len(members)} runs, seeds {', '.join(str(m['_seed']) for m in sorted(members, key=lambda m: m['_seed']))}"
        for metric in {k for m in members for k in m if "." in k}:
            values = [m.get(metric) for m in members]
            if all(isinstance(v, float) for v in values):
                row[metric] = float(pd.Series(values).mean())
                row["_sd"][metric] = float(pd.Series(values).std(ddof=1))
                found = _seeds_interval(members, metric)
                if found:
                    row["_intervals"][metric] = (found["lo"], found["hi"])
                    if found.get("note"):
                        row["_interval_notes"][metric] = found["note"]
            elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                mean = sum(values) / len(values)  # a count per run, as the single-seed rows beside it
                row[metric] = int(mean) if mean == int(mean) else mean
            else:
                row[metric] = next((v for v in values if isinstance(v, str)), values[0])
        out.append(row)
    return out


def _seeds_interval(members: list[dict], metric: str) -> dict | None:
    """The interval of a group of seeds' mean (:func:`unifybench.uncertainty.interval_over_runs`):
    the concept sampling and the seed-to-seed spread both inside it."""
    from ..metrics import samples
    from ..uncertainty import interval_over_runs

    task, name = metric.split(".", 1)
    runs = []
    for member in members:
        rows = run_scores(member.get("_dir"))
        parts = samples(task, name, rows) if rows else None
        if not parts:
            return None
        runs.append(parts)
    try:
        return interval_over_runs(runs)
    except (KeyError, TypeError, ValueError):  # scores.jsonl rows of the wrong shape: no interval
        return None
