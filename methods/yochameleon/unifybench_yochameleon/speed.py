"""Yo'Chameleon's speed hook (``python -m unifybench.bench generation --method yochameleon``).

The baseline is the authors' test loop: one image per call (``config.test.batch_size: 1``), the
sequence decoded with a KV cache. Ours draws the images of one prompt together, one row each, each row
from its own seed. Before timing, our cached decoding is checked against a cache-free forward of the
whole sequence (the next-token logits over the first ``--check-steps`` steps, fp32: 1e-3, bf16: 3e-2,
times their scale), and the share of tokens equal between the two paths is reported (each image draws
from its own seed, so only rounding that moves with the batch can change a token).
"""
from __future__ import annotations

import torch

from unifybench.bench.common import timed

from .chameleon import IDENTIFIER, reserved


@torch.no_grad()
def reference_logits(host, text: str, tokens: torch.Tensor) -> torch.Tensor:
    """Image-token logits ``[k, n, V_img]`` of each step given the first ``k`` sampled tokens, from one
    cache-free forward of prompt + tokens."""
    prompt = host.sequence(text) + [host.boi]
    n, k = tokens.shape
    ids = torch.cat([torch.tensor([prompt] * n), tokens[:, :-1].cpu()], 1).to(host.device)
    hidden = host.model.model(input_ids=ids, use_cache=False).last_hidden_state[:, len(prompt) - 1:]
    logits = host.model.lm_head(hidden).float()[..., host.image_bpe.to(host.device)]
    return logits.transpose(0, 1)


def bench_generation(method, args) -> dict:
    host = method.host
    device = host.device
    batch = args.batch
    text = method.drawing_text(f"A photo of {reserved(IDENTIFIER)} in the jungle.")
    seeds = list(range(batch))
    a = method.args
    k = max(1, min(args.check_steps, host.tokens_per_image))
    _, tokens, kept = host.draw(text, seeds, top_k=a.top_k, temperature=a.temperature, keep_logits=k)
    ref = reference_logits(host, text, tokens[:, :k])
    got = torch.stack(kept)
    diff = float((got - ref).abs().max())
    scale = float(ref.abs().max())
    tol = (1e-3 if host.dtype == torch.float32 else 3e-2) * max(1.0, scale)
    drawn = {}

    def baseline():  # its tokens kept: a 7B model draws an image in tens of seconds, so it runs once
        drawn["one_by_one"] = torch.cat([host.draw(text, [s], top_k=a.top_k, temperature=a.temperature)[1]
                                         for s in seeds])

    def ours():
        return host.draw(text, seeds, top_k=a.top_k, temperature=a.temperature)[0]

    base_s = timed(baseline, device, args.repeats, warm_up=False)
    ours_s = timed(ours, device, args.repeats, warm_up=False)  # the checked call above warmed it up
    same_tokens = float((drawn["one_by_one"] == tokens).float().mean())
    return {"dtype": str(host.dtype).replace("torch.", ""), "batch": batch,
            "tokens_per_image": host.tokens_per_image, "top_k": a.top_k, "temperature": a.temperature,
            "baseline": "the authors' test loop: one image per call, KV cache",
            "ours": "one prompt's images together, one row each, KV cache",
            "check_steps": k, "logits_max_abs_diff": diff, "logits_scale": scale, "logits_tolerance": tol,
            "logits_ok": diff <= tol, "same_tokens_as_one_by_one": same_tokens,
            "baseline_images_per_s": round(batch / base_s, 4), "ours_images_per_s": round(batch / ours_s, 4),
            "ratio": round(base_s / ours_s, 3), "ok": diff <= tol}
