"""``textual-inversion``, ``dreambooth-lora`` and ``sd-prompt`` on one Stable Diffusion pipeline.

The training loops are ours, on diffusers' components, following the recipes of diffusers'
``examples/textual_inversion/textual_inversion.py`` and ``examples/dreambooth/train_dreambooth_lora.py``
(README commands as defaults); ``methods/diffusion/README.md`` says what is faithful and what differs.
"""
from __future__ import annotations

import contextlib
import random
import re
import time
from pathlib import Path

import torch

from unifybench import newrows
from unifybench.data.common import concept_phrase
from unifybench.errors import BenchError
from unifybench.images import open_rgb
from unifybench.kit.batching import draw_in_calls
from unifybench.logs import get_logger, quiet_transformers
from unifybench.kit.args import Arg, Auto
from unifybench.kit.checkpoints import concept_folder, has_file
from unifybench.kit.files import atomic_write, read_json, write_json_atomic
from unifybench.kit.models import check_available, on_cuda, shared, torch_dtype
from unifybench.methods import ConceptLayers, Method
from unifybench.records import Concept
from unifybench.seeding import derive_seed, image_seed

from .sd import (DEFAULT_MODEL, RANDOM_MODELS, SCHEDULERS, SDHost, quiet_diffusers, text_encoder_widths,
                 unet_linear_shapes)

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
    "model": Arg(str, DEFAULT_MODEL, "a diffusers Stable Diffusion pipeline: hub name or local folder "
                 "(SDXL: stabilityai/stable-diffusion-xl-base-1.0), or 'tiny' / 'tiny-xl' (the tiny random-init "
                 "pipelines of diffusers' tests, built in code) or 'random' (SD 1.5's architecture, random "
                 "weights: cost only)"),
    "dtype": Arg(str, Auto("bfloat16 on CUDA, float32 on CPU"), "weights (float16: sampling-only methods)",
                 choices=("bfloat16", "float16", "float32")),
    "scheduler": Arg(str, "ddim", "sampler, built from the model's scheduler config", choices=tuple(SCHEDULERS)),
    "steps": Arg(int, 50, "sampling steps", low=1),
    "guidance": Arg(float, 7.5, "classifier-free guidance scale", low=0),
    "gen_batch": Arg(int, Auto("8 on CUDA, 4 on CPU"), "most images of one request per pipeline call (a call "
                     "never mixes requests, so no image depends on what it is drawn with)", low=1),
}
_TI_ARGS = {
    "train_steps": Arg(int, 3000, "optimizer steps (the diffusers README's)", low=1),
    "lr": Arg(float, 5e-4, "base learning rate, scaled by train_batch x accumulation when scale_lr", above=0),
    "scale_lr": Arg(bool, True, "lr x train_batch x accumulation, as the script's --scale_lr"),
    "train_batch": Arg(int, 1, "images per forward pass", low=1),
    "accumulation": Arg(int, 4, "gradient accumulation steps", low=1),
    "weight_decay": Arg(float, 1e-2, "AdamW weight decay", low=0),
    "flip_p": Arg(float, 0.5, "horizontal flip probability of a training image", low=0, high=1),
    "initializer": Arg(str, Auto("the concept's class noun"), "word whose embedding starts the placeholder "
                       "(the mean of its tokens' embeddings when it is several tokens); 'first-word': the class "
                       "noun's first word (DreamBench++'s recipe)"),
    "embeds": Arg(Path, None, "folder of embeddings trained elsewhere: DIR/<concept>/learned_embeds.safetensors "
                  "(and learned_embeds_2.safetensors for SDXL), loaded with diffusers' load_textual_inversion",
                  exists="dir"),
}
_LORA_ARGS = {
    "train_steps": Arg(int, 500, "optimizer steps (the diffusers README's)", low=1),
    "lr": Arg(float, 1e-4, "AdamW learning rate", above=0),
    "rank": Arg(int, 4, "LoRA rank; alpha = rank", low=1),
    "train_batch": Arg(int, 1, "instance images per step", low=1),
    "weight_decay": Arg(float, 1e-2, "AdamW weight decay", low=0),
    "identifier": Arg(str, "sks", "the rare word of the instance phrase '<identifier> <class noun>'; 'token' "
                      "uses the benchmark's concept token; 'none': the class noun alone (DreamBench++'s recipe, "
                      "'a photo of {subject}')"),
    "prior": Arg(bool, False, "prior preservation with class images the base model draws once per class"),
    "class_images": Arg(int, 100, "class images for prior preservation (the script's)", low=1),
    "prior_weight": Arg(float, 1.0, "weight of the prior loss", low=0),
    "lora": Arg(Path, None, "folder of LoRAs trained elsewhere: DIR/<concept>/pytorch_lora_weights.safetensors, "
                "loaded with diffusers' load_lora_weights", exists="dir"),
}

