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
- ``"mean-reference"`` (Yo'Chameleon's way): dreambooth preprocessing; a generated image is compared
  with the mean of the reference embeddings (renormalised) instead of with each reference photo.

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


def dino_dreambooth(img) -> torch.Tensor:
    return TF.normalize(_to_unit(_resize_crop(img, 256, 224)), IMAGENET_MEAN, IMAGENET_STD)


_CLIP_DB = "resize shortest side 224 bicubic (PIL), centre-crop 224, CLIP mean/std"
_DINO_DB = "resize shortest side 256 bicubic (PIL), centre-crop 224, ImageNet mean/std"
PROTOCOLS: dict[str, dict] = {
    "dreambooth": {
        "clip": clip_dreambooth, "dino": dino_dreambooth, "pairing": "all",
        "clip_preprocessing": _CLIP_DB, "dino_preprocessing": _DINO_DB,
    },
    "reference": {
        "clip": clip_reference, "dino": dino_dreambooth, "pairing": "all",
        "clip_preprocessing": ("resize shortest side 512 bicubic (PIL), centre-crop 512, [0,1], "
                               "Normalize(mean=-1, std=2) (reference bug: pixels in [0.5,1]), "
                               "resize 224 bicubic, centre-crop 224, CLIP mean/std"),
        "dino_preprocessing": _DINO_DB,
    },
    "mean-reference": {
        "clip": clip_dreambooth, "dino": dino_dreambooth, "pairing": "mean",
        "clip_preprocessing": _CLIP_DB, "dino_preprocessing": _DINO_DB,
    },
}
PAIRINGS = {"all": "mean cosine to every reference image",
            "mean": "cosine to the normalised mean reference embedding"}
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
    """Per generated row: mean cosine to every reference row ("all") or cosine to the renormalised
    mean reference ("mean"); rows are unit vectors. ``left_out[k]``, when not None, is the reference
    row that generated row k *is* (the same file bytes): it is compared with the other references
    only, as DreamBooth's real-image upper bound compares each real photo with the others."""
    if pairing == "mean":
        scores = gen @ F.normalize(ref.mean(0), dim=-1)
    else:
        scores = (gen @ ref.T).mean(1)
    for k, j in enumerate(left_out):
        if j is not None and ref.shape[0] > 1:
            others = torch.cat([ref[:j], ref[j + 1:]])
            scores[k] = (gen[k] @ F.normalize(others.mean(0), dim=-1) if pairing == "mean"
                         else (gen[k] @ others.T).mean())
    return scores


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

    def _encode(self, name: str, batch: torch.Tensor) -> torch.Tensor:
        """Embeddings on the host. From a GPU the copy is only queued (into pinned memory): the caller
        waits for it with the event :meth:`stream` records, one batch later."""
        out = self.backbones.clip_image(batch) if name == "clip" else self.backbones.dino_image(batch)
        if out.device.type != "cuda":
            return out.cpu()
        host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
        return host.copy_(out, non_blocking=True)

    def stream(self, paths: Sequence[str | Path]):
        """Yield ``(indices, {"clip": [B, D], "dino": [B, D']})`` unit vectors (float32, CPU) over
        ``paths`` in order, one decode of each image shared by both encoders.

        A batch is yielded once the next one has been fetched, decoded and queued behind it: on a
        GPU the encoders then work on batch k while the host reads and decodes batch k + 1, instead
        of the two taking turns. (On the CPU everything is synchronous and this changes nothing.)"""
        pending = None
        for indices, batch in stream_inputs(paths, self.transforms, batch_size=self.batch_size,
                                            device=self.device, num_workers=self.num_workers,
                                            gpu_decode=self.gpu_decode):
            emb = {name: self._encode(name, batch[name]) for name in IMAGE_ENCODERS}
            done = None
            if torch.device(self.device).type == "cuda":
                done = torch.cuda.Event()
                done.record()
            if pending is not None:
                yield _when_done(*pending)
            pending = (indices, emb, done)
        if pending is not None:
            yield _when_done(*pending)

    def embed_images(self, paths: Sequence[str | Path]) -> dict[str, torch.Tensor]:
        """{"clip": [N, D], "dino": [N, D']} unit vectors (float32, CPU), rows aligned with ``paths``;
        a path given twice is decoded and encoded once."""
        unique = list(dict.fromkeys(Path(p) for p in paths))
        if not unique:
            return {"clip": torch.empty(0, 0), "dino": torch.empty(0, 0)}
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in IMAGE_ENCODERS}
        for _, emb in self.stream(unique):
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
        keys = {name: cache_key(digests, self._encoder_id(name),
                                f"{spec[f'{name}_preprocessing']}|{transform_fingerprint(spec[name])}",
                                f"{self.backbones.dtype}|{self.decode_description}")
                for name in IMAGE_ENCODERS}
        memo_key = "|".join(keys[n] for n in IMAGE_ENCODERS)
        if memo_key in self._refs:
            return self._refs[memo_key]
        found = {name: self.cache.get(keys[name]) for name in IMAGE_ENCODERS}
        if any(v is None or v.shape[0] != len(refs) for v in found.values()):
            found = self.embed_images(refs)
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
        pairing = PROTOCOLS[self.protocol]["pairing"]
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
                scores = {"clip_i": pair_scores(clip, ref["clip"], pairing, left_out),
                          "dino": pair_scores(emb["dino"][rows], ref["dino"], pairing, left_out)}
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
            "pairing": PAIRINGS[spec["pairing"]],
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
                  num_workers: int | None = None, seed: int = 0, clip_name: str = "ViT-B-32",
                  progress=None) -> dict:
    """Score a folder of generated images against a folder of reference photos: one summary object
    (mean CLIP-I, DINO and, with prompts, CLIP-T over every generated image)."""
    from .encoders import load_backbones

    if protocol not in PROTOCOLS:
        raise BenchError(f"unknown protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})", where="--protocol")
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


