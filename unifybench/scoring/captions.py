"""Personalized captions: one row per caption, read for the concepts' identifiers.

RAP's captioning metrics (Hao et al., CVPR 2025, Table 3): *recall* is the share of captions that
name their photo's concept; *precision* is the share of the concept names a caption mentions that
are correct (over every concept of the benchmark, so naming another concept costs precision); F1
combines the two. A name counts when it occurs as a whole token, case-insensitively: ``<bo>``,
``Bo`` and ``bo's`` name ``bo``; ``bonnie`` and ``shiba-bo`` do not. Aggregates: :mod:`..metrics`.
"""
from __future__ import annotations

import re

# Characters that continue a name: a name is a whole token when neither neighbour is one of these.
_NAME_CHARS = "A-Za-z0-9_-"


def mentioned(caption: str, names: list[str]) -> list[str]:
    """The names (of ``names``) that ``caption`` mentions as whole tokens, in ``names`` order."""
    found = []
    for name in names:
        pattern = rf"(?<![{_NAME_CHARS}]){re.escape(name)}(?![{_NAME_CHARS}])"
        if re.search(pattern, caption or "", flags=re.IGNORECASE):
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
            reply = store.predictions[w.request.key]["answer"]
            rows.append({"scorer": "answer", "task": "caption", "concept": name, "key": w.request.key,
                         "index": w.record.index, "image": str(w.record.image), "question": w.record.question,
                         "truth": name, "reply": reply, **caption_sample(name, reply, names)})
    return rows
