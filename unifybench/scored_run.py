"""A scored run directory read back whole, one way, for the gallery, ``compare`` and the leaderboard:
its record (``run.json``), its aggregates (``results.json``) and its per-sample rows
(``scores.jsonl``), each checked for the shape the harness writes, with one set of error lines."""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from . import run_record
from .errors import BenchError
from .store import RESULTS_JSON, RUN_JSON, SCORES_JSONL, check_results, read_score_rows


@dataclass(frozen=True)
class ScoredRun:
    run_dir: Path
    record: dict  # run.json
    results: dict  # results.json

    @functools.cached_property
    def score_rows(self) -> list[dict]:
        """``scores.jsonl``, read and checked on first use (a leaderboard of many runs reads it only
        for the intervals and marks that need it); a wrong-shaped one is one line naming it."""
        return read_score_rows(self.run_dir / SCORES_JSONL)

    def score_rows_if_readable(self) -> list[dict] | None:
        """The rows, or None where there are none to read: no file, a link (never followed out of a
        run), or rows of the wrong shape. What the leaderboard's intervals and marks use: a damaged
        ``scores.jsonl`` costs them, never the table, which comes from ``results.json``."""
        path = self.run_dir / SCORES_JSONL
        if path.is_symlink() or not path.is_file():
            return None
        try:
            return self.score_rows
        except (BenchError, OSError, UnicodeDecodeError):
            return None

    @property
    def fingerprint(self) -> str:
        """The benchmark's content hash: run.json's identity (results.json names the benchmark only)."""
        try:
            return str(self.record["identity"]["bench"]["fingerprint"])
        except (KeyError, TypeError):
            raise BenchError("no benchmark fingerprint in run.json (identity.bench.fingerprint): cannot tell which "
                             "runs compare", self.run_dir / RUN_JSON) from None


def load_scored_run(run_dir: Path, *, need_scores: bool = True) -> ScoredRun:
    """The files of a finished, scored run; a missing, unreadable or misshapen one is one line naming
    it (a missing results or scores file: the run is not finished or not scored yet). ``need_scores``
    False (the leaderboard): ``scores.jsonl`` is read only when asked for, and may be missing."""
    run_dir = Path(run_dir)
    for name in (RUN_JSON, RESULTS_JSON, SCORES_JSONL)[:3 if need_scores else 2]:
        if not (run_dir / name).is_file():
            hint = "; run `unifybench run` to finish and score it" if name != RUN_JSON else ""
            raise BenchError(f"not a scored run directory: no {name}{hint}", run_dir)
    try:
        run_json = json.loads((run_dir / RUN_JSON).read_text(encoding="utf-8"))
        results = json.loads((run_dir / RESULTS_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchError(f"unreadable run files ({exc.__class__.__name__}: {exc})", run_dir) from exc
    if not isinstance(run_json, dict):
        raise BenchError("not a run record (expected a JSON object)", run_dir / RUN_JSON)
    run_record.check_shape(run_json, run_dir / RUN_JSON)
    check_results(results, run_dir / RESULTS_JSON)
    scored = ScoredRun(run_dir, run_json, results)
    if need_scores:
        scored.score_rows  # read now: a damaged file is refused before any page is written
    return scored
