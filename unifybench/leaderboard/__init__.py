"""Results to tables: methods x metrics, one table per :class:`~unifybench.groups.GroupKey` (benchmark
name and content, protocol, backbones, judge, limit), the key ``compare`` uses too.

Rows made on different benchmarks, protocols, scorer backbones, judges or ``--limit`` never share a
table, so no column mixes them; a table's title says what its rows share (two benchmarks with one
name: each title gives its content hash). Published rows (with
source and confidence) join the table of their benchmark and protocol. Random-init scores get
their own tables, titled as plumbing-only. Each row is a :class:`~.rows.LeaderboardRow`, read from the
run directory by :func:`unifybench.scored_run.load_scored_run` (as the gallery and ``compare`` read it);
md, csv and html render them.

One module per job: ``rows`` (run directories to rows), ``seeds`` (seeds folded), ``tables``
(grouping), ``cells`` (a value as text), ``marks`` (best and ties), ``render_md``, ``render_csv``,
``render_html`` and ``plots``.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import BenchError
from .render_csv import as_csv
from .render_html import as_html
from .render_md import as_markdown
from .rows import Found, LeaderboardRow, find_runs, one_per_run, published_rows, run_row
from .seeds import seed_groups
from .tables import build_tables


def collect(run_dirs: list[Path], include_published: bool = True) -> tuple[list[LeaderboardRow], Found]:
    """The rows of the runs under ``run_dirs`` (seeds folded, one per run identity) and the published
    rows, with what was found (``Found.unfinished``: run directories left out, no results.json)."""
    found = find_runs(run_dirs)
    rows = seed_groups(one_per_run([run_row(p.parent) for p in found.results]))
    if include_published:
        rows += published_rows()
    if not rows:
        raise BenchError("no results to show: pass run directories or run `unifybench run` first",
                         where="leaderboard")
    return rows, found


def render(rows: list[LeaderboardRow], fmt: str = "md") -> str:
    if fmt == "csv":
        return as_csv(rows)
    tables = build_tables(rows)
    return as_html(tables) if fmt == "html" else as_markdown(tables)


def build_leaderboard(run_dirs: list[Path], fmt: str = "md", include_published: bool = True) -> str:
    return render(collect(run_dirs, include_published)[0], fmt)
