"""The leaderboard as CSV: one line per run or published result, numbers in number columns."""
from __future__ import annotations

import pandas as pd

from ..metrics import column_order, is_reason
from .rows import LeaderboardRow
from .tables import GROUP_FIELDS, TRAILING


def as_csv(rows: list[LeaderboardRow]) -> str:
    """One line per run or published result. Metric columns are numbers (empty where not scored), so
    ``pandas.read_csv`` reads them as floats; ``not_scored`` says why, as ``task.metric: reason; ...``."""
    metrics = [c for c in column_order() if any(c in r.metrics for r in rows)]
    number_columns: dict[str, list] = {}
    for m in metrics:
        number_columns[m] = [None if is_reason(r.value(m)) else r.value(m) for r in rows]
        number_columns[f"{m}_lo"] = [r.intervals.get(m, (None, None))[0] for r in rows]
        number_columns[f"{m}_hi"] = [r.intervals.get(m, (None, None))[1] for r in rows]
        number_columns[f"{m}_sd"] = [r.sd.get(m) for r in rows]
    numeric = pd.DataFrame(number_columns, dtype=object).apply(pd.to_numeric, errors="coerce")
    # a spread column only where a group of seeds has one
    numeric = numeric.loc[:, [c for c in numeric if not c.endswith("_sd") or numeric[c].notna().any()]]
    text_columns = {f: [getattr(r, f) for r in rows] for f in [*GROUP_FIELDS, "method"] if f != "random_method"}
    out = pd.concat([pd.DataFrame(text_columns, dtype=object), numeric,
                     pd.DataFrame({c: [getattr(r, c) for r in rows] for c in TRAILING}, dtype=object)], axis=1)
    out["seeds"] = ["" if r.published else (r.seeds or 1) for r in rows]
    out["concepts"] = [r.counts.get("concepts", "") for r in rows]
    out["items"] = [r.counts.get("items", "") for r in rows]
    out["random_init_method"] = ["" if r.published else r.random_method for r in rows]
    out["not_scored"] = ["; ".join(f"{m}: {r.value(m)}" for m in metrics if is_reason(r.value(m))) for r in rows]
    out["interval_notes"] = ["; ".join(f"{m}: {n}" for m, n in sorted(r.interval_notes.items())) for r in rows]
    # --limit N as the number N (empty: every item), so pandas reads it as a number.
    out["limit"] = out["limit"].map(lambda v: int(str(v).split()[-1]) if str(v).strip() else "")
    for column in [*GROUP_FIELDS, "method", *TRAILING, "not_scored", "interval_notes"]:
        if column in out and column != "limit":
            out[column] = out[column].map(csv_text)
    return out.to_csv(index=False, lineterminator="\n")


def csv_text(value):
    """A text cell a spreadsheet will not run: one starting with = + - @ (or a tab or carriage
    return) gets a leading apostrophe, OWASP's advice against CSV formula injection."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
