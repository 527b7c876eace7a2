"""Rows to tables: one per :class:`~unifybench.groups.GroupKey` (benchmark name and content, protocol,
backbones, judge, limit), titled with what its rows share."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..groups import RANDOM_METHOD, GroupKey, random_backbones as _random_backbones
from ..metrics import column_order, is_reason
from ..record import BACKBONES_UNUSED


GROUP_FIELDS = GroupKey._fields


TRAILING = ("source", "confidence")


@dataclass
class Table:
    title: str
    key: GroupKey
    rows: pd.DataFrame  # one row per run or published result; metric columns hold floats or reasons
    metrics: list[str]  # the columns shown: at least one row has a value
    unscored: dict[str, list[str]]  # columns no row has a value in -> the reasons given

    def unscored_line(self) -> str:
        """The columns left out because no row has a value, grouped by why."""
        by_reason: dict[str, list[str]] = {}
        for metric, reasons in self.unscored.items():
            why = "; ".join(r.removeprefix("not scored: ") for r in reasons)
            by_reason.setdefault(why, []).append(metric)
        return " / ".join(f"{', '.join(ms)}: {why}" for why, ms in by_reason.items())

    @property
    def random_init(self) -> bool:
        return self.key.random_init


def _group_title(key: GroupKey, same_name: bool) -> str:
    bench, protocol, backbones, judge, limit = key.benchmark, key.protocol, key.backbones, key.judge, key.limit
    if same_name and key.fingerprint:  # another table holds a benchmark of this name with other content
        bench += f" (content {key.fingerprint[:10]})"
    judged = f", judge {judge}" if judge else ""
    limited = f", {limit} (partial: first items and prompts only)" if limit else ""
    if backbones == BACKBONES_UNUSED:
        return f"{bench}: protocol {protocol}{judged}{limited} (understanding only)"
    if backbones.startswith(RANDOM_METHOD):
        scorers = backbones.removeprefix(RANDOM_METHOD).lstrip("; ")
        title = (f"{bench}: protocol {protocol}, {RANDOM_METHOD}"
                 f"{', scorer backbones ' + scorers if scorers else ''}{judged}{limited}")
    else:
        title = f"{bench}: protocol {protocol}, scorer backbones {backbones}{judged}{limited}"
    if _random_backbones(backbones):
        title += " (random-init weights: plumbing and speed only, not results)"
    return title


def build_tables(rows: list[dict]) -> list[Table]:
    frame = pd.DataFrame(rows, dtype=object)  # object: counts stay ints, reasons stay strings
    for field in GROUP_FIELDS:
        frame[field] = frame[field].fillna("") if field in frame else ""
    published = frame["_published"].eq(True) if "_published" in frame else pd.Series(False, index=frame.index)
    uses_backbones = ~frame["backbones"].isin([BACKBONES_UNUSED, RANDOM_METHOD])
    keys: dict[GroupKey, list[int]] = {}
    for i in frame.index[uses_backbones & ~published]:
        keys.setdefault(GroupKey.of(frame.loc[i]), []).append(i)
    # A published row names no benchmark content: it joins every table of its benchmark's name.
    for i in frame.index[published]:
        own = GroupKey.of(frame.loc[i])
        homes = [k for k in list(keys) if k._replace(fingerprint="") == own]
        for key in homes or [own]:
            keys.setdefault(key, []).append(i)
    # A run with no generation scores used no scorer backbone: it joins every table whose key is its
    # own once backbones drop out (GroupKey.without_backbones: the rule compare applies per metric),
    # or a table of its own.
    for i in frame.index[~uses_backbones]:
        own = GroupKey.of(frame.loc[i])
        homes = [k for k, members in keys.items() if k.without_backbones() == own and not published[members].all()]
        for key in homes or [own]:
            keys.setdefault(key, []).insert(0, i)
    # Runs first, then published-only groups; inside a group, rows in the order given.
    ordered = sorted(keys.items(), key=lambda kv: bool(published[kv[1]].all()))
    columns = [c for c in column_order() if c in frame]
    fingerprints: dict[str, set[str]] = {}
    for key in keys:
        fingerprints.setdefault(key.benchmark, set()).add(key.fingerprint)
    tables = []
    for key, members in ordered:
        part = frame.loc[members].reset_index(drop=True)
        present = [c for c in _judge_first(columns) if part[c].notna().any()] if key.judge else \
            [c for c in columns if part[c].notna().any()]
        metrics = [c for c in present if not part[c].dropna().map(is_reason).all()]
        unscored = {c: sorted(set(part[c].dropna())) for c in present if c not in metrics}
        title = _group_title(key, len(fingerprints[key.benchmark] - {""}) > 1)
        sets = {s for s in part.get("_concept_set", pd.Series(dtype=object)).dropna() if s}
        if len(sets) > 1:  # rows on different concepts: each says how many, and the title says they differ
            title += " — rows on different concept sets (each row says how many)"
            part["method"] = [m if not isinstance(s, tuple) else f"{m} [{len(s)} concepts]"
                              for m, s in zip(part["method"], part.get("_concept_set"))]
        tables.append(Table(title, key, part, metrics, unscored))
    return tables


def _judge_first(columns: list[str]) -> list[str]:
    """Where a judge scored the open answers, its score leads each task's columns: char-BLEU rewards
    echoing the question (random-answer's shuffled question words beat every model on it)."""
    tasks: dict[str, list[str]] = {}
    for c in columns:
        tasks.setdefault(c.split(".")[0], []).append(c)
    return [c for cols in tasks.values() for c in sorted(cols, key=lambda c: ".judge_" not in c)]
