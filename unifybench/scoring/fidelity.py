"""CLIP-I, CLIP-T and DINO for generated images, with every protocol defined side by side here.

Protocols (``PROTOCOLS``):

- ``"dreambooth"`` (default): the DreamBooth paper's protocol. CLIP input is OpenAI's own
  preprocessing (shortest side to 224 bicubic, centre-crop 224, CLIP mean/std); DINO input is
  shortest side to 256 bicubic, centre-crop 224, ImageNet mean/std. A generated image's CLIP-I
  (DINO) is its mean cosine to every reference photo of the concept.
- ``"reference"`` (UniCTokens-compatible): our reading of the reference code's CLIP input: shortest
  side to 512, centre-crop 512, to [0, 1], then ``Normalize(mean=-1, std=2)`` -- meant for [-1, 1]
  input, so the pixels land in [0.5, 1] (a bug that shifts every absolute value) -- then resized to
  224 (bicubic, antialiased) for the model. Pairing as dreambooth. DINO is not in the reference code
  and stays as in dreambooth.
- ``"mean-reference"``: dreambooth preprocessing; a generated image is compared with the mean of the
  reference embeddings (renormalised) instead of with each reference photo.

CLIP-T, for every protocol, is the cosine between a generated image and its class prompt (the
prompt with the concept replaced by its class noun).

Decoding and preprocessing is the one picklable function :func:`load_image_inputs`, so it can move
into DataLoader workers unchanged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..errors import BenchError
from ..records import file_digest
from .encoders import Backbones

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BICUBIC = InterpolationMode.BICUBIC


def _resize_crop(img: Image.Image, resize: int, crop: int) -> Image.Image:
    """Shortest side to ``resize`` (bicubic, on the PIL image as OpenAI's preprocessing does), then a
    centre crop of ``crop``."""
    img = TF.resize(img, [resize], interpolation=BICUBIC, antialias=True)
    return TF.center_crop(img, [crop, crop])


def _to_unit(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> float32 [3, H, W] in [0, 1] (as torchvision's ToTensor)."""
    return TF.pil_to_tensor(img).to(torch.float32).div(255)


def clip_dreambooth(img: Image.Image) -> torch.Tensor:
    return TF.normalize(_to_unit(_resize_crop(img, 224, 224)), CLIP_MEAN, CLIP_STD)


def clip_reference(img: Image.Image) -> torch.Tensor:
    x = _to_unit(_resize_crop(img, 512, 512))
    x = TF.normalize(x, [-1.0, -1.0, -1.0], [2.0, 2.0, 2.0])  # the reference's bug: [0,1] -> [0.5,1]
    return TF.resize(x, [224, 224], interpolation=BICUBIC, antialias=True)


def dino_dreambooth(img: Image.Image) -> torch.Tensor:
    return TF.normalize(_to_unit(_resize_crop(img, 256, 224)), IMAGENET_MEAN, IMAGENET_STD)


PROTOCOLS: dict[str, dict] = {
    "dreambooth": {
        "clip": clip_dreambooth, "dino": dino_dreambooth, "pairing": "all",
        "clip_preprocessing": "resize shortest side 224 bicubic (PIL), centre-crop 224, CLIP mean/std",
        "dino_preprocessing": "resize shortest side 256 bicubic (PIL), centre-crop 224, ImageNet mean/std",
    },
    "reference": {
        "clip": clip_reference, "dino": dino_dreambooth, "pairing": "all",
        "clip_preprocessing": ("resize shortest side 512 bicubic (PIL), centre-crop 512, [0,1], "
                               "Normalize(mean=-1, std=2) (reference bug: pixels in [0.5,1]), "
                               "resize 224 bicubic"),
        "dino_preprocessing": "resize shortest side 256 bicubic (PIL), centre-crop 224, ImageNet mean/std",
    },
    "mean-reference": {
        "clip": clip_dreambooth, "dino": dino_dreambooth, "pairing": "mean",
        "clip_preprocessing": "resize shortest side 224 bicubic (PIL), centre-crop 224, CLIP mean/std",
        "dino_preprocessing": "resize shortest side 256 bicubic (PIL), centre-crop 224, ImageNet mean/std",
    },
}
PAIRINGS = {"all": "mean cosine to every reference image",
            "mean": "cosine to the normalised mean reference embedding"}


def decode_image(path: str | Path) -> Image.Image:
    """Open an image file as RGB; an unreadable file raises BenchError naming it."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise BenchError(f"cannot read image: {e}", path=path) from e


def load_image_inputs(path: str | Path, protocol: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one image once and preprocess it for both backbones: (clip input, dino input)."""
    spec = PROTOCOLS[protocol]
    img = decode_image(path)
    return spec["clip"](img), spec["dino"](img)


class FidelityScorer:
    """Embeds images and prompts with :class:`Backbones` and scores generated images.

    Embeddings are memoised by file content (sha256), so a repeated image -- the same reference set
    for every prompt of a concept, or a duplicate file -- is decoded and encoded once.
    """

    def __init__(self, backbones: Backbones, protocol: str = "dreambooth", batch_size: int = 32,
                 device: str = "cpu"):
        if protocol not in PROTOCOLS:
            raise BenchError(f"unknown fidelity protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})",
                             where="protocol")
        if batch_size < 1:
            raise BenchError(f"batch size must be at least 1, not {batch_size}", where="batch_size")
        self.backbones = backbones
        self.protocol = protocol
        self.batch_size = batch_size
        self.device = device
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # digest -> (clip, dino), on CPU

    # ------------------------------------------------------------------------------ embeddings

    def _digest(self, path: Path) -> str:
        try:
            return file_digest(Path(path))
        except OSError as e:
            raise BenchError(f"cannot read image: {e.strerror or e}", path=path) from e

    def embed_images(self, paths: Sequence[str | Path]) -> dict[str, torch.Tensor]:
        """{"clip": [N, D], "dino": [N, D']} unit vectors (float32, CPU), rows aligned with ``paths``."""
        digests = [self._digest(Path(p)) for p in paths]
        todo: dict[str, Path] = {}
        for d, p in zip(digests, paths):
            if d not in self._cache and d not in todo:
                todo[d] = Path(p)
        items = list(todo.items())
        for start in range(0, len(items), self.batch_size):
            chunk = items[start:start + self.batch_size]
            inputs = [load_image_inputs(p, self.protocol) for _, p in chunk]
            clip_in = torch.stack([c for c, _ in inputs]).to(self.device)
            dino_in = torch.stack([d for _, d in inputs]).to(self.device)
            clip_out = self.backbones.clip_image(clip_in).cpu()
            dino_out = self.backbones.dino_image(dino_in).cpu()
            for i, (d, _) in enumerate(chunk):
                self._cache[d] = (clip_out[i].clone(), dino_out[i].clone())
        if not digests:
            return {"clip": torch.empty(0, 0), "dino": torch.empty(0, 0)}
        return {"clip": torch.stack([self._cache[d][0] for d in digests]),
                "dino": torch.stack([self._cache[d][1] for d in digests])}

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """[N, D] unit CLIP text vectors (float32, CPU), rows aligned with ``texts``."""
        unique = list(dict.fromkeys(texts))
        rows: dict[str, torch.Tensor] = {}
        for start in range(0, len(unique), self.batch_size):
            chunk = unique[start:start + self.batch_size]
            out = self.backbones.clip_text(chunk).cpu()
            rows.update({t: out[i] for i, t in enumerate(chunk)})
        if not texts:
            return torch.empty(0, 0)
        return torch.stack([rows[t] for t in texts])

    # --------------------------------------------------------------------------------- scores

    def _pair(self, gen: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        if PROTOCOLS[self.protocol]["pairing"] == "mean":
            return gen @ F.normalize(ref.mean(0), dim=-1)
        return (gen @ ref.T).mean(1)

    def score(self, refs: Sequence[str | Path], gens: Sequence[str | Path],
              texts: Sequence[str] | None = None) -> dict[str, list[float]]:
        """Per generated image: "clip_i", "dino" and (when ``texts`` is given, ``texts[i]`` being the
        class prompt of ``gens[i]``) "clip_t"; lists aligned with ``gens``."""
        if texts is not None and len(texts) != len(gens):
            raise BenchError(f"{len(texts)} prompts for {len(gens)} generated images", where="texts")
        if not refs:
            raise BenchError("no reference images to compare generated images with", where="refs")
        out: dict[str, list[float]] = {"clip_i": [], "dino": []}
        if texts is not None:
            out["clip_t"] = []
        if not gens:
            return out
        ref = self.embed_images(refs)
        gen = self.embed_images(gens)
        out["clip_i"] = self._pair(gen["clip"], ref["clip"]).tolist()
        out["dino"] = self._pair(gen["dino"], ref["dino"]).tolist()
        if texts is not None:
            out["clip_t"] = (gen["clip"] * self.embed_texts(texts)).sum(-1).tolist()
        return out

    def describe(self) -> dict:
        spec = PROTOCOLS[self.protocol]
        return {
            "protocol": self.protocol,
            "pairing": PAIRINGS[spec["pairing"]],
            "clip_preprocessing": spec["clip_preprocessing"],
            "dino_preprocessing": spec["dino_preprocessing"],
            "batch_size": self.batch_size,
            "device": str(self.device),
            "dtype": self.backbones.dtype,
            "backbones": self.backbones.describe(),
        }
