"""Generation scorers: the per-image research loop against the project's pipeline.

    python -m unifybench.bench fidelity [--n N] [--distinct D] [--naive-n K] [--format png|jpg] [--device cpu|cuda]
                                        [--backbones random|tiny|default] [--batch-size B]

Makes N realistic 512 px images (gradients, textures, shapes and noise) and 4 reference images,
then scores the N images twice in this process over the same weights:

(a) the research loop: open with PIL, preprocess with torchvision transforms, encode one image in
    fp32 with each encoder, compare with each reference embedding in Python;
(b) the pipeline: :class:`unifybench.scoring.fidelity.FidelityScorer` (decoding in worker processes
    or nvJPEG, batches, bf16 autocast on CUDA).

The last line printed is one JSON object: n, format, device, naive_img_s, pipeline_img_s, ratio,
max_abs_diff (over CLIP-I and DINO of every image) and, on CUDA, decode_floor_img_s (decode and
preprocess alone through the same pipeline, the floor). ``--naive-n K`` times (a) on K of the N
images (the loop's rate per image is steady; a GPU pipeline needs thousands to be timed);
``--pipeline-only`` skips (a).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from unifybench.bench.common import sync
from unifybench.scoring.encoders import CLIP_MODELS, DEFAULT_CLIP

SIZE = 512


def make_image(seed: int) -> np.ndarray:
    """A 512 x 512 RGB uint8 image: a colour gradient, oriented sinusoidal textures, a few discs
    and Gaussian noise, all drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    img = np.empty((SIZE, SIZE, 3), np.float32)
    for c in range(3):
        a, b, base = rng.uniform(-120, 120), rng.uniform(-120, 120), rng.uniform(60, 200)
        img[..., c] = base + a * (xx - 0.5) + b * (yy - 0.5)
    for _ in range(3):
        theta, freq = rng.uniform(0, np.pi), rng.uniform(4, 40)
        phase, amp = rng.uniform(0, 2 * np.pi), rng.uniform(5, 30)
        wave = amp * np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
        img += wave[..., None] * rng.uniform(0.3, 1.0, size=3)
    for _ in range(int(rng.integers(2, 6))):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.25)
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        img[mask] = img[mask] * 0.3 + rng.uniform(0, 255, size=3) * 0.7
    img += rng.normal(0, 6, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _write(job: tuple[int, str, str]) -> str:
    from PIL import Image

    seed, folder, fmt = job
    path = Path(folder) / f"{seed:06d}.{fmt}"
    if not path.exists():
        tmp = path.with_suffix(f".tmp.{fmt}")
        Image.fromarray(make_image(seed)).save(tmp, quality=90) if fmt == "jpg" else \
            Image.fromarray(make_image(seed)).save(tmp)
        os.replace(tmp, path)
    return str(path)


def make_images(folder: Path, n: int, fmt: str, first_seed: int = 0, processes: int | None = None,
                distinct: int | None = None) -> list[Path]:
    """Write (or reuse) ``n`` images ``<seed>.<fmt>`` in ``folder``, in parallel. With ``distinct`` K < n,
    only K images are drawn (in ``folder/distinct-K``) and the n paths are hard links to them in turn:
    every path is still read and decoded on its own, at a fraction of the cost of drawing n images."""
    folder.mkdir(parents=True, exist_ok=True)
    drawn_in = folder / f"distinct-{distinct}" if distinct and distinct < n else folder
    drawn_in.mkdir(parents=True, exist_ok=True)
    jobs = [(first_seed + i, str(drawn_in), fmt) for i in range(min(n, distinct or n))]
    with Pool(processes or os.cpu_count() or 1) as pool:
        drawn = [Path(p) for p in pool.map(_write, jobs, chunksize=16)]
    if drawn_in == folder:
        return drawn
    paths = []
    for i in range(n):
        path = folder / f"{first_seed + i:06d}.{fmt}"
        if not path.exists():
            os.link(drawn[i % len(drawn)], path)
        paths.append(path)
    return paths


def naive_scores(backbones, refs: list[Path], gens: list[Path], device: str) -> dict[str, list[float]]:
    """The per-image research loop: PIL, torchvision transforms, batch 1, fp32, Python pairing."""
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from torchvision import transforms as T

    from unifybench.scoring.fidelity import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD

    clip_tf = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224),
                         T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])
    dino_tf = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224),
                         T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def embed(path):
        img = Image.open(path).convert("RGB")
        with torch.no_grad():
            c = backbones.clip_model.encode_image(clip_tf(img).unsqueeze(0).to(device))[0].float()
            d = backbones.dino_model(pixel_values=dino_tf(img).unsqueeze(0).to(device)).last_hidden_state[0, 0].float()
        return c, d

    ref = [embed(p) for p in refs]
    out = {"clip_i": [], "dino": []}
    for path in gens:
        c, d = embed(path)
        out["clip_i"].append(sum(F.cosine_similarity(c, rc, dim=0).item() for rc, _ in ref) / len(ref))
        out["dino"].append(sum(F.cosine_similarity(d, rd, dim=0).item() for _, rd in ref) / len(ref))
    return out