_LOG = get_logger("method.diffusion")


def get_host(model: str, device: str, seed: int, dtype: str | None, scheduler: str) -> SDHost:
    """One pipeline per (model, device, dtype, scheduler) in a process: concepts share the weights."""
    return shared(("sd", model, device, dtype, scheduler, seed if model in RANDOM_MODELS else None),
                  lambda: SDHost(model, device=device, seed=seed, dtype=torch_dtype(dtype, device) if dtype else None,
                                 scheduler=scheduler))


class _DiffusionMethod(ConceptLayers, Method):
    tasks = TASKS
    arguments = dict(_ARGS)
    trains = False  # a method that trains refuses float16 weights (no loss scaling here)

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        a = self.args
        self.model_name = a.model
        self.dtype = a.dtype
        self.scheduler = a.scheduler
        self.steps = a.steps
        self.guidance = a.guidance
        self.gen_batch = a.gen_batch or (8 if on_cuda(self.device) else 4)
        self._host: SDHost | None = None

    @classmethod
    def check_arguments(cls, args):
        if cls.trains and args.dtype == "float16":
            raise BenchError("expected bfloat16 or float32 for a method that trains (no loss scaling), got "
                             "'float16'", where="--method-arg dtype")

    @classmethod
    def check_available(cls, args):
        check_available(args.model, builtins=tuple(RANDOM_MODELS), what="Stable Diffusion pipeline")

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

    # ------------------------------------------------------------------ speed hooks
    @classmethod
    def bench_arguments(cls, device_type, given):
        # A method that trains is personalized for one step: sampling does not cost more after more.
        return {"model": "random" if device_type == "cuda" else "tiny", **({"train_steps": "1"} if cls.trains else {})}

    def bench_generation(self, options):
        from .speed import bench_generation

        return bench_generation(self, options)

    # Subclasses: how a prompt names the concept, and what exists while it is active.
    def _prompt(self, concept: Concept, state, prompt: str) -> str:
        raise NotImplementedError

    def concept_layers(self, concept: Concept, state):
        return contextlib.nullcontext()

    def generate(self, concept, state, requests):
        self.require_active(concept)
        total, done, out = sum(r.n_images for r in requests), 0, []
        for r in requests:
            prompt = self._prompt(concept, state, r.prompt)
            out.append(self.draw(prompt, r.image_seeds()))
            done += r.n_images
            self.progress("drawing", done, total)
        return out

    def draw(self, prompt: str, seeds: list[int], size: int | None = None, **sampling) -> list:
        """One request's images in calls of their own (:mod:`unifybench.kit.batching`): ``gen_batch``
        per call, fewer when the request has fewer, so that no image depends on what else is drawn."""
        return draw_in_calls(seeds, self.gen_batch, lambda call: self.host.generate(
            [prompt] * len(call), call, steps=sampling.get("steps", self.steps),
            guidance=sampling.get("guidance", self.guidance), scheduler=sampling.get("scheduler")), size)


