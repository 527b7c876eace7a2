"""``textual-inversion``, ``dreambooth-lora`` and ``sd-prompt`` on one Stable Diffusion pipeline.

The training loops are ours, on diffusers' components, following the recipes of diffusers'
``examples/textual_inversion/textual_inversion.py`` and ``examples/dreambooth/train_dreambooth_lora.py``
(README commands as defaults); ``methods/diffusion/README.md`` says what is faithful and what differs.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import re
import time
from pathlib import Path

import torch

from unifybench import newrows
from unifybench.data.common import concept_phrase
from unifybench.errors import BenchError
from unifybench.kit.batching import call_size, padded_calls
from unifybench.logs import get_logger
from unifybench.methods import ConceptLayers, Method, flag_arg, float_arg, int_arg
from unifybench.records import Concept
from unifybench.seeding import derive_seed, image_seed

from .sd import DEFAULT_MODEL, RANDOM_MODELS, SCHEDULERS, SDHost, open_image

TASKS = frozenset({"gen", "attr_gen"})
# diffusers' textual_inversion.py: the prompts an object is trained under.
IMAGENET_TEMPLATES_SMALL = [
    "a photo of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}",
    "a photo of a clean {}", "a photo of a dirty {}", "a dark photo of the {}", "a photo of my {}",
    "a photo of the cool {}", "a close-up photo of a {}", "a bright photo of the {}", "a cropped photo of a {}",
    "a photo of the {}", "a good photo of the {}", "a photo of one {}", "a close-up photo of the {}",
    "a rendition of the {}", "a photo of the clean {}", "a rendition of a {}", "a photo of a nice {}",
    "a good photo of a {}", "a photo of the nice {}", "a photo of the small {}", "a photo of the weird {}",
    "a photo of the large {}", "a photo of a cool {}", "a photo of a small {}",
]
LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0", "add_k_proj", "add_v_proj"]
LORA_FILE = "pytorch_lora_weights.safetensors"
EMBEDS_FILES = ("learned_embeds.safetensors", "learned_embeds_2.safetensors")  # text encoder 1, 2 (SDXL)

_ARGS = {
    "model": "a diffusers Stable Diffusion pipeline: hub name or local folder (default "
             "stable-diffusion-v1-5/stable-diffusion-v1-5; SDXL: stabilityai/stable-diffusion-xl-base-1.0), or "
             "'tiny' (the tiny random-init pipeline of diffusers' tests, built in code) or 'random' (SD 1.5's "
             "architecture, random weights: cost only)",
    "dtype": "weights: bfloat16, float16 (sampling only) or float32 (default bfloat16 on CUDA, float32 on CPU)",
    "scheduler": f"sampler: {', '.join(SCHEDULERS)} (default ddim), built from the model's scheduler config",
    "steps": "sampling steps (default 50)",
    "guidance": "classifier-free guidance scale (default 7.5)",
    "gen_batch": "images per pipeline call, always this many (short batches are padded and the padding "
                 "discarded), so that no image depends on what it is drawn with (default 8 on CUDA, 4 on CPU)",
}
_TI_ARGS = {
    "train_steps": "optimizer steps (default 3000, as the diffusers README)",
    "lr": "base learning rate (default 5e-4; scaled by train_batch x accumulation with scale_lr: 2e-3)",
    "scale_lr": "true (default): lr x train_batch x accumulation, as --scale_lr",
    "train_batch": "images per forward pass (default 1)",
    "accumulation": "gradient accumulation steps (default 4)",
    "weight_decay": "AdamW weight decay (default 1e-2)",
    "flip_p": "horizontal flip probability of a training image (default 0.5)",
    "initializer": "word whose embedding starts the placeholder (default: the concept's class noun; when that "
                   "is not one token, the mean of its tokens' embeddings)",
    "embeds": "folder of embeddings trained elsewhere: DIR/<concept>/learned_embeds.safetensors (and "
              "learned_embeds_2.safetensors for SDXL), loaded with diffusers' load_textual_inversion",
}
_LORA_ARGS = {
    "train_steps": "optimizer steps (default 500, as the diffusers README)",
    "lr": "AdamW learning rate (default 1e-4)",
    "rank": "LoRA rank, alpha = rank (default 4)",
    "train_batch": "instance images per step (default 1)",
    "weight_decay": "AdamW weight decay (default 1e-2)",
    "identifier": "the rare word of the instance phrase '<identifier> <class noun>' (default sks); 'token' "
                  "uses the benchmark's concept token",
    "prior": "true: prior preservation with class images the base model draws once per class (default false)",
    "class_images": "class images for prior preservation (default 100, the script's default)",
    "prior_weight": "weight of the prior loss (default 1.0)",
    "lora": "folder of LoRAs trained elsewhere: DIR/<concept>/pytorch_lora_weights.safetensors, loaded with "
            "diffusers' load_lora_weights",
}

_HOSTS: dict[tuple, SDHost] = {}
_LOG = get_logger("method.diffusion")


def get_host(model: str, device: str, seed: int, dtype: str | None, scheduler: str) -> SDHost:
    key = (model, device, dtype, scheduler, seed if model in RANDOM_MODELS else None)
    if key not in _HOSTS:
        _HOSTS[key] = SDHost(model, device=device, seed=seed, dtype=getattr(torch, dtype) if dtype else None,
                             scheduler=scheduler)
    return _HOSTS[key]


def _per_concept_dir(root: Path, concept: Concept, filename: str) -> Path:
    """``DIR/<concept>/`` (or ``DIR/<token>/``); ``DIR`` itself only when it holds one concept's
    file and no subfolders, so that a folder of several concepts never lends one concept's file
    to another that lacks its own."""
    for base in (root / concept.name, root / concept.token):
        if (base / filename).is_file():
            return base
    if (root / filename).is_file() and not any(p.is_dir() for p in root.iterdir()):
        return root
    raise BenchError(f"no {filename} for concept {concept.name!r} (looked in DIR/{concept.name}/ and "
                     f"DIR/{concept.token}/; DIR/{filename} is used only when DIR has no subfolders)", root)


class _DiffusionMethod(ConceptLayers, Method):
    tasks = TASKS
    arguments = dict(_ARGS)
    trains = False  # a method that trains refuses float16 weights (no loss scaling here)

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        a = self.args
        self.model_name = a.get("model", DEFAULT_MODEL)
        self.dtype = a.get("dtype")
        allowed = ("bfloat16", "float32") if self.trains else ("bfloat16", "float16", "float32")
        if self.dtype not in (None,) + allowed:
            raise BenchError(f"expected {' or '.join(allowed)}, got {self.dtype!r}", where="--method-arg dtype")
        self.scheduler = a.get("scheduler", "ddim")
        if self.scheduler not in SCHEDULERS:
            raise BenchError(f"expected one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}",
                             where="--method-arg scheduler")
        self.steps = int_arg(a, "steps", 50) or 1
        self.guidance = float_arg(a, "guidance", 7.5)
        default_batch = 8 if str(self.device).startswith("cuda") else 4
        self.gen_batch = int_arg(a, "gen_batch", default_batch) or 1
        self._host: SDHost | None = None

    @classmethod
    def validate_arguments(cls, args):
        cls(args)

    @property
    def host(self) -> SDHost:
        if self._host is None:
            self._host = get_host(self.model_name, self.device, self.seed, self.dtype, self.scheduler)
        return self._host

    def describe(self):
        return {"base_model": self.model_name, "random_init": self.model_name in RANDOM_MODELS,
                "backend": self.host.describe(),
                "sampling": {"scheduler": self.scheduler, "steps": self.steps, "guidance": self.guidance,
                             "resolution": self.host.resolution, "gen_batch": self.gen_batch, "eta": 0.0}}

    def isolation_fingerprint(self):
        return self.host.fingerprint()

    # Subclasses: how a prompt names the concept, and what exists while it is active.
    def _prompt(self, concept: Concept, state, prompt: str) -> str:
        raise NotImplementedError

    def concept_layers(self, concept: Concept, state):
        return contextlib.nullcontext()

    def generate(self, concept, state, requests):
        with self.activate(concept, state):
            total, done, out = sum(r.n_images for r in requests), 0, []
            for r in requests:
                prompt = self._prompt(concept, state, r.prompt)
                out.append(self.draw(prompt, [image_seed(r.seed, r.key, i) for i in range(r.n_images)]))
                done += r.n_images
                self.progress("drawing", done, total)
        return out

    def draw(self, prompt: str, seeds: list[int], size: int | None = None, **sampling) -> list:
        """One request's images in calls of their own (:mod:`unifybench.kit.batching`): ``gen_batch``
        per call, fewer when the request has fewer, so that no image depends on what else is drawn."""
        images = []
        for call, n in padded_calls(seeds, size or call_size(self.gen_batch, len(seeds))):
            images += self.host.generate([prompt] * len(call), call, steps=sampling.get("steps", self.steps),
                                         guidance=sampling.get("guidance", self.guidance),
                                         scheduler=sampling.get("scheduler"))[:n]
        return images


class SDPrompt(_DiffusionMethod):
    """The base model untrained: the concept named by its class noun and description (zero-shot)."""

    name = "sd-prompt"

    def _prompt(self, concept, state, prompt):
        phrase = concept_phrase(concept)  # "a fluffy corgi ...": it brings its own article
        if not re.search(rf"\b{re.escape(concept.class_noun)}\b", phrase, flags=re.IGNORECASE):
            phrase = f"{phrase}, a {concept.class_noun},"  # named by its class noun too, as CLIP-T names it
        prompt = re.sub(rf"\b(?:an?|the)\s+{re.escape(concept.token)}", phrase, prompt, flags=re.IGNORECASE)
        return " ".join(prompt.replace(concept.token, phrase).split())


def _training_photos(concept: Concept) -> list[Path]:
    if not concept.train_images:
        raise BenchError("no training photos to personalize on", where=f"concept {concept.name}")
    return list(concept.train_images)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except ValueError:
        return None


def _resize_square(image, size: int, resample):
    return image.resize((size, size), resample=resample)


class TextualInversion(_DiffusionMethod):
    """Textual inversion: one new embedding row per text encoder, for the concept's token."""

    name = "textual-inversion"
    needs_personalization = True
    trains = True
    arguments = {**_ARGS, **_TI_ARGS}

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        a = self.args
        self.train_steps = int_arg(a, "train_steps", 3000) or 1
        self.train_batch = int_arg(a, "train_batch", 1) or 1
        self.accumulation = int_arg(a, "accumulation", 4) or 1
        self.base_lr = float_arg(a, "lr", 5e-4)
        self.scale_lr = flag_arg(a, "scale_lr", True)
        self.lr = self.base_lr * (self.train_batch * self.accumulation if self.scale_lr else 1)
        self.weight_decay = float_arg(a, "weight_decay", 1e-2)
        self.flip_p = float_arg(a, "flip_p", 0.5)
        if not 0 <= self.flip_p <= 1:
            raise BenchError(f"must be between 0 and 1, got {self.flip_p:g}", where="--method-arg flip_p")
        self.initializer = a.get("initializer")
        self.embeds = Path(a["embeds"]) if "embeds" in a else None
        if self.embeds is not None and not self.embeds.is_dir():
            raise BenchError("embeddings folder not found", self.embeds)

    def describe(self):
        d = super().describe()
        d["train_args"] = None if self.embeds else {
            "train_steps": self.train_steps, "lr": self.lr, "base_lr": self.base_lr, "scale_lr": self.scale_lr,
            "train_batch": self.train_batch, "accumulation": self.accumulation, "weight_decay": self.weight_decay,
            "betas": [0.9, 0.999], "eps": 1e-8, "schedule": "constant", "flip_p": self.flip_p,
            "resolution": self.host.resolution, "templates": "imagenet_templates_small", "vectors": 1}
        d["embeds"] = str(self.embeds) if self.embeds else None
        return d

    def _prompt(self, concept, state, prompt):
        return prompt  # the concept's token is the placeholder

    # ------------------------------------------------------------------ rows
    def _initial_rows(self, concept: Concept) -> tuple[list[dict], list[str]]:
        """Per text encoder, the placeholder's starting row: the initializer word's embedding when it
        is one token (the script requires it), else the mean of its tokens' embeddings."""
        word = self.initializer or concept.class_noun or "object"
        rows, how = [], []
        for slot in self.host.slots:
            ids = slot.tokenizer.encode(word, add_special_tokens=False)
            if not ids:
                raise BenchError(f"initializer {word!r} has no tokens", where="--method-arg initializer")
            table = slot.model.get_input_embeddings().weight.detach()
            row = table[ids].float().mean(dim=0, keepdim=True).cpu()
            rows.append({"embed": row})
            how.append(f"{word!r}: " + ("one token" if len(ids) == 1 else f"mean of {len(ids)} tokens"))
        return rows, how

    @contextlib.contextmanager
    def _tokens(self, concept: Concept, rows: list[dict]):
        """The placeholder in every text encoder, with its rows, for the length of the block."""
        with contextlib.ExitStack() as stack:
            ids = [stack.enter_context(newrows.NewTokens(slot, [concept.token], r))
                   for slot, r in zip(self.host.slots, rows)]
            yield ids

    @contextlib.contextmanager
    def concept_layers(self, concept, state):
        if state.get("embeds_dir") is not None:
            # Files trained elsewhere go through diffusers' own loader; the slots put back the
            # tokenizers and embedding modules from before afterwards.
            with contextlib.ExitStack() as stack:
                for slot in self.host.slots:
                    stack.enter_context(slot.restored())
                for slot, filename in zip(self.host.slots, EMBEDS_FILES):
                    self.host.pipe.load_textual_inversion(str(state["embeds_dir"]), weight_name=filename,
                                                          token=concept.token, tokenizer=slot.tokenizer,
                                                          text_encoder=slot.model)
                yield
            return
        with self._tokens(concept, state["rows"]):
            yield

    # ------------------------------------------------------------------ personalization
    def personalize(self, concept, state_dir):
        state_dir = Path(state_dir)
        if self.embeds is not None:
            base = _per_concept_dir(self.embeds, concept, EMBEDS_FILES[0])
            if self.host.xl and not (base / EMBEDS_FILES[1]).is_file():
                raise BenchError(f"SDXL needs {EMBEDS_FILES[1]} too (the second text encoder's row)", base)
            return {"embeds_dir": base}
        meta = _read_json(state_dir / "textual_inversion.json")
        if meta and meta.get("finished"):
            return self.load_state(concept, state_dir)
        return {"rows": self._train(concept, state_dir), "embeds_dir": None}

    def load_state(self, concept, state_dir):
        if self.embeds is not None:
            return self.personalize(concept, state_dir)
        state_dir = Path(state_dir)
        meta = _read_json(state_dir / "textual_inversion.json")
        if not meta or not meta.get("finished"):
            return self.personalize(concept, state_dir)
        return {"rows": [{"embed": t} for t in load_embeds(state_dir, concept.token, self.host)], "embeds_dir": None}

    def _train(self, concept: Concept, state_dir: Path) -> list[dict]:
        from PIL import Image, ImageOps

        host = self.host
        photos = [open_image(p) for p in _training_photos(concept)]
        init, init_how = self._initial_rows(concept)
        rng = random.Random(f"{self.seed}/{concept.name}/textual-inversion")
        draws = torch.Generator().manual_seed(derive_seed(self.seed, concept.name, "textual-inversion"))
        res = host.resolution
        # The script's dataset: every photo 100 times, shuffled each epoch; a template per example.
        order: list[int] = []
        losses, start = [], time.time()
        encoders = [slot.model for slot in host.slots]
        dtypes = [e.dtype for e in encoders]
        with self._tokens(concept, init) as ids:
            for e in encoders:  # the script trains the text encoder in float32 (exact round trip)
                e.to(torch.float32)
            trainers = [newrows.RowTrainer(slot, i, lr=self.lr, weight_decay=self.weight_decay, eps=1e-8, init=r)
                        for slot, i, r in zip(host.slots, ids, init)]
            try:
                for step in range(self.train_steps):
                    total = 0.0
                    for _ in range(self.accumulation):
                        batch = []
                        for _ in range(self.train_batch):
                            if not order:
                                order = [i for i in range(len(photos)) for _ in range(100)]
                                rng.shuffle(order)
                            batch.append(order.pop())
                        pixels, prompts = [], []
                        for k in batch:
                            im = _resize_square(photos[k], res, Image.BICUBIC)
                            if float(torch.rand((), generator=draws)) < self.flip_p:
                                im = ImageOps.mirror(im)
                            pixels.append(host.pixels(im))
                            prompts.append(rng.choice(IMAGENET_TEMPLATES_SMALL).format(concept.token))
                        loss = host.denoising_loss(torch.stack(pixels), prompts, draws) / self.accumulation
                        loss.backward()
                        for t in trainers:
                            t.accumulate()
                        total += float(loss.detach())
                    for t in trainers:
                        t.apply()
                    losses.append(total)
                    self.progress("textual inversion", step + 1, self.train_steps)
                rows = [t.exact_rows(i, r) for t, i, r in zip(trainers, ids, init)]
            finally:
                for t in trainers:
                    t.close()
                for e, dt in zip(encoders, dtypes):
                    e.to(dt)
        save_embeds(state_dir, concept.token, [r["embed"] for r in rows])
        _write_json(state_dir / "textual_inversion.json", {
            "format": "diffusers learned_embeds.safetensors", "placeholder": concept.token,
            "initializer": init_how, "train_args": self.describe()["train_args"], "base_model": self.model_name,
            "photos": len(photos), "loss_first": losses[0], "loss_last": losses[-1],
            "loss_mean_last_100": sum(losses[-100:]) / len(losses[-100:]), "steps": len(losses),
            "seconds": round(time.time() - start, 3), "finished": True})
        return [{"embed": r["embed"]} for r in rows]


