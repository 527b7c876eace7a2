"""Reader for MyVLM's objects (Alaluf et al., ECCV 2024; ``yuvalalaluf/MyVLM``): one folder per
concept, its photos and ``captions.json`` (``{photo: [caption, ...]}``, five captions a photo).

MyVLM's protocol (``load_data`` in their ``concept_embedding_training/data_utils.py``): a concept is
learned from a few of its photos drawn at random (``batch_size`` 4) and captioned on the rest. Here
the draw is one of five seeded splits (``split`` 0-4, ``--split N``), made per concept from the
concept's name alone, so a concept's photos never depend on the other concepts. The layout has no
descriptions, questions or class nouns; its captions are kept as each test photo's references.
"""
from __future__ import annotations

import random
from pathlib import Path

from ..errors import BenchError
from ..records import Benchmark, Concept
from .common import attach_negatives, list_dirs, load_json, token_for

CAPTIONS = "captions.json"
TRAIN_PHOTOS = 4
SPLITS = 5
CLASS_NOUN = "object"  # the layout names no category


def concept_folders(root: Path) -> list[Path]:
    return [d for d in list_dirs(root) if (d / CAPTIONS).is_file()]


def is_myvlm(root: Path) -> bool:
    return bool(concept_folders(root))


def check_split(split: int) -> None:
    if not isinstance(split, int) or isinstance(split, bool) or not 0 <= split < SPLITS:
        raise BenchError(f"expected a split 0 to {SPLITS - 1}, got {split!r}", where="--split")


def train_photos(name: str, photos: list[Path], split: int) -> list[Path]:
    """The split's training photos of one concept: TRAIN_PHOTOS of them, drawn from (split, name)."""
    rng = random.Random(f"myvlm-split/{split}/{name}")
    chosen = set(rng.sample(range(len(photos)), min(TRAIN_PHOTOS, len(photos))))
    return [p for i, p in enumerate(photos) if i in chosen]


def _captions(folder: Path) -> dict[Path, list[str]]:
    path = folder / CAPTIONS
    data = load_json(path)
    if not isinstance(data, dict) or not data:
        raise BenchError("expected a JSON object {photo: [captions]}", path)
    out: dict[Path, list[str]] = {}
    for raw, captions in data.items():
        photo = folder / raw
        if Path(raw).is_absolute() or ".." in Path(raw).parts or not photo.is_file():
            raise BenchError(f"photo {raw!r} is not a file of the concept's folder", path)
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise BenchError(f"captions of {raw!r} must be a list of strings", path)
        out[photo] = [c.strip() for c in captions]
    return out


def read_myvlm(root: Path, name: str, split: int = 0) -> Benchmark:
    check_split(split)
    concepts = []
    for folder in concept_folders(root):
        captions = _captions(folder)
        photos = sorted(captions, key=lambda p: p.name)
        if len(photos) <= TRAIN_PHOTOS:
            raise BenchError(f"{len(photos)} captioned photo(s): MyVLM's protocol trains on {TRAIN_PHOTOS} and "
                             f"captions the rest", folder / CAPTIONS)
        train = train_photos(folder.name, photos, split)
        test = [p for p in photos if p not in set(train)]
        concepts.append(Concept(name=folder.name, token=token_for(folder.name), class_noun=CLASS_NOUN,
                                kind="object", generation_type="object", train_images=train,
                                reference_images=list(train), test_images=test, captions=captions))
    attach_negatives(concepts, [])
    return Benchmark(name=name, format="myvlm", root=root, concepts=concepts, items={c.name: [] for c in concepts},
                     prompts={c.name: [] for c in concepts})
