"""The leaderboard's names as they were imported before it became a package: see
:mod:`unifybench.leaderboard` (one module per job)."""
from __future__ import annotations

from .leaderboard import build_leaderboard, collect
from .leaderboard.cells import (CHOICE_NOTE, INTERVAL_NOTE, decimals, interval_parts, interval_text,
                                md_text as _md_text)
from .leaderboard.marks import SIGNIFICANCE, best_positions as _best
from .leaderboard.plots import dot_plot
from .leaderboard.render_csv import as_csv, csv_text as _csv_text
from .leaderboard.render_html import as_html
from .leaderboard.render_md import as_markdown
from .leaderboard.rows import PUBLISHED_CSV, Found, LeaderboardRow, find_runs, published_rows, run_row as _run_row
from .leaderboard.seeds import seed_groups
from .leaderboard.tables import GROUP_FIELDS, TRAILING, Table, build_tables

__all__ = ["CHOICE_NOTE", "GROUP_FIELDS", "INTERVAL_NOTE", "PUBLISHED_CSV", "SIGNIFICANCE", "TRAILING", "Found", "LeaderboardRow", "Table",
           "_best", "_csv_text", "_md_text", "_run_row", "as_csv", "as_html", "as_markdown", "build_leaderboard",
           "build_tables", "collect", "decimals", "dot_plot", "find_runs", "interval_parts", "interval_text",
           "published_rows", "seed_groups"]
