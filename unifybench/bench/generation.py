"""Image generation (and, on Show-o, understanding) speed of a method's base model against a baseline
run in the same process on the same weights.

    python -m unifybench.bench generation --method unictokens [--backend showo|janus]
                                          [--model tiny|random|random-1b|HUB|DIR] [--batch N]
                                          [--device cpu|cuda] [--steps S] [--check-steps K] [--repeats R]
                                          [--compile auto|on|off]

Show-o (``--backend showo``, the default): the baseline is the reference's loop, one image at a time
(its conditional and unconditional rows together), every MaskGIT step a full forward; ours is the
same MaskGIT batched over the prompts. The two must give the same codes (each image draws from its
own seed). Understanding: the reference's cache-less loop (the whole sequence recomputed for each new
token, one question at a time) against ours, batched with a KV cache; the replies must be the same.

Janus (``--backend janus``): the baseline is ``transformers``'
``JanusForConditionalGeneration.generate(generation_mode="image")`` in eager mode; ours is the
method's batched decoding with a static KV cache (compiled into CUDA graphs on a GPU). Before timing,
the two are checked to compute the same thing: over a short greedy prefix, the next-code logits of
our decoding steps must match those of a plain cache-free forward of the same sequence (fp32: 1e-3,
bf16: 3e-2, times the logits' scale), and the share of greedy codes equal to eager ``generate``'s is
reported. Timings use ``--guidance`` (default 5) and sampling; both include VQ decoding to pixels.
The last line printed is one JSON object with images/s of both and their ratio.

Stable Diffusion (``--method textual-inversion|dreambooth-lora|sd-prompt``, ``--model tiny|random|HUB|DIR``;
``random`` is SD 1.5's architecture with random weights): the baseline draws one image per pipeline
call, ours ``--batch`` per call, on the same seeds (each image's starting noise from its own seed). A
method that trains is personalized for one step first (the sampling cost does not depend on how
long it trained). The two paths' images are compared pixel by pixel: kernels round differently at
another batch size, so the JSON reports the largest difference in 8-bit levels and the share of
identical pixels rather than claiming bit equality.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

METHODS = ("unictokens", "textual-inversion", "dreambooth-lora", "sd-prompt")
DIFFUSION_METHODS = METHODS[1:]


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str]) -> int:
    import torch

    p = argparse.ArgumentParser(prog="python -m unifybench.bench generation")
    p.add_argument("--method", default="unictokens", choices=METHODS)
    p.add_argument("--backend", default="showo", choices=("showo", "janus"), help="the unified model")
    p.add_argument("--model", default=None,
                   help="tiny (default on CPU), full-size random init (default on CUDA: random on showo, "
                        "random-1b on janus), or a hub name / local folder")
    p.add_argument("--steps", type=int, default=None,
                   help="showo: MaskGIT steps; stable diffusion: sampling steps (default 50)")
    p.add_argument("--questions", type=int, default=None,
                   help="showo: questions for the understanding comparison (default: --batch)")
    p.add_argument("--max-new-tokens", type=int, default=100, help="showo: reply length for that comparison")
    p.add_argument("--batch", type=int, default=None, help="images per batch (default 32 on CUDA, 4 on CPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16"),
                   help="default bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--guidance", type=float, default=None, help="default 5 (unified models), 7.5 (stable diffusion)")
    p.add_argument("--check-steps", type=int, default=8, help="greedy prefix length for the logits check")
    p.add_argument("--images-per-prompt", type=int, default=None,
                   help="stable diffusion: images per request (default --batch: one request fills a call); "
                        "fewer gives several requests, and the JSON adds what packing them into one call would "
                        "gain")
    p.add_argument("--repeats", type=int, default=1, help="timed batches per path (after one warm-up)")
    p.add_argument("--compile", default="auto", choices=("auto", "on", "off"),
                   help="compile our decoding step: auto = on CUDA only (torch.compile, reduce-overhead = CUDA "
                        "graphs); on = also on CPU (inductor, no graphs)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from unifybench.devices import check_device

    device = torch.device(check_device(args.device))
    if args.method in DIFFUSION_METHODS:
        return _diffusion(args, device)
    if args.guidance is None:
        args.guidance = 5.0
    if args.backend == "showo":
        return _showo(args, device)
    from unifybench_unictokens.janus_backend import JanusBackend

    model_name = args.model or ("random-1b" if device.type == "cuda" else "tiny")
    batch = args.batch or (32 if device.type == "cuda" else 4)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    t0 = time.perf_counter()
    backend = JanusBackend(model_name, device=str(device), seed=args.seed, dtype=dtype,
                           compile_decode={"auto": device.type == "cuda", "on": True, "off": False}[args.compile])
    print(f"built {model_name} on {device} ({str(dtype).replace('torch.', '')}) in {time.perf_counter() - t0:.1f} s; "
          f"{backend.n_codes} codes per image, batch {batch}", file=sys.stderr)
    prompts = [f"A photo of a dog number {i} in the jungle." for i in range(batch)]
    seeds = list(range(batch))
    model = backend.model

    # 1. Same computation: our steps' next-code logits vs one cache-free forward, over a greedy prefix.
    # Checked at guidance 1 (the conditional logits themselves: guidance g would amplify bf16 rounding
    # (2g-1)-fold); guidance is a runtime input of the step, so the same code and graph run either way.
    k = max(1, min(args.check_steps, backend.n_codes))
    ours = backend.generate_codes(prompts, seeds, guidance=1.0, greedy=True, keep_logits=k)
    ref = backend.reference_guided_logits(prompts, ours.codes[:, :k], guidance=1.0)
    got = torch.stack(ours.logits[:k])
    diff = float((got - ref).abs().max())
    scale = float(ref.abs().max())
    tol = 1e-3 * max(1.0, scale) if dtype == torch.float32 else 3e-2 * max(1.0, scale)
    logits_ok = diff <= tol
    ids, mask = backend.prepare_generation(prompts)
    n = len(prompts)

    def eager_batch():
        codes = model.generate(input_ids=ids[:n], attention_mask=mask[:n], generation_mode="image",
                               do_sample=True, guidance_scale=args.guidance, max_new_tokens=backend.n_codes)
        return backend.decode_codes(codes)

    def eager_greedy_prefix():
        codes = model.generate(input_ids=ids[:n], attention_mask=mask[:n], generation_mode="image",
                               do_sample=False, guidance_scale=args.guidance, max_new_tokens=backend.n_codes)
        return codes[:, :k].to(ours.codes.device)

    def ours_batch():
        out = backend.generate_codes(prompts, seeds, guidance=args.guidance)
        return backend.decode_codes(out.codes)

    ours_guided = backend.generate_codes(prompts, seeds, guidance=args.guidance, greedy=True)
    try:
        greedy_match = float((eager_greedy_prefix() == ours_guided.codes[:, :k]).float().mean())
    except TypeError as exc:  # transformers 5.14-5.17: Janus's image generate() calls a changed helper
        import transformers

        print(f"unifybench.bench generation: error: the eager baseline, transformers {transformers.__version__}'s "
              f"JanusForConditionalGeneration.generate(generation_mode='image'), fails ({exc}); it works in "
              "5.5-5.10 and from 5.18 on", file=sys.stderr)
        return 2

    def timed(fn, warm_up: bool = True) -> float:
        if warm_up:
            fn()  # compilation and graph capture for ours
        _sync(device)
        start = time.perf_counter()
        for _ in range(args.repeats):
            fn()
        _sync(device)
        return args.repeats * batch / (time.perf_counter() - start)

    eager_ips = timed(eager_batch, warm_up=False)  # eager_greedy_prefix() above ran the same generate
    ours_ips = timed(ours_batch)
    result = {
        "bench": "generation", "method": args.method, "backend": "janus", "model": model_name,
        "random_init": model_name in ("tiny", "random-1b"), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""), "batch": batch, "codes_per_image": backend.n_codes,
        "guidance": args.guidance, "ours": backend.describe()["decoding"],
        "check_steps": k, "logits_max_abs_diff": diff, "logits_scale": scale, "logits_tolerance": tol,
        "logits_ok": logits_ok, "greedy_prefix_match_eager": greedy_match,
        "eager_images_per_s": round(eager_ips, 4), "ours_images_per_s": round(ours_ips, 4),
        "ratio": round(ours_ips / eager_ips, 3),
    }
    print(json.dumps(result))
    return 0 if logits_ok else 1


def _timed(fn, device, repeats: int, warm_up: bool = True) -> float:
    """Seconds per call of ``fn`` (after one untimed call, unless ``warm_up`` is off)."""
    if warm_up:
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def _showo(args, device) -> int:
    import torch

    from unifybench_unictokens.backend import TextExample
    from unifybench_unictokens.showo_backend import ShowoBackend
    from PIL import Image

    model_name = args.model or ("random" if device.type == "cuda" else "tiny")
    batch = args.batch or (32 if device.type == "cuda" else 4)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    t0 = time.perf_counter()
    backend = ShowoBackend(model_name, device=str(device), seed=args.seed, dtype=dtype, steps=args.steps or 50)
    print(f"built Show-o {model_name} on {device} ({str(dtype).replace('torch.', '')}) in "
          f"{time.perf_counter() - t0:.1f} s; {backend.tokens_per_image} codes per image, {backend.steps} steps, "
          f"batch {batch}", file=sys.stderr)
    prompts = [f"A photo of a dog number {i} in the jungle." for i in range(batch)]
    seeds = list(range(batch))

    def reference_images():
        return [backend.decode_codes(backend.generate_codes([p], [s], guidance=args.guidance).codes)[0]
                for p, s in zip(prompts, seeds)]

    def ours_images():
        return backend.decode_codes(backend.generate_codes(prompts, seeds, guidance=args.guidance).codes)

    one_by_one = torch.cat([backend.generate_codes([p], [s], guidance=args.guidance).codes
                            for p, s in zip(prompts, seeds)])
    batched = backend.generate_codes(prompts, seeds, guidance=args.guidance).codes
    same_codes = float((one_by_one == batched).float().mean())
    ref_s = _timed(reference_images, device, args.repeats, warm_up=False)
    ours_s = _timed(ours_images, device, args.repeats)

    n_q = args.questions or batch
    size = backend.image_size
    images = [Image.new("RGB", (size, size), (40 * i % 256, 90, 160)) for i in range(n_q)]
    questions = [TextExample(f"What is in this photo, number {i}?", im) for i, im in enumerate(images)]
    cached = backend.answer(questions, args.max_new_tokens)
    reference = [backend.reference_answer(q, args.max_new_tokens) for q in questions]
    same_replies = sum(a == b for a, b in zip(cached, reference)) / n_q
    und_ref_s = _timed(lambda: [backend.reference_answer(q, args.max_new_tokens) for q in questions], device,
                       args.repeats, warm_up=False)
    und_ours_s = _timed(lambda: backend.answer(questions, args.max_new_tokens), device, args.repeats)
    result = {
        "bench": "generation", "method": args.method, "backend": "showo", "model": model_name,
        "random_init": model_name in ("tiny", "random"), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""), "batch": batch, "codes_per_image": backend.tokens_per_image,
        "steps": backend.steps, "guidance": args.guidance,
        "baseline": "the reference's loop: one image at a time, every step a full forward",
        "ours": "MaskGIT batched over the prompts",
        "same_codes": same_codes, "reference_images_per_s": round(batch / ref_s, 4),
        "ours_images_per_s": round(batch / ours_s, 4), "ratio": round(ref_s / ours_s, 3),
        "understanding_questions": n_q, "max_new_tokens": args.max_new_tokens, "same_replies": same_replies,
        "understanding_reference_s": round(und_ref_s, 4), "understanding_ours_s": round(und_ours_s, 4),
        "understanding_ratio": round(und_ref_s / und_ours_s, 3),
    }
    print(json.dumps(result))
    return 0 if same_codes == 1.0 and same_replies == 1.0 else 1


def _diffusion(args, device) -> int:
    import tempfile
    from pathlib import Path

    import numpy as np
    import torch

    from unifybench.data import load_benchmark
    from unifybench.methods import GenRequest
    from unifybench.seeding import image_seed
    from unifybench_diffusion.method import DreamBoothLoRA, SDPrompt, TextualInversion

    model_name = args.model or ("random" if device.type == "cuda" else "tiny")
    batch = args.batch or (8 if device.type == "cuda" else 4)
    method_args = {"model": model_name, "steps": str(args.steps or 50), "guidance": str(args.guidance or 7.5)}
    if args.dtype:
        method_args["dtype"] = args.dtype
    # Imported, not looked up through entry points: the GPU machine runs from a source tree.
    cls = {"textual-inversion": TextualInversion, "dreambooth-lora": DreamBoothLoRA, "sd-prompt": SDPrompt}[args.method]
    train = {"train_steps": "1"} if cls.needs_personalization else {}
    ours = cls({**method_args, **train, "gen_batch": str(batch)}, seed=args.seed, device=str(device))
    t0 = time.perf_counter()
    host = ours.host
    print(f"built {model_name} on {device} ({host.describe()['dtype']}) in {time.perf_counter() - t0:.1f} s; "
          f"{host.resolution} px, {ours.steps} steps, batch {batch}", file=sys.stderr)
    concept = load_benchmark("mini").concept("dog")
    per_request = min(args.images_per_prompt or batch, batch)
    n_requests = max(1, batch // per_request)
    requests = [GenRequest("dog", "gen", i, f"A photo of <dog> number {i} in the jungle.", per_request, args.seed)
                for i in range(n_requests)]
    n_images = per_request * n_requests

    # One method object, active once, drawing at either call size: a second object would load the
    # concept's layers (a LoRA adapter) onto the shared pipeline a second time.
    def draw(gen_batch: int) -> list:
        ours.gen_batch = gen_batch
        return [image for group in ours.generate(concept, state, requests) for image in group]

    def packed() -> list:
        """What the harness did before issue 25: every request's images in one call of ``batch``, so
        a request's slots depended on the others; kept as the measure of what the fixed slots cost."""
        prompts = [ours._prompt(concept, state, r.prompt) for r in requests for _ in range(r.n_images)]
        seeds = [image_seed(r.seed, r.key, i) for r in requests for i in range(r.n_images)]
        return host.generate(prompts, seeds, steps=ours.steps, guidance=ours.guidance)

    with tempfile.TemporaryDirectory(prefix="ub-bench-") as tmp:
        state = ours.personalize(concept, Path(tmp) / "dog") if cls.needs_personalization else None
        with ours.activate(concept, state):
            reference = draw(1)
            batched = draw(batch)
            ref_s = _timed(lambda: draw(1), device, args.repeats, warm_up=False)
            ours_s = _timed(lambda: draw(batch), device, args.repeats)
            packed_s = _timed(packed, device, args.repeats) if n_requests > 1 else None
    a = np.stack([np.asarray(im, dtype=np.int16) for im in reference])
    b = np.stack([np.asarray(im, dtype=np.int16) for im in batched])
    result = {
        "bench": "generation", "method": args.method, "backend": "stable-diffusion", "model": model_name,
        "random_init": model_name in ("tiny", "random"), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": host.describe()["dtype"], "batch": batch, "images_per_request": per_request,
        "resolution": host.resolution, "steps": ours.steps, "guidance": ours.guidance, "scheduler": ours.scheduler,
        "baseline": "one image per pipeline call",
        "ours": f"one request's images per call, at most {batch} ({min(batch, per_request)} here)",
        "max_pixel_diff": int(np.abs(a - b).max()), "same_pixels": round(float((a == b).mean()), 6),
        "reference_images_per_s": round(n_images / ref_s, 4), "ours_images_per_s": round(n_images / ours_s, 4),
        "ratio": round(ref_s / ours_s, 3),
        # The price of fixed slots: several requests packed into one call of `batch`, as before.
        "packed_images_per_s": round(n_images / packed_s, 4) if packed_s else None,
        "fixed_slots_cost": round(ours_s / packed_s, 3) if packed_s else None,
    }
    print(json.dumps(result))
    return 0
