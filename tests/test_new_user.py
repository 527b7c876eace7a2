"""What a new user trips on (issue 26), through the command line: a run replayed from its run.json,
suggestions for near-miss names, the per-run table, threads, and the progress clocks."""
from __future__ import annotations

import json

import pytest

from conftest import cli, only_run_dir


def test_a_run_json_replays_its_run_into_the_same_run_directory_and_flags_override_it(tmp_path):
    first = tmp_path / "a"
    ran = cli("run", "--method", "random-answer", "--tasks", "rec,choice", "--limit", "2", "--seed", "4",
              "--concepts", "dog,cat", "--out", str(first))
    assert ran.returncode == 0, ran.stderr
    original = only_run_dir(first)
    replay = cli("run", "--config", str(original / "run.json"), "--out", str(tmp_path / "b"))
    assert replay.returncode == 0, replay.stderr
    again = only_run_dir(tmp_path / "b")
    assert again.name == original.name
    assert (again / "predictions.jsonl").read_text() == (original / "predictions.jsonl").read_text()
    other = cli("run", "--config", str(original / "run.json"), "--seed", "5", "--out", str(tmp_path / "b"))
    assert other.returncode == 0 and len([p for p in (tmp_path / "b").iterdir()]) == 2

    import yaml

    spec = json.loads((original / "run.json").read_text())["spec"]
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({k: spec[k] for k in ("method", "tasks", "limit", "seed",
                                                                             "concepts")}))
    from_yaml = cli("run", "--config", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "c"))
    assert from_yaml.returncode == 0 and only_run_dir(tmp_path / "c").name == original.name
    (tmp_path / "bad.yaml").write_text("methd: always-yes\n")
    bad = cli("run", "--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "d"))
    assert bad.returncode == 2 and "unknown key(s) methd; did you mean method?" in bad.stderr


@pytest.mark.parametrize("args, suggestion", [
    (["--method", "unictoken"], "unknown method 'unictoken'; did you mean unictokens?"),
    (["--method", "always-yes", "--concepts", "dogg"], "unknown concept(s) dogg; did you mean dog?"),
    (["--method", "unictokens", "--method-arg", "modle=tiny"], "unknown argument(s) modle; did you mean model?"),
    (["--method", "always-yes", "--tasks", "recc"], "unknown task(s) recc; did you mean rec?"),
])
def test_a_near_miss_name_is_answered_with_the_closest_one_first(tmp_path, args, suggestion):
    ran = cli("run", *args, "--out", str(tmp_path / "runs"))
    assert ran.returncode == 2 and suggestion in ran.stderr, ran.stderr


def test_the_per_run_table_shows_only_the_tasks_the_method_does(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    ran = cli("run", "--method", "real-images", "--limit", "1", "--backbones", "tiny", "--images-per-prompt", "1",
              "--out", str(tmp_path / "runs"))
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.count("does not support") == 1 and "skipping rec, vqa, text_only, choice, attr_gen" in ran.stdout
    assert "clip_i" in ran.stdout and "95% interval" in ran.stdout
    record = json.loads((only_run_dir(tmp_path / "runs") / "run.json").read_text())
    assert record["threads"]["threads"] >= 1 and record["threads"]["cores"] >= 1


def test_the_threads_follow_the_flag_and_the_load(monkeypatch):
    import os

    from unifybench.progress import choose_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(os, "getloadavg", lambda: (3.2, 0, 0))
    assert choose_threads()["threads"] == 1  # four cores, three busy
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0, 0))
    assert choose_threads()["threads"] == 4 and choose_threads(2)["threads"] == 2


