"""The Stable Diffusion methods' speed hook (``python -m unifybench.bench generation --method
textual-inversion|dreambooth-lora|sd-prompt``).

The baseline draws one image per pipeline call, ours one request's images per call, on the same
seeds (each image's starting noise from its own seed). A method that trains is personalized for
one step first (the sampling cost does not depend on how long it trained). The two paths' images
are compared pixel by pixel: kernels round differently at another batch size, so the result reports
the largest difference in 8-bit levels and the share of identical pixels rather than claiming bit
equality. With fewer images per request than ``--batch`` it also draws several requests packed into
one call, the way the harness drew them before issue 25, to price never mixing requests in a call.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from unifybench.bench.common import timed
from unifybench.data import load_benchmark
from unifybench.methods import GenRequest
from unifybench.seeding import image_seed


def bench_generation(method, args) -> dict:
    import torch

    device = torch.device(method.device)
    batch = args.batch
    host = method.host
    concept = load_benchmark("mini").concept("dog")
    per_request = min(args.images_per_prompt or batch, batch)
    n_requests = max(1, batch // per_request)
    requests = [GenRequest("dog", "gen", i, f"A photo of <dog> number {i} in the jungle.", per_request, args.seed)
                for i in range(n_requests)]
    n_images = per_request * n_requests

    # One method object, active once, drawing at either call size: a second object would load the
    # concept's layers (a LoRA adapter) onto the shared pipeline a second time.
    def draw(gen_batch: int) -> list:
        method.gen_batch = gen_batch
        return [image for group in method.generate(concept, state, requests) for image in group]

    def packed() -> list:
        prompts = [method._prompt(concept, state, r.prompt) for r in requests for _ in range(r.n_images)]
        seeds = [image_seed(r.seed, r.key, i) for r in requests for i in range(r.n_images)]
        return host.generate(prompts, seeds, steps=method.steps, guidance=method.guidance)

    with tempfile.TemporaryDirectory(prefix="ub-bench-") as tmp:
        state = method.personalize(concept, Path(tmp) / "dog") if method.personalizes() else None
        with method.activate(concept, state):
            reference = draw(1)
            batched = draw(batch)
            ref_s = timed(lambda: draw(1), device, args.repeats, warm_up=False)
            ours_s = timed(lambda: draw(batch), device, args.repeats)
            packed_s = timed(packed, device, args.repeats) if n_requests > 1 else None
    a = np.stack([np.asarray(im, dtype=np.int16) for im in reference])
    b = np.stack([np.asarray(im, dtype=np.int16) for im in batched])
    return {
        "backend": "stable-diffusion", "dtype": host.describe()["dtype"], "batch": batch,
        "images_per_request": per_request, "resolution": host.resolution, "steps": method.steps,
        "guidance": method.guidance, "scheduler": method.scheduler,
        "baseline": "one image per pipeline call",
        "ours": f"one request's images per call, at most {batch} ({min(batch, per_request)} here)",
        "max_pixel_diff": int(np.abs(a - b).max()), "same_pixels": round(float((a == b).mean()), 6),
        "reference_images_per_s": round(n_images / ref_s, 4), "ours_images_per_s": round(n_images / ours_s, 4),
        "ratio": round(ref_s / ours_s, 3),
        # The price of fixed slots: several requests packed into one call of `batch`, as before.
        "packed_images_per_s": round(n_images / packed_s, 4) if packed_s else None,
        "fixed_slots_cost": round(ours_s / packed_s, 3) if packed_s else None,
    }
