"""UniCTokens' speed hooks (``python -m unifybench.bench generation|personalize --method unictokens``).

Show-o (``backend=showo``): the baseline is the reference's loop, one image at a time (its
conditional and unconditional rows together), every MaskGIT step a full forward; ours is the same
MaskGIT batched over the prompts. The two must give the same codes (each image draws from its own
seed). Understanding: the reference's cache-less loop (the whole sequence recomputed for each new
token, one question at a time) against ours, batched with a KV cache; the replies must be the same.

Janus (``backend=janus``): the baseline is ``transformers``'
``JanusForConditionalGeneration.generate(generation_mode="image")`` in eager mode; ours is the
method's batched decoding with a static KV cache (compiled into CUDA graphs on a GPU). Before timing,
the two are checked to compute the same thing: over a short greedy prefix, the next-code logits of
our decoding steps must match those of a plain cache-free forward of the same sequence (fp32: 1e-3,
bf16: 3e-2, times the logits' scale), and the share of greedy codes equal to eager ``generate``'s is
reported. Timings use the guidance (default 5) and sampling; both include VQ decoding to pixels.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from unifybench.bench.common import timed
from unifybench.kit.epochs import training_costs
from unifybench.kit.models import torch_dtype

STAGES = ("stage1", "stage2", "transition", "stage3")


def stage_costs(state_dir: Path) -> dict[str, dict]:
    """Per stage, what its ``unictokens.json`` recorded: steps, seconds and the epoch losses' ends."""
    from .stages import read_meta

    return {stage: training_costs(meta) for stage in STAGES if (meta := read_meta(state_dir / stage))}


def bench_janus(method, args) -> dict | None:
    from .janus_backend import JanusBackend

    device = torch.device(method.device)
    batch = args.batch
    dtype = torch_dtype(method.args.dtype, method.device)
    backend = JanusBackend(method.model_name, device=str(device), seed=method.seed, dtype=dtype,
                           compile_decode={"auto": device.type == "cuda", "on": True, "off": False}[args.compile])
    method._backend = backend  # the method describes this one: the model is loaded once
    guidance = method.guidance
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
    ids, mask = backend.prepare_generation(prompts)
    n = len(prompts)

    def eager_batch():
        codes = model.generate(input_ids=ids[:n], attention_mask=mask[:n], generation_mode="image",
                               do_sample=True, guidance_scale=guidance, max_new_tokens=backend.n_codes)
        return backend.decode_codes(codes)

    def eager_greedy_prefix():
        codes = model.generate(input_ids=ids[:n], attention_mask=mask[:n], generation_mode="image",
                               do_sample=False, guidance_scale=guidance, max_new_tokens=backend.n_codes)
        return codes[:, :k].to(ours.codes.device)

    def ours_batch():
        return backend.decode_codes(backend.generate_codes(prompts, seeds, guidance=guidance).codes)

    ours_guided = backend.generate_codes(prompts, seeds, guidance=guidance, greedy=True)
    try:
        greedy_match = float((eager_greedy_prefix() == ours_guided.codes[:, :k]).float().mean())
    except TypeError as exc:  # transformers 5.14-5.17: Janus's image generate() calls a changed helper
        import transformers

        print(f"unifybench.bench generation: error: the eager baseline, transformers {transformers.__version__}'s "
              f"JanusForConditionalGeneration.generate(generation_mode='image'), fails ({exc}); it works in "
              "5.5-5.10 and from 5.18 on", file=sys.stderr)
        return None
    eager_s = timed(eager_batch, device, args.repeats, warm_up=False)  # the greedy prefix ran the same generate
    ours_s = timed(ours_batch, device, args.repeats)
    return {"backend": "janus", "dtype": str(dtype).replace("torch.", ""), "batch": batch,
            "codes_per_image": backend.n_codes, "guidance": guidance,
            "baseline": "transformers' eager JanusForConditionalGeneration.generate", "ours": backend.describe()["decoding"],
            "check_steps": k, "logits_max_abs_diff": diff, "logits_scale": scale, "logits_tolerance": tol,
            "logits_ok": diff <= tol, "greedy_prefix_match_eager": greedy_match,
            "eager_images_per_s": round(batch / eager_s, 4), "ours_images_per_s": round(batch / ours_s, 4),
            "ratio": round(eager_s / ours_s, 3), "ok": diff <= tol}


def bench_showo(method, args) -> dict:
    from PIL import Image

    from .backend import TextExample

    device = torch.device(method.device)
    backend = method.backend
    batch, guidance = args.batch, method.guidance
    prompts = [f"A photo of a dog number {i} in the jungle." for i in range(batch)]
    seeds = list(range(batch))

    def reference_images():
        return [backend.decode_codes(backend.generate_codes([p], [s], guidance=guidance).codes)[0]
                for p, s in zip(prompts, seeds)]

    def ours_images():
        return backend.decode_codes(backend.generate_codes(prompts, seeds, guidance=guidance).codes)

    one_by_one = torch.cat([backend.generate_codes([p], [s], guidance=guidance).codes for p, s in zip(prompts, seeds)])
    batched = backend.generate_codes(prompts, seeds, guidance=guidance).codes
    same_codes = float((one_by_one == batched).float().mean())
    ref_s = timed(reference_images, device, args.repeats, warm_up=False)
    ours_s = timed(ours_images, device, args.repeats)

    n_q = args.questions or batch
    size = backend.image_size
    images = [Image.new("RGB", (size, size), (40 * i % 256, 90, 160)) for i in range(n_q)]
    questions = [TextExample(f"What is in this photo, number {i}?", im) for i, im in enumerate(images)]
    cached = backend.answer(questions, args.max_new_tokens)
    reference = [backend.reference_answer(q, args.max_new_tokens) for q in questions]
    same_replies = sum(a == b for a, b in zip(cached, reference)) / n_q
    und_ref_s = timed(lambda: [backend.reference_answer(q, args.max_new_tokens) for q in questions], device,
                      args.repeats, warm_up=False)
    und_ours_s = timed(lambda: backend.answer(questions, args.max_new_tokens), device, args.repeats)
    return {"backend": "showo", "dtype": str(backend.dtype).replace("torch.", ""), "batch": batch,
            "codes_per_image": backend.tokens_per_image, "steps": backend.steps, "guidance": guidance,
            "baseline": "the reference's loop: one image at a time, every step a full forward",
            "ours": "MaskGIT batched over the prompts",
            "same_codes": same_codes, "reference_images_per_s": round(batch / ref_s, 4),
            "ours_images_per_s": round(batch / ours_s, 4), "ratio": round(ref_s / ours_s, 3),
            "understanding_questions": n_q, "max_new_tokens": args.max_new_tokens, "same_replies": same_replies,
            "understanding_reference_s": round(und_ref_s, 4), "understanding_ours_s": round(und_ours_s, 4),
            "understanding_ratio": round(und_ref_s / und_ours_s, 3),
            "ok": same_codes == 1.0 and same_replies == 1.0}