def decode_floor(scorer, gens: list[Path]) -> float:
    """Images per second through decode and preprocessing alone (same pipeline, no encoder)."""
    from unifybench.scoring.pipeline import stream_inputs

    start = time.perf_counter()
    for _ in stream_inputs(gens, scorer.transforms, batch_size=scorer.batch_size, device=scorer.device,
                           num_workers=scorer.num_workers, gpu_decode=scorer.gpu_decode):
        pass
    sync(scorer.device)
    return len(gens) / (time.perf_counter() - start)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m unifybench.bench fidelity", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--format", choices=["png", "jpg"], default="png")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbones", choices=["random", "tiny", "default"], default="random")
    parser.add_argument("--clip", default=DEFAULT_CLIP, choices=CLIP_MODELS)
    parser.add_argument("--batch-size", type=int, default=None, help="default 32 on CPU, 256 on CUDA")
    parser.add_argument("--workers", type=int, default=None, help="decode processes (default: one per core)")
    parser.add_argument("--images-dir", type=Path, default=None, help="write (or reuse) the images here")
    parser.add_argument("--distinct", type=int, default=None,
                        help="draw only this many distinct images; the N files are hard links to them")
    parser.add_argument("--naive-n", type=int, default=None,
                        help="time the per-image loop on this many of the N images (default: all N)")
    parser.add_argument("--pipeline-only", action="store_true", help="skip the per-image loop")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)

    import torch

    from unifybench.devices import check_device
    from unifybench.scoring.encoders import load_backbones
    from unifybench.scoring.fidelity import FidelityScorer
    from unifybench.scoring.pipeline import default_num_workers

    check_device(args.device)
    batch_size = args.batch_size or (256 if args.device.startswith("cuda") else 32)
    backbones = load_backbones(args.backbones, device=args.device, clip_name=args.clip)

    with tempfile.TemporaryDirectory(prefix="ub-bench-") as tmp:
        folder = args.images_dir or Path(tmp)
        t = time.perf_counter()
        refs = make_images(folder / f"refs-{args.format}", 4, args.format, first_seed=10_000_000)
        # Linked files get a folder of their own, so a later run with --images-dir never takes them
        # for drawn ones.
        linked = f"-of-{args.distinct}" if args.distinct and args.distinct < args.n else ""
        gens = make_images(folder / f"gens-{args.format}{linked}", args.n, args.format, distinct=args.distinct)
        print(f"made {args.n} {args.format} images of {SIZE} px ({args.distinct or args.n} distinct) in "
              f"{time.perf_counter() - t:.1f} s", flush=True)
        # Worker processes as for a large job, even when N is small (the timed halves are N/2 each).
        workers = default_num_workers() if args.workers is None else args.workers
        scorer = FidelityScorer(backbones, "dreambooth", batch_size=batch_size, device=args.device,
                                num_workers=workers, cache_dir=None)
        # Warm both paths on the references (allocators, kernels, thread pools) before timing.
        naive_scores(backbones, refs, refs[:2], args.device)
        scorer.score(refs, refs)
        scorer._refs.clear()

        result: dict = {"n": args.n, "format": args.format, "device": args.device}
        # Two halves in ABBA order (naive, pipeline | pipeline, naive) so a drift in the machine's
        # speed (a shared CPU, thermal limits) weighs on both sides alike. The naive loop may take
        # only the first naive_n / 2 images of each half: its rate per image is steady, and on a GPU
        # the pipeline needs thousands of images to be timed at all while the loop takes ~10 ms each.
        halves = [gens[: args.n // 2], gens[args.n // 2:]] if not args.pipeline_only else [gens]
        naive_n = 0 if args.pipeline_only else min(args.naive_n or args.n, args.n)
        naive_parts = [halves[0][: naive_n // 2], halves[1][: naive_n - naive_n // 2]] if naive_n else []
        seconds = {"naive": 0.0, "pipeline": 0.0}

        def timed(which, part):
            sync(args.device)
            t0 = time.perf_counter()
            if which == "naive":
                out = naive_scores(backbones, refs, part, args.device)
            else:
                scorer._refs.clear()  # the pipeline's reference embeddings are computed in each timing
                out = scorer.score(refs, part)
            sync(args.device)
            seconds[which] += time.perf_counter() - t0
            return out

        if args.pipeline_only:
            timed("pipeline", halves[0])
        diffs: list[float] = []
        for h in range(len(naive_parts)):
            out = {}
            for which in (["naive", "pipeline"] if h == 0 else ["pipeline", "naive"]):
                part = naive_parts[h] if which == "naive" else halves[h]
                if part:
                    out[which] = timed(which, part)
            if "naive" in out:  # the naive part is the first rows of the pipeline's half
                diffs += [abs(a - b) for m in ("clip_i", "dino")
                          for a, b in zip(out["naive"][m], out["pipeline"][m])]
        result["pipeline_img_s"] = round(args.n / seconds["pipeline"], 2)
        print(f"pipeline: {result['pipeline_img_s']} img/s", flush=True)
        if naive_n:
            result["naive_n"] = naive_n
            result["naive_img_s"] = round(naive_n / seconds["naive"], 2)
            print(f"naive per-image loop: {result['naive_img_s']} img/s over {naive_n} images", flush=True)
            result["ratio"] = round(result["pipeline_img_s"] / result["naive_img_s"], 3)
            result["max_abs_diff"] = max(diffs)
        if args.device.startswith("cuda"):
            result["decode_floor_img_s"] = round(decode_floor(scorer, gens), 2)
            result["gpu"] = torch.cuda.get_device_name()
        result.update({"distinct_images": min(args.distinct or args.n, args.n),
                       "backbones": args.backbones, "clip": "tiny" if args.backbones == "tiny" else args.clip,
                       "batch_size": batch_size,
                       "decode": scorer.decode_description, "decode_workers": workers, "dtype": backbones.dtype,
                       "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                       "torch": torch.__version__, "machine": platform.machine()})
    print(json.dumps(result))
    return 0
