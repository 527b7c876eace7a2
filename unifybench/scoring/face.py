"""Face identity (``face_sim``): ArcFace embeddings of the largest detected face.

A face backend is a small interface, :class:`FaceBackend`: ``embed(rgb)`` takes one decoded image
(RGB uint8, H x W x 3) and returns the unit embedding of its largest face, or None when it finds
no face. Backends (``load_face_backend(kind)``):

- ``"default"``: InsightFace ``antelopev2`` (SCRFD detector, ArcFace ResNet-100 recogniser) through
  onnxruntime, the reference evaluation's model. An optional extra: ``pip install "unifybench[face]"``;
  insightface is imported only here, and only when a human concept is scored. Weights are read from
  ``$INSIGHTFACE_HOME`` (default ``~/.insightface``)``/models/antelopev2``; offline
  (``HF_HUB_OFFLINE=1``) a missing folder fails at once instead of trying to download.
- ``"random"`` / ``"tiny"``: no detector (the whole image stands in for the face) and a seeded
  random-init convolutional embedder: plumbing and speed only, never a result.

Tests inject their own backend built in code.

Protocol (the reference's, with one correction): for a human concept, the images generated for its
identity prompt ("A photo of <c>.") are compared with its reference photos; ``face_sim`` of a
generated image is its mean cosine to every reference face, so a concept's mean is the mean over
all reference x generated pairs in which both faces were found. Images in which no face is found
are counted (``face_missing``, ``face_missing_refs``), not skipped silently as the reference does.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import BenchError
from ..offline import hub_offline
from ..records import file_digest
from .cache import EmbeddingCache, cache_key, default_cache_dir, weights_fingerprint
from .pipeline import stream_inputs

FACE_KINDS = ("default", "random", "tiny")
INSIGHTFACE_MODEL = "antelopev2"
FACE_EXTRA_HINT = 'pip install "unifybench[face]"'


class FaceBackend(Protocol):
    #: what computes the embeddings (recorded in results and in the cache key)
    name: str

    def embed(self, rgb: np.ndarray) -> np.ndarray | None:
        """Unit embedding of the largest face in an RGB uint8 [H, W, 3] image, or None."""


def to_rgb_array(img) -> np.ndarray:
    """A decoded image (PIL, or a uint8 [3, H, W] tensor) as an RGB uint8 [H, W, 3] array."""
    if isinstance(img, Image.Image):
        from ..images import to_rgb

        return np.asarray(to_rgb(img), dtype=np.uint8).copy()
    return img.permute(1, 2, 0).contiguous().cpu().numpy()


# ----------------------------------------------------------------------------------- backends

class InsightFaceBackend:
    """InsightFace ``FaceAnalysis`` with detection and recognition only; the largest face wins."""

    def __init__(self, model: str = INSIGHTFACE_MODEL, device: str = "cpu", det_size: int = 640):
        try:
            from insightface.app import FaceAnalysis
        except ImportError as e:
            raise BenchError(f"face identity needs InsightFace, an optional extra: {FACE_EXTRA_HINT} "
                             f"(or score without humans, or use --backbones random)", where="face") from e
        root = Path(os.environ.get("INSIGHTFACE_HOME", "~/.insightface")).expanduser()
        folder = root / "models" / model
        if hub_offline() and not any(folder.glob("*.onnx")):
            raise BenchError(f"InsightFace {model} weights not found in {folder} and HF_HUB_OFFLINE is set; "
                             f"run once with network access or copy the {model} .onnx files there",
                             where="face")
        cuda = torch.device(device).type == "cuda"
        providers = (["CUDAExecutionProvider"] if cuda else []) + ["CPUExecutionProvider"]
        try:
            self.app = FaceAnalysis(name=model, root=str(root), providers=providers,
                                    allowed_modules=["detection", "recognition"])
            self.app.prepare(ctx_id=0 if cuda else -1, det_size=(det_size, det_size))
        except Exception as e:  # noqa: BLE001 - download or onnxruntime failures
            raise BenchError(f"cannot load InsightFace {model}: {type(e).__name__}: {e}", where="face") from e
        self.name = f"insightface {model} (largest face, det_size {det_size})"

    def embed(self, rgb: np.ndarray) -> np.ndarray | None:
        faces = self.app.get(np.ascontiguousarray(rgb[:, :, ::-1]))  # insightface reads BGR
        if not faces:
            return None
        largest = max(faces, key=lambda f: float((f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1])))
        return np.asarray(largest.normed_embedding, dtype=np.float32)


class RandomFaceBackend:
    """No detector (the whole image is the face) and a seeded random-init conv net: plumbing only."""

    def __init__(self, kind: str = "random", seed: int = 0, device: str = "cpu"):
        width, dim = (64, 512) if kind == "random" else (8, 16)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = torch.nn.Sequential(
                torch.nn.Conv2d(3, width, 3, stride=2, padding=1), torch.nn.ReLU(),
                torch.nn.Conv2d(width, width, 3, stride=2, padding=1), torch.nn.ReLU(),
                torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(width * 16, dim),
            ).eval().to(device)
        self.device = device
        self.name = (f"{kind} face stand-in (no detector: whole image, 112 px; conv embedder {dim}-d, "
                     f"random init, seed {seed}|{weights_fingerprint(self.net)}); not a real backbone")

    def embed(self, rgb: np.ndarray) -> np.ndarray | None:
        x = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float().div(255).unsqueeze(0)
        x = F.interpolate(x, size=(112, 112), mode="bilinear", antialias=True, align_corners=False)
        with torch.inference_mode():
            out = F.normalize(self.net(x.to(self.device)), dim=-1)[0]
        return out.float().cpu().numpy()


def load_face_backend(kind: str = "default", device: str = "cpu", seed: int = 0) -> FaceBackend:
    if kind not in FACE_KINDS:
        raise BenchError(f"unknown face backbone {kind!r} (choose from {', '.join(FACE_KINDS)})", where="face")
    if kind == "default":
        return InsightFaceBackend(device=device)
    return RandomFaceBackend(kind, seed=seed, device=device)


# ------------------------------------------------------------------------------------ scoring

_DEFAULT = object()


class FaceScorer:
    """Embeds faces through the streaming pipeline and scores generated images against references.

    Reference face embeddings are cached like CLIP and DINO ones (rows of NaN where no face was found).
    """

    def __init__(self, backend: FaceBackend, batch_size: int = 32, num_workers: int | None = None,
                 cache_dir=_DEFAULT):
        self.backend = backend
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.cache = EmbeddingCache(default_cache_dir() if cache_dir is _DEFAULT else cache_dir)

    def embed(self, paths: Sequence[str | Path]) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = [None] * len(paths)
        for indices, batch in stream_inputs(paths, {"face": to_rgb_array}, batch_size=self.batch_size,
                                            num_workers=self.num_workers, gpu_decode=False):
            for i, rgb in zip(indices, batch["face"]):
                emb = self.backend.embed(rgb)
                out[i] = None if emb is None else np.asarray(emb, dtype=np.float32)
        return out

    def reference_embeddings(self, refs: Sequence[str | Path]) -> torch.Tensor:
        """[R, D] float32; a row of NaN where no face was found."""
        digests = [file_digest(Path(p)) for p in refs]  # an unreadable file: a BenchError naming it
        key = cache_key(digests, self.backend.name, "largest face, as the backend detects it", "float32")
        found = self.cache.get(key)
        if found is not None and found.shape[0] == len(refs):
            return found
        embs = self.embed(refs)
        dim = next((len(e) for e in embs if e is not None), 1)
        rows = [torch.from_numpy(e) if e is not None else torch.full((dim,), float("nan")) for e in embs]
        value = torch.stack(rows) if rows else torch.empty(0, dim)
        self.cache.put(key, value)
        return value

    def score(self, refs: Sequence[str | Path], gens: Sequence[str | Path]) -> dict:
        """``face_sim``: per generated image, its mean cosine to every reference face (None where no
        face was found in it, or in no reference); ``face_found``: per generated image, whether a face
        was found; ``ref_face_found``: the same per reference photo; ``face_missing`` /
        ``face_missing_refs``: how many generated / reference images had no face."""
        ref = self.reference_embeddings(refs)
        found = ~torch.isnan(ref).any(dim=1) if len(ref) else torch.zeros(0, dtype=torch.bool)
        ref_faces = F.normalize(ref[found], dim=-1)
        sims: list[float | None] = []
        flags: list[bool] = []
        missing = 0
        for emb in self.embed(gens):
            flags.append(emb is not None)
            if emb is None:
                missing += 1
                sims.append(None)
            elif len(ref_faces) == 0:
                sims.append(None)
            else:
                g = F.normalize(torch.from_numpy(emb), dim=-1)
                sims.append(float((ref_faces @ g).mean()))
        return {"face_sim": sims, "face_found": flags, "ref_face_found": [bool(f) for f in found.tolist()],
                "face_missing": missing, "face_missing_refs": int((~found).sum()),
                "n_refs": len(refs), "n_gens": len(gens)}

    def describe(self) -> dict:
        return {"face": self.backend.name,
                "pairing": "mean cosine over all reference x generated pairs with a face found in both",
                "images": "generated for the concept's identity prompt (\"A photo of <c>.\")"}


def face_rows(bench, task_works: dict, store, backbones: str, device: str, seed: int, batch_size: int,
              console) -> tuple[list[dict], dict | None, str | None]:
    """scores.jsonl's rows of face identity for the human concepts: ``(rows, backend description,
    why the backend is unavailable)``. Rows: one per identity-prompt image (``face_sim``,
    ``face_found``) and one per reference photo (``face_found``), so every count comes from rows."""
    from .fidelity import image_rows

    humans = [n for n in task_works if bench.concept(n).kind == "human"]
    if not humans:
        return [], None, None
    try:
        face = FaceScorer(load_face_backend(backbones, device=device, seed=seed), batch_size=max(batch_size, 32))
    except BenchError as exc:
        console.print(f"[yellow]face identity not scored: {exc.message}[/yellow]")
        return [], None, exc.message
    rows: list[dict] = []
    for name in humans:
        concept = bench.concept(name)
        done = [w for w in task_works[name] if w.purpose == "identity" and w.request.key in store.predictions]
        if not done:
            continue
        images = image_rows(done, store)
        refs = list(concept.reference_images)
        scores = face.score(refs, [store.run_dir / r["image"] for r in images])
        for row, sim, found in zip(images, scores["face_sim"], scores["face_found"]):
            rows.append({"scorer": "face", **row, "purpose": "identity", "face_sim": sim, "face_found": found})
        for ref, found in zip(refs, scores["ref_face_found"]):
            rows.append({"scorer": "face", "task": "gen", "concept": name, "key": f"gen/{name}/reference",
                         "purpose": "reference", "image": str(ref), "face_found": found})
    return rows, face.describe(), None