def save_embeds(folder: Path, token: str, rows: list[torch.Tensor]) -> None:
    """diffusers' format: ``{placeholder: [1, dim]}`` in ``learned_embeds.safetensors`` (and
    ``learned_embeds_2.safetensors`` for SDXL's second text encoder)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    for row, filename in zip(rows, EMBEDS_FILES):
        tmp = folder / f".{filename}.tmp"
        save_file({token: row.detach().float().cpu().contiguous()}, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, folder / filename)


def load_embeds(folder: Path, token: str, host: SDHost) -> list[torch.Tensor]:
    from safetensors.torch import load_file

    rows = []
    for slot, filename in zip(host.slots, EMBEDS_FILES):
        path = folder / filename
        try:
            data = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input
            raise BenchError(f"cannot load ({exc.__class__.__name__})", path) from exc
        width = slot.model.get_input_embeddings().weight.shape[1]
        if len(data) != 1 or next(iter(data.values())).shape != (1, width):
            raise BenchError(f"expected one [1, {width}] embedding, found "
                             f"{ {k: list(v.shape) for k, v in data.items()} }", path)
        rows.append(next(iter(data.values())).float())
    return rows


class DreamBoothLoRA(_DiffusionMethod):
    """DreamBooth with LoRA on the UNet's attention projections (peft), prior preservation optional."""

    name = "dreambooth-lora"
    needs_personalization = True
    trains = True
    arguments = {**_ARGS, **_LORA_ARGS}

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        a = self.args
        self.train_steps = int_arg(a, "train_steps", 500) or 1
        self.lr = float_arg(a, "lr", 1e-4)
        self.rank = int_arg(a, "rank", 4) or 1
        self.train_batch = int_arg(a, "train_batch", 1) or 1
        self.weight_decay = float_arg(a, "weight_decay", 1e-2)
        self.identifier = a.get("identifier", "sks").strip()
        if not self.identifier:
            raise BenchError("must not be empty", where="--method-arg identifier")
        self.prior = flag_arg(a, "prior", False)
        self.class_images = int_arg(a, "class_images", 100) or 1
        self.prior_weight = float_arg(a, "prior_weight", 1.0)
        self.lora = Path(a["lora"]) if "lora" in a else None
        if self.lora is not None and not self.lora.is_dir():
            raise BenchError("LoRA folder not found", self.lora)

    def describe(self):
        d = super().describe()
        d["train_args"] = None if self.lora else {
            "train_steps": self.train_steps, "lr": self.lr, "rank": self.rank, "lora_alpha": self.rank,
            "init": "gaussian", "targets": LORA_TARGETS, "train_batch": self.train_batch,
            "weight_decay": self.weight_decay, "betas": [0.9, 0.999], "eps": 1e-8, "max_grad_norm": 1.0,
            "schedule": "constant", "identifier": self.identifier, "prior": self.prior,
            "class_images": self.class_images if self.prior else None,
            "prior_weight": self.prior_weight if self.prior else None, "resolution": self.host.resolution,
            "crop": "random", "resize": "bilinear"}
        d["lora"] = str(self.lora) if self.lora else None
        return d

    def instance_phrase(self, concept: Concept) -> str:
        word = concept.token if self.identifier == "token" else self.identifier
        return f"{word} {concept.class_noun}".strip()

    def _prompt(self, concept, state, prompt):
        return " ".join(prompt.replace(concept.token, self.instance_phrase(concept)).split())

    @contextlib.contextmanager
    def concept_layers(self, concept, state):
        pipe = self.host.pipe
        pipe.load_lora_weights(str(state["lora_dir"]), weight_name=LORA_FILE, adapter_name=_adapter(concept))
        try:
            yield
        finally:
            pipe.unload_lora_weights()  # the UNet's original modules, not merged: bit-identical

    # ------------------------------------------------------------------ personalization
    def personalize(self, concept, state_dir):
        state_dir = Path(state_dir)
        if self.lora is not None:
            return {"lora_dir": _per_concept_dir(self.lora, concept, LORA_FILE)}
        meta = _read_json(state_dir / "dreambooth_lora.json")
        if not (meta and meta.get("finished") and (state_dir / LORA_FILE).is_file()):
            self._train(concept, state_dir)
        return {"lora_dir": state_dir}

    def load_state(self, concept, state_dir):
        return self.personalize(concept, state_dir)

    def _crops(self, image, draws: torch.Generator) -> torch.Tensor:
        """The script's transform: torchvision's ``Resize(resolution, BILINEAR)`` (shorter side to the
        resolution, the longer one truncated as torchvision does), then a random crop of it."""
        from PIL import Image

        res = self.host.resolution
        w, h = image.size
        short, long = min(w, h), max(w, h)
        long = int(res * long / short)
        im = image.resize((res, long) if w <= h else (long, res), resample=Image.BILINEAR)
        left = int(torch.randint(0, im.size[0] - res + 1, (), generator=draws))
        top = int(torch.randint(0, im.size[1] - res + 1, (), generator=draws))
        return self.host.pixels(im.crop((left, top, left + res, top + res)))

    def _train(self, concept: Concept, state_dir: Path) -> None:
        from peft import LoraConfig
        from peft.utils import get_peft_model_state_dict
        from diffusers.utils import convert_state_dict_to_diffusers

        host, unet = self.host, self.host.pipe.unet
        photos = [open_image(p) for p in _training_photos(concept)]
        class_photos = ([open_image(p) for p in self.class_image_files(concept, state_dir.parent)]
                        if self.prior else [])
        instance_prompt = f"a photo of {self.instance_phrase(concept)}"
        class_prompt = f"a photo of {concept.class_noun}"
        draws = torch.Generator().manual_seed(derive_seed(self.seed, concept.name, "dreambooth-lora"))
        rng = random.Random(f"{self.seed}/{concept.name}/dreambooth-lora")
        targets = [t for t in LORA_TARGETS if any(n.endswith(t) for n, _ in unet.named_modules())]
        # LoRA's own init draws from the global state: seed it by (seed, concept).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, concept.name, "lora-init"))
            unet.add_adapter(LoraConfig(r=self.rank, lora_alpha=self.rank, init_lora_weights="gaussian",
                                        target_modules=targets), adapter_name=_adapter(concept))
        params = [p for n, p in unet.named_parameters() if "lora" in n]
        for p in params:
            p.data = p.data.float()  # trainable LoRA weights in float32 (cast_training_params)
            p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=self.lr, betas=(0.9, 0.999), weight_decay=self.weight_decay, eps=1e-8)
        losses, start = [], time.time()
        order: list[int] = []
        class_order: list[int] = []
        try:
            for step in range(self.train_steps):
                picks = []
                for _ in range(self.train_batch):
                    if not order:
                        order = list(range(len(photos)))
                        rng.shuffle(order)
                    picks.append(order.pop())
                pixels = [self._crops(photos[k], draws) for k in picks]
                prompts = [instance_prompt] * len(picks)
                if self.prior:  # instances first, then as many class images, in one batch
                    for _ in picks:
                        if not class_order:
                            class_order = list(range(len(class_photos)))
                            rng.shuffle(class_order)
                        pixels.append(self._crops(class_photos[class_order.pop()], draws))
                        prompts.append(class_prompt)
                per_image = host.denoising_loss(torch.stack(pixels), prompts, draws, reduce=False)
                n = len(picks)
                loss = per_image[:n].mean()
                if self.prior:
                    loss = loss + self.prior_weight * per_image[n:].mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                losses.append(float(loss.detach()))
                self.progress("dreambooth-lora", step + 1, self.train_steps)
            layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, adapter_name=_adapter(concept)))
            save_lora(host, state_dir, {k: v.detach().float().cpu().contiguous() for k, v in layers.items()})
        finally:
            unet.unload_lora()  # the original modules back: nothing of this concept stays
        _write_json(state_dir / "dreambooth_lora.json", {
            "format": f"diffusers {LORA_FILE}", "instance_prompt": instance_prompt,
            "class_prompt": class_prompt if self.prior else None, "targets": targets,
            "train_args": self.describe()["train_args"], "base_model": self.model_name, "photos": len(photos),
            "class_photos": len(class_photos), "loss_first": losses[0], "loss_last": losses[-1],
            "steps": len(losses), "seconds": round(time.time() - start, 3), "finished": True})

    # ------------------------------------------------------------------ prior preservation
    def class_image_files(self, concept: Concept, root: Path) -> list[Path]:
        """``class_images`` images of "a photo of <class noun>" drawn by the base model with its own
        scheduler and 50 steps (the script's defaults), cached beside the run's concept states and
        shared by every concept of that class: they depend on the model, the class and the seed only
        (and on the call size, which moves a pixel by a level at most, so it is in the key too)."""
        prompt = f"a photo of {concept.class_noun}"
        key = derive_seed(self.model_name, prompt, self.seed, self.host.resolution, str(self.host.dtype),
                          self.gen_batch)
        folder = root / "_class_images" / f"{concept.class_noun.replace(' ', '_')}-{key % 10**8:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        files = [folder / f"{i}.png" for i in range(self.class_images)]
        seeds = [image_seed(self.seed, f"class/{prompt}", i) for i in range(self.class_images)]
        # Whole calls of exactly gen_batch, redrawn whole when any image is missing: an image sits in
        # the same slot of the same call whatever an interrupted run left or how many are asked for.
        size = self.gen_batch
        calls = [range(k, min(k + size, self.class_images)) for k in range(0, self.class_images, size)]
        calls = [c for c in calls if any(not files[i].is_file() for i in c)]
        for n, call in enumerate(calls, 1):
            images = self.draw(prompt, [seeds[i] for i in call], size, steps=50, guidance=7.5,
                               scheduler=self.host.model_scheduler)
            for i, image in zip(call, images):
                if not files[i].is_file():
                    tmp = folder / f".{i}.png.tmp"
                    image.save(tmp, format="PNG")
                    os.replace(tmp, files[i])
            self.progress("class images", n, len(calls))
        return files


def _adapter(concept: Concept) -> str:
    return "ub_" + "".join(ch if ch.isalnum() else "_" for ch in concept.name)


def save_lora(host: SDHost, folder: Path, unet_layers: dict[str, torch.Tensor]) -> None:
    """``pytorch_lora_weights.safetensors`` through the pipeline class's own ``save_lora_weights``
    (keys ``unet.…``), written to a temporary name and renamed."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = f".{LORA_FILE}.tmp"
    type(host.pipe).save_lora_weights(save_directory=str(folder), unet_lora_layers=unet_layers, weight_name=tmp,
                                      safe_serialization=True)
    os.replace(folder / tmp, folder / LORA_FILE)
