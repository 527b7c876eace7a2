"""Personalization cost of a method: one concept through every stage, timed per stage.

    python -m unifybench.bench personalize --method unictokens|yollava [--backend showo|janus]
                                           [--model tiny|random|random-1b|HUB|DIR]
                                           [--concept dog] [--bench mini] [--epochs N]
                                           [--device cpu|cuda] [--dtype float32|bfloat16]

Runs the method's ``personalize`` on one concept of a benchmark (default: the bundled mini bench's
``dog``) into a fresh temporary state folder, with the method's published schedule unless ``--epochs``
shortens it, then reads back what each stage recorded (optimizer steps, seconds, first and last epoch
loss). The last line printed is one JSON object. Random-init models (``tiny``, ``random`` for Show-o,
``random-1b`` for Janus) give cost figures only: their losses say nothing about the method.
``--backend`` is UniCTokens'; Yo'LLaVA runs on LLaVA (``--model tiny`` by default, or a LLaVA
checkpoint) and reports one stage, ``train``, with its training set's composition.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

METHODS = ("unictokens", "yollava")
STAGES = ("stage1", "stage2", "transition", "stage3")


def stage_costs(state_dir: Path) -> dict[str, dict]:
    """Per stage, what its ``unictokens.json`` recorded: steps, seconds and the epoch losses' ends."""
    costs = {}
    for stage in STAGES:
        meta_path = state_dir / stage / "unictokens.json"
        if not meta_path.is_file():
            continue
        meta = json.loads(meta_path.read_text())
        row = {k: meta[k] for k in ("epochs", "steps", "seconds") if k in meta}
        losses = meta.get("losses") or []
        if losses:
            row["loss_first_epoch"] = round(losses[0]["loss"], 4)
            row["loss_last_epoch"] = round(losses[-1]["loss"], 4)
        if row.get("steps") and row.get("seconds") is not None:
            row["seconds_per_step"] = round(row["seconds"] / row["steps"], 4)
        costs[stage] = row
    return costs


def yollava_costs(state_dir: Path) -> dict[str, dict]:
    meta = json.loads((state_dir / "yollava.json").read_text())
    losses = meta["losses"]
    steps = sum(e["steps"] for e in losses)
    row = {"epochs": len(losses), "steps": steps, "seconds": meta["seconds"],
           "loss_first_epoch": round(losses[0]["loss"], 4), "loss_last_epoch": round(losses[-1]["loss"], 4),
           "seconds_per_step": round(meta["seconds"] / steps, 4) if steps else None,
           "training_set": meta["training_set"]}
    return {"train": row}


def main(argv: list[str]) -> int:
    import torch

    p = argparse.ArgumentParser(prog="python -m unifybench.bench personalize")
    p.add_argument("--method", default="unictokens", choices=METHODS)
    p.add_argument("--backend", default="showo", choices=("showo", "janus"), help="the unified model")
    p.add_argument("--model", default=None, help="tiny (default on CPU), full-size random init (default on CUDA: "
                                                 "random on showo, random-1b on janus), or a hub name / local folder")
    p.add_argument("--bench", default="mini", help="benchmark folder or 'mini' (the bundled one)")
    p.add_argument("--concept", default="dog")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of every stage (default: the method's: 20 for unictokens, 15 for yollava)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16"),
                   help="default bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from unifybench.data import load_benchmark
    from unifybench.devices import check_device
    from unifybench.errors import BenchError
    device = torch.device(check_device(args.device))
    if args.method == "yollava":
        from unifybench_yollava.method import YoLLaVA as method_class

        model = args.model or "tiny"
        method_args = {"model": model}
        random_init = model == "tiny"
    else:
        from unifybench_unictokens.method import RANDOM_MODELS, UniCTokens as method_class

        model = args.model or (RANDOM_MODELS[args.backend] if device.type == "cuda" else "tiny")
        method_args = {"backend": args.backend, "model": model}
        random_init = model in ("tiny", RANDOM_MODELS[args.backend])
    if args.epochs is not None:
        method_args["epochs"] = str(args.epochs)
    if args.dtype:
        method_args["dtype"] = args.dtype
    bench = load_benchmark(args.bench)
    names = [c.name for c in bench.concepts]
    if args.concept not in names:
        raise BenchError(f"no concept {args.concept!r} in {bench.name} (has: {', '.join(names)})",
                         where="--concept")
    concept = bench.concept(args.concept)
    method = method_class(method_args, seed=args.seed, device=str(device))
    t0 = time.perf_counter()
    backend = method.host if args.method == "yollava" else method.backend
    load_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="ub-personalize-") as tmp:
        t0 = time.perf_counter()
        method.personalize(concept, Path(tmp))
        total_s = time.perf_counter() - t0
        stages = yollava_costs(Path(tmp)) if args.method == "yollava" else stage_costs(Path(tmp))
    result = {
        "bench": "personalize", "method": args.method,
        "backend": "llava" if args.method == "yollava" else args.backend, "model": model,
        "random_init": random_init, "concept": concept.token, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": backend.describe()["dtype"], "train_args": method.describe()["train_args"],
        "model_load_s": round(load_s, 2), "stages": stages, "total_s": round(total_s, 2),
    }
    print(json.dumps(result))
    return 0
