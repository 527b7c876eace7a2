"""Run directories to leaderboard rows: finding runs, reading a scored run into one
:class:`LeaderboardRow`, the published rows, and one row per run identity."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import pandas as pd

from ..errors import BenchError
from ..groups import GroupKey
from ..run_record import is_random_init
from ..scored_run import ScoredRun, load_scored_run
from ..store import RESULTS_JSON, RUN_JSON


PUBLISHED_CSV = Path(__file__).resolve().parents[1] / "data" / "published.csv"

# A metric's value in a row: a mean (float), a count (int), or why it was not scored ("not scored: ...").
Value = Union[float, int, str]


@dataclass
class LeaderboardRow:
    """One line of the leaderboard: a run, a group of runs that differ only in ``--seed``, or a
    published result. The table it belongs to is :attr:`key`; what it shows is ``method`` and
    ``metrics``; the rest says how sure, and where the per-sample rows are."""

    benchmark: str
    protocol: str
    backbones: str  # the scorer backbones ("not used" when nothing was scored with them)
    judge: str
    limit: str  # "--limit N", or "" for every item
    fingerprint: str  # the benchmark's content hash; "" for a published row
    method: str  # as shown: the name, its arguments and labels ("[published]", "[copies reference photos]")
    metrics: dict[str, Value]  # "task.metric" -> value
    source: str
    confidence: str
    published: bool = False
    random_method: bool = False  # the method model had random weights (describe()["random_init"])
    scored: ScoredRun | None = None  # the run read back (None: a published row or a group of seeds)
    seed: Any = None
    seed_members: list["LeaderboardRow"] = field(default_factory=list)  # a group of seeds: its runs
    sd: dict[str, float] = field(default_factory=dict)  # a group of seeds: the spread between them
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    interval_notes: dict[str, str] = field(default_factory=dict)  # "only 3 concepts": shown with the number
    concepts: dict[str, dict] = field(default_factory=dict)  # results.json's per-concept metrics
    concept_set: tuple[str, ...] | None = None
    counts: dict[str, int] = field(default_factory=dict)  # concepts, items
    copies: bool = False  # it scores against its own reference photos: never marked best
    concept_intervals: dict = field(default_factory=dict)
    run_identity: str = ""  # what made and scored it: two directories with one identity are one run
    found_in: int = 1

    @property
    def key(self) -> GroupKey:
        return GroupKey(self.benchmark, self.protocol, self.backbones, self.judge, self.limit, self.fingerprint,
                        self.random_method)

    @property
    def seeds(self) -> int | None:
        """How many runs a group of seeds folds (None: a single run or a published row)."""
        return len(self.seed_members) or None

    def value(self, metric: str) -> Value | None:
        return self.metrics.get(metric)

    def score_rows(self) -> list[dict] | None:
        """The run's ``scores.jsonl`` rows, for intervals and paired marks; None where there are none
        to read (a published row, a group of seeds, a damaged or missing file)."""
        return self.scored.score_rows_if_readable() if self.scored is not None else None


@dataclass
class Found:
    results: list[Path]  # results.json of finished runs
    unfinished: list[Path]  # run directories with a run.json but no results.json


def find_runs(paths: list[Path]) -> Found:
    """Each path is a run directory or a folder searched recursively for them (default: ./runs).
    A run directory is not searched inside (its images/ can hold thousands of files)."""
    found = Found([], [])
    for path in list(paths) or [Path("runs")]:
        path = Path(path)
        if (path / RESULTS_JSON).is_file():
            found.results.append(path / RESULTS_JSON)
        elif (path / RUN_JSON).is_file():
            found.unfinished.append(path)
        elif path.is_dir():
            for top, dirs, files in os.walk(path):
                dirs.sort()
                if RUN_JSON in files or RESULTS_JSON in files:
                    dirs[:] = []
                    target = found.results if RESULTS_JSON in files else found.unfinished
                    target.append(Path(top) / RESULTS_JSON if RESULTS_JSON in files else Path(top))
        else:
            raise BenchError("not a run directory (no results.json) nor a folder of them", path)
    return found


def _limit_label(limit) -> str:
    return "" if limit in (None, "") else f"--limit {int(limit)}"


def run_row(run: Path | ScoredRun) -> LeaderboardRow:
    """A finished run (its directory, or as read already) as one row; ``scores.jsonl`` is read later,
    only where an interval or a mark needs it."""
    scored = run if isinstance(run, ScoredRun) else load_scored_run(Path(run), need_scores=False)
    run_dir = scored.run_dir
    results_path = run_dir / RESULTS_JSON
    try:
        results = scored.results
        backbones = results["backbones"]["kind"]
        clip_model = results["backbones"].get("clip_model")
        if clip_model not in (None, "ViT-B-32", "tiny"):  # CLIP-I/CLIP-T from another CLIP: another table
            backbones += f" (CLIP {clip_model})"
        limit = results["limit"] if "limit" in results else scored.record["spec"].get("limit")
        benchmark, judge = results["bench"]["name"], (results.get("judge") or {}).get("judge") or ""
        dreambench_plus = results.get("dreambench_plus_judge")
        if results["bench"].get("format") == "dreambench_plus":  # its own tables, its judge mode in the title
            benchmark += " (DreamBench++)"
            if dreambench_plus:
                judge = (f"{judge}; " if judge else "") + \
                    f"{dreambench_plus['judge']} (DreamBench++ judge, {dreambench_plus['mode']} mode)"
        method = results["method"]
        copies = (results["tasks"].get("gen") or {}).get("copies")
        if isinstance(copies, int) and copies:  # it scores against its own reference photos: say so
            method += f" [copies reference photos: {copies} images]"
        if results.get("choice_eval", "plain") != "plain":  # other requests: never the same row as a plain run's
            method += f" [choice: {results['choice_eval']}]"
        if results.get("resumed_with_changed_code"):  # predictions of two versions of the method's code
            method += " [resumed with changed code]"
        if results.get("method_code_changed"):  # rescored after the code changed: the old code's numbers
            method += " [code changed since]"
        backend = (results.get("method_details") or {}).get("backend_name")
        if backend:  # a method that runs on several unified models: which one made these numbers
            method += f" [{backend}]"
        if results.get("method_args"):
            method += " (" + ", ".join(f"{k}={v}" for k, v in sorted(results["method_args"].items())) + ")"
        metrics = {f"{task}.{metric}": value for task, ms in results["tasks"].items() for metric, value in ms.items()}
        concepts = results.get("concepts") or {}
        counts = results.get("counts") or {}
        intervals = results.get("intervals") or {}
        row = LeaderboardRow(
            benchmark=benchmark, protocol=results["protocol"], backbones=backbones, judge=judge,
            limit=_limit_label(limit), fingerprint=scored.fingerprint, method=method, metrics=metrics,
            source=f"run {run_dir.name}", confidence="this harness",
            # A random-init method model (model=tiny) makes random-init numbers whatever scored them:
            # never in a table of real results, and never joined to one as an understanding-only run.
            random_method=is_random_init(results.get("method_details")),
            scored=scored, seed=results.get("seed"),
            intervals={f"{t}.{m}": (ci["lo"], ci["hi"]) for t, ms in intervals.items() for m, ci in ms.items()},
            # "only 3 concepts", "one concept: over its own items": shown wherever the number is
            interval_notes={f"{t}.{m}": ci["note"] for t, ms in intervals.items() for m, ci in ms.items()
                            if ci.get("note")},
            concepts=concepts, concept_set=tuple(sorted(concepts)),
            counts={"concepts": counts.get("concepts", len(concepts)),
                    "items": counts.get("items", 0) + counts.get("images", 0)},
            copies=isinstance(copies, int) and copies > 0,
            concept_intervals=results.get("concept_intervals") or {})
        # What made the predictions (the run directory's hash input) and what scored them: two
        # directories that agree on both are one run found twice (a copy, or runs/demo inside runs/).
        row.run_identity = json.dumps([scored.record["identity"], *row.key], sort_keys=True, default=str)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BenchError(f"unreadable results ({exc.__class__.__name__}: {exc})", results_path) from exc
    return row


def is_published(row: LeaderboardRow) -> bool:
    """A published result (``published.csv``), not a run: a field, never read back from the method's name."""
    return row.published is True


