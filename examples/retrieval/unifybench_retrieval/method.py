"""``retrieval``: a baseline that learns nothing but what its concept's photos look like.

Personalization embeds each training photo as a "tiny image" (Torralba et al., 2008: the photo
shrunk to 8 x 8 colour pixels, centred and unit-normalised). Recognition answers "Yes." when a
photo's embedding is within ``threshold`` cosine similarity of the nearest training photo's;
other questions get the concept's description; generation returns training photos. Its point is
the shape of a method on the kit, not its scores: ``generate`` returns copies of the photos the
scores compare against.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from unifybench.errors import BenchError
from unifybench.kit.args import Arg
from unifybench.kit.files import write_json_atomic
from unifybench.methods import Method


def tiny_image(path: Path, side: int) -> np.ndarray:
    """The photo as a ``side`` x ``side`` x 3 vector, centred and of unit length."""
    try:
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("RGB").resize((side, side), Image.BILINEAR), dtype=np.float64)
    except OSError as exc:
        raise BenchError(f"cannot read image ({exc})", path) from None
    vector = pixels.reshape(-1) - pixels.mean()
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


class Retrieval(Method):
    name = "retrieval"
    tasks = frozenset({"rec", "vqa", "text_only", "gen"})
    arguments = {
        "threshold": Arg(float, 0.85, "cosine similarity to the nearest training photo above which the concept "
                                      "is recognised", low=-1, high=1),
        "side": Arg(int, 8, "pixels per side of the tiny image", low=1, high=64),
    }

    def personalize(self, concept, state_dir):
        if not concept.train_images:
            raise BenchError("no training photos to embed", where=f"concept {concept.name}")
        photos = np.stack([tiny_image(p, self.args.side) for p in concept.train_images])
        write_json_atomic(Path(state_dir) / "embeddings.json", {"side": self.args.side, "photos": photos.tolist()})
        return {"photos": photos}

    def load_state(self, concept, state_dir):
        saved = json.loads((Path(state_dir) / "embeddings.json").read_text(encoding="utf-8"))
        return {"photos": np.asarray(saved["photos"])}

    def answer(self, concept, state, requests):
        replies = []
        for request in requests:
            if request.task == "rec":
                similarity = float((state["photos"] @ tiny_image(request.image, self.args.side)).max())
                replies.append("Yes." if similarity >= self.args.threshold else "No.")
            else:
                replies.append(concept.description or f"{concept.token} is a {concept.class_noun}.")
        return replies

    def generate(self, concept, state, requests):
        photos = concept.train_images
        return [[photos[(request.index + i) % len(photos)] for i in range(request.n_images)] for request in requests]
