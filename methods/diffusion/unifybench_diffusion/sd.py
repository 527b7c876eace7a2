"""Stable Diffusion (1.x and XL) through diffusers: loading, seeded batched sampling, the training
loss, and a fingerprint of every weight.

``model=tiny`` builds the tiny pipeline of diffusers' own tests (``get_dummy_components`` of the
Stable Diffusion pipeline tests: a 2-block UNet, a 2-block VAE, a 5-layer CLIP text encoder) with a
CLIP BPE tokenizer built in code, so nothing is downloaded. Its images are 64 px.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from unifybench.errors import BenchError
from unifybench.kit.models import random_init
from unifybench.logs import get_logger, quiet_transformers
from unifybench.kit.rows import VocabRowParam

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
XL_MODEL = "stabilityai/stable-diffusion-xl-base-1.0"
# Sampling schedulers by the name recorded in run.json; each is built from the model's own
# scheduler config. DDIM is what DreamBench papers commonly sample with.
SCHEDULERS = {"ddim": "DDIMScheduler", "pndm": "PNDMScheduler", "dpm-solver": "DPMSolverMultistepScheduler",
              "euler": "EulerDiscreteScheduler", "euler-ancestral": "EulerAncestralDiscreteScheduler"}
_LOG = get_logger("method.diffusion")
_TINY_WORDS = ("a photo of the dog cat toy clock backpack bear plushie in on with its hat sks can sneaker "
               "boot bowl candle sloth plush").split()


def bytes_to_unicode() -> list[str]:
    """CLIP's byte-level alphabet: one printable character per byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return [chr(c) for c in cs]


def build_tiny_tokenizer():
    """A CLIP BPE tokenizer over the byte alphabet, with merges that make a few class nouns
    ("dog", "toy", ...) single tokens, as they are in the real vocabulary."""
    from transformers import CLIPTokenizer

    alphabet = bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab.update({c + "</w>": len(alphabet) + i for i, c in enumerate(alphabet)})
    merges: list[tuple[str, str]] = []
    for word in _TINY_WORDS:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pair = (parts[0], parts[1])
            if pair not in merges:
                merges.append(pair)
            vocab.setdefault(pair[0] + pair[1], len(vocab))
            parts = [pair[0] + pair[1]] + parts[2:]
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def build_tiny(seed: int = 0):
    """The tiny pipeline of diffusers' Stable Diffusion tests, tokenizer built in code. The text
    encoder has exactly as many rows as the tokenizer has ids, as the real CLIP-L."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)  # steps_offset as SD 1.5's config
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        hidden_size=32, intermediate_size=37, layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=5,
        vocab_size=len(tokenizer)))
    return StableDiffusionPipeline(unet=unet, scheduler=scheduler, vae=vae, text_encoder=text_encoder,
                                   tokenizer=tokenizer, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def build_tiny_xl(seed: int = 0):
    """The tiny SDXL of diffusers' SDXL pipeline tests: two text encoders (the second with a
    projection, for the pooled embedding), a UNet with text-time conditioning."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                                use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
                                transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
                                cross_attention_dim=64)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear",
                                       timestep_spacing="leading")
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4, sample_size=128)
    config = CLIPTextConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id, hidden_size=32, intermediate_size=37,
                            layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=5, hidden_act="gelu",
                            projection_dim=32, vocab_size=len(tokenizer))
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(config)
    text_encoder_2 = CLIPTextModelWithProjection(config)
    return StableDiffusionXLPipeline(unet=unet, scheduler=scheduler, vae=vae, text_encoder=text_encoder,
                                     tokenizer=tokenizer, text_encoder_2=text_encoder_2,
                                     tokenizer_2=copy.deepcopy(tokenizer))


