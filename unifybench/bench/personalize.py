"""Personalization cost of a method: one concept personalized into a fresh folder, timed.

    python -m unifybench.bench personalize --method M [--method-arg KEY=VALUE ...] [--model NAME]
                                           [--backend NAME] [--epochs N] [--concept dog] [--bench mini]
                                           [--device cpu|cuda] [--dtype float32|bfloat16]

Any registered method that personalizes runs here, found through the registry, built with its bench
defaults (``bench_arguments``) overridden by the shortcuts and ``--method-arg``; ``--epochs`` sets
its ``epochs=`` where it declares one. The method's ``personalize`` runs on one concept of a
benchmark (default: the bundled mini bench's ``dog``) into a fresh temporary state folder; the
speed hook ``bench_personalize_costs(state_dir)`` (:mod:`.hooks`), where the method offers it, then
reads back what each stage recorded (optimizer steps, seconds, first and last epoch loss). The last
line printed is one JSON object. Random-init models give cost figures only: their losses say nothing about the method.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from .common import build_method, common_arguments, header
from .hooks import personalize_costs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m unifybench.bench personalize")
    common_arguments(p)
    p.add_argument("--bench", default="mini", help="benchmark folder or 'mini' (the bundled one)")
    p.add_argument("--concept", default="dog")
    p.add_argument("--epochs", type=int, default=None, help="the method's epochs= (default: its own schedule)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)

    from unifybench.data import load_benchmark
    from unifybench.errors import BenchError

    method, device = build_method(args, "personalize", extra={"epochs": args.epochs})
    bench = load_benchmark(args.bench)
    names = [c.name for c in bench.concepts]
    if args.concept not in names:
        raise BenchError(f"no concept {args.concept!r} in {bench.name} (has: {', '.join(names)})", where="--concept")
    concept = bench.concept(args.concept)
    t0 = time.perf_counter()
    details = method.describe()  # loads the base model
    load_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="ub-personalize-") as tmp:
        t0 = time.perf_counter()
        method.personalize(concept, Path(tmp))
        total_s = time.perf_counter() - t0
        stages = personalize_costs(method, Path(tmp))
    result = {**header("personalize", method, device), "concept": concept.token,
              "dtype": (details.get("backend") or {}).get("dtype"), "train_args": details.get("train_args"),
              "model_load_s": round(load_s, 2), "stages": stages, "total_s": round(total_s, 2)}
    print(json.dumps(result))
    return 0