class SDPrompt(_DiffusionMethod):
    """The base model untrained: the concept named by its class noun and description (zero-shot)."""

    name = "sd-prompt"

    def _prompt(self, concept, state, prompt):
        words = concept_phrase(concept).split()  # "a fluffy corgi ...": it brings its own article
        composed = self._with_phrase(concept, prompt, " ".join(words))
        # CLIP reads 77 tokens and drops the rest, which would be the scene ("... in the jungle"):
        # the description gives up its last words instead, until the whole prompt fits.
        limit = self.host.pipe.tokenizer.model_max_length
        with quiet_transformers():  # counting tokens of a prompt too long is the point, not a warning
            while len(words) > 2 and len(self.host.pipe.tokenizer(composed).input_ids) > limit:
                words = words[:-1]
                composed = self._with_phrase(concept, prompt, " ".join(words))
        if len(words) < len(concept_phrase(concept).split()):
            _LOG.info(f"description shortened to fit {limit} CLIP tokens with the scene: {composed!r}")
        return composed

    @staticmethod
    def _with_phrase(concept, prompt: str, phrase: str) -> str:
        if not re.search(rf"\b{re.escape(concept.class_noun)}\b", phrase, flags=re.IGNORECASE):
            phrase = f"{phrase}, a {concept.class_noun},"  # named by its class noun too, as CLIP-T names it
        # DreamBench writes "a <c> dog": the phrase already names the class, so it takes both words.
        subject = rf"{re.escape(concept.token)}(?:\s+{re.escape(concept.class_noun)}\b)?"
        prompt = re.sub(rf"\b(?:an?|the)\s+{subject}", lambda _: phrase, prompt, flags=re.IGNORECASE)
        return " ".join(re.sub(subject, lambda _: phrase, prompt).split())


def _training_photos(concept: Concept) -> list[Path]:
    if not concept.train_images:
        raise BenchError("no training photos to personalize on", where=f"concept {concept.name}")
    return list(concept.train_images)


