"""``textual-inversion``: one new embedding row per text encoder for the concept's token, trained as
diffusers' ``examples/textual_inversion/textual_inversion.py`` trains it (its README command as defaults);
``methods/diffusion/README.md`` says what is faithful and what differs."""
from __future__ import annotations

import contextlib
import random
import time
from pathlib import Path

import torch

from unifybench.kit import rows as kit_rows
from unifybench.errors import BenchError
from unifybench.images import open_rgb
from unifybench.kit.args import Arg, Auto
from unifybench.kit.checkpoints import concept_folder, has_file
from unifybench.kit.files import atomic_write, write_json_atomic
from unifybench.records import Concept
from unifybench.seeding import derive_seed

from .base import SAMPLING_ARGS, DiffusionMethod
from .sd import SDHost, text_encoder_widths
from .training import FLOATS, finished, log_step, read_header, training_photos

# diffusers' textual_inversion.py: the prompts an object is trained under.
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
EMBEDS_FILES = ("learned_embeds.safetensors", "learned_embeds_2.safetensors")  # text encoder 1, 2 (SDXL)

TEXTUAL_INVERSION_ARGS = {
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


def _resize_square(image, size: int, resample):
    return image.resize((size, size), resample=resample)


class TextualInversion(DiffusionMethod):
    """Textual inversion: one new embedding row per text encoder, for the concept's token."""

    name = "textual-inversion"
    trains = True
    arguments = {**SAMPLING_ARGS, **TEXTUAL_INVERSION_ARGS}

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
            ids = [stack.enter_context(kit_rows.NewTokens(slot, [concept.token], r))
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
        if not finished(state_dir / "textual_inversion.json"):
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
                if len(header) != 1 or shapes[0][0] not in FLOATS or len(shapes[0][1]) != 2 or shapes[0][1][0] != 1:
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
        photos = [_resize_square(open_rgb(p), res, Image.BICUBIC) for p in training_photos(concept)]  # once
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
            trainers = [kit_rows.RowTrainer(slot, i, lr=self.lr, weight_decay=self.weight_decay, eps=1e-8, init=r)
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
                    log_step("textual inversion", concept, step, self.train_steps, losses)
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
