"""``dreambooth-lora``: DreamBooth with LoRA on the UNet's attention projections (peft), trained as
diffusers' ``examples/dreambooth/train_dreambooth_lora.py`` trains it (its README command as defaults);
``methods/diffusion/README.md`` says what is faithful and what differs."""
from __future__ import annotations

import contextlib
import random
import re
import time
from pathlib import Path

import torch

from unifybench.errors import BenchError
from unifybench.images import open_rgb
from unifybench.kit.args import Arg
from unifybench.kit.checkpoints import concept_folder, has_file
from unifybench.kit.files import atomic_write, write_json_atomic
from unifybench.records import Concept
from unifybench.seeding import derive_seed, image_seed

from .base import SAMPLING_ARGS, DiffusionMethod
from .sd import SDHost, quiet_diffusers, unet_linear_shapes
from .training import FLOATS, finished, log_step, read_header, training_photos

LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0", "add_k_proj", "add_v_proj"]
LORA_FILE = "pytorch_lora_weights.safetensors"
_LORA_SUFFIXES = ("lora.down.weight", "lora.up.weight", "lora_A.weight", "lora_B.weight", ".alpha",
                  "lora_down.weight", "lora_up.weight")

DREAMBOOTH_LORA_ARGS = {
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



class DreamBoothLoRA(DiffusionMethod):
    """DreamBooth with LoRA on the UNet's attention projections (peft), prior preservation optional."""

    name = "dreambooth-lora"
    trains = True
    arguments = {**SAMPLING_ARGS, **DREAMBOOTH_LORA_ARGS}

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
        if self.lora is None and not (finished(state_dir / "dreambooth_lora.json") and (state_dir / LORA_FILE).is_file()):
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
            flat = [k for k, (dtype, shape) in header.items() if dtype not in FLOATS or
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
        EXIF-transposed when opened (``training_photos``), torchvision's ``Resize(resolution,
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
        photos = [self._resized(open_rgb(p, exif_transpose=True)) for p in training_photos(concept)]
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
                log_step("dreambooth-lora", concept, step, self.train_steps, losses)
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