def read_header(path: Path, what: str) -> dict[str, tuple[str, list[int]]]:
    """``{name: (dtype, shape)}`` of a safetensors file, read from its header without loading it; a
    file that is not one (a payload or text named .safetensors) is one line naming it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: (str(f.get_slice(k).get_dtype()), list(f.get_slice(k).get_shape())) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for any bad file
        raise BenchError(f"not a safetensors file of {what} ({exc.__class__.__name__})", path) from None


_FLOATS = ("F32", "F16", "BF16", "F64")
_LORA_SUFFIXES = ("lora.down.weight", "lora.up.weight", "lora_A.weight", "lora_B.weight", ".alpha",
                  "lora_down.weight", "lora_up.weight")


def _log_step(what: str, concept: Concept, step: int, steps: int, losses: list[float]) -> None:
    """A line in the run's log.txt at every tenth of the training, with the mean loss since the last."""
    every = max(1, steps // 10)
    if (step + 1) % every == 0 or step + 1 == steps:
        recent = losses[-every:]
        _LOG.info(f"{what} {concept.name}: step {step + 1}/{steps}, loss {sum(recent) / len(recent):.4f}")


def _finished(path: Path) -> bool:
    """Whether a training's record says it finished (an interrupted run may have finished training
    and saved its files, but not told the runner)."""
    meta = read_json(path)
    return isinstance(meta, dict) and bool(meta.get("finished"))


def _resize_square(image, size: int, resample):
    return image.resize((size, size), resample=resample)


class TextualInversion(_DiffusionMethod):
    """Textual inversion: one new embedding row per text encoder, for the concept's token."""

    name = "textual-inversion"
    trains = True
    arguments = {**_ARGS, **_TI_ARGS}

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        a = self.args
        self.train_steps, self.train_batch, self.accumulation = a.train_steps, a.train_batch, a.accumulation
        self.base_lr, self.scale_lr = a.lr, a.scale_lr
        self.lr = self.base_lr * (self.train_batch * self.accumulation if self.scale_lr else 1)
        self.weight_decay, self.flip_p = a.weight_decay, a.flip_p
        self.initializer = a.initializer
        self.embeds = a.embeds

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
        if word == "first-word":  # DreamBench++'s recipe: the first word of the subject phrase
            word = (concept.class_noun or "object").split()[0]
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
            return {"embeds_dir": self._embeds_folder(concept)}
        if not _finished(state_dir / "textual_inversion.json"):
            self._train(concept, state_dir)
        return self._saved(concept, state_dir)

    def load_state(self, concept, state_dir):
        if self.embeds is not None:
            return {"embeds_dir": self._embeds_folder(concept)}
        return self._saved(concept, Path(state_dir))

    @classmethod
    def check_run(cls, args, concepts, tasks):
        """Embeddings trained elsewhere are found and read (their header) before anything is made."""
        if args.embeds is None:
            return
        widths = text_encoder_widths(args.model)  # None: not readable here, diffusers checks at loading
        for concept in concepts:
            base = concept_folder(args.embeds, concept, has_file(EMBEDS_FILES[0]), EMBEDS_FILES[0])
            for encoder, filename in enumerate(EMBEDS_FILES):
                if not (base / filename).is_file():
                    continue
                header = read_header(base / filename, "textual-inversion embeddings")
                shapes = list(header.values())
                if len(header) != 1 or shapes[0][0] not in _FLOATS or len(shapes[0][1]) != 2 or shapes[0][1][0] != 1:
                    raise BenchError(f"expected one float embedding of shape [1, width], found "
                                     f"{ {k: v[1] for k, v in header.items()} }", base / filename)
                if widths is not None and (encoder >= len(widths) or shapes[0][1][1] != widths[encoder]):
                    wanted = f"width {widths[encoder]}" if encoder < len(widths) else "no second text encoder"
                    raise BenchError(f"an embedding of width {shapes[0][1][1]}, but model {args.model}'s text "
                                     f"encoder {encoder + 1} has {wanted}", base / filename)

    def _embeds_folder(self, concept: Concept) -> Path:
        base = concept_folder(self.embeds, concept, has_file(EMBEDS_FILES[0]), EMBEDS_FILES[0])
        if self.host.xl and not (base / EMBEDS_FILES[1]).is_file():
            raise BenchError(f"SDXL needs {EMBEDS_FILES[1]} too (the second text encoder's row)", base)
        return base

    def _saved(self, concept: Concept, state_dir: Path) -> dict:
        return {"rows": [{"embed": t} for t in load_embeds(state_dir, concept.token, self.host)], "embeds_dir": None}

    def _train(self, concept: Concept, state_dir: Path) -> None:
        from PIL import Image, ImageOps

        host = self.host
        res = host.resolution
        photos = [_resize_square(open_rgb(p), res, Image.BICUBIC) for p in _training_photos(concept)]  # once
        init, init_how = self._initial_rows(concept)
        rng = random.Random(f"{self.seed}/{concept.name}/textual-inversion")
        draws = torch.Generator().manual_seed(derive_seed(self.seed, concept.name, "textual-inversion"))
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
                            im = photos[k]
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
                    _log_step("textual inversion", concept, step, self.train_steps, losses)
                rows = [t.exact_rows(i, r) for t, i, r in zip(trainers, ids, init)]
            finally:
                for t in trainers:
                    t.close()
                for e, dt in zip(encoders, dtypes):
                    e.to(dt)
        save_embeds(state_dir, concept.token, [r["embed"] for r in rows])
        write_json_atomic(state_dir / "textual_inversion.json", {
            "format": "diffusers learned_embeds.safetensors", "placeholder": concept.token,
            "initializer": init_how, "train_args": self.describe()["train_args"], "base_model": self.model_name,
            "photos": len(photos), "loss_first": losses[0], "loss_last": losses[-1],
            "loss_mean_last_100": sum(losses[-100:]) / len(losses[-100:]), "steps": len(losses),
            "seconds": round(time.time() - start, 3), "finished": True})


def save_embeds(folder: Path, token: str, rows: list[torch.Tensor]) -> None:
    """diffusers' format: ``{placeholder: [1, dim]}`` in ``learned_embeds.safetensors`` (and
    ``learned_embeds_2.safetensors`` for SDXL's second text encoder)."""
    from safetensors.torch import save_file

    for row, filename in zip(rows, EMBEDS_FILES):
        tensor = row.detach().float().cpu().contiguous()
        atomic_write(folder / filename, lambda tmp: save_file({token: tensor}, str(tmp), metadata={"format": "pt"}))


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
    trains = True
    arguments = {**_ARGS, **_LORA_ARGS}

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        a = self.args
        self.train_steps, self.lr, self.rank, self.train_batch = a.train_steps, a.lr, a.rank, a.train_batch
        self.weight_decay, self.identifier = a.weight_decay, a.identifier.strip()
        self.prior, self.class_images, self.prior_weight = a.prior, a.class_images, a.prior_weight
        self.lora = a.lora

    @classmethod
    def check_arguments(cls, args):
        super().check_arguments(args)
        if not args.identifier.strip():
            raise BenchError("must not be empty", where="--method-arg identifier")

    def describe(self):
        d = super().describe()
        d["train_args"] = None if self.lora else {
            "train_steps": self.train_steps, "lr": self.lr, "rank": self.rank, "lora_alpha": self.rank,
            "init": "gaussian", "targets": LORA_TARGETS, "train_batch": self.train_batch,
            "weight_decay": self.weight_decay, "betas": [0.9, 0.999], "eps": 1e-8, "max_grad_norm": 1.0,
            "schedule": "constant", "identifier": self.identifier, "prior": self.prior,
            "class_images": self.class_images if self.prior else None,
            "prior_weight": self.prior_weight if self.prior else None, "resolution": self.host.resolution,
            "crop": "random", "resize": "lanczos", "exif_transpose": True}
        d["lora"] = str(self.lora) if self.lora else None
        return d

    def instance_phrase(self, concept: Concept) -> str:
        word = concept.token if self.identifier == "token" else "" if self.identifier == "none" else self.identifier
        return f"{word} {concept.class_noun}".strip()

    def _prompt(self, concept, state, prompt):
        # "<c>" or DreamBench's "<c> dog" (its 'a {0} {1} in the jungle') becomes "sks dog": exactly
        # the protocol's 'a {0} {1} in the jungle'.format('sks', 'dog').
        subject = rf"{re.escape(concept.token)}(?:\s+{re.escape(concept.class_noun)}\b)?"
        return " ".join(re.sub(subject, lambda _: self.instance_phrase(concept), prompt).split())

    @contextlib.contextmanager
    def concept_layers(self, concept, state):
        pipe = self.host.pipe
        # A LoRA of the UNet alone (the script's default) made diffusers warn "No LoRA keys associated to
        # CLIPTextModel" on stderr once per concept; that is expected here, so it is not printed.
        with quiet_diffusers():
            pipe.load_lora_weights(str(state["lora_dir"]), weight_name=LORA_FILE, adapter_name=_adapter(concept))
        try:
            yield
        finally:
            pipe.unload_lora_weights()  # the UNet's original modules, not merged: bit-identical

    # ------------------------------------------------------------------ personalization
    def personalize(self, concept, state_dir):
        state_dir = Path(state_dir)
        if self.lora is None and not (_finished(state_dir / "dreambooth_lora.json") and (state_dir / LORA_FILE).is_file()):
            self._train(concept, state_dir)
        return self._lora_state(concept, state_dir)

    def load_state(self, concept, state_dir):
        return self._lora_state(concept, Path(state_dir))

    @classmethod
    def check_run(cls, args, concepts, tasks):
        """LoRAs trained elsewhere are found and read (their header) before anything is made."""
        if args.lora is None:
            return
        for concept in concepts:
            path = concept_folder(args.lora, concept, has_file(LORA_FILE), LORA_FILE) / LORA_FILE
            header = read_header(path, "LoRA weights")
            foreign = [k for k in header if not k.endswith(_LORA_SUFFIXES)]
            if not header or foreign:
                raise BenchError(f"not LoRA weights in diffusers' naming ({len(foreign)} other key(s), e.g. "
                                 f"{foreign[0] if foreign else 'none at all'})", path)
            flat = [k for k, (dtype, shape) in header.items() if dtype not in _FLOATS or
                    (not k.endswith(".alpha") and len(shape) not in (2, 4))]
            if flat:
                raise BenchError(f"LoRA weight {flat[0]} is not a float matrix", path)
            _check_lora_modules(header, args.model, path)

    def _lora_state(self, concept: Concept, state_dir: Path) -> dict:
        if self.lora is not None:
            return {"lora_dir": concept_folder(self.lora, concept, has_file(LORA_FILE), LORA_FILE)}
        return {"lora_dir": state_dir}

    def _crops(self, image, draws: torch.Generator) -> torch.Tensor:
        """The script's transform as of diffusers 0.42 (``train_dreambooth_lora.py``): the photo
        EXIF-transposed when opened (``_training_photos``), torchvision's ``Resize(resolution,
        LANCZOS)`` (its ``--image_interpolation_mode`` default since diffusers PR #11421), then a
        random crop."""
        return self._crop(self._resized(image), draws)

    def _resized(self, image):
        """The transform's deterministic part, done once per photo rather than at every step."""
        from torchvision import transforms

        return transforms.Resize(self.host.resolution, interpolation=transforms.InterpolationMode.LANCZOS)(image)

    def _crop(self, resized, draws: torch.Generator) -> torch.Tensor:
        res = self.host.resolution
        left = int(torch.randint(0, resized.size[0] - res + 1, (), generator=draws))
        top = int(torch.randint(0, resized.size[1] - res + 1, (), generator=draws))
        return self.host.pixels(resized.crop((left, top, left + res, top + res)))

    def _train(self, concept: Concept, state_dir: Path) -> None:
        from peft import LoraConfig
        from peft.utils import get_peft_model_state_dict
        from diffusers.utils import convert_state_dict_to_diffusers

        host, unet = self.host, self.host.pipe.unet
        photos = [self._resized(open_rgb(p, exif_transpose=True)) for p in _training_photos(concept)]
        class_photos = ([self._resized(open_rgb(p, exif_transpose=True))
                         for p in self.class_image_files(concept, state_dir.parent)] if self.prior else [])
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
                pixels = [self._crop(photos[k], draws) for k in picks]
                prompts = [instance_prompt] * len(picks)
                if self.prior:  # instances first, then as many class images, in one batch
                    for _ in picks:
                        if not class_order:
                            class_order = list(range(len(class_photos)))
                            rng.shuffle(class_order)
                        pixels.append(self._crop(class_photos[class_order.pop()], draws))
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
                _log_step("dreambooth-lora", concept, step, self.train_steps, losses)
            layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, adapter_name=_adapter(concept)))
            save_lora(host, state_dir, {k: v.detach().float().cpu().contiguous() for k, v in layers.items()})
        finally:
            unet.unload_lora()  # the original modules back: nothing of this concept stays
        write_json_atomic(state_dir / "dreambooth_lora.json", {
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
                    atomic_write(files[i], lambda tmp: image.save(tmp, format="PNG"))
            self.progress("class images", n, len(calls))
        return files


def _adapter(concept: Concept) -> str:
    return "ub_" + "".join(ch if ch.isalnum() else "_" for ch in concept.name)


_UNET_LORA_KEY = re.compile(r"^unet\.(.+)\.lora(_A|_B|\.down|\.up)\.weight$")


def _check_lora_modules(header: dict, model: str, path: Path) -> None:
    """Each UNet layer of a LoRA (``unet.<module>.lora.down.weight`` as diffusers saves it, or peft's
    ``lora_A``/``lora_B``) must name a module of ``model``'s UNet with its width, else peft fails inside
    the run (a LoRA for another model): refused here, before the run directory, naming the first
    that does not fit."""
    shapes = None
    for key, (_, shape) in header.items():
        found = _UNET_LORA_KEY.match(key)
        if not found:
            continue
        if shapes is None:
            shapes = unet_linear_shapes(model)
            if shapes is None:  # not readable here: diffusers checks when it loads
                return
        module, down = found.group(1), found.group(2) in ("_A", ".down")
        if module not in shapes:
            raise BenchError(f"LoRA layer {key} names no module of model {model}'s UNet (a LoRA of another model?)",
                             path)
        width = shapes[module][0] if down else shapes[module][1]
        if shape[1 if down else 0] != width:
            raise BenchError(f"LoRA layer {key} has shape {shape}, but {module} of model {model}'s UNet has width "
                             f"{width}", path)


def save_lora(host: SDHost, folder: Path, unet_layers: dict[str, torch.Tensor]) -> None:
    """``pytorch_lora_weights.safetensors`` through the pipeline class's own ``save_lora_weights``
    (keys ``unet.…``), written to a temporary name and renamed."""
    atomic_write(folder / LORA_FILE, lambda tmp: type(host.pipe).save_lora_weights(
        save_directory=str(tmp.parent), unet_lora_layers=unet_layers, weight_name=tmp.name, safe_serialization=True))
