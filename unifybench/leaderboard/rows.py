"""Run directories to leaderboard rows: finding runs, reading a scored run into one row, the published
rows, one row per run identity, and a run's ``scores.jsonl`` for intervals and paired marks."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import BenchError
from ..groups import RANDOM_METHOD, GroupKey
from ..record import BACKBONES_UNUSED, is_random_init
from ..store import RESULTS_JSON, RUN_JSON, SCORES_JSONL, check_results, read_jsonl


PUBLISHED_CSV = Path(__file__).resolve().parents[1] / "data" / "published.csv"


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


def run_row(results_path: Path) -> dict:
    try:
        results = check_results(json.loads(results_path.read_text(encoding="utf-8")), results_path)
        backbones = results["backbones"]["kind"]
        clip_model = results["backbones"].get("clip_model")
        if clip_model not in (None, "ViT-B-32", "tiny"):  # CLIP-I/CLIP-T from another CLIP: another table
            backbones += f" (CLIP {clip_model})"
        limit = results["limit"] if "limit" in results else _limit_from_run_json(results_path.parent)
        record = _run_record(results_path.parent)
        row = {"benchmark": results["bench"]["name"], "fingerprint": _fingerprint(record, results_path.parent),
               "protocol": results["protocol"], "backbones": backbones,
               "judge": (results.get("judge") or {}).get("judge") or "", "limit": _limit_label(limit),
               "method": results["method"]}
        dreambench_plus = results.get("dreambench_plus_judge")
        if results["bench"].get("format") == "dreambench_plus":  # its own tables, its judge mode in the title
            row["benchmark"] += " (DreamBench++)"
            if dreambench_plus:
                row["judge"] = (f"{row['judge']}; " if row["judge"] else "") + \
                    f"{dreambench_plus['judge']} (DreamBench++ judge, {dreambench_plus['mode']} mode)"
        if is_random_init(results.get("method_details")):
            # A random-init method model (model=tiny) makes random-init numbers whatever scored them:
            # never in a table of real results, and never joined to one as an understanding-only run.
            row["backbones"] = RANDOM_METHOD if backbones == BACKBONES_UNUSED else f"{RANDOM_METHOD}; {backbones}"
        copies = (results["tasks"].get("gen") or {}).get("copies")
        if isinstance(copies, int) and copies:  # it scores against its own reference photos: say so
            row["method"] += f" [copies reference photos: {copies} images]"
        if results.get("choice_eval", "plain") != "plain":  # other requests: never the same row as a plain run's
            row["method"] += f" [choice: {results['choice_eval']}]"
        if results.get("resumed_with_changed_code"):  # predictions of two versions of the method's code
            row["method"] += " [resumed with changed code]"
        if results.get("method_code_changed"):  # rescored after the code changed: the old code's numbers
            row["method"] += " [code changed since]"
        backend = (results.get("method_details") or {}).get("backend_name")
        if backend:  # a method that runs on several unified models: which one made these numbers
            row["method"] += f" [{backend}]"
        if results.get("method_args"):
            row["method"] += " (" + ", ".join(f"{k}={v}" for k, v in sorted(results["method_args"].items())) + ")"
        for task, metrics in results["tasks"].items():
            for metric, value in metrics.items():
                row[f"{task}.{metric}"] = value
        concepts = results.get("concepts") or {}
        counts = results.get("counts") or {}
        row["_concept_set"] = tuple(sorted(concepts))
        row["_counts"] = {"concepts": counts.get("concepts", len(row["_concept_set"])),
                          "items": counts.get("items", 0) + counts.get("images", 0)}
        row["_random_method"] = is_random_init(results.get("method_details"))
        row["_intervals"] = {f"{t}.{m}": (ci["lo"], ci["hi"]) for t, ms in (results.get("intervals") or {}).items()
                             for m, ci in ms.items()}
        # "only 3 concepts", "one concept: over its own items": shown wherever the number is
        row["_interval_notes"] = {f"{t}.{m}": ci["note"] for t, ms in (results.get("intervals") or {}).items()
                                  for m, ci in ms.items() if ci.get("note")}
        row["_copies"] = isinstance(copies, int) and copies > 0
        row["_dir"] = str(results_path.parent)  # its scores.jsonl: seed groups' intervals, paired marks
        row["_concept_intervals"] = results.get("concept_intervals") or {}
        row["_seed"] = results.get("seed")
        # What made the predictions (the run directory's hash input) and what scored them: two
        # directories that agree on both are one run found twice (a copy, or runs/demo inside runs/).
        row["_run_identity"] = json.dumps([record["identity"], *GroupKey.of(row)], sort_keys=True, default=str)
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise BenchError(f"unreadable results ({exc.__class__.__name__}: {exc})", results_path) from exc
    row["source"] = f"run {results_path.parent.name}"
    row["confidence"] = "this harness"
    row["_concepts"] = concepts
    return row


def _run_record(run_dir: Path) -> dict:
    try:
        record = json.loads((run_dir / RUN_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchError(f"unreadable run record ({exc.__class__.__name__})", run_dir / RUN_JSON) from None
    if not isinstance(record, dict) or not isinstance(record.get("identity"), dict):
        raise BenchError("not a run record (no 'identity' object)", run_dir / RUN_JSON)
    return record


def _fingerprint(record: dict, run_dir: Path) -> str:
    """The benchmark's content hash: run.json's identity (results.json names the benchmark only)."""
    try:
        return str(record["identity"]["bench"]["fingerprint"])
    except (KeyError, TypeError):
        raise BenchError("no benchmark fingerprint in run.json (identity.bench.fingerprint): cannot tell which "
                         "runs compare", run_dir / RUN_JSON) from None


def _limit_from_run_json(run_dir: Path):
    """Results written before results.json named its limit: read it from run.json."""
    try:
        return json.loads((run_dir / RUN_JSON).read_text(encoding="utf-8"))["spec"].get("limit")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_published(row: dict) -> bool:
    """A published result (``published.csv``), not a run: a field, never read back from the method's name."""
    return row.get("_published") is True


