"""Personalized captions: one row per caption, read for the concepts' identifiers.

RAP's captioning metrics (Hao et al., CVPR 2025, Table 3): *recall* is the share of captions that
name their photo's concept; *precision* is the share of the concept names a caption mentions that
are correct (over every concept of the benchmark, so naming another concept costs precision); F1
combines the two. A name counts when it occurs as a whole token, case-insensitively: ``<bo>``,
``Bo`` and ``bo's`` name ``bo``; ``bonnie`` and ``shiba-bo`` do not. Aggregates: :mod:`..metrics`.

Where a benchmark ships reference captions (MyVLM's), each caption also gets MyVLM's CLIPScore
(Hessel et al., 2021: ``2.5 * max(cos(image, text), 0)`` with the text ``"A photo depicts " +
caption``), the caption's mentions of its concept replaced by the concept's category word first, as
MyVLM's references name it. The sentence-embedding similarity to the references is not computed.
"""
from __future__ import annotations

import re

# Characters that continue a name: a name is a whole token when neither neighbour is one of these.
_NAME_CHARS = "A-Za-z0-9_-"
CLIP_SCORE_WEIGHT = 2.5  # Hessel et al.'s w
CLIP_SCORE_PREFIX = "A photo depicts "


def _name_pattern(name: str, brackets: bool = False) -> str:
    core = rf"(?<![{_NAME_CHARS}]){re.escape(name)}(?![{_NAME_CHARS}])"
    return rf"<?{core}>?" if brackets else core


def mentioned(caption: str, names: list[str]) -> list[str]:
    """The names (of ``names``) that ``caption`` mentions as whole tokens, in ``names`` order."""
    found = []
    for name in names:
        if re.search(_name_pattern(name), caption or "", flags=re.IGNORECASE):
            found.append(name)
    return found


def caption_sample(concept: str, caption: str, names: list[str]) -> dict:
    """One caption's row: which names it mentions, whether its own concept is one (``correct``)."""
    names_found = mentioned(caption, names)
    return {"mentioned": names_found, "correct": concept in names_found, "n_mentioned": len(names_found)}


def caption_rows(bench, work, store, tasks: list[str]) -> list[dict]:
    """scores.jsonl's rows of the caption task (``work``: the run's requests per concept)."""
    if "caption" not in tasks:
        return []
    # Every concept of the benchmark, not only the run's: a concept's rows must not depend on
    # which other concepts share the run.
    names = sorted(c.name for c in bench.concepts)
    rows = []
    for name, ws in work.items():
        for w in ws:
            if w.request.task != "caption":
                continue
            reply = store.predictions[w.request.key].answer
            rows.append({"scorer": "answer", "task": "caption", "concept": name, "key": w.request.key,
                         "index": w.record.index, "image": str(w.record.image), "question": w.record.question,
                         "truth": name, "reply": reply, **caption_sample(name, reply, names)})
    return rows


def named_by_category(caption: str, name: str, category: str) -> str:
    """The caption with each mention of the concept (``<bo>``, ``bo``, any case) replaced by its
    category word, as the reference captions name it."""
    return re.sub(_name_pattern(name, brackets=True), category, caption or "", flags=re.IGNORECASE)


def add_clip_scores(rows: list[dict], bench, backbones, batch_size: int = 32) -> None:
    """``clip_score`` (and the ``clip_text`` scored) on each caption row of a concept with reference
    captions; other rows are left as they are."""
    import torch

    from ..images import open_rgb
    from .fidelity import clip_dreambooth

    todo = [r for r in rows if r["task"] == "caption" and bench.concept(r["concept"]).captions]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        texts = []
        for r in chunk:
            concept = bench.concept(r["concept"])
            texts.append(CLIP_SCORE_PREFIX + named_by_category(r["reply"], concept.name, concept.class_noun))
        photos = torch.stack([clip_dreambooth(open_rgb(r["image"])) for r in chunk])
        cosines = (backbones.clip_image(photos) * backbones.clip_text(texts)).sum(dim=-1).tolist()
        for r, text, cos in zip(chunk, texts, cosines):
            r["clip_text"], r["clip_score"] = text, CLIP_SCORE_WEIGHT * max(cos, 0.0)
