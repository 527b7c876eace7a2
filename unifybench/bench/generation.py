"""Image generation (and, where a method offers it, understanding) speed of a method's base model
against a baseline run in the same process on the same weights.

    python -m unifybench.bench generation --method M [--method-arg KEY=VALUE ...] [--model NAME]
                                          [--backend NAME] [--dtype float32|bfloat16] [--batch N]
                                          [--device cpu|cuda] [--steps S] [--repeats R] [...]

Any registered method that offers the speed hook ``bench_generation`` (:mod:`.hooks`) runs here:
the core looks it up through the registry (it imports no adapter), builds it with the method's own
bench defaults (``bench_arguments``: a tiny model on the CPU, full-size random weights on CUDA)
overridden by ``--model``/``--backend``/``--dtype`` and ``--method-arg``, and calls the hook with
the options below. The hook returns one JSON-able dict: what it compared (``baseline`` and ``ours``), their
throughputs and ``ratio`` (both measured here, in this run, with :func:`unifybench.bench.common.timed`),
and ``ok`` (False when the two paths disagree: exit 1). The last line printed is that object, with
the method, model, device and whether the weights are random added. Each built-in adapter's card
says what its hook compares (UniCTokens: Show-o MaskGIT and cached understanding against the
reference loops, Janus static-cache decoding against eager ``generate``; Stable Diffusion: one
image per pipeline call against one request per call).
"""
from __future__ import annotations

import argparse
import json
import sys

from .common import build_method, common_arguments, header


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m unifybench.bench generation")
    common_arguments(p)
    p.add_argument("--steps", type=int, default=None,
                   help="sampling steps: showo MaskGIT steps, stable diffusion steps (default: the method's)")
    p.add_argument("--questions", type=int, default=None,
                   help="showo: questions for the understanding comparison (default: --batch)")
    p.add_argument("--max-new-tokens", type=int, default=100, help="showo: reply length for that comparison")
    p.add_argument("--batch", type=int, default=None, help="images per batch (default 32 on CUDA, 4 on CPU)")
    p.add_argument("--images-per-prompt", type=int, default=None,
                   help="stable diffusion: images per request (default --batch: one request fills a call); "
                        "fewer gives several requests, and the JSON adds what packing them into one call would "
                        "gain")
    p.add_argument("--guidance", type=float, default=None, help="default: the method's")
    p.add_argument("--check-steps", type=int, default=8, help="janus: greedy prefix length for the logits check")
    p.add_argument("--repeats", type=int, default=1, help="timed batches per path (after one warm-up)")
    p.add_argument("--compile", default="auto", choices=("auto", "on", "off"),
                   help="janus: compile our decoding step: auto = on CUDA only (torch.compile, reduce-overhead = "
                        "CUDA graphs); on = also on CPU (inductor, no graphs)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    method, device = build_method(args, "bench_generation", extra={"steps": args.steps, "guidance": args.guidance})
    if args.batch is None:
        args.batch = 32 if device.type == "cuda" else 4
    result = method.bench_generation(args)
    if result is None:  # the hook printed its own one-line reason
        return 2
    print(json.dumps({**header("generation", method, device), **result}))
    sys.stdout.flush()
    return 0 if result.get("ok", True) else 1