def build_random(seed: int = 0):
    """Stable Diffusion 1.5's architecture (UNet, VAE, CLIP-L text encoder) with random weights and the
    tiny tokenizer: its cost is the real model's; its images mean nothing."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        sample_size=512)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    return StableDiffusionPipeline(unet=unet, scheduler=scheduler, vae=vae, text_encoder=text_encoder,
                                   tokenizer=tokenizer, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def load_pretrained(name: str, dtype: torch.dtype):
    import diffusers
    from diffusers import DiffusionPipeline
    from packaging.version import Version

    # diffusers 0.42 renamed the keyword (the old one still works there, with a deprecation warning).
    dtype_kw = "dtype" if Version(diffusers.__version__) >= Version("0.42") else "torch_dtype"
    try:
        with quiet_transformers():
            pipe = DiffusionPipeline.from_pretrained(name, safety_checker=None, **{dtype_kw: dtype})
    except (OSError, ValueError, EnvironmentError) as exc:
        raise BenchError(f"cannot load Stable Diffusion pipeline {name!r} ({str(exc).splitlines()[0][:160]}); "
                         f"pass model=tiny for a tiny random-init pipeline or model=LOCAL_FOLDER",
                         where="--method-arg model") from exc
    if not hasattr(pipe, "unet") or not hasattr(pipe, "text_encoder"):
        raise BenchError(f"{type(pipe).__name__} is not a Stable Diffusion pipeline (no UNet / text encoder)",
                         where="--method-arg model")
    return pipe


@contextlib.contextmanager
def quiet_diffusers():
    """diffusers' console warnings inside a pipeline call (the truncation one is logged by us)."""
    from diffusers.utils import logging as df_logging

    level = df_logging.get_verbosity()
    df_logging.set_verbosity_error()
    try:
        yield
    finally:
        df_logging.set_verbosity(level)


class TextEncoderSlot:
    """One (tokenizer, text encoder) pair of a pipeline as a host of :mod:`unifybench.kit.rows`: its
    tokenizer attribute reads and writes the pipeline's, so that a restored tokenizer is the one the
    pipeline uses."""

    def __init__(self, pipe, tokenizer_attr: str, encoder_attr: str):
        self.pipe, self.tokenizer_attr, self.encoder_attr = pipe, tokenizer_attr, encoder_attr

    @property
    def tokenizer(self):
        return getattr(self.pipe, self.tokenizer_attr)

    @tokenizer.setter
    def tokenizer(self, value):
        setattr(self.pipe, self.tokenizer_attr, value)

    @property
    def model(self):
        return getattr(self.pipe, self.encoder_attr)

    def vocab_row_params(self) -> list[VocabRowParam]:
        return [VocabRowParam("embed", self.model.get_input_embeddings().weight)]

    @contextlib.contextmanager
    def restored(self):
        """Whatever a block does to this pair (diffusers' ``load_textual_inversion`` adds tokens and
        resizes), the tokenizer object and the embedding module from before are put back after it."""
        tokenizer, embedding = copy.deepcopy(self.tokenizer), self.model.get_input_embeddings()
        # transformers may resize in place (a new tensor under the same module): keep the tensor too.
        weight, vocab_size = embedding.weight.data, self.model.config.vocab_size
        try:
            with torch.random.fork_rng(devices=[]), quiet_transformers():  # resizing draws new rows
                yield
        finally:
            self.tokenizer = tokenizer
            embedding.weight.data = weight
            embedding.num_embeddings = weight.shape[0]
            self.model.set_input_embeddings(embedding)
            self.model.config.vocab_size = vocab_size