def test_each_concepts_personalization_clock_starts_at_zero(tmp_path, monkeypatch):
    """The per-concept bar's clock stayed at the first concept's time for every later concept."""
    from rich.console import Console
    from rich.progress import Progress

    from unifybench.methods import Method

    resets = []
    real = Progress.reset
    monkeypatch.setattr(Progress, "reset", lambda self, task, **kw: resets.append(task) or real(self, task, **kw))

    class Slow(Method):
        name = "slow"
        tasks = frozenset({"rec"})

        def personalize(self, concept, state_dir):
            self.progress("epoch 1/1", 1, 1)
            return {}

        def load_state(self, concept, state_dir):
            return {}

        def answer(self, concept, state, requests):
            return ["Yes." for _ in requests]

    console = Console(force_terminal=True, file=open(tmp_path / "terminal.txt", "w"))
    from unifybench.runner import RunSpec, run

    run(RunSpec(method="slow", tasks=["rec"], concepts=["dog", "cat", "clock"], limit=1), tmp_path / "runs",
        console=console, method_class=Slow)
    assert len(resets) == 3  # once per concept: its own clock
    assert "eta" in (tmp_path / "terminal.txt").read_text()


def test_a_table_of_runs_on_different_concepts_says_so_and_csv_counts_them(tmp_path):
    import csv
    import io

    out = tmp_path / "runs"
    for concepts in ("dog", "dog,cat"):
        assert cli("run", "--method", "always-yes", "--tasks", "rec", "--concepts", concepts, "--limit", "1",
                   "--out", str(out)).returncode == 0
    md = cli("leaderboard", str(out), "--no-published").stdout
    assert "rows on different concept sets" in md and "[1 concepts]" in md and "[2 concepts]" in md
    rows = list(csv.DictReader(io.StringIO(cli("leaderboard", str(out), "--format", "csv", "--no-published").stdout)))
    assert sorted((r["concepts"], r["items"]) for r in rows) == [("1", "2"), ("2", "4")]
    assert {r["limit"] for r in rows} == {"1"} and {r["random_init_method"] for r in rows} == {"False"}


def test_the_small_things_the_help_and_the_pages_said_wrong(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert "(default: default)" in cli("run", "--help").stdout
    assert "log.txt" not in cli("score-images", "--help").stdout
    ran = cli("run", "--method", "random-answer", "--tasks", "vqa", "--limit", "1", "--concepts", "dog",
              "--judge", "hf:tiny", "--judge-max-tokens", "1", "--out", str(tmp_path / "runs"), "--json")
    assert json.loads(ran.stdout)["label"] == "judged scores: random-init weights: plumbing and speed only, not a result"
    assert "requests to predict" in (only_run_dir(tmp_path / "runs") / "log.txt").read_text()
    (tmp_path / "empty").mkdir()
    board = cli("leaderboard", str(tmp_path / "empty"))
    assert board.returncode == 0 and "no finished runs under" in board.stderr


def test_run_json_keeps_its_creation_time_through_every_write_of_a_run(tmp_path, monkeypatch):
    """run.json is written before the method loads, then again with its details: the second write
    kept rewriting "created" with its own time."""
    import time

    from unifybench import run_record

    written, real = [], run_record.write

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        written.append(out["created"])
        time.sleep(1.1)  # a later write would otherwise stamp the same second
        return out

    monkeypatch.setattr(run_record, "write", spy)
    ran = cli("run", "--method", "always-yes", "--tasks", "rec", "--limit", "1", "--out", str(tmp_path / "runs"))
    assert ran.returncode == 0, ran.stderr
    assert len(written) >= 2 and len(set(written)) == 1
    assert json.loads((only_run_dir(tmp_path / "runs") / "run.json").read_text())["created"] == written[0]


@pytest.mark.parametrize("value", ["0", "many", ""])
def test_an_unusable_omp_num_threads_falls_back_to_the_free_cores(monkeypatch, value):
    from unifybench.progress import choose_threads, set_threads

    monkeypatch.setenv("OMP_NUM_THREADS", value)
    chosen = choose_threads(None)
    assert chosen["why"] != "OMP_NUM_THREADS" and chosen["threads"] >= 1
    set_threads(chosen["threads"])  # torch accepts it (0 raised "expects a positive integer")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads(None)["threads"] == 3
