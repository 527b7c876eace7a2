"""Image and text backbones for the generation scores: CLIP (open_clip) and DINO (transformers).

``load_backbones(kind)`` builds them:

- ``"default"``: the pretrained checkpoints the metrics are defined with: OpenAI CLIP ViT-B/32
  (``clip_name="ViT-L-14"`` selectable) and DINO ViT-S/16 (``facebook/dino-vits16``). Weights come
  from the Hugging Face cache (or the network when allowed); when they cannot be loaded a
  :class:`BenchError` says how to provide them. With ``HF_HUB_OFFLINE=1`` nothing touches the network.
- ``"random"``: the same architectures, randomly initialised from ``seed`` (deterministic).
- ``"tiny"``: very small CLIP and ViT models with the same interfaces and tokenizer, for tests.

Heavy imports (open_clip, transformers) happen inside :func:`load_backbones`.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .. import offline
from ..errors import BenchError
from ..offline import hub_reachable  # noqa: F401 - importable here, where it was defined before

KINDS = ("default", "random", "tiny")
# The CLIP image/text towers the scores can be computed with (open_clip names, OpenAI weights).
CLIP_MODELS = ("ViT-B-32", "ViT-L-14")
DEFAULT_CLIP = "ViT-B-32"
DINO_CHECKPOINT = "facebook/dino-vits16"
# DreamBench++'s DINO (their torch.hub "dino_vits8"): DINO v1 ViT-S/8, for their reference protocol.
DINO_VITS8 = "facebook/dino-vits8"
DINO_PATCH = {DINO_CHECKPOINT: 16, DINO_VITS8: 8}
CLIP_TAG = "openai"


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed torch's generator for a model's initialisation without disturbing the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@dataclass
class Backbones:
    """CLIP and DINO encoders; every embedding comes back float32 on ``device``, L2-normalised unless
    ``normalize=False`` asks for an image encoder's raw features."""

    kind: str
    clip_model: Any
    tokenizer: Any
    dino_model: Any
    device: str = "cpu"
    info: dict = field(default_factory=dict)
    dino_name: str = DINO_CHECKPOINT  # the DINO checkpoint (or, random and tiny, the architecture) built

    def _autocast(self):
        if torch.device(self.device).type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def dtype(self) -> str:
        return "bfloat16 autocast" if torch.device(self.device).type == "cuda" else "float32"

    def clip_image(self, batch: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """[N, 3, H, W] CLIP-normalised pixels -> [N, D] unit vectors (or the projected features,
        transformers' ``get_image_features``)."""
        with torch.inference_mode(), self._autocast():
            feats = self.clip_model.encode_image(batch.to(self.device)).float()
        return F.normalize(feats, dim=-1) if normalize else feats

    def clip_text(self, texts: list[str]) -> torch.Tensor:
        """Texts -> [N, D] unit vectors (tokenised with the CLIP BPE tokenizer, 77 tokens)."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.inference_mode(), self._autocast():
            feats = self.clip_model.encode_text(tokens)
        return F.normalize(feats.float(), dim=-1)

    def dino_image(self, batch: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """[N, 3, 224, 224] ImageNet-normalised pixels -> [N, 384] unit vectors (or raw): the [CLS]
        token of the last layer after the final layer norm (not a pooler)."""
        with torch.inference_mode(), self._autocast():
            out = self.dino_model(pixel_values=batch.to(self.device))
        feats = out.last_hidden_state[:, 0].float()
        return F.normalize(feats, dim=-1) if normalize else feats

    def describe(self) -> dict:
        return {"kind": self.kind, **self.info, "device": str(self.device), "dtype": self.dtype}


# ----------------------------------------------------------------------------------------- CLIP

def _cached_clip_checkpoint(clip_name: str) -> str | None:
    """The local file of the openai weights in the Hugging Face cache, or None."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache
    from open_clip.pretrained import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    cfg = open_clip.get_pretrained_cfg(clip_name, CLIP_TAG)
    hub = cfg.get("hf_hub", "")
    if not hub:
        return None
    repo, filename = os.path.split(hub)
    candidates = [filename] if filename else [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
    for name in candidates:
        found = try_to_load_from_cache(repo_id=repo, filename=name)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


# What to do about a scorer checkpoint that cannot be loaded: said once, after every missing one.
_UNAVAILABLE_ADVICE = ("run once with network access or set HF_HOME to a Hugging Face cache that holds them, or use "
                       "--backbones random")


def _clip_unavailable(clip_name: str, detail: str) -> BenchError:
    return BenchError(f"cannot load CLIP {clip_name} ({CLIP_TAG}) weights: {detail}; {_UNAVAILABLE_ADVICE}",
                      where="backbones")


def _load_clip(kind: str, clip_name: str, seed: int, local_only: bool):
    import open_clip

    if kind == "tiny":
        from open_clip import CLIPTextCfg, CLIPVisionCfg
        with _seeded(seed):
            model = open_clip.CLIP(
                embed_dim=32,
                vision_cfg=CLIPVisionCfg(image_size=224, patch_size=32, width=64, layers=2, head_width=32),
                text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
                quick_gelu=True)
        desc = f"tiny open_clip CLIP (embed 32, 2+2 layers, random init, seed {seed}); not a real backbone"
    else:
        if clip_name not in open_clip.list_models():
            raise BenchError(f"unknown CLIP model {clip_name!r}", where="backbones")
        if kind == "random":
            # open_clip logs a root-level warning for a model without weights: random is asked for here.
            quiet = logging.getLogger().level
            logging.getLogger().setLevel(logging.ERROR)
            try:
                with _seeded(seed):
                    # OpenAI's checkpoints use QuickGELU: build the very architecture they load into.
                    model = open_clip.create_model(clip_name, pretrained=None, force_quick_gelu=True)
            finally:
                logging.getLogger().setLevel(quiet)
            desc = f"open_clip {clip_name} (random init, seed {seed}); not pretrained"
        else:
            if not open_clip.get_pretrained_cfg(clip_name, CLIP_TAG):
                raise BenchError(f"CLIP {clip_name} has no {CLIP_TAG} weights", where="backbones")
            pretrained = CLIP_TAG
            if local_only:
                pretrained = _cached_clip_checkpoint(clip_name)
                if pretrained is None:
                    raise _clip_unavailable(clip_name, f"not in the Hugging Face cache and {offline.why_local()}")
            try:
                # open_clip 3.x does not switch to QuickGELU for the openai tag by itself (it only
                # warns); without it the OpenAI weights compute the wrong function.
                model = open_clip.create_model(clip_name, pretrained=pretrained, force_quick_gelu=True)
            except Exception as e:  # noqa: BLE001 - any failure to fetch or read the weights
                raise _clip_unavailable(clip_name, f"{type(e).__name__}: {e}") from e
            desc = f"open_clip {clip_name} ({CLIP_TAG} weights)"
    tokenizer = open_clip.get_tokenizer("ViT-B-32" if kind == "tiny" else clip_name)
    return model, tokenizer, desc


# ----------------------------------------------------------------------------------------- DINO

def _load_dino(kind: str, seed: int, local_only: bool, checkpoint: str = DINO_CHECKPOINT):
    from transformers import ViTConfig, ViTModel

    if checkpoint not in DINO_PATCH:
        raise BenchError(f"unknown DINO checkpoint {checkpoint!r} (known: {', '.join(DINO_PATCH)})", where="backbones")
    patch = DINO_PATCH[checkpoint]
    if kind == "default":
        if local_only:
            from huggingface_hub import try_to_load_from_cache

            if not isinstance(try_to_load_from_cache(repo_id=checkpoint, filename="config.json"), str):
                raise BenchError(f"cannot load DINO {checkpoint} weights: not in the Hugging Face cache and "
                                 f"{offline.why_local()}; {_UNAVAILABLE_ADVICE}", where="backbones")
        try:
            model = ViTModel.from_pretrained(checkpoint, add_pooling_layer=False,
                                             local_files_only=local_only)
        except Exception as e:  # noqa: BLE001 - OSError when absent, others when unreadable
            raise BenchError(f"cannot load DINO {checkpoint} weights: {type(e).__name__}: {e}; {_UNAVAILABLE_ADVICE}",
                             where="backbones") from e
        return model, checkpoint
    if kind == "random":
        config = ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                           intermediate_size=1536, patch_size=patch, image_size=224, qkv_bias=True,
                           layer_norm_eps=1e-6)
        desc = f"{checkpoint} architecture (ViT-S/{patch}, random init, seed {seed}); not pretrained"
    else:
        config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, patch_size=patch, image_size=224, qkv_bias=True,
                           layer_norm_eps=1e-6)
        desc = f"tiny ViT (hidden 32, 2 layers, patch {patch}, random init, seed {seed}); not a real backbone"
    with _seeded(seed):
        model = ViTModel(config, add_pooling_layer=False)
    return model, desc


