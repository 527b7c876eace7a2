"""End to end: `unifybench run --judge ...` against a local OpenAI-compatible server and the tiny hf judge.

The command line runs in this process (``cli.main``, the same code path as the console script)
except where a run must be killed, which needs a subprocess; this keeps the imports paid once.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _judge_server import JudgeServer
from conftest import cli_env, make_plugin, only_run_dir, read_results, run_cli
from unifybench.cli import main

FAKE_KEY = "sk-e2e-UNIFYBENCH-9f8e7d6c5b4a-do-not-store"
KEY_ENV = "UNIFYBENCH_E2E_JUDGE_KEY"

# Answers open questions and draws attribute prompts, deterministically from the request alone.
ECHO_PLUGIN = '''
import hashlib
from PIL import Image
from unifybench.methods import Method

class JudgeEcho(Method):
    name = "judge-echo"
    tasks = frozenset({"vqa", "text_only", "attr_gen"})

    def answer(self, concept, state, requests):
        return [f"It is {concept.class_noun} number {r.index}." for r in requests]

    def generate(self, concept, state, requests):
        out = []
        for r in requests:
            images = []
            for i in range(r.n_images):
                shade = hashlib.sha256(f"{r.seed}/{r.prompt}/{i}".encode()).digest()
                images.append(Image.new("RGB", (32, 24), tuple(shade[:3])))
            out.append(images)
        return out
'''

COMMON = ["run", "--method", "judge-echo", "--tasks", "vqa,text_only,attr_gen", "--backbones", "tiny",
          "--limit", "2", "--images-per-prompt", "3"]


def plugin(tmp_path: Path) -> Path:
    return make_plugin(tmp_path / "plugin", "judge-echo-plugin", "judgeecho", ECHO_PLUGIN,
                       {"judge-echo": "judgeecho:JudgeEcho"})


def openai_args(server: JudgeServer, *extra: str) -> list[str]:
    return ["--judge", "openai:test-judge", "--judge-base-url", server.base_url, "--judge-api-key-env", KEY_ENV,
            "--judge-backoff", "0.01", "--judge-samples", "2", *extra]


def with_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)  # inherited by the CLI subprocess through cli_env


class Ran:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_here(capsys, monkeypatch, *args: str, pythonpath: list[Path]) -> Ran:
    """`unifybench ARGS` in this process, with the plugin folder on sys.path."""
    for folder in pythonpath:
        monkeypatch.syspath_prepend(str(folder))
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return Ran(code, captured.out, captured.err)


def test_openai_judge_scores_open_answers_and_attr_prompts_end_to_end(tmp_path, monkeypatch, capsys):
    with_key(monkeypatch)
    path = plugin(tmp_path)
    out = tmp_path / "runs"
    with JudgeServer() as server:
        server.plan = ["429", "500", "drop"]
        proc = run_here(capsys, monkeypatch, *COMMON, "--concepts", "dog,clock", *openai_args(server),
                        "--out", str(out), pythonpath=[path])
        assert proc.returncode == 0, proc.stderr
        run_dir = only_run_dir(out)
        results = read_results(run_dir)
        n_qa, n_attr = 2 * 2 * 2, 2 * 2 * 2  # concepts x tasks x items; concepts x prompts x samples
        assert server.answered == n_qa + n_attr
        for task in ("vqa", "text_only"):
            metrics = results["tasks"][task]
            assert isinstance(metrics["bleu"], float) and 0 <= metrics["judge_score"] <= 1
            assert metrics["judge_unparsed"] == 0
        attr = results["tasks"]["attr_gen"]
        assert 0 <= attr["attr_score"] <= 1 and attr["unparsed"] == 0
        judge = results["judge"]
        assert judge["calls"] == n_qa + n_attr and judge["retries"] == 3 and judge["cache_hits"] == 0
        assert judge["prompt_tokens"] == 11 * (n_qa + n_attr) and judge["template_version"]
        # Per prompt, then per concept, then over concepts, from the per-image rows.
        rows = [json.loads(line) for line in (run_dir / "scores.jsonl").read_text().splitlines()]
        judged = [r for r in rows if r["task"] == "attr_gen" and r.get("judge_parsed")]
        assert len(judged) == n_attr
        concept_means = []
        for concept in ("dog", "clock"):
            per_prompt = {}
            for r in judged:
                if r["concept"] == concept:
                    per_prompt.setdefault(r["index"], []).append(r["judge_score"])
            mean = sum(sum(v) / len(v) for v in per_prompt.values()) / len(per_prompt)
            assert abs(results["concepts"][concept]["attr_gen"]["attr_score"] - mean) < 1e-9
            concept_means.append(mean)
        assert abs(attr["attr_score"] - sum(concept_means) / 2) < 1e-9
        # The judge settings are recorded, the key nowhere.
        spec = json.loads((run_dir / "run.json").read_text())["spec"]["judge"]
        assert spec["spec"] == "openai:test-judge" and spec["api_key_env"] == KEY_ENV and spec["seed"] == 0

        # A rerun makes no calls and gives the same results.
        before = len(server.requests)
        again = run_here(capsys, monkeypatch, *COMMON, "--concepts", "dog,clock", *openai_args(server),
                         "--out", str(out), pythonpath=[path])
        assert again.returncode == 0, again.stderr
        assert len(server.requests) == before
        rerun = read_results(run_dir)
        assert rerun["judge"]["cache_hits"] == n_qa + n_attr and rerun["judge"]["calls"] == 0
        assert rerun["tasks"] == results["tasks"]

        # Another judge scores the same predictions without re-running the method.
        server.mode = "garbage"
        other = run_here(capsys, monkeypatch, *COMMON, "--concepts", "dog,clock", *openai_args(server),
                         "--judge", "openai:judge-two", "--out", str(out), pythonpath=[path])
        assert other.returncode == 0, other.stderr
        assert only_run_dir(out) == run_dir and "method is not loaded" in other.stdout + other.stderr
        two = read_results(run_dir)
        assert two["judge"]["judge"] == "openai:judge-two"
        assert two["tasks"]["vqa"]["judge_unparsed"] == 4 and two["judge"]["reasks"] == n_qa + n_attr
        assert two["tasks"]["vqa"]["judge_score"] == "not scored: all 4 judge replies unparsed"
        assert two["tasks"]["attr_gen"]["unparsed"] == n_attr

    for file in run_dir.rglob("*"):
        if file.is_file():
            assert FAKE_KEY.encode() not in file.read_bytes(), file


def test_killed_judging_resumes_without_repeating_finished_judgments(tmp_path, monkeypatch, capsys):
    with_key(monkeypatch)
    path = plugin(tmp_path)
    args = [*COMMON, "--concepts", "cat,backpack"]
    with JudgeServer() as server:
        straight = run_here(capsys, monkeypatch, *args, *openai_args(server), "--out", str(tmp_path / "straight"),
                            pythonpath=[path])
        assert straight.returncode == 0, straight.stderr
        total = server.answered

        server.delay_s = 0.2
        out = tmp_path / "killed"
        proc = subprocess.Popen([sys.executable, "-m", "unifybench", *args,
                                 *openai_args(server, "--judge-concurrency", "1"), "--out", str(out)],
                                env=cli_env([path]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline and server.answered < total + 4:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        run_dir = only_run_dir(out)
        assert not (run_dir / "results.json").exists(), "the run finished before it was killed"
        cached = sqlite3.connect(run_dir / "judge_cache.sqlite").execute("SELECT COUNT(*) FROM calls").fetchone()[0]
        assert 3 <= cached < total

        server.delay_s = 0.0
        before = len(server.requests)
        resumed = run_here(capsys, monkeypatch, *args, *openai_args(server), "--out", str(out), pythonpath=[path])
        assert resumed.returncode == 0, resumed.stderr
        assert len(server.requests) - before == total - cached
        results = read_results(run_dir)
        assert results["judge"]["cache_hits"] == cached
        reference = read_results(only_run_dir(tmp_path / "straight"))
        assert results["tasks"] == reference["tasks"] and results["concepts"] == reference["concepts"]


def test_tiny_hf_judge_scores_end_to_end(tmp_path, monkeypatch, capsys):
    path = plugin(tmp_path)
    out = tmp_path / "runs"
    proc = run_here(capsys, monkeypatch, *COMMON, "--concepts", "dog,cat", "--judge", "hf:tiny", "--judge-samples",
                    "2", "--judge-max-tokens", "1", "--out", str(out), pythonpath=[path])
    assert proc.returncode == 0, proc.stderr
    results = read_results(only_run_dir(out))
    judge = results["judge"]
    assert judge["backend"] == "hf" and judge["judgments"] == 8 + 8
    assert judge["calls"] == judge["judgments"] + judge["reasks"]
    # One new token per reply: the tiny judge always answers "0" or "1" (by the sign of a random
    # projection), so every reply parses; the numbers mean nothing, the plumbing is the point.
    for task, score, unparsed in (("vqa", "judge_score", "judge_unparsed"),
                                  ("text_only", "judge_score", "judge_unparsed"), ("attr_gen", "attr_score", "unparsed")):
        metrics = results["tasks"][task]
        assert metrics[unparsed] == 0, (task, metrics)
        assert isinstance(metrics[score], float) and 0 <= metrics[score] <= 1, (task, metrics)
    again = run_here(capsys, monkeypatch, *COMMON, "--concepts", "dog,cat", "--judge", "hf:tiny", "--judge-samples",
                     "2", "--judge-max-tokens", "1", "--out", str(out), pythonpath=[path])
    assert again.returncode == 0, again.stderr
    assert read_results(only_run_dir(out))["judge"]["calls"] == 0
    assert read_results(only_run_dir(out))["tasks"] == results["tasks"]


def test_bad_judge_settings_are_one_line_errors(tmp_path):
    for args, expected in ((["--judge", "gpt-4o"], "unknown judge"),
                           (["--judge", "openai:m", "--judge-base-url", "ftp://x"], "http(s) URL"),
                           (["--judge", "openai:m", "--judge-concurrency", "0"], ">= 1")):
        proc = run_cli("run", "--method", "always-yes", "--tasks", "vqa", "--out", str(tmp_path), *args)
        assert proc.returncode == 2, proc.stderr
        assert expected in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_failing_judge_ends_with_one_line_and_keeps_predictions_and_judgments(tmp_path, monkeypatch, capsys):
    with_key(monkeypatch)
    out = tmp_path / "runs"
    args = ["run", "--method", "random-answer", "--tasks", "vqa,text_only", "--concepts", "dog", "--out", str(out)]
    with JudgeServer("fail-on") as server:
        server.fail_marker = "favourite"  # some of dog's questions fail for good, the others are answered
        failed = run_here(capsys, monkeypatch, *args, *openai_args(server, "--judge-retries", "1",
                                                                 "--judge-timeout", "1"), pythonpath=[])
        assert failed.returncode == 2
        assert "HTTP 500" in failed.stderr and "rerun resumes" in failed.stderr and FAKE_KEY not in failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
        run_dir = only_run_dir(out)
        predictions = (run_dir / "predictions.jsonl").read_text()
        cached = sqlite3.connect(run_dir / "judge_cache.sqlite").execute("SELECT COUNT(*) FROM calls").fetchone()[0]
        assert cached > 0

        server.mode = "normal"
        before = len(server.requests)
        ok = run_here(capsys, monkeypatch, *args, *openai_args(server), pythonpath=[])
        assert ok.returncode == 0, ok.stderr
        assert (run_dir / "predictions.jsonl").read_text() == predictions
        results = read_results(run_dir)
        assert results["judge"]["cache_hits"] == cached
        assert len(server.requests) - before == results["judge"]["judgments"] - cached


def test_a_trickling_judge_is_bounded_by_the_judge_timeout_in_total(tmp_path, monkeypatch, capsys):
    """Issue 24: --judge-timeout was a per-read timeout, so one byte a second held the run (95 s with
    --judge-timeout 2). It now bounds each whole request."""
    with_key(monkeypatch)
    with JudgeServer("trickle") as server:
        server.trickle_s = 0.5  # a 60-byte reply would take 30 s
        start = time.monotonic()
        ran = run_here(capsys, monkeypatch, "run", "--method", "random-answer", "--tasks", "vqa", "--concepts", "dog",
                       "--limit", "1", "--out", str(tmp_path / "runs"),
                       *openai_args(server, "--judge-retries", "1", "--judge-timeout", "1", "--judge-backoff", "0.01",
                                    "--judge-concurrency", "1"), pythonpath=[])
        elapsed = time.monotonic() - start
        in_flight = server.max_inflight
    assert ran.returncode == 2 and "timed out after 1 s" in ran.stderr, ran.stderr
    assert elapsed < 15, elapsed
    assert in_flight == 1  # the abandoned request still holds its slot: the retry never doubles it


def test_a_judge_cache_damaged_past_its_header_is_one_line_asking_to_move_it_aside(tmp_path, monkeypatch, capsys):
    from unifybench.scoring.judges.cache import JudgeCache, Reply

    path = tmp_path / "cache.sqlite"
    cache = JudgeCache(path)
    for i in range(400):
        cache.put(f"key-{i}", "judge", Reply("Score: 1 " + "x" * 200))
    cache.close()
    data = bytearray(path.read_bytes())
    data[4096:4096 + 2200] = b"\xa5" * 2200  # the second page (a b-tree page header): the file still opens
    path.write_bytes(bytes(data))
    with_key(monkeypatch)
    with JudgeServer() as server:
        ran = run_here(capsys, monkeypatch, "run", "--method", "random-answer", "--tasks", "vqa", "--concepts", "dog",
                       "--limit", "1", "--out", str(tmp_path / "runs"),
                       *openai_args(server, "--judge-cache", str(path)), pythonpath=[])
    ours = [line for line in ran.stderr.splitlines() if line.startswith("unifybench:")]  # not the server's
    assert ran.returncode == 2 and len(ours) == 1 and "Traceback (most recent call last)" not in ran.stderr
    assert "unusable judge cache" in ours[0] and "move it aside" in ours[0] and str(path) in ours[0]


@pytest.mark.parametrize("echo", ["401echo", "401echo-late"])
def test_a_rejected_key_echoed_by_the_server_is_never_printed(tmp_path, monkeypatch, capsys, echo):
    with_key(monkeypatch)
    with JudgeServer() as server:
        server.plan = [echo]
        ran = run_here(capsys, monkeypatch, "run", "--method", "random-answer", "--tasks", "vqa", "--concepts", "dog",
                       "--limit", "1", "--out", str(tmp_path / "runs"), *openai_args(server), pythonpath=[])
    assert ran.returncode == 2 and "HTTP 401" in ran.stderr and "***" in ran.stderr
    assert FAKE_KEY not in ran.stderr and FAKE_KEY[:12] not in ran.stderr  # not even the part before a cut


def test_signed_and_exponent_scores_are_unparsed_not_counted(tmp_path, monkeypatch, capsys):
    with_key(monkeypatch)
    path = plugin(tmp_path)
    out = tmp_path / "runs"
    with JudgeServer("out-of-range") as server:
        proc = run_here(capsys, monkeypatch, *COMMON, "--concepts", "dog", *openai_args(server), "--out", str(out),
                        pythonpath=[path])
    assert proc.returncode == 0, proc.stderr
    results = read_results(only_run_dir(out))
    for task in ("vqa", "text_only"):
        assert results["tasks"][task]["judge_unparsed"] == 2 and isinstance(results["tasks"][task]["judge_score"], str)
    assert results["tasks"]["attr_gen"]["unparsed"] > 0 and isinstance(results["tasks"]["attr_gen"]["attr_score"], str)


def test_a_reply_of_deeply_nested_json_is_one_line(tmp_path, monkeypatch, capsys):
    with_key(monkeypatch)
    path = plugin(tmp_path)
    with JudgeServer("deepjson") as server:
        proc = run_here(capsys, monkeypatch, *COMMON, "--concepts", "dog", *openai_args(server, "--judge-retries", "1"),
                        "--out", str(tmp_path / "runs"), pythonpath=[path])
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1 and "not chat-completions JSON" in line and "Recursion" not in line, proc.stderr


def test_a_missing_hf_judge_is_refused_before_any_prediction(tmp_path, monkeypatch, capsys):
    path = plugin(tmp_path)
    out = tmp_path / "runs"
    for judge in (f"hf:{tmp_path / 'no-such-model'}", "hf:nobody-here/no-such-judge"):
        proc = run_here(capsys, monkeypatch, *COMMON, "--concepts", "dog", "--judge", judge, "--out", str(out),
                        pythonpath=[path])
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "judge model" in proc.stderr and "--judge hf:" in proc.stderr
        assert not out.exists()  # nothing predicted, no run directory