# A generated image this close to a reference photo is taken for a copy of it: its 64-bit
# difference hash (dHash: the sign of each horizontal step of a 9 x 8 grey thumbnail) differs in at
# most this many bits. Different photos of one object differ in about half of them (~32); a
# re-encoded or slightly resized copy in a few.
COPY_HASH_BITS = 6


def difference_hash(path: Path) -> int:
    from ..images import open_rgb

    import numpy as np

    grey = np.asarray(open_rgb(path).convert("L").resize((9, 8), Image.LANCZOS), dtype=np.int16)
    steps = (grey[:, :-1] < grey[:, 1:]).reshape(-1)
    return int("".join("1" if b else "0" for b in steps), 2)


def copy_flags(references: list[Path], images: list[Path]) -> list[str | None]:
    """Per generated image: ``"exact"`` (the bytes of a reference photo), ``"near"`` (within
    :data:`COPY_HASH_BITS` of a reference's difference hash) or None. A method returning the photos
    the scores compare against would otherwise beat the real-images upper bound unnoticed."""
    from concurrent.futures import ThreadPoolExecutor

    ref_digests = {file_digest(Path(r)) for r in references}
    ref_hashes = [difference_hash(Path(r)) for r in references]

    def flag(image) -> str | None:
        if file_digest(Path(image)) in ref_digests:
            return "exact"
        h = difference_hash(Path(image))
        return "near" if any(bin(h ^ r).count("1") <= COPY_HASH_BITS for r in ref_hashes) else None

    # Each image is decoded once more here (the pipeline's workers kept no pixels): spread over the
    # cores, as PIL decodes without holding the GIL.
    with ThreadPoolExecutor(max_workers=default_num_workers()) as pool:
        return list(pool.map(flag, images))


def image_rows(task_work, store) -> list[dict]:
    """One row per stored image of the given requests (task, concept, key, index, image)."""
    rows = []
    for w in task_work:
        for rel in store.predictions[w.request.key]["images"]:
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
            texts.extend([w.record.class_prompt] * len(store.predictions[w.request.key]["images"]))
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
