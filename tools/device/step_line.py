"""One JSON line for tools/device/gpu_checks.sh: the machine's line, or one step's outcome.

    python tools/device/step_line.py machine --device cuda --dry-run 0 --budget 420
    python tools/device/step_line.py STEP --rc RC --seconds S --limit L --log FILE
    python tools/device/step_line.py STEP --skipped budget --limit 0

A step's line is ``{"step", "rc", "step_s", "limit_s", "ok", "timed_out"}`` with ``result`` (the
last JSON object of its log: what the benchmark printed; a ``unifybench run --json`` object cut to
its run, method details, counts and task scores) or ``error`` (the log's
last non-empty line, where the failure usually names itself). Standard library only: it must run
even where the step's imports fail.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys


def last_json(lines: list[str]) -> dict | None:
    """The last JSON object of a log: a one-line object, or an indented one that ends the log
    (``unifybench run --json``) starting at its last line that is ``{`` alone."""
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i].strip()
        if not line.startswith("{"):
            continue
        for text in ([line, "\n".join(lines[i:])] if line == "{" else [line]):
            try:
                value = json.loads(text)
            except ValueError:
                continue
            if isinstance(value, dict):
                return compact(value)
    return None


RUN_KEYS = ("run", "method", "method_args", "method_details", "label", "counts", "tasks")


def compact(result: dict) -> dict:
    """A ``unifybench run --json`` object cut to what the step shows (the rest is in the run folder)."""
    if "run" in result and "counts" in result:
        return {key: result[key] for key in RUN_KEYS if key in result}
    return result


def step_line(args) -> dict:
    out: dict = {"step": args.name}
    if args.skipped:
        return {**out, "ok": False, "skipped": args.skipped}
    lines = []
    if args.log:
        try:
            with open(args.log, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError as exc:
            lines = [f"no log: {exc}"]
    result = last_json(lines)
    timed_out = args.rc in (124, 137)
    out.update({"rc": args.rc, "step_s": args.seconds, "limit_s": args.limit, "timed_out": timed_out,
                "ok": args.rc == 0 and result is not None})
    if result is not None:
        out["result"] = result
    if not out["ok"]:
        tail = [line.strip() for line in lines if line.strip()]
        out["error"] = (f"timed out after {args.limit} s; " if timed_out else "") + (tail[-1][:600] if tail else "")
    return out


def machine_line(args) -> dict:
    out = {"step": "machine", "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "device": args.device, "dry_run": args.dry_run == "1", "budget_s": args.budget,
           "python": platform.python_version(), "cpus": len(os.sched_getaffinity(0))}
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        gpu = ""
    out["gpu"] = gpu or None
    from importlib.metadata import PackageNotFoundError, version

    for module, dist in (("torch", "torch"), ("torchvision", "torchvision"), ("transformers", "transformers"),
                         ("open_clip", "open_clip_torch"), ("diffusers", "diffusers"), ("timm", "timm"),
                         ("accelerate", "accelerate")):
        try:  # the installed distribution's version: nothing imported (a dry run's line stays instant)
            out[module] = version(dist)
        except PackageNotFoundError:
            out[module] = "missing"
    if gpu:
        try:
            import torch

            out["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available to torch"
        except Exception as exc:  # noqa: BLE001 - a broken torch is what this line reports
            out["cuda"] = f"torch fails: {type(exc).__name__}"
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="step_line.py")
    p.add_argument("name")
    p.add_argument("--rc", type=int, default=0)
    p.add_argument("--seconds", type=int, default=0)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--log", default=None)
    p.add_argument("--skipped", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--dry-run", default="0")
    p.add_argument("--budget", type=int, default=0)
    args = p.parse_args(argv)
    print(json.dumps(machine_line(args) if args.name == "machine" else step_line(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
