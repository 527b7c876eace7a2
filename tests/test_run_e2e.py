"""End-to-end: the real command line on the bundled mini bench, resume after SIGKILL, plugins."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import cli, cli_env, make_plugin, only_run_dir, read_results, run_cli

# A plugin method that answers deterministically from the request alone and can be slowed down,
# so a run can be killed part-way through.
SLOW_PLUGIN = '''
import hashlib, time
from PIL import Image
from unifybench.kit.args import Arg
from unifybench.methods import Method

class SlowEcho(Method):
    name = "slow-echo"
    tasks = frozenset({"rec", "vqa", "text_only", "choice", "gen"})
    arguments = {"delay": Arg(float, 0.0, "seconds to sleep per batch", low=0)}

    def answer(self, concept, state, requests):
        time.sleep(self.args.delay)
        return ["No." if r.index % 3 == 0 else "Yes, it is " + concept.name for r in requests]

    def generate(self, concept, state, requests):
        time.sleep(self.args.delay)
        out = []
        for r in requests:
            images = []
            for i in range(r.n_images):
                shade = hashlib.sha256(f"{r.seed}/{r.prompt}/{i}".encode()).digest()
                images.append(Image.new("RGB", (64, 48), tuple(shade[:3])))
            out.append(images)
        return out
'''


def slow_plugin(tmp_path: Path) -> Path:
    return make_plugin(tmp_path / "plugin", "slow-echo-plugin", "slowecho", SLOW_PLUGIN,
                       {"slow-echo": "slowecho:SlowEcho"})


def test_always_yes_scores_understanding_and_marks_generation_unsupported(tmp_path):
    proc = run_cli("run", "--method", "always-yes", "--out", str(tmp_path))  # `python -m unifybench`, a real process
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(tmp_path)
    results = read_results(run_dir)
    rec = results["tasks"]["rec"]
    assert rec["pos_acc"] == 1.0 and rec["neg_acc"] == 0.0 and rec["weighted_acc"] == 0.5
    assert rec["unparsed"] == 0
    assert isinstance(results["tasks"]["vqa"]["bleu"], float)
    assert results["tasks"]["vqa"]["judge_score"].startswith("not scored: no judge")
    assert results["tasks"]["choice"]["accuracy"] == 0.0  # "Yes." names no option
    assert results["tasks"]["gen"]["clip_i"] == "not scored: method always-yes does not support gen"
    assert "does not support" in proc.stderr + proc.stdout
    spec = json.loads((run_dir / "run.json").read_text())
    for field in ("spec", "benchmark", "dtype", "backbones", "versions", "git_commit"):
        assert field in spec
    assert spec["benchmark"]["fingerprint"]
    n_items = sum(1 for line in (run_dir / "predictions.jsonl").read_text().splitlines() if line)
    n_scored = sum(1 for line in (run_dir / "scores.jsonl").read_text().splitlines() if line)
    assert n_items == n_scored > 0
    # Every concept has every understanding task.
    for concept_results in results["concepts"].values():
        assert set(concept_results) == {"rec", "vqa", "text_only", "choice"}


def test_rerun_resumes_without_loading_the_method(tmp_path):
    args = ("run", "--method", "random-answer", "--tasks", "rec,choice", "--out", str(tmp_path))
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    run_dir = only_run_dir(tmp_path)
    before = (run_dir / "predictions.jsonl").read_text()
    second = cli(*args)
    assert second.returncode == 0, second.stderr
    assert "method is not loaded" in second.stdout + second.stderr
    assert (run_dir / "predictions.jsonl").read_text() == before
    # A different seed is a different specification: a new run directory.
    third = cli(*args, "--seed", "1")
    assert third.returncode == 0, third.stderr
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2


def test_real_images_generation_scores_with_tiny_backbones(tmp_path):
    proc = cli("run", "--method", "real-images", "--backbones", "tiny", "--limit", "2",
                   "--images-per-prompt", "2", "--concepts", "dog,clock", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(tmp_path)
    results = read_results(run_dir)
    gen = results["tasks"]["gen"]
    for metric in ("clip_i", "clip_t", "dino"):
        assert isinstance(gen[metric], float) and -1.0 <= gen[metric] <= 1.0
    assert gen["face_sim"] == "not scored: no human concepts"
    assert results["tasks"]["attr_gen"]["attr_score"].startswith("not scored: method real-images")
    assert results["label"] and "random-init" in results["label"]
    images = sorted((run_dir / "images").rglob("*.jpg"))
    assert len(images) == 2 * 2 * 2  # concepts x prompts x images per prompt
    rows = [json.loads(line) for line in (run_dir / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == len(images)


def test_killed_run_resumes_to_the_same_results(tmp_path):
    plugin = slow_plugin(tmp_path)
    common = ["run", "--method", "slow-echo", "--tasks", "rec,vqa,choice,gen", "--backbones", "tiny",
              "--limit", "3", "--images-per-prompt", "2", "--batch-size", "1"]
    reference = cli(*common, "--method-arg", "delay=0", "--out", str(tmp_path / "straight"),
                        pythonpath=[plugin])
    assert reference.returncode == 0, reference.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "unifybench", *common, "--method-arg", "delay=0.15",
                             "--out", str(out)],
                            env=cli_env([plugin]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    predictions = None
    deadline = time.time() + 120
    while time.time() < deadline:
        runs = [p for p in out.glob("*") if p.is_dir()] if out.exists() else []
        if runs and (runs[0] / "predictions.jsonl").exists():
            predictions = runs[0] / "predictions.jsonl"
            if len(predictions.read_text().splitlines()) >= 8:
                break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert predictions is not None
    partial = predictions.read_text().splitlines()
    assert 8 <= len(partial)
    assert not (predictions.parent / "results.json").exists(), "the run finished before it was killed"

    resumed = cli(*common, "--method-arg", "delay=0.15", "--out", str(out), pythonpath=[plugin])
    assert resumed.returncode == 0, resumed.stderr
    lines = predictions.read_text().splitlines()
    keys = [json.loads(line)["key"] for line in lines]
    assert len(keys) == len(set(keys)), "duplicate prediction lines after resume"
    assert lines[: len(partial) - 1] == partial[: len(partial) - 1]

    straight = read_results(only_run_dir(tmp_path / "straight"))
    again = read_results(predictions.parent)
    for results in (straight, again):
        results.pop("run")
        results.pop("method_args")
    assert again == straight


def test_plugin_is_listed_and_runs_through_the_command_line(tmp_path):
    plugin = slow_plugin(tmp_path)
    listing = cli("methods", pythonpath=[plugin])
    assert listing.returncode == 0, listing.stderr
    assert "slow-echo" in listing.stdout and "slowecho:SlowEcho" in listing.stdout
    assert "real-images" in listing.stdout and "precomputed" in listing.stdout
    proc = cli("run", "--method", "slow-echo", "--tasks", "rec", "--out", str(tmp_path / "runs"),
                   pythonpath=[plugin])
    assert proc.returncode == 0, proc.stderr
    rec = read_results(only_run_dir(tmp_path / "runs"))["tasks"]["rec"]
    assert isinstance(rec["weighted_acc"], float)


def test_precomputed_scores_predictions_made_elsewhere(tmp_path):
    plugin = slow_plugin(tmp_path)
    base = ["--tasks", "rec,vqa,gen", "--backbones", "tiny", "--limit", "2", "--images-per-prompt", "2",
            "--concepts", "cat,backpack"]
    made = cli("run", "--method", "slow-echo", *base, "--out", str(tmp_path / "a"), pythonpath=[plugin])
    assert made.returncode == 0, made.stderr
    source = only_run_dir(tmp_path / "a")
    answers = tmp_path / "answers.jsonl"
    with open(answers, "w") as fh:
        for line in (source / "predictions.jsonl").read_text().splitlines():
            row = json.loads(line)
            if "answer" in row:
                fh.write(json.dumps({"concept": row["concept"], "index": row["index"], "answer": row["answer"]}) + "\n")
    scored = cli("run", "--method", "precomputed", *base, "--method-arg", f"answers={answers}",
                     "--method-arg", f"images={source / 'images'}", "--out", str(tmp_path / "b"))
    assert scored.returncode == 0, scored.stderr
    original, rescored = read_results(source), read_results(only_run_dir(tmp_path / "b"))
    assert rescored["tasks"] == original["tasks"]

    # A missing answer fails the scoring phase with a list of what is missing.
    lines = answers.read_text().splitlines()
    answers.write_text("\n".join(lines[1:]) + "\n")
    broken = cli("run", "--method", "precomputed", *base, "--method-arg", f"answers={answers}",
                     "--method-arg", f"images={source / 'images'}", "--out", str(tmp_path / "c"))
    assert broken.returncode == 2
    assert "missing" in broken.stderr and "rec/" in broken.stderr
    assert "Traceback" not in broken.stderr
    assert (only_run_dir(tmp_path / "c") / "missing.txt").exists()


def test_bad_command_lines_give_one_line_errors(tmp_path):
    cases = [
        (("run", "--method", "no-such-method", "--out", str(tmp_path)), "unknown method"),
        (("run", "--method", "always-yes", "--method-arg", "colour=blue", "--out", str(tmp_path)),
         "unknown argument"),
        (("run", "--method", "always-yes", "--concepts", "nobody", "--out", str(tmp_path)), "unknown concept"),
        (("run", "--method", "always-yes", "--tasks", "rec,dance", "--out", str(tmp_path)), "unknown task"),
        (("run", "--method", "always-yes", "--bench", str(tmp_path / "nowhere"), "--out", str(tmp_path)),
         "nowhere"),
        (("leaderboard", str(tmp_path / "not-a-run")), "not-a-run"),
        # a device torch cannot use here fails before the bench is read or the method loaded
        (("run", "--method", "always-yes", "--device", "tpu", "--out", str(tmp_path)), "not a device torch knows"),
        (("run", "--method", "always-yes", "--device", "cuda:99", "--out", str(tmp_path)), "'cuda:99' asked for"),
        (("score-images", "--refs", str(tmp_path), "--gens", str(tmp_path), "--device", "cuda:99"),
         "'cuda:99' asked for"),
    ]
    for args, expected in cases:
        proc = cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert expected in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
