"""Careless input and concurrency, through the command line: one line naming what and where, exit
code 2, no traceback, and nothing made or lost that should not be."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _data_fixtures import make_unifybench
from conftest import REPO, cli, cli_env, make_plugin, only_run_dir, read_results

# Writes a marker when constructed, so a test can tell whether the method was ever made.
MARKING = '''
import os, time
from pathlib import Path
from unifybench.kit.args import Arg
from unifybench.methods import Method

class Marking(Method):
    name = "marking"
    tasks = frozenset({"rec", "gen"})
    arguments = {"delay": Arg(float, 0.0, "seconds to sleep per batch", low=0),
                 "marker": Arg(str, None, "file to touch when constructed")}

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        if self.args.marker:
            Path(self.args.marker).write_text("made")

    def answer(self, concept, state, requests):
        time.sleep(self.args.delay)
        return ["Yes." for r in requests]

    def generate(self, concept, state, requests):
        return [list(concept.heldout_images[:1]) * r.n_images for r in requests]
'''


@pytest.fixture
def plugin(tmp_path):
    return make_plugin(tmp_path / "plugin", "marking-plugin", "marking", MARKING, {"marking": "marking:Marking"})


def one_line_error(ran, *expected: str) -> str:
    assert ran.returncode == 2, (ran.returncode, ran.stdout[-500:], ran.stderr[-1500:])
    message = ran.stderr.strip()
    assert "Traceback" not in ran.stderr and len(message.splitlines()) == 1, ran.stderr
    for text in expected:
        assert text in message, (text, message)
    return message


def test_out_that_is_a_file_lies_under_a_file_or_cannot_be_written(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    one_line_error(cli("run", "--method", "always-yes", "--tasks", "rec", "--out", str(a_file)),
                   str(a_file), "--out", "is a file")
    one_line_error(cli("run", "--method", "always-yes", "--tasks", "rec", "--out", str(a_file / "runs")),
                   "lies under a file")
    if Path("/sys").is_dir():  # even root cannot create files there
        one_line_error(cli("run", "--method", "always-yes", "--tasks", "rec", "--out", "/sys/unifybench-runs"),
                       "/sys/unifybench-runs", "cannot create or write")
    one_line_error(cli("leaderboard", "--out", str(a_file / "board.md"), str(tmp_path)), "lies under a file")
    one_line_error(cli("leaderboard", "--out", str(tmp_path), str(tmp_path)), "is a folder")


def test_leaderboard_into_a_closed_pipe_is_one_line(tmp_path):
    ran = cli("run", "--method", "always-yes", "--tasks", "rec", "--limit", "1", "--out", str(tmp_path / "runs"))
    assert ran.returncode == 0, ran.stderr
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `| head` does once it has its lines
    proc = subprocess.run([sys.executable, "-m", "unifybench", "leaderboard", str(tmp_path / "runs")],
                          stdout=write_end, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=REPO)
    os.close(write_end)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "unifybench: error: [stdout]: the reader closed the pipe before all output was written"]


def test_a_run_into_a_closed_pipe_finishes_quietly_with_exit_0(tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)  # `unifybench run ... | head` once head has its lines
    proc = subprocess.run([sys.executable, "-m", "unifybench", "run", "--method", "always-yes", "--tasks", "rec",
                           "--limit", "1", "--out", str(tmp_path / "runs")],
                          stdout=write_end, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=REPO)
    os.close(write_end)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert (only_run_dir(tmp_path / "runs") / "results.json").is_file()  # the work went on without output


@pytest.mark.parametrize("args, expected", [
    (["--limit", "0"], "--limit"),
    (["--limit", "-1"], "--limit"),
    (["--tasks", ""], "--tasks"),
    (["--batch-size", "0"], "--batch-size"),
    (["--concepts", ","], "--concepts"),
])
def test_numbers_and_lists_a_run_cannot_start_with(tmp_path, args, expected):
    one_line_error(cli("run", "--method", "always-yes", *args, "--out", str(tmp_path / "runs")), expected)
    assert not (tmp_path / "runs").exists()


def test_a_truncated_photo_is_refused_before_predicting_even_by_a_method_that_never_opens_it(tmp_path):
    bench = make_unifybench(tmp_path / "ub")
    photo = bench / "concept" / "test" / "bo" / "3.png"  # the first rec item's image
    data = photo.read_bytes()
    photo.write_bytes(data[: len(data) // 2])
    message = one_line_error(cli("run", "--method", "always-yes", "--bench", str(bench), "--tasks", "rec",
                                 "--out", str(tmp_path / "runs")), "cannot read image")
    assert message.split("unifybench: error: ")[1].startswith(str(photo))  # the benchmark's file, not a copy
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_unscorable_generation_is_refused_before_the_method_is_made(tmp_path, plugin):
    marker = tmp_path / "made"
    out = tmp_path / "runs"
    common = ["run", "--method", "marking", "--tasks", "gen", "--concepts", "dog", "--limit", "1",
              "--images-per-prompt", "1", "--method-arg", f"marker={marker}", "--out", str(out)]
    # Offline (the tests' HF_HUB_OFFLINE=1), the real scorer checkpoints are not in the cache.
    start = time.time()
    one_line_error(cli(*common, "--backbones", "default", pythonpath=[plugin]), "cannot load", "backbones")
    assert time.time() - start < 30  # no minute of hub retries
    assert not marker.exists() and not out.exists()
    # Backbones are a scoring setting: predictions made under one are rescored under another.
    assert cli(*common, "--backbones", "random", pythonpath=[plugin]).returncode == 0
    marker.unlink()
    again = cli(*common, "--backbones", "tiny", pythonpath=[plugin])
    assert again.returncode == 0, again.stderr
    assert not marker.exists() and "method is not loaded" in again.stdout + again.stderr
    assert read_results(only_run_dir(out))["backbones"]["kind"] == "tiny"


def test_bad_method_arguments_make_nothing(tmp_path, plugin):
    out = tmp_path / "runs"
    one_line_error(cli("run", "--method", "marking", "--method-arg", "colour=blue", "--out", str(out),
                       pythonpath=[plugin]), "unknown argument", "colour")
    one_line_error(cli("run", "--method", "unictokens", "--method-arg", "model=tiny", "--method-arg", "epochs=many",
                       "--out", str(out)), "--method-arg epochs")
    assert not out.exists()


def test_a_second_run_into_the_same_directory_is_refused_while_the_first_runs(tmp_path, plugin):
    out = tmp_path / "runs"
    args = ["run", "--method", "marking", "--tasks", "rec", "--batch-size", "1", "--method-arg", "delay=0.1",
            "--out", str(out)]
    first = subprocess.Popen([sys.executable, "-m", "unifybench", *args], env=cli_env([plugin]), cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not any(out.glob("*/predictions.jsonl")):
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before the second started"
        second = cli(*args, pythonpath=[plugin])
        one_line_error(second, "in use by unifybench pid", "another --out")
    finally:
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err[-2000:]
    run_dir = only_run_dir(out)
    keys = [json.loads(line)["key"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(keys) == len(set(keys))
    # Once the first is done the directory is free again.
    assert cli(*args, pythonpath=[plugin]).returncode == 0


def test_limit_keeps_recognition_scoring_both_sides(tmp_path):
    ran = cli("run", "--method", "always-yes", "--tasks", "rec", "--limit", "2", "--out", str(tmp_path))
    assert ran.returncode == 0, ran.stderr
    results = read_results(only_run_dir(tmp_path))
    for concept, tasks in results["concepts"].items():
        assert tasks["rec"]["pos_acc"] == 1.0 and tasks["rec"]["neg_acc"] == 0.0, concept  # one of each
        assert tasks["rec"]["weighted_acc"] == 0.5
