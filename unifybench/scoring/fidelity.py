"""CLIP-I, CLIP-T and DINO for generated images, with every protocol defined side by side here.

Protocols (``PROTOCOLS``):

- ``"dreambooth"`` (default): the DreamBooth paper's protocol. CLIP input is OpenAI's own
  preprocessing (shortest side to 224 bicubic, centre-crop 224, CLIP mean/std); DINO input is
  shortest side to 256 bicubic, centre-crop 224, ImageNet mean/std. A generated image's CLIP-I
  (DINO) is its mean cosine to every reference photo of the concept.
- ``"reference"`` (UniCTokens-compatible, ``eval/clip_eval.py``): shortest side to 512, centre-crop
  512, to [0, 1], then ``Normalize(mean=-1, std=2)`` -- meant for [-1, 1] input, so the pixels land
  in [0.5, 1] (a bug that shifts every absolute value) -- then the tail of CLIP's own transform:
  resize 224 (bicubic, antialiased), centre-crop 224, CLIP mean/std. Pairing as dreambooth. DINO is
  not in the reference code and stays as in dreambooth.
- ``"mean-reference"`` (Yo'Chameleon's ``evaluation/clip_image_similarity.py``, ``CLIPEvaluator``):
  CLIP input is their ``CLIPImageProcessor`` (shortest side to 224 bicubic, centre-crop 224 with the
  offset rounded down, CLIP mean/std); a generated image's CLIP-I is its cosine to the mean of the
  reference photos' raw (unnormalised) CLIP features; CLIP ViT-L/14, their encoder, by default.
  DINO is not in their code and stays as in dreambooth.
- ``"dreambench_plus"`` (DreamBench++'s CLIP/DINO, ``metrics/clip_score.py`` and ``dino_score.py``
  at 66ca27e): source and generated image stored as JPEG first (their generate_images.py saves both
  as .jpg), then CLIP's own preprocessing (their ``CLIPProcessor`` of openai/clip-vit-base-patch32)
  and for DINO resize 256 bicubic, crop 224, ImageNet mean/std, with DINO v1 ViT-S/8 (their
  ``dino_vits8``; :data:`.encoders.DINO_VITS8`). Pairs are 1:1, each generated image with its one
  source image: a DreamBench++ subject has one reference photo, so pairing "all" is exactly that.
  Their scores are x100; ours stay cosines.

CLIP-T, for every protocol, is the cosine between a generated image and its class prompt (the
prompt with the concept replaced by its class noun). CLIP-I and CLIP-T share one CLIP encoding of
each image.

Images stream through :mod:`.pipeline` (decoding in worker processes, nvJPEG on CUDA); only
embeddings and per-image scores are kept. Reference embeddings are computed once per concept and
kept in memory and on disk (:mod:`.cache`). Encoders run in fp32 on the CPU and under bf16
autocast on CUDA.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..devices import check_device
from ..errors import BenchError
from ..records import file_digest
from .cache import EmbeddingCache, cache_key, default_cache_dir, weights_fingerprint
from .encoders import Backbones
from ..images import open_rgb
from .pipeline import default_num_workers, gpu_jpeg_available, stream_inputs

__all__ = ["PROTOCOLS", "FidelityScorer", "load_image_inputs", "score_folders"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BICUBIC = InterpolationMode.BICUBIC


# Every transform takes either one decoded RGB image as PIL (in a CPU worker) and returns a float32
# [3, 224, 224] tensor, or a uint8 [N, 3, H, W] stack of images decoded on the GPU by nvJPEG and
# returns [N, 3, 224, 224].

def _resize_crop(img, resize: int, crop: int):
    """Shortest side to ``resize`` (bicubic, antialiased, on the uint8 image as OpenAI's
    preprocessing does), then a centre crop of ``crop``."""
    img = TF.resize(img, [resize], interpolation=BICUBIC, antialias=True)
    return TF.center_crop(img, [crop, crop])


def _to_unit(img) -> torch.Tensor:
    """RGB uint8 -> float32 [3, H, W] in [0, 1] (as torchvision's ToTensor)."""
    if isinstance(img, Image.Image):
        img = TF.pil_to_tensor(img)
    return img.to(torch.float32).div(255)


def clip_dreambooth(img) -> torch.Tensor:
    return TF.normalize(_to_unit(_resize_crop(img, 224, 224)), CLIP_MEAN, CLIP_STD)


def clip_reference(img) -> torch.Tensor:
    """The reference's ``image_transform`` (Resize 512 bicubic, CenterCrop 512, ToTensor), then its
    ``CLIPEvaluator.preprocess``: ``Normalize(mean=-1, std=2)`` (meant for [-1, 1] input, so [0, 1]
    pixels land in [0.5, 1]: the bug), then CLIP's own transform without its PIL steps
    (``clip_preprocess.transforms[:2] + [4:]``): Resize 224 bicubic, CenterCrop 224, Normalize(CLIP)."""
    x = _to_unit(_resize_crop(img, 512, 512))
    x = TF.normalize(x, [-1.0, -1.0, -1.0], [2.0, 2.0, 2.0])
    x = _resize_crop(x, 224, 224)
    return TF.normalize(x, CLIP_MEAN, CLIP_STD)


def _floor_center_crop(img, crop: int):
    """A centre crop whose offset is rounded down, as transformers' ``center_crop`` (``(h - crop) //
    2``); torchvision's rounds half to even, a pixel further when the margin is 3 mod 4."""
    if isinstance(img, Image.Image):
        width, height = img.size
        top, left = (height - crop) // 2, (width - crop) // 2
        return img.crop((left, top, left + crop, top + crop))
    height, width = img.shape[-2:]
    top, left = (height - crop) // 2, (width - crop) // 2
    return img[..., top:top + crop, left:left + crop]


def clip_yochameleon(img) -> torch.Tensor:
    """Yo'Chameleon's ``CLIPEvaluator.preprocess``: the ``CLIPImageProcessor`` of
    ``openai/clip-vit-large-patch14`` (transformers 4.47's, PIL): shortest side to 224 bicubic, centre
    crop 224 (offset rounded down), rescale by 1/255 in float64 then float32, CLIP mean/std."""
    img = _floor_center_crop(TF.resize(img, [224], interpolation=BICUBIC, antialias=True), 224)
    if isinstance(img, Image.Image):
        img = TF.pil_to_tensor(img)
    x = (img.to(torch.float64) * (1 / 255)).to(torch.float32)
    return TF.normalize(x, CLIP_MEAN, CLIP_STD)


def dino_dreambooth(img) -> torch.Tensor:
    return TF.normalize(_to_unit(_resize_crop(img, 256, 224)), IMAGENET_MEAN, IMAGENET_STD)


def _their_jpeg(img):
    """The image as DreamBench++ scores it: stored as .jpg (PIL's default quality 75) and read back."""
    if isinstance(img, Image.Image):
        buffer = io.BytesIO()
        img.convert("RGB").save(buffer, format="JPEG")
        buffer.seek(0)
        with Image.open(buffer) as stored:
            return stored.convert("RGB")
    from torchvision.io import decode_jpeg, encode_jpeg  # uint8 [3, H, W] or [N, 3, H, W] decoded on the GPU

    if img.dim() == 3:
        return decode_jpeg(encode_jpeg(img.cpu(), quality=75)).to(img.device)
    return torch.stack([decode_jpeg(encode_jpeg(x.cpu(), quality=75)) for x in img]).to(img.device)


def clip_dreambench_plus(img) -> torch.Tensor:
    return clip_dreambooth(_their_jpeg(img))


def dino_dreambench_plus(img) -> torch.Tensor:
    return dino_dreambooth(_their_jpeg(img))


_CLIP_DB = "resize shortest side 224 bicubic (PIL), centre-crop 224, CLIP mean/std"
_DINO_DB = "resize shortest side 256 bicubic (PIL), centre-crop 224, ImageNet mean/std"
# Per protocol: each encoder's transform and pairing (PAIRINGS), and optionally the CLIP it is
# defined with ("clip_model", else encoders.DEFAULT_CLIP).
PROTOCOLS: dict[str, dict] = {
    "dreambooth": {
        "clip": clip_dreambooth, "dino": dino_dreambooth, "clip_pairing": "all", "dino_pairing": "all",
        "clip_preprocessing": _CLIP_DB, "dino_preprocessing": _DINO_DB,
    },
    "reference": {
        "clip": clip_reference, "dino": dino_dreambooth, "clip_pairing": "all", "dino_pairing": "all",
        "clip_preprocessing": ("resize shortest side 512 bicubic (PIL), centre-crop 512, [0,1], "
                               "Normalize(mean=-1, std=2) (reference bug: pixels in [0.5,1]), "
                               "resize 224 bicubic, centre-crop 224, CLIP mean/std"),
        "dino_preprocessing": _DINO_DB,
    },
    "dreambench_plus": {
        "clip": clip_dreambench_plus, "dino": dino_dreambench_plus, "clip_pairing": "all", "dino_pairing": "all",
        "clip_preprocessing": "stored as JPEG (PIL quality 75), then " + _CLIP_DB,
        "dino_preprocessing": "stored as JPEG (PIL quality 75), then " + _DINO_DB + " (DINO v1 ViT-S/8)",
    },
    "mean-reference": {
        "clip": clip_yochameleon, "dino": dino_dreambooth, "clip_pairing": "raw-mean", "dino_pairing": "all",
        "clip_model": "ViT-L-14",
        "clip_preprocessing": ("their CLIPImageProcessor: resize shortest side 224 bicubic (PIL), centre-crop 224 "
                               "(offset rounded down), rescale 1/255 in float64, CLIP mean/std"),
        "dino_preprocessing": _DINO_DB,
    },
}
PAIRINGS = {"all": "mean cosine to every reference image",
            "raw-mean": "cosine to the mean of the reference images' raw (unnormalised) features"}
IMAGE_ENCODERS = ("clip", "dino")


_PROBE_FINGERPRINTS: dict[object, str] = {}


def transform_fingerprint(transform) -> str:
    """A hash of what ``transform`` makes of a fixed synthetic image: part of the reference-embedding
    cache key, so that any change to a preprocessing function (not only to its description) gets
    new cache entries instead of replaying embeddings of the old preprocessing."""
    if transform not in _PROBE_FINGERPRINTS:
        ramp = torch.arange(61 * 47 * 3, dtype=torch.int64).reshape(61, 47, 3).mul(37).remainder(256)
        probe = Image.fromarray(ramp.to(torch.uint8).numpy(), "RGB")
        out = transform(probe).to(torch.float32).contiguous().numpy().tobytes()
        _PROBE_FINGERPRINTS[transform] = hashlib.sha256(out).hexdigest()[:16]
    return _PROBE_FINGERPRINTS[transform]


def load_image_inputs(path: str | Path, protocol: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one image once and preprocess it for both backbones: (clip input, dino input)."""
    spec = PROTOCOLS[protocol]
    img = open_rgb(path)
    return spec["clip"](img), spec["dino"](img)


def _when_done(indices: list[int], emb: dict[str, torch.Tensor], done) -> tuple[list[int], dict[str, torch.Tensor]]:
    if done is not None:
        done.synchronize()  # the queued device-to-host copies of this batch have landed
    return indices, emb


def pair_scores(gen: torch.Tensor, ref: torch.Tensor, pairing: str, left_out: Sequence[int | None] = ()) -> torch.Tensor:
    """Per generated row (a unit vector): mean cosine to every reference row ("all": unit rows) or
    cosine to the mean of the reference rows ("raw-mean": raw features, averaged before any
    normalisation, as Yo'Chameleon's CLIPEvaluator averages ``get_image_features``). ``left_out[k]``,
    when not None, is the reference row that generated row k *is* (the same file bytes): it is
    compared with the other references only, as DreamBooth's real-image upper bound compares each
    real photo with the others."""
    def against(rows: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
        if pairing == "raw-mean":
            return rows @ F.normalize(refs.mean(0), dim=-1)
        return (rows @ refs.T).mean(-1)

    scores = against(gen, ref)
    for k, j in enumerate(left_out):
        if j is not None and ref.shape[0] > 1:
            scores[k] = against(gen[k], torch.cat([ref[:j], ref[j + 1:]]))
    return scores


def raw_encoders(protocol: str) -> frozenset[str]:
    """The encoders whose reference features ``protocol`` averages raw."""
    spec = PROTOCOLS[protocol]
    return frozenset(name for name in IMAGE_ENCODERS if spec[f"{name}_pairing"] == "raw-mean")


_DEFAULT = object()


def _reference_copies(refs: Sequence, gens: Sequence, digest, offset: int) -> dict[int, int]:
    """{offset + i: j} for each generated image i whose bytes are reference photo j's. Only files of
    a reference's size are hashed, so a run of generated images costs a stat each."""
    def size(path) -> int:
        try:
            return Path(path).stat().st_size
        except OSError:  # unreadable: the stream that embeds it says so, naming the file
            return -1

    sizes = {size(r) for r in refs} - {-1}
    candidates = [i for i, g in enumerate(gens) if size(g) in sizes]
    if not candidates:
        return {}
    ref_index = {}
    for j, r in enumerate(refs):
        ref_index.setdefault(digest(Path(r)), j)
    found = {}
    for i in candidates:
        j = ref_index.get(digest(Path(gens[i])))
        if j is not None:
            found[offset + i] = j
    return found


class FidelityScorer:
    """Scores generated images against reference photos with :class:`Backbones`.

    ``batch_size`` images go to the encoders at a time; ``num_workers`` processes decode
    (default: one per core for jobs of 64 images or more); ``cache_dir`` holds reference embeddings
    (default ``$UNIFYBENCH_CACHE`` or ``~/.cache/unifybench``; None disables the disk cache).
    """

    def __init__(self, backbones: Backbones, protocol: str = "dreambooth", batch_size: int = 32,
                 device: str | None = None, *, num_workers: int | None = None,
                 cache_dir=_DEFAULT, gpu_decode: bool | None = None):
        if protocol not in PROTOCOLS:
            raise BenchError(f"unknown fidelity protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})",
                             where="protocol")
        if batch_size < 1:
            raise BenchError(f"batch size must be at least 1, not {batch_size}", where="batch_size")
        self.backbones = backbones
        self.protocol = protocol
        self.batch_size = batch_size
        self.device = str(device or backbones.device)
        self.num_workers = num_workers
        self.gpu_decode = gpu_jpeg_available(self.device) if gpu_decode is None else gpu_decode
        self.cache = EmbeddingCache(default_cache_dir() if cache_dir is _DEFAULT else cache_dir)
        self._refs: dict[str, dict[str, torch.Tensor]] = {}  # cache key -> reference embeddings
        self._texts: dict[str, torch.Tensor] = {}
        self._fingerprints: dict[str, str] = {}

    # ------------------------------------------------------------------------------ embeddings

    @property
    def transforms(self) -> dict:
        spec = PROTOCOLS[self.protocol]
        return {name: spec[name] for name in IMAGE_ENCODERS}

    def _encode(self, name: str, batch: torch.Tensor, raw: bool = False) -> torch.Tensor:
        """Embeddings (unit vectors, or with ``raw`` the features as the encoder gives them) on the host.
        From a GPU the copy is only queued (into pinned memory): the caller waits for it with the
        event :meth:`stream` records, one batch later."""
        encode = self.backbones.clip_image if name == "clip" else self.backbones.dino_image
        out = encode(batch, normalize=not raw)
        if out.device.type != "cuda":
            return out.cpu()
        host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
        return host.copy_(out, non_blocking=True)

    def stream(self, paths: Sequence[str | Path], raw: frozenset[str] = frozenset()):
        """Yield ``(indices, {"clip": [B, D], "dino": [B, D']})`` unit vectors (float32, CPU; raw
        features for the encoders named in ``raw``) over ``paths`` in order, one decode of each image
        shared by both encoders.

        A batch is yielded once the next one has been fetched, decoded and queued behind it: on a
        GPU the encoders then work on batch k while the host reads and decodes batch k + 1, instead
        of the two taking turns. (On the CPU everything is synchronous and this changes nothing.)"""
        pending = None
        for indices, batch in stream_inputs(paths, self.transforms, batch_size=self.batch_size,
                                            device=self.device, num_workers=self.num_workers,
                                            gpu_decode=self.gpu_decode):
            emb = {name: self._encode(name, batch[name], name in raw) for name in IMAGE_ENCODERS}
            done = None
            if torch.device(self.device).type == "cuda":
                done = torch.cuda.Event()
                done.record()
            if pending is not None:
                yield _when_done(*pending)
            pending = (indices, emb, done)
        if pending is not None:
            yield _when_done(*pending)

    def embed_images(self, paths: Sequence[str | Path], raw: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
        """{"clip": [N, D], "dino": [N, D']} unit vectors (float32, CPU; raw features for the encoders
        named in ``raw``), rows aligned with ``paths``; a path given twice is decoded and encoded once."""
        unique = list(dict.fromkeys(Path(p) for p in paths))
        if not unique:
            return {"clip": torch.empty(0, 0), "dino": torch.empty(0, 0)}
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in IMAGE_ENCODERS}
        for _, emb in self.stream(unique, raw):
            for name in IMAGE_ENCODERS:
                parts[name].append(emb[name])
        rows = {p: i for i, p in enumerate(unique)}
        order = torch.tensor([rows[Path(p)] for p in paths])
        return {name: torch.cat(parts[name])[order] for name in IMAGE_ENCODERS}

    def _encoder_id(self, name: str) -> str:
        if name not in self._fingerprints:
            model = self.backbones.clip_model if name == "clip" else self.backbones.dino_model
            self._fingerprints[name] = f"{self.backbones.info.get(name, name)}|{weights_fingerprint(model)}"
        return self._fingerprints[name]

    def _digest(self, path: Path) -> str:
        return file_digest(Path(path))  # an unreadable file: a BenchError naming it

    def reference_embeddings(self, refs: Sequence[str | Path]) -> dict[str, torch.Tensor]:
        """Reference embeddings, computed once per photo set and scorer configuration: in memory for
        this scorer, on disk across processes (keyed by the photos' content, encoder weights,
        preprocessing and dtype)."""
        digests = [self._digest(Path(p)) for p in refs]
        spec = PROTOCOLS[self.protocol]
        raw = raw_encoders(self.protocol)
        keys = {name: cache_key(digests, self._encoder_id(name),
                                f"{spec[f'{name}_preprocessing']}|{transform_fingerprint(spec[name])}"
                                + ("|raw features" if name in raw else ""),
                                f"{self.backbones.dtype}|{self.decode_description}")
                for name in IMAGE_ENCODERS}
        memo_key = "|".join(keys[n] for n in IMAGE_ENCODERS)
        if memo_key in self._refs:
            return self._refs[memo_key]
        found = {name: self.cache.get(keys[name]) for name in IMAGE_ENCODERS}
        if any(v is None or v.shape[0] != len(refs) for v in found.values()):
            found = self.embed_images(refs, raw)
            for name in IMAGE_ENCODERS:
                self.cache.put(keys[name], found[name])
        self._refs[memo_key] = found
        return found

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """[N, D] unit CLIP text vectors (float32, CPU), rows aligned with ``texts``."""
        unique = [t for t in dict.fromkeys(texts) if t not in self._texts]
        for start in range(0, len(unique), self.batch_size):
            chunk = unique[start:start + self.batch_size]
            out = self.backbones.clip_text(chunk).cpu()
            self._texts.update({t: out[i] for i, t in enumerate(chunk)})
        if not texts:
            return torch.empty(0, 0)
        return torch.stack([self._texts[t] for t in texts])

    # --------------------------------------------------------------------------------- scores

    def score(self, refs: Sequence[str | Path], gens: Sequence[str | Path],
              texts: Sequence[str] | None = None, progress=None) -> dict[str, list[float]]:
        """Per generated image: "clip_i", "dino" and (when ``texts`` is given, ``texts[i]`` being the
        class prompt of ``gens[i]``) "clip_t"; lists aligned with ``gens``. The generated images
        stream through the pipeline: only their scores are kept."""
        return self.score_many([(refs, gens, texts)], progress=progress)[0]

    def score_many(self, groups: Sequence[tuple[Sequence, Sequence, Sequence[str] | None]],
                   progress=None) -> list[dict[str, list[float]]]:
        """:meth:`score` for several ``(refs, gens, texts)`` groups (one per concept) in one stream,
        so batches stay full across concepts and worker processes start once. ``progress(n)`` is
        called as each batch of n generated images is scored."""
        results: list[dict[str, list[float]]] = []
        flat_gens: list[Path] = []
        owner: list[tuple[int, int]] = []  # flat index -> (group, index in group)
        refs_of: list[dict[str, torch.Tensor]] = []
        same_as_ref: dict[int, int] = {}  # flat index of a generated image that is a reference photo -> that photo
        texts_all: list[str] = []
        for g, (refs, gens, texts) in enumerate(groups):
            if texts is not None and len(texts) != len(gens):
                raise BenchError(f"{len(texts)} prompts for {len(gens)} generated images", where="texts")
            if not refs:
                raise BenchError("no reference images to compare generated images with", where="refs")
            out: dict[str, list[float]] = {"clip_i": [0.0] * len(gens), "dino": [0.0] * len(gens)}
            if texts is not None:
                out["clip_t"] = [0.0] * len(gens)
                texts_all.extend(texts)
            results.append(out)
            refs_of.append(self.reference_embeddings(refs) if gens else {})
            same_as_ref.update(_reference_copies(refs, gens, self._digest, offset=len(flat_gens)))
            flat_gens.extend(Path(p) for p in gens)
            owner.extend((g, i) for i in range(len(gens)))
        if not flat_gens:
            return results
        self.embed_texts(list(dict.fromkeys(texts_all)))  # every class prompt once, up front
        spec = PROTOCOLS[self.protocol]
        for indices, emb in self.stream(flat_gens):
            # Score a batch's rows of each group with one matrix product, not one image at a time.
            rows_of_group: dict[int, list[int]] = {}
            for k, flat in enumerate(indices):
                rows_of_group.setdefault(owner[flat][0], []).append(k)
            for g, rows in rows_of_group.items():
                positions = [owner[indices[k]][1] for k in rows]
                ref, out, texts = refs_of[g], results[g], groups[g][2]
                clip = emb["clip"][rows]
                left_out = [same_as_ref.get(indices[k]) for k in rows]
                scores = {"clip_i": pair_scores(clip, ref["clip"], spec["clip_pairing"], left_out),
                          "dino": pair_scores(emb["dino"][rows], ref["dino"], spec["dino_pairing"], left_out)}
                if texts is not None:
                    prompts = torch.stack([self._texts[texts[i]] for i in positions])
                    scores["clip_t"] = (clip * prompts).sum(1)
                for metric, values in scores.items():
                    for i, value in zip(positions, values.tolist()):
                        out[metric][i] = value
            if progress is not None:
                progress(len(indices))
        return results

    @property
    def decode_description(self) -> str:
        if self.gpu_decode:
            return "JPEG: nvJPEG on the GPU, preprocessing on tensors; other formats: PIL in worker processes"
        return "PIL in worker processes"

    def describe(self) -> dict:
        spec = PROTOCOLS[self.protocol]
        workers = self.num_workers if self.num_workers is not None else \
            f"{default_num_workers()} for jobs of 64 images or more, else 0"
        return {
            "protocol": self.protocol,
            "pairing": (PAIRINGS[spec["clip_pairing"]] if spec["clip_pairing"] == spec["dino_pairing"] else
                        f"CLIP-I: {PAIRINGS[spec['clip_pairing']]}; DINO: {PAIRINGS[spec['dino_pairing']]}"),
            "clip_preprocessing": spec["clip_preprocessing"],
            "dino_preprocessing": spec["dino_preprocessing"],
            "decode": self.decode_description,
            "decode_workers": workers,
            "batch_size": self.batch_size,
            "device": str(self.device),
            "dtype": self.backbones.dtype,
            "reference_cache": str(self.cache.root) if self.cache.enabled else "off",
            "backbones": self.backbones.describe(),
        }


# ------------------------------------------------------------------ folders (`unifybench score-images`)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CONCEPT_TOKEN = re.compile(r"<[^<>\s]+>")


def list_image_files(folder: str | Path, what: str) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted by relative path; BenchError when none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BenchError("not a folder", path=folder, where=what)
    files = sorted((p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                   key=lambda p: p.relative_to(folder).as_posix())
    if not files:
        raise BenchError(f"no image files ({', '.join(IMAGE_SUFFIXES)})", path=folder, where=what)
    return files


def prompts_for(gens: list[Path], gens_root: Path, prompt: str | None, prompts_file: Path | None,
                class_noun: str | None) -> list[str] | None:
    """One class prompt per generated image, or None when no prompt was given.

    ``prompts_file`` is a JSON object mapping a path relative to ``gens_root`` -- an image, or a
    folder for every image under it (the deepest folder wins) -- to its prompt. With ``class_noun``
    every concept token ``<...>`` in a prompt becomes the noun ("a <bo> on a beach" -> "a dog on a beach").
    """
    if prompt is not None and prompts_file is not None:
        raise BenchError("give --prompt or --prompts, not both", where="--prompts")
    if prompt is None and prompts_file is None:
        return None
    if prompts_file is not None:
        try:
            mapping = json.loads(Path(prompts_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise BenchError(f"cannot read prompts: {e}", path=prompts_file) from e
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise BenchError('expected a JSON object {"relative/path": "prompt", ...}', path=prompts_file)
        table = {Path(k).as_posix().strip("/"): v for k, v in mapping.items()}
        texts = []
        for g in gens:
            rel = g.relative_to(gens_root).as_posix()
            parts = rel.split("/")
            keys = [rel] + ["/".join(parts[:n]) for n in range(len(parts) - 1, 0, -1)] + [""]
            found = next((table[k] for k in keys if k in table), None)
            if found is None:
                raise BenchError(f"no prompt for generated image {rel}", path=prompts_file)
            texts.append(found)
    else:
        texts = [prompt] * len(gens)  # type: ignore[list-item]
    if class_noun:
        texts = [CONCEPT_TOKEN.sub(class_noun, t) for t in texts]
    return texts


def score_folders(refs_dir: str | Path, gens_dir: str | Path, *, backbones: str = "default",
                  protocol: str = "dreambooth", prompt: str | None = None, prompts_file: Path | None = None,
                  class_noun: str | None = None, batch_size: int = 64, device: str = "cpu",
                  num_workers: int | None = None, seed: int = 0, clip_name: str | None = None,
                  progress=None) -> dict:
    """Score a folder of generated images against a folder of reference photos: one summary object
    (mean CLIP-I, DINO and, with prompts, CLIP-T over every generated image). ``clip_name``: the
    protocol's own CLIP when None (:func:`protocol_clip`)."""
    from .encoders import load_backbones

    if protocol not in PROTOCOLS:
        raise BenchError(f"unknown protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})", where="--protocol")
    clip_name = clip_name or protocol_clip(protocol)
    check_device(device)
    refs = list_image_files(refs_dir, "--refs")
    gens = list_image_files(gens_dir, "--gens")
    texts = prompts_for(gens, Path(gens_dir), prompt, prompts_file, class_noun)
    scorer = FidelityScorer(load_backbones(backbones, device=device, seed=seed, clip_name=clip_name), protocol,
                            batch_size=batch_size, device=device, num_workers=num_workers)
    # progress(n, total): n more of the total generated images scored
    scores = scorer.score(refs, gens, texts, progress=None if progress is None else lambda n: progress(n, len(gens)))
    out: dict = {"clip_i": sum(scores["clip_i"]) / len(gens)}
    if texts is not None:
        out["clip_t"] = sum(scores["clip_t"]) / len(gens)
    out["dino"] = sum(scores["dino"]) / len(gens)
    scoring = scorer.describe()
    out.update({"n_refs": len(refs), "n_gens": len(gens), "protocol": protocol,
                "backbones": scoring.pop("backbones"), "scoring": scoring})
    if backbones != "default":
        out["label"] = "random-init weights: plumbing and speed only, not a result"
    return out


def protocol_clip(protocol: str) -> str:
    """The CLIP a protocol is defined with: ViT-L/14 for Yo'Chameleon's, else the default (ViT-B/32)."""
    from .encoders import DEFAULT_CLIP

    return PROTOCOLS[protocol].get("clip_model", DEFAULT_CLIP)


# A generated image is taken for a copy of a reference photo when its grey 16 x 16 thumbnail
# (centred, unit length) correlates with the thumbnail of the reference, or of one of its variants,
# at COPY_SIMILARITY or more. Variants: the photo cropped by up to 8% on each axis (COPY_CROPS of
# the width and of the height, at either edge or centred) and each of those mirrored, so a copy
# that was mirrored, cropped by a few percent, rescaled or re-encoded is caught. Measured on the
# bundled mini bench's DreamBench photos (tests/test_copies.py): such copies correlate at 0.98 or
# more (a 10% crop at 0.95), while two different photos of one concept reach at most 0.89.
COPY_SIMILARITY = 0.97
COPY_CROPS = (1.0, 0.96, 0.92)
_THUMB = 16


def thumbnail_vector(image: Image.Image):
    """The grey ``16 x 16`` thumbnail of ``image`` as a centred vector of unit length."""
    import numpy as np

    grey = np.asarray(image.convert("L").resize((_THUMB, _THUMB), Image.BILINEAR, reducing_gap=2.0),
                      dtype=np.float64).reshape(-1)
    grey -= grey.mean()
    return grey / max(float(np.linalg.norm(grey)), 1e-9)


def reference_variants(path: Path):
    """The thumbnail vectors a copy of this reference photo may have (rows of one array): the photo
    cropped by each of :data:`COPY_CROPS` on each axis, at either edge or centred, and mirrored."""
    import numpy as np

    from ..images import open_rgb

    photo = open_rgb(path).convert("RGB")
    photo.thumbnail((256, 256))
    w, h = photo.size
    crops = []
    for sx in COPY_CROPS:
        for sy in COPY_CROPS:
            cw, ch = round(w * sx), round(h * sy)
            crops += [photo.crop((x, y, x + cw, y + ch)) for x in sorted({0, (w - cw) // 2, w - cw})
                      for y in sorted({0, (h - ch) // 2, h - ch})]
    crops += [c.transpose(Image.FLIP_LEFT_RIGHT) for c in crops]
    return np.stack([thumbnail_vector(c) for c in crops])


def copy_flags(references: list[Path], images: list[Path]) -> list[str | None]:
    """Per generated image: ``"exact"`` (the bytes of a reference photo), ``"near"`` (a reference
    photo mirrored, cropped by a few percent, rescaled or re-encoded: :data:`COPY_SIMILARITY`) or
    None. A method returning the photos the scores compare against would otherwise beat the
    real-images upper bound unnoticed."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from ..images import open_rgb

    ref_digests = {file_digest(Path(r)) for r in references}
    variants = np.concatenate([reference_variants(Path(r)) for r in references]) if references else None

    def flag(image) -> str | None:
        if file_digest(Path(image)) in ref_digests:
            return "exact"
        if variants is None:
            return None
        vector = thumbnail_vector(open_rgb(Path(image)))
        return "near" if float((variants @ vector).max()) >= COPY_SIMILARITY else None

    # Each image is decoded once more here (the pipeline's workers kept no pixels): spread over the
    # cores, as PIL decodes without holding the GIL.
    with ThreadPoolExecutor(max_workers=default_num_workers()) as pool:
        return list(pool.map(flag, images))


def image_rows(task_work, store) -> list[dict]:
    """One row per stored image of the given requests (task, concept, key, index, image)."""
    rows = []
    for w in task_work:
        for rel in store.predictions[w.request.key].images:
            rows.append({"task": w.request.task, "concept": w.request.concept, "key": w.request.key,
                         "index": w.request.index, "image": rel})
    return rows


def fidelity_rows(scorer: FidelityScorer, bench, task_works: dict, store, progress=None) -> list[dict]:
    """scores.jsonl's rows of generation: one per generated image of the plain prompts, CLIP-I and
    DINO against the concept's references, CLIP-T against the class prompt (identity-prompt images
    are for faces only). Every concept's images go through the pipeline as one stream."""
    groups, rows_of = [], []
    for name, ws in task_works.items():
        ws = [w for w in ws if w.purpose != "identity"]
        rows = []
        for w in ws:
            rows.extend({"scorer": "fidelity", **r, "prompt": w.record.prompt} for r in image_rows([w], store))
        refs = bench.concept(name).reference_images
        if rows and not refs:
            raise BenchError("concept has no reference photos to compare against", where=f"concept {name}")
        texts = []
        for w in ws:
            texts.extend([w.record.class_prompt] * len(store.predictions[w.request.key].images))
        groups.append((list(refs), [store.run_dir / r["image"] for r in rows], texts))
        rows_of.append(rows)
    out = []
    for (refs, images, _), rows, scores in zip(groups, rows_of, scorer.score_many(groups, progress=progress)):
        for row, copied in zip(rows, copy_flags(refs, images) if rows else []):
            row["copies_reference"] = copied
        for i, row in enumerate(rows):
            for metric in ("clip_i", "clip_t", "dino"):
                row[metric] = scores[metric][i]
        out.extend(rows)
    return out
