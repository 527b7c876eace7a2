"""Rows to tables: one per :class:`~unifybench.groups.GroupKey` (benchmark name and content, protocol,
backbones, judge, limit), titled with what its rows share."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ..groups import RANDOM_METHOD, GroupKey
from ..metrics import column_order, is_reason
from .rows import LeaderboardRow


GROUP_FIELDS = GroupKey._fields


TRAILING = ("source", "confidence")


@dataclass
class Table:
    title: str
    key: GroupKey
    rows: list[LeaderboardRow]  # one per run, group of seeds or published result, in the order shown
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
    if key.random_method:
        scorers = f", scorer backbones {backbones}" if key.uses_backbones else ""
        title = f"{bench}: protocol {protocol}, {RANDOM_METHOD}{scorers}{judged}{limited}"
    elif not key.uses_backbones:
        return f"{bench}: protocol {protocol}{judged}{limited} (understanding only)"
    else:
        title = f"{bench}: protocol {protocol}, scorer backbones {backbones}{judged}{limited}"
    if key.random_init:
        title += " (random-init weights: plumbing and speed only, not results)"
    return title


def _has_value(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def build_tables(rows: list[LeaderboardRow]) -> list[Table]:
    runs = [i for i, r in enumerate(rows) if not r.published]
    keys: dict[GroupKey, list[int]] = {}
    for i in runs:
        if rows[i].key.uses_backbones:
            keys.setdefault(rows[i].key, []).append(i)
    # A published row names no benchmark content: it joins every table of its benchmark's name.
    for i, row in enumerate(rows):
        if row.published:
            homes = [k for k in list(keys) if k._replace(fingerprint="") == row.key]
            for key in homes or [row.key]:
                keys.setdefault(key, []).append(i)
    # A run with no generation scores used no scorer backbone: it joins every table whose key is its
    # own once backbones drop out (GroupKey.without_backbones: the rule compare applies per metric),
    # or a table of its own.
    for i in runs:
        own = rows[i].key
        if own.uses_backbones:
            continue
        homes = [k for k, members in keys.items()
                 if k.without_backbones() == own and not all(rows[m].published for m in members)]
        for key in homes or [own]:
            keys.setdefault(key, []).insert(0, i)
    # Runs first, then published-only groups; inside a group, rows in the order given.
    ordered = sorted(keys.items(), key=lambda kv: all(rows[m].published for m in kv[1]))
    columns = [c for c in column_order() if any(c in r.metrics for r in rows)]
    fingerprints: dict[str, set[str]] = {}
    for key in keys:
        fingerprints.setdefault(key.benchmark, set()).add(key.fingerprint)
    tables = []
    for key, members in ordered:
        part = [rows[m] for m in members]
        present = [c for c in (_judge_first(columns) if key.judge else columns)
                   if any(_has_value(r.value(c)) for r in part)]
        metrics = [c for c in present if not all(is_reason(r.value(c)) for r in part if _has_value(r.value(c)))]
        unscored = {c: sorted({r.value(c) for r in part if _has_value(r.value(c))}) for c in present
                    if c not in metrics}
        title = _group_title(key, len(fingerprints[key.benchmark] - {""}) > 1)
        if len({r.concept_set for r in part if r.concept_set}) > 1:
            # rows on different concepts: each says how many, and the title says they differ (a copy of
            # the row: the same run may sit in another table, where its concepts are not in question)
            title += " — rows on different concept sets (each row says how many)"
            part = [replace(r, method=f"{r.method} [{len(r.concept_set)} concepts]") if r.concept_set else r
                    for r in part]
        tables.append(Table(title, key, part, metrics, unscored))
    return tables


def _judge_first(columns: list[str]) -> list[str]:
    """Where a judge scored the open answers, its score leads each task's columns: char-BLEU rewards
    echoing the question (random-answer's shuffled question words beat every model on it)."""
    tasks: dict[str, list[str]] = {}
    for c in columns:
        tasks.setdefault(c.split(".")[0], []).append(c)
    return [c for cols in tasks.values() for c in sorted(cols, key=lambda c: ".judge_" not in c)]