def load_backbones(kind: str = "default", device: str = "cpu", clip_name: str = DEFAULT_CLIP,
                   seed: int = 0, local_only: bool | None = None, dino_name: str = DINO_CHECKPOINT) -> Backbones:
    """Build CLIP and DINO for ``kind`` in {"default", "random", "tiny"}, in eval mode on ``device``.
    ``local_only``: look only in the local Hugging Face cache; default: when HF_HUB_OFFLINE is set or
    the hub cannot be reached (the hub client would otherwise retry for ~20 s per file). The process
    environment is left as the user set it."""
    if kind not in KINDS:
        raise BenchError(f"unknown backbones {kind!r} (choose from {', '.join(KINDS)})", where="backbones")
    if local_only is None:
        local_only = kind == "default" and offline.local_only()
    # Both are tried, so that one line names every missing checkpoint (one download list, not one per
    # attempt); the advice is said once.
    problems = []
    try:
        clip_model, tokenizer, clip_desc = _load_clip(kind, clip_name, seed, local_only)
    except BenchError as exc:
        problems.append(exc)
    try:
        dino_model, dino_desc = _load_dino(kind, seed, local_only, dino_name)
    except BenchError as exc:
        problems.append(exc)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise BenchError("; ".join(p.message.removesuffix(f"; {_UNAVAILABLE_ADVICE}") for p in problems)
                         + f"; {_UNAVAILABLE_ADVICE}", where="backbones")
    clip_model = clip_model.to(device).eval()
    dino_model = dino_model.to(device).eval()
    info = {"clip": clip_desc, "dino": dino_desc}
    if kind != "default":
        info["seed"] = seed
    return Backbones(kind=kind, clip_model=clip_model, tokenizer=tokenizer, dino_model=dino_model,
                     device=device, info=info, dino_name=dino_name)