def published_rows() -> list[LeaderboardRow]:
    if not PUBLISHED_CSV.is_file():
        return []
    frame = pd.read_csv(PUBLISHED_CSV, dtype=str, keep_default_na=False)
    rows = []
    for raw in frame.to_dict("records"):
        raw = {k: v for k, v in raw.items() if v != ""}
        metrics = {k: float(v) for k, v in raw.items() if "." in k}
        rows.append(LeaderboardRow(
            benchmark=raw["benchmark"], protocol=raw["protocol"], backbones=raw.get("backbones", ""),
            judge=raw.get("judge", ""), limit="", fingerprint="",  # names no content: joins its name's tables
            method=raw["method"] + " [published]",  # shown; code reads the field
            metrics=metrics, source=raw.get("source", ""), confidence=raw.get("confidence", ""), published=True))
    return rows


def one_per_run(rows: list[LeaderboardRow]) -> list[LeaderboardRow]:
    """One row per run identity: the first directory found stands for the others, and its source
    says how many more were found."""
    first: dict[str, LeaderboardRow] = {}
    out = []
    for row in rows:
        seen = first.get(row.run_identity)
        if seen is None:
            first[row.run_identity] = row
            out.append(row)
        else:
            seen.found_in += 1
            seen.source = f"{seen.source.split(' (')[0]} (the same run found in {seen.found_in} directories)"
    return out