class SDHost:
    """One pipeline, shared by every concept of a process; concepts add tokens or LoRA layers only
    inside their blocks, and :meth:`fingerprint` says whether the base came back unchanged."""

    def __init__(self, model_name: str = DEFAULT_MODEL, *, device: str = "cpu", seed: int = 0,
                 dtype: torch.dtype | None = None, scheduler: str = "ddim"):
        from diffusers import DDPMScheduler

        self.device = torch.device(device)
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.model_name = model_name
        if model_name in RANDOM_MODELS:
            pipe = RANDOM_MODELS[model_name](seed)
            if self.dtype != torch.float32:
                pipe.to(dtype=self.dtype)
        else:
            pipe = load_pretrained(model_name, self.dtype)  # in its dtype already (fp32 modules kept)
        pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        for module in self.modules(pipe).values():
            module.requires_grad_(False)
            module.eval()
        self.pipe = pipe
        self.xl = hasattr(pipe, "text_encoder_2") and pipe.text_encoder_2 is not None
        self.slots = [TextEncoderSlot(pipe, "tokenizer", "text_encoder")]
        if self.xl:
            self.slots.append(TextEncoderSlot(pipe, "tokenizer_2", "text_encoder_2"))
        self.resolution = pipe.unet.config.sample_size * pipe.vae_scale_factor
        self.model_scheduler = pipe.scheduler  # the model's own: what class images are drawn with
        # Training noise as the diffusers examples: DDPM on the model's scheduler config.
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        if scheduler not in SCHEDULERS:
            raise BenchError(f"expected one of {', '.join(SCHEDULERS)}, got {scheduler!r}", where="--method-arg scheduler")
        import diffusers

        self.scheduler_name = scheduler
        self.sampler = getattr(diffusers, SCHEDULERS[scheduler]).from_config(pipe.scheduler.config)

    @staticmethod
    def modules(pipe) -> dict[str, torch.nn.Module]:
        names = ("unet", "vae", "text_encoder", "text_encoder_2")
        return {n: getattr(pipe, n) for n in names if getattr(pipe, n, None) is not None}

    # ------------------------------------------------------------------ sampling
    def initial_latents(self, seeds: Sequence[int]) -> torch.Tensor:
        """Each image's starting noise from its own CPU generator, in float32, whatever the batch
        and the device."""
        side = self.resolution // self.pipe.vae_scale_factor
        shape = (1, self.pipe.unet.config.in_channels, side, side)
        noise = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        return torch.cat(noise).to(self.device, self.dtype)

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], seeds: Sequence[int], *, steps: int, guidance: float,
                 scheduler=None) -> list[Image.Image]:
        """One image per (prompt, seed), in one batch; with eta 0 (DDIM) or a deterministic sampler
        no image depends on the others. Ancestral samplers draw their step noise per image too."""
        pipe = self.pipe
        limit = pipe.tokenizer.model_max_length
        with quiet_transformers():
            lengths = {p: len(pipe.tokenizer(p).input_ids) for p in dict.fromkeys(prompts)}
        for prompt, length in lengths.items():
            if length > limit:  # CLIP reads 77 tokens: say so, in the log
                _LOG.info(f"prompt longer than {limit} CLIP tokens, truncated as diffusers does: {prompt!r}")
        pipe.scheduler = scheduler or self.sampler
        try:
            generators = [torch.Generator().manual_seed(int(s) + 1) for s in seeds]
            with quiet_transformers(), quiet_diffusers():
                out = pipe(prompt=list(prompts), num_inference_steps=steps, guidance_scale=guidance,
                           height=self.resolution, width=self.resolution, latents=self.initial_latents(seeds),
                           generator=generators if len(generators) > 1 else generators[0], output_type="pil")
        finally:
            pipe.scheduler = self.sampler
        return list(out.images)

    # ------------------------------------------------------------------ training
    @staticmethod
    def pixels(image: Image.Image) -> torch.Tensor:
        """[-1, 1] CHW float32, as the examples feed the VAE."""
        import numpy as np

        arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
        return torch.from_numpy(arr).permute(2, 0, 1)

    def condition(self, prompts: Sequence[str]):
        """Text conditioning of the UNet with gradients (the pipelines' ``encode_prompt`` has none
        of its own ``no_grad``): hidden states, and for SDXL the pooled embedding and time ids."""
        if not self.xl:
            embeds, _ = self.pipe.encode_prompt(list(prompts), self.device, 1, False)
            return embeds, None
        embeds, _, pooled, _ = self.pipe.encode_prompt(list(prompts), device=self.device, num_images_per_prompt=1,
                                                       do_classifier_free_guidance=False)
        res = self.resolution
        # original size, crop top-left, target size: training images are resized to the square.
        time_ids = torch.tensor([[res, res, 0, 0, res, res]] * len(prompts), device=self.device, dtype=embeds.dtype)
        return embeds, {"text_embeds": pooled, "time_ids": time_ids}

    def denoising_loss(self, pixels: torch.Tensor, prompts: Sequence[str], generator: torch.Generator,
                       reduce: bool = True):
        """The examples' objective: encode to latents (a draw from the VAE's posterior), add noise at
        a uniformly drawn timestep, predict it; MSE against the noise (or the velocity). All draws
        come from ``generator`` (CPU), so they do not depend on the device or on anything else."""
        dev, dtype = self.device, self.dtype
        with torch.no_grad():
            latent_dist = self.pipe.vae.encode(pixels.to(dev, dtype)).latent_dist
            eps = torch.randn(latent_dist.mean.shape, generator=generator).to(dev, latent_dist.mean.dtype)
            latents = (latent_dist.mean + latent_dist.std * eps) * self.pipe.vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=generator).to(dev, dtype)
        n_steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, n_steps, (latents.shape[0],), generator=generator).to(dev)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        embeds, added = self.condition(prompts)
        autocast = (torch.autocast("cuda", dtype=dtype) if dev.type == "cuda" and dtype != torch.float32
                    else contextlib.nullcontext())
        with autocast:
            pred = self.pipe.unet(noisy, timesteps, embeds.to(dtype), added_cond_kwargs=added).sample
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        if not reduce:
            return F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        return F.mse_loss(pred.float(), target.float(), reduction="mean")

    # ------------------------------------------------------------------ isolation
    @torch.no_grad()
    def fingerprint(self) -> str:
        """Every weight's name, shape, dtype and an exact checksum of its bits (computed where it
        lives), and each tokenizer's size: any change to the base pipeline shows."""
        h = hashlib.sha256()
        for slot in self.slots:
            h.update(f"{slot.tokenizer_attr}|{len(slot.tokenizer)}".encode())
        for name, module in self.modules(self.pipe).items():
            for pname, t in module.state_dict().items():
                h.update(f"{name}.{pname}|{tuple(t.shape)}|{t.dtype}".encode())
                h.update(_bit_checksum(t).encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        return {"model": self.model_name, "family": "sdxl" if self.xl else "sd", "dtype": str(self.dtype).replace("torch.", ""),
                "resolution": self.resolution, "scheduler": self.scheduler_name,
                "scheduler_class": type(self.sampler).__name__,
                "attention": "sdpa" if hasattr(F, "scaled_dot_product_attention") else "eager",
                "random_init": random_init(self.model_name, RANDOM_MODELS)}


# Built in code, random weights: tests and smoke runs (tiny), cost at full size (random).
RANDOM_MODELS = {"tiny": build_tiny, "tiny-xl": build_tiny_xl, "random": build_random}
# Their text encoders' widths (hidden_size in the builders above), for checking an embedding's width
# before a run is made (test_diffusion checks them against the built pipelines).
RANDOM_TEXT_WIDTHS = {"tiny": (32,), "tiny-xl": (32, 32), "random": (768,)}


def unet_linear_shapes(model: str) -> dict[str, tuple[int, int]] | None:
    """``{module name: (in_features, out_features)}`` of every Linear (and 1x1-able Conv2d, as
    ``(in_channels, out_channels)``) of ``model``'s UNet, built from its config on the meta device
    (no weights read); None where the config is not readable here (full-size ``random``: too big to
    build just to list it)."""
    if model == "random":
        return None
    if model in RANDOM_MODELS:
        unet = RANDOM_MODELS[model](0).unet
    else:
        from diffusers import UNet2DConditionModel

        folder = Path(model).expanduser()
        try:
            config = UNet2DConditionModel.load_config(str(folder) if folder.is_dir() else model, subfolder="unet",
                                                      local_files_only=not folder.is_dir())
        except Exception:  # noqa: BLE001 - not cached, no unet/config.json: diffusers checks at loading
            return None
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(config)
    shapes = {}
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear):
            shapes[name] = (module.in_features, module.out_features)
        elif isinstance(module, torch.nn.Conv2d):
            shapes[name] = (module.in_channels, module.out_channels)
    return shapes


