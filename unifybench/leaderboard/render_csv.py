"""The leaderboard as CSV: one line per run or published result, numbers in number columns."""
from __future__ import annotations

import pandas as pd

from ..metrics import column_order, is_reason
from .cells import as_dict
from .rows import is_published
from .tables import GROUP_FIELDS, TRAILING


def as_csv(rows: list[dict]) -> str:
    """One line per run or published result. Metric columns are numbers (empty where not scored), so
    ``pandas.read_csv`` reads them as floats; ``not_scored`` says why, as ``task.metric: reason; ...``."""
    frame = pd.DataFrame(rows, dtype=object)
    metrics = [c for c in column_order() if c in frame]
    reasons = []
    for row in frame[metrics].to_dict("records"):
        reasons.append("; ".join(f"{m}: {v}" for m, v in row.items() if is_reason(v)))
    numeric = frame[metrics].apply(lambda col: pd.to_numeric(col.where(~col.map(is_reason)), errors="coerce"))
    for field in GROUP_FIELDS:
        if field not in frame:
            frame[field] = ""
    bounds = {}
    for m in metrics:
        bounds[m] = numeric[m]
        for suffix, pick in (("lo", 0), ("hi", 1)):
            bounds[f"{m}_{suffix}"] = [as_dict(r.get("_intervals")).get(m, (None, None))[pick] for r in rows]
        bounds[f"{m}_sd"] = [as_dict(r.get("_sd")).get(m) for r in rows]
    numeric = pd.DataFrame(bounds).apply(pd.to_numeric, errors="coerce")
    numeric = numeric.loc[:, [c for c in numeric if not c.endswith("_sd") or numeric[c].notna().any()]]
    out = pd.concat([frame[list(GROUP_FIELDS) + ["method"]], numeric, frame[list(TRAILING)]], axis=1)
    out["seeds"] = [r.get("_seeds", 1) if not is_published(r) else "" for r in rows]
    out["concepts"] = [as_dict(r.get("_counts")).get("concepts", "") for r in rows]
    out["items"] = [as_dict(r.get("_counts")).get("items", "") for r in rows]
    out["random_init_method"] = ["" if is_published(r) else bool(r.get("_random_method"))
                                 for r in rows]
    out["not_scored"] = reasons
    out["interval_notes"] = ["; ".join(f"{m}: {n}" for m, n in sorted(as_dict(r.get("_interval_notes")).items()))
                             for r in rows]
    # --limit N as the number N (empty: every item), so pandas reads it as a number.
    out["limit"] = out["limit"].map(lambda v: int(str(v).split()[-1]) if str(v).strip() else "")
    for column in [*GROUP_FIELDS, "method", *TRAILING, "not_scored", "interval_notes"]:
        if column != "limit":
            out[column] = out[column].map(csv_text)
    return out.to_csv(index=False, lineterminator="\n")


def csv_text(value):
    """A text cell a spreadsheet will not run: one starting with = + - @ (or a tab or carriage
    return) gets a leading apostrophe, OWASP's advice against CSV formula injection."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
