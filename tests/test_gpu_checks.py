"""tools/device/gpu_checks.sh, the one prepared call on a lent GPU machine, kept from going stale here:
its steps in their order, every step's command parsed by the parser that will run it and its method
arguments checked as the benchmark checks them (for the GPU's sizes and for the CPU dry run), and
one cheap step run end to end as a dry run (one JSON line a step, a failing step recorded and the
next one run). The whole dry run (every step, about 6 minutes on 2 cores) is not part of the suite:
`bash tools/device/gpu_checks.sh --cpu-dry-run`."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "device" / "gpu_checks.sh"
FIRST = ["fidelity_jpg", "showo_generation", "sd_generation", "generation", "yochameleon_generation"]
ALL = FIRST + ["fidelity_png", "personalize", "showo_personalize", "yollava_personalize", "yochameleon_personalize",
               "rap_answers"]


def _script(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    full = {**os.environ, "PY": sys.executable, "HF_HUB_OFFLINE": "1", **(env or {})}
    for key in ("STEPS", "DRY_RUN", "BUDGET", "OUT"):  # the caller's settings would change the listing
        if env is None or key not in env:
            full.pop(key, None)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full, cwd=REPO,
                          timeout=timeout)


def _listing(*args: str) -> list[tuple[str, int, list[str]]]:
    done = _script("--list", *args)
    assert done.returncode == 0, done.stderr
    rows = []
    for line in done.stdout.splitlines():
        name, limit, *argv = shlex.split(line)
        rows.append((name, int(limit), argv))
    return rows


def test_the_steps_run_in_the_order_of_what_they_tell():
    gpu = _listing()
    assert [name for name, _, _ in gpu] == ALL
    assert all(0 < limit <= 300 for _, limit, _ in gpu)
    assert [name for name, _, _ in _listing("--cpu-dry-run")] == ALL
    assert [name for name, _, _ in _listing("sd_generation", "generation")] == ["sd_generation", "generation"]


def test_an_unknown_step_is_refused_before_anything_runs():
    done = _script("--list", "no_such_step")
    assert done.returncode == 2 and "unknown step no_such_step" in done.stderr


@pytest.mark.parametrize("mode", ["gpu", "dry"])
def test_every_step_command_parses_and_its_method_takes_its_arguments(mode):
    """What the benchmark would refuse in its first second (a renamed option, a method or argument
    gone, a hook missing, a model name it does not build) fails here, on the GPU's sizes too."""
    from importlib import import_module

    from unifybench.bench.common import method_arguments
    from unifybench.cli.options import build_parser
    from unifybench.kit.args import parse_method_args
    from unifybench.methods import resolve_method

    hooks = {"generation": "bench_generation", "personalize": "personalize"}
    for name, _, argv in _listing(*(["--cpu-dry-run"] if mode == "dry" else [])):
        assert argv[0] == "-m", name
        if argv[1] == "unifybench.bench":
            bench, rest = argv[2], argv[3:]
            args = import_module(f"unifybench.bench.{bench}").build_parser().parse_args(rest)
            assert args.device == ("cpu" if mode == "dry" else "cuda"), name
            if bench in hooks:
                extra = {"epochs": args.epochs} if bench == "personalize" else {"steps": args.steps,
                                                                                 "guidance": args.guidance}
                cls, raw = method_arguments(args, hooks[bench], args.device, extra)
        else:
            assert argv[1] == "unifybench" and argv[2] == "run", name
            args = build_parser().parse_args(argv[2:])
            cls, _ = resolve_method(args.method)
            raw = parse_method_args(args.method_args)
            assert set(args.tasks) <= cls.tasks, name
        if argv[1] == "unifybench" or bench in hooks:
            parsed = cls.parse_arguments(raw)
            cls.check_available(parsed)  # every model of these steps is built in code: nothing to find


def test_a_failing_step_prints_its_error_line_and_the_next_step_still_runs(tmp_path):
    # Two steps made to fail in their first second (a bad size): each its own line, in order.
    done = _script("--cpu-dry-run", "fidelity_png", "fidelity_jpg", timeout=60,
                   env={"OUT": str(tmp_path), "N_PNG": "not-a-number", "N_JPG": "nor-this"})
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["step"] for line in lines] == ["machine", "fidelity_png", "fidelity_jpg"]
    assert lines[0]["dry_run"] and lines[0]["device"] == "cpu" and lines[0]["torch"]
    for line, bad in zip(lines[1:], ("not-a-number", "nor-this")):
        assert not line["ok"] and line["rc"] == 2 and not line["timed_out"] and bad in line["error"]
    assert (tmp_path / "results.jsonl").read_text().splitlines() == done.stdout.splitlines()
    assert "--format png" in (tmp_path / "fidelity_png.log").read_text().splitlines()[0]


def test_a_step_left_without_budget_is_skipped_with_its_line(tmp_path):
    done = _script("--cpu-dry-run", "rap_answers", timeout=60, env={"OUT": str(tmp_path), "BUDGET": "0"})
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[-1] == {"step": "rap_answers", "ok": False, "skipped": "budget"}


def _step_line(tmp_path, log: str, *args: str) -> dict:
    (tmp_path / "step.log").write_text(log)
    done = subprocess.run([sys.executable, str(SCRIPT.parent / "step_line.py"), "s", "--log", str(tmp_path / "step.log"),
                           *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_the_step_line_carries_the_benchmark_json_or_the_error(tmp_path):
    ok = _step_line(tmp_path, "made 32 images\n{\"ratio\": 4.3, \"ok\": true}\n", "--rc", "0", "--seconds", "7",
                    "--limit", "90")
    assert ok == {"step": "s", "rc": 0, "step_s": 7, "limit_s": 90, "timed_out": False, "ok": True,
                  "result": {"ratio": 4.3, "ok": True}}
    run = {"run": "rap__mini__x", "method": "rap", "method_details": {"backend": {"dtype": "float16"}},
           "counts": {"items": 12}, "tasks": {"rec": {"accuracy": 0.5}}, "intervals": {"big": 1}}
    compact = _step_line(tmp_path, "a table\n" + json.dumps(run, indent=2) + "\n", "--rc", "0")["result"]
    assert compact == {key: run[key] for key in ("run", "method", "method_details", "counts", "tasks")}
    slow = _step_line(tmp_path, "loading\nstep 3 of 75\n", "--rc", "124", "--limit", "60")
    assert not slow["ok"] and slow["timed_out"] and slow["error"] == "timed out after 60 s; step 3 of 75"
    crashed = _step_line(tmp_path, "{\"partial\": 1}\nTraceback\nRuntimeError: CUDA error\n", "--rc", "1")
    assert not crashed["ok"] and crashed["error"] == "RuntimeError: CUDA error" and crashed["result"] == {"partial": 1}
