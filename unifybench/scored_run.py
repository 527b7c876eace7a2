"""A scored run directory read back whole, one way, for the gallery and ``compare``: its record
(``run.json``), its aggregates (``results.json``) and its per-sample rows (``scores.jsonl``), each
checked for the shape the harness writes, with one set of error lines."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import record
from .errors import BenchError
from .store import RESULTS_JSON, RUN_JSON, SCORES_JSONL, check_results, read_score_rows


@dataclass(frozen=True)
class ScoredRun:
    run_dir: Path
    record: dict  # run.json
    results: dict  # results.json
    score_rows: list[dict]  # scores.jsonl


def load_scored_run(run_dir: Path) -> ScoredRun:
    """The three files of a finished, scored run; a missing, unreadable or misshapen one is one line
    naming it (a missing results or scores file: the run is not finished or not scored yet)."""
    run_dir = Path(run_dir)
    for name in (RUN_JSON, RESULTS_JSON, SCORES_JSONL):
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
    record.check_shape(run_json, run_dir / RUN_JSON)
    check_results(results, run_dir / RESULTS_JSON)
    return ScoredRun(run_dir, run_json, results, read_score_rows(run_dir / SCORES_JSONL))
