"""Hostile and broken input (issue 24): nothing written outside --out through links planted in a
run directory, no silent wrong number, one line for everything else. Every case through the
command line."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import cli, only_run_dir

QUICK = ["--method", "always-yes", "--tasks", "rec", "--concepts", "dog", "--limit", "1"]


def _run_dir(tmp_path: Path) -> Path:
    """The run directory QUICK maps to, made once and emptied of its files."""
    out = tmp_path / "runs"
    assert cli("run", *QUICK, "--out", str(out)).returncode == 0
    return only_run_dir(out)


@pytest.mark.parametrize("entry", [".lock", "predictions.jsonl", "log.txt"])
def test_a_link_planted_in_a_run_directory_is_refused_and_its_target_untouched(tmp_path, entry):
    run_dir = _run_dir(tmp_path)
    (run_dir / "predictions.jsonl").unlink()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    target = run_dir / entry
    target.unlink(missing_ok=True)
    target.symlink_to(victim)
    ran = cli("run", *QUICK, "--out", str(tmp_path / "runs"))
    assert ran.returncode == 2 and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
    assert "symbolic link" in ran.stderr and entry in ran.stderr
    assert victim.read_text() == "precious\n"


def test_a_linked_folder_inside_a_run_directory_is_refused(tmp_path):
    run_dir = _run_dir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run_dir / "state").mkdir(exist_ok=True)
    (run_dir / "state" / "dog").symlink_to(elsewhere, target_is_directory=True)
    (run_dir / "predictions.jsonl").unlink()
    ran = cli("run", *QUICK, "--out", str(tmp_path / "runs"))
    assert ran.returncode == 2 and "state/dog" in ran.stderr and not list(elsewhere.iterdir())


@pytest.mark.parametrize("line, message", [
    ({"key": "rec/dog/0", "task": "rec", "concept": "dog", "index": 0}, "has an 'answer' or 'images'"),
    ({"key": "rec/dog/0", "task": "rec", "concept": "dog", "index": 0, "answer": 3}, "'answer' must be text"),
    ({"key": ["rec/dog/0"], "answer": "Yes."}, "a text 'key'"),
    (["not", "an", "object"], "not a prediction record"),
    ({"key": "gen/dog/0", "images": ["/etc/passwd"]}, "points outside the run directory"),
    ({"key": "gen/dog/0", "images": ["../../victim.png"]}, "points outside the run directory"),
])
def test_wrong_shaped_or_outside_pointing_prediction_lines_are_one_line_naming_file_and_line(tmp_path, line, message):
    run_dir = _run_dir(tmp_path)
    bad_line = len((run_dir / "predictions.jsonl").read_text().splitlines()) + 1
    with open(run_dir / "predictions.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")
    for args in (["run", *QUICK, "--out", str(tmp_path / "runs")], ["gallery", str(run_dir)]):
        ran = cli(*args)
        assert ran.returncode == 2 and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
        assert message in ran.stderr and f"predictions.jsonl [line {bad_line}]" in ran.stderr


def test_invalid_utf8_and_conflicting_duplicates_are_refused_naming_the_line(tmp_path):
    run_dir = _run_dir(tmp_path)
    path = run_dir / "predictions.jsonl"
    first = path.read_text().splitlines()[0]
    record = json.loads(first)
    path.write_bytes((first + "\n").encode() + b'{"key": "\xff"}\n')
    ran = cli("run", *QUICK, "--out", str(tmp_path / "runs"))
    assert ran.returncode == 2 and "corrupt line (UnicodeDecodeError)" in ran.stderr and "[line 2]" in ran.stderr
    path.write_text(first + "\n" + first + "\n")  # the same line twice: kept once
    assert cli("run", *QUICK, "--out", str(tmp_path / "runs")).returncode == 0
    path.write_text(first + "\n" + json.dumps({**record, "answer": "No."}) + "\n")
    ran = cli("run", *QUICK, "--out", str(tmp_path / "runs"))
    assert ran.returncode == 2 and f"two different predictions for {record['key']!r}" in ran.stderr
    # across rank files too: the first rank's line no longer silently wins
    path.write_text(first + "\n")
    (run_dir / "predictions.rank1.jsonl").write_text(json.dumps({**record, "answer": "No."}) + "\n")
    ran = cli("run", *QUICK, "--out", str(tmp_path / "runs"))
    assert ran.returncode == 2 and "predictions.rank1.jsonl [line 1]" in ran.stderr
    os.remove(run_dir / "predictions.rank1.jsonl")


def test_predictions_without_their_run_record_are_not_rescored(tmp_path):
    """A model=tiny run that lost run.json would otherwise lose its random-init label on rescoring."""
    out = tmp_path / "runs"
    args = ["run", "--method", "text-prompt", "--method-arg", "backend=janus", "--method-arg", "model=tiny",
            "--method-arg", "max_new_tokens=2", "--tasks", "rec", "--concepts", "dog", "--limit", "1", "--out", str(out)]
    assert cli(*args).returncode == 0
    run_dir = only_run_dir(out)
    assert json.loads((run_dir / "results.json").read_text())["label"].startswith("every score: random-init")
    (run_dir / "run.json").unlink()
    ran = cli(*args)
    assert ran.returncode == 2 and "run.json is missing" in ran.stderr and len(ran.stderr.strip().splitlines()) == 1
    (run_dir / "run.json").write_text("[1, 2]")
    ran = cli(*args)
    assert ran.returncode == 2 and "not a run record" in ran.stderr