def text_encoder_widths(model: str) -> tuple[int, ...] | None:
    """The hidden size of each text encoder of ``model`` (a built-in name, a folder, or a hub name
    in the local cache), read from configs without loading weights; None when not readable here."""
    if model in RANDOM_TEXT_WIDTHS:
        return RANDOM_TEXT_WIDTHS[model]
    import json

    widths = []
    for sub in ("text_encoder", "text_encoder_2"):
        path = Path(model).expanduser() / sub / "config.json"
        if not path.is_file():
            try:
                from huggingface_hub import hf_hub_download

                path = Path(hf_hub_download(model, f"{sub}/config.json", local_files_only=True))
            except Exception:  # noqa: BLE001 - not a hub name, not cached, or no such encoder
                break
        try:
            widths.append(int(json.loads(path.read_text(encoding="utf-8"))["hidden_size"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return tuple(widths) or None
_INT_VIEW = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bit_checksum(t: torch.Tensor) -> str:
    """Two int64 sums over a tensor's bit patterns, plain and position-weighted: equal for equal
    bits; any single changed element changes the weighted sum."""
    flat = t.detach().contiguous().reshape(-1)
    if flat.numel() == 0:
        return "empty"
    if flat.dtype == torch.bool:
        flat = flat.to(torch.int8)
    bits = flat.view(_INT_VIEW[flat.element_size()]).to(torch.int64)
    weights = torch.arange(1, bits.numel() + 1, device=bits.device, dtype=torch.int64) % 65521 + 1
    return f"{int(bits.sum())}:{int((bits * weights).sum())}"
