"""Reader for the DreamBench++ layout (Peng et al., ICLR 2025; github yuangpeng/dreambench_plus,
hub dataset ``yuangpeng/dreambench_plus``, ``data.zip``).

``images/<category>/NN.jpg`` and ``captions/<category>/NN.txt`` for the categories animal, human,
object and style; a caption file's first line is the subject phrase ("kitten"), the next nine are
the prompts, which contain that phrase (their ``dreambench_plus_dataset.py`` at 66ca27e). One photo
per subject: it is the training image and the reference at once.

A prompt is shown to methods with the subject phrase replaced by the concept's token (their
textual-inversion recipe does the same with ``<sks>``); the prompt as written is kept as
``GenPrompt.class_prompt``: prompt following and CLIP-T read it.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import BenchError
from ..records import Benchmark, Concept, GenPrompt
from .common import IMAGE_EXTS, attach_negatives, read_text, token_for

CATEGORIES = ("animal", "human", "object", "style")
PROMPTS_PER_SUBJECT = 9
# Prompt indices by kind (their benchmarking.py cal_score filters).
PROMPT_KINDS = {"photorealistic": range(0, 4), "style_transfer": range(4, 7), "imaginative": range(7, 9)}
_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_GENERATION_TYPE = {"animal": "live_subject", "human": "live_subject", "object": "object", "style": None}


def prompt_kind(index: int) -> str:
    for kind, indices in PROMPT_KINDS.items():
        if index in indices:
            return kind
    raise ValueError(f"DreamBench++ has prompts 0-8, not {index}")


def category_of(concept: Concept) -> str:
    """A DreamBench++ concept's category: its ``kind`` (animal, human, object or style)."""
    return concept.kind


def looks_like_dreambench_plus(root: Path) -> bool:
    return (root / "images").is_dir() and (root / "captions").is_dir() and \
        any((root / "captions" / c).is_dir() for c in CATEGORIES)


def _name_token(text: str, subject: str, token: str) -> str:
    """``text`` with the subject phrase replaced by ``token`` (case-insensitive, every occurrence)."""
    return re.sub(re.escape(subject), lambda _m: token, text, flags=re.IGNORECASE)


def read_dreambench_plus(root: Path, name: str) -> Benchmark:
    root = Path(root)
    concepts: list[Concept] = []
    prompts: dict[str, list[GenPrompt]] = {}
    for category in CATEGORIES:
        folder = root / "captions" / category
        if not folder.is_dir():
            continue
        for caption_file in sorted(p for p in folder.iterdir() if p.suffix == ".txt" and not p.name.startswith(".")):
            stem = caption_file.stem
            if not _STEM.fullmatch(stem):  # it names the concept, its token and its folders in a run
                raise BenchError("expected a caption file named like 00.txt (letters, digits, '_' or '-')",
                                 caption_file)
            # a caption file linked from outside the root is refused by read_text (data.common.reading_inside)
            image = next((root / "images" / category / (stem + ext) for ext in IMAGE_EXTS
                          if (root / "images" / category / (stem + ext)).is_file()), None)
            if image is None:
                raise BenchError(f"no image images/{category}/{stem}.jpg for this caption file", caption_file)
            lines = [ln.strip() for ln in read_text(caption_file).splitlines()]
            while lines and not lines[-1]:
                lines.pop()
            if len(lines) != 1 + PROMPTS_PER_SUBJECT or not all(lines):
                raise BenchError(f"expected the subject phrase then {PROMPTS_PER_SUBJECT} prompts, one per line "
                                 f"({1 + PROMPTS_PER_SUBJECT} non-empty lines), got {len(lines)}", caption_file)
            subject = lines[0]
            concept_name = f"{category}_{stem}"
            token = token_for(concept_name)
            concepts.append(Concept(
                name=concept_name, token=token, class_noun=subject, kind=category,  # type: ignore[arg-type]
                generation_type=_GENERATION_TYPE[category], train_images=[image], reference_images=[image],
                test_images=[], identity_prompt=f"A photo of {token}." if category == "human" else None,
            ))
            prompts[concept_name] = [GenPrompt(concept_name, i, "gen", _name_token(p, subject, token), p)
                                     for i, p in enumerate(lines[1:])]
    if not concepts:
        raise BenchError(f"no caption files under captions/<category>/ (categories: {', '.join(CATEGORIES)})", root)
    attach_negatives(concepts, [])
    return Benchmark(name=name, format="dreambench_plus", root=root, concepts=concepts,
                     items={c.name: [] for c in concepts}, prompts=prompts)
