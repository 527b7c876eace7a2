"""A quiet, helpful command line: logs in the run directory, progress that moves, --help that explains
every option, --version, methods with their arguments, the environment left alone, and a Python
entry point."""
from __future__ import annotations

import json
import os
import time

import pytest

from conftest import cli, only_run_dir, read_results

TINY_UNICTOKENS = ["--method", "unictokens", "--method-arg", "model=tiny", "--method-arg", "epochs=1",
                   "--method-arg", "transition_images=1", "--concepts", "dog", "--limit", "2",
                   "--tasks", "rec,gen", "--images-per-prompt", "1", "--backbones", "tiny"]


def test_epoch_lines_go_to_the_run_log_not_the_terminal(tmp_path):
    ran = cli("run", *TINY_UNICTOKENS, "--out", str(tmp_path / "a"))
    assert ran.returncode == 0, ran.stderr
    log = (only_run_dir(tmp_path / "a") / "log.txt").read_text(encoding="utf-8")
    assert "stage 1 epoch 1/1" in log and "stage 3 epoch 1/1" in log
    assert "loss" not in ran.stdout + ran.stderr and "stage 1 epoch 1/1: loss" not in ran.stderr
    # transformers' warnings about arguments we pass on purpose are not shown
    assert "max_new_tokens" not in ran.stderr and "generation_config" not in ran.stderr
    verbose = cli("run", *TINY_UNICTOKENS, "--out", str(tmp_path / "b"), "--verbose")
    assert verbose.returncode == 0 and "stage 2 epoch 1/1" in verbose.stderr


def test_quiet_prints_nothing_on_success_and_still_one_line_on_error(tmp_path):
    ran = cli("run", "--method", "always-yes", "--tasks", "rec", "--limit", "1", "--quiet", "--out", str(tmp_path))
    assert ran.returncode == 0 and ran.stdout == "" and ran.stderr == ""
    assert read_results(only_run_dir(tmp_path))["tasks"]["rec"]["pos_acc"] == 1.0
    bad = cli("run", "--method", "nope", "--quiet", "--out", str(tmp_path))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_personalization_reports_every_step_to_the_progress_bar(tmp_path):
    from unifybench.data import load_benchmark
    from unifybench_unictokens.method import UniCTokens

    method = UniCTokens({"model": "tiny", "epochs": "2", "transition_images": "1"}, seed=0)
    seen = []
    method.progress = lambda what, done, total: seen.append((what, done, total))
    method.personalize(load_benchmark("mini").concept("cat"), tmp_path)
    assert [d for _, d, _ in seen] == list(range(1, 8)) and {t for _, _, t in seen} == {7}  # 3 x 2 epochs + transition
    assert seen[0][0] == "stage 1 epoch 1/2" and seen[-1][0] == "stage 3 epoch 2/2"


def test_scoring_reports_images_as_they_are_scored():
    from pathlib import Path

    from unifybench.scoring.encoders import load_backbones
    from unifybench.scoring.fidelity import FidelityScorer

    photos = sorted((Path(__file__).resolve().parents[1] / "unifybench" / "data" / "mini" / "concept" / "test")
                    .rglob("*.jpg"))
    counted = []
    FidelityScorer(load_backbones("tiny"), batch_size=4, cache_dir=None).score(photos[:2], photos, progress=counted.append)
    assert sum(counted) == len(photos) and len(counted) == -(-len(photos) // 4)


def test_every_option_of_every_command_is_explained():
    import argparse

    from unifybench.cli import build_parser

    parser = build_parser()
    commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)][0].choices
    stack = list(commands.items())
    while stack:
        name, sub = stack.pop()
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack += [(f"{name} {n}", p) for n, p in action.choices.items()]
            elif not isinstance(action, argparse._HelpAction):
                assert action.help, (name, action.option_strings or action.dest)
    text = cli("run", "--help")
    assert text.returncode == 0 and "(default: 16)" in text.stdout and "(default: mini)" in text.stdout
    assert "personalize" in cli("--help").stdout.lower()


def test_version_and_methods_with_their_arguments():
    from unifybench import __version__

    version = cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"unifybench {__version__}"
    listing = cli("methods")
    assert listing.returncode == 0
    assert "unictokens: --method-arg KEY=VALUE" in listing.stdout
    assert "epochs of every stage" in " ".join(listing.stdout.split())  # the argument's help


def test_offline_auto_backbones_leave_the_environment_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://unifybench-test.invalid")  # a hub that cannot be reached
    start = time.time()
    ran = cli("run", "--method", "real-images", "--tasks", "gen", "--concepts", "dog", "--limit", "1",
              "--images-per-prompt", "1", "--backbones", "auto", "--out", str(tmp_path))
    assert ran.returncode == 0, ran.stderr
    assert time.time() - start < 60
    assert "HF_HUB_OFFLINE" not in os.environ
    said = ran.stdout + ran.stderr
    assert said.count("real scorer checkpoints unavailable") == 1
    assert "HF_HUB_OFFLINE is set" not in said and "cannot be reached" in said


def test_evaluate_is_the_python_entry_point(tmp_path):
    import unifybench
    from unifybench.errors import BenchError

    results = unifybench.evaluate("always-yes", tasks=["rec", "choice"], concepts=["dog", "cat"], limit=2,
                                  out=tmp_path)
    assert results["tasks"]["rec"]["weighted_acc"] == 0.5
    assert json.loads((tmp_path / os.path.basename(results["run_dir"]) / "results.json").read_text())["tasks"] \
        == results["tasks"]
    with pytest.raises(BenchError, match="unknown option"):
        unifybench.evaluate("always-yes", colour="blue", out=tmp_path)
    with pytest.raises(BenchError, match="unknown task"):
        unifybench.evaluate("always-yes", tasks=["dance"], out=tmp_path)


def test_limit_1_keeps_one_of_each_side_and_one_side_alone_is_not_a_weighted_accuracy(tmp_path):
    """always-yes is the recognition floor: with --limit 1 it must not score a perfect weighted_acc."""
    ran = cli("run", "--method", "always-yes", "--tasks", "rec", "--limit", "1", "--concepts", "dog",
              "--out", str(tmp_path / "runs"), "--json")
    assert ran.returncode == 0, ran.stderr
    rec = json.loads(ran.stdout)["tasks"]["rec"]
    assert (rec["pos_acc"], rec["neg_acc"], rec["weighted_acc"]) == (1.0, 0.0, 0.5)


def test_the_run_directory_hashes_the_sets_of_concepts_and_tasks(tmp_path):
    out = tmp_path / "runs"
    for concepts, tasks in (("backpack,cat,dog", "rec,choice"), ("dog,cat,backpack", "choice,rec"),
                            ("dog,dog,cat,backpack", "choice,choice,rec")):
        ran = cli("run", "--method", "always-yes", "--tasks", tasks, "--concepts", concepts, "--limit", "1",
                  "--out", str(out))
        assert ran.returncode == 0, ran.stderr
    run_dir = only_run_dir(out)
    rows = [json.loads(line) for line in (run_dir / "scores.jsonl").read_text().splitlines()]
    assert len({r["key"] for r in rows}) == len(rows)  # a task given twice is scored once


def test_precomputed_without_answers_is_refused_before_a_run_directory_exists(tmp_path):
    ran = cli("run", "--method", "precomputed", "--tasks", "rec,gen", "--out", str(tmp_path / "runs"))
    assert ran.returncode == 2 and len(ran.stderr.strip().splitlines()) == 1
    assert "needs --method-arg answers=FILE for rec; images=DIR for gen" in ran.stderr
    assert not (tmp_path / "runs").exists()