def published_rows() -> list[dict]:
    if not PUBLISHED_CSV.is_file():
        return []
    frame = pd.read_csv(PUBLISHED_CSV, dtype=str, keep_default_na=False)
    rows = []
    for raw in frame.to_dict("records"):
        row = {k: v for k, v in raw.items() if v != ""}
        for key in [k for k in row if "." in k]:
            row[key] = float(row[key])
        row["method"] += " [published]"  # shown; code reads the field below
        row["_published"] = True
        row["limit"] = ""
        rows.append(row)
    return rows


def one_per_run(rows: list[dict]) -> list[dict]:
    """One row per run identity: the first directory found stands for the others, and its source
    says how many more were found."""
    first: dict[str, dict] = {}
    out = []
    for row in rows:
        seen = first.get(row["_run_identity"])
        if seen is None:
            first[row["_run_identity"]] = row
            out.append(row)
        else:
            seen["_found_in"] = seen.get("_found_in", 1) + 1
            seen["source"] = f"{seen['source'].split(' (')[0]} (the same run found in {seen['_found_in']} directories)"
    return out


def run_scores(run_dir) -> list[dict] | None:
    """A run's ``scores.jsonl`` rows (read once per leaderboard), or None where there is none to
    read: no run directory (a published row), a link (never followed out of a run), not a file."""
    if not isinstance(run_dir, str):
        return None
    path = Path(run_dir) / SCORES_JSONL
    if path.is_symlink() or not path.is_file():
        return None
    key = (str(path), path.stat().st_mtime_ns, path.stat().st_size)
    if key not in _SCORES:
        try:
            _SCORES[key] = read_jsonl(path)
        except (BenchError, OSError, UnicodeDecodeError):
            _SCORES[key] = None
    return _SCORES[key]


_SCORES: dict[tuple, list[dict] | None] = {}
