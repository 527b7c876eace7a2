"""The one rule for "may these numbers be compared?": a run's :class:`GroupKey`.

The leaderboard puts rows in one table only when their keys agree, and ``compare`` compares a metric
of two runs only when their keys agree for that metric (:meth:`GroupKey.for_metric`). A metric that
uses no scorer backbone (recognition, VQA, choice, judge scores, copies) does not depend on which
backbones scored the run's images, so for it the backbones drop out of the key, except whether they
had random weights: a real model's numbers never sit in a table titled random-init.
"""
from __future__ import annotations

from typing import NamedTuple

from .run_record import BACKBONES_UNUSED

# How a table's title names a run whose method model has random weights (GroupKey.random_method).
RANDOM_METHOD = "random-init method model"
# What a metric that uses no backbone keeps of a run's random-init scorer backbones.
RANDOM_SCORERS = "random-init scorer backbones"
# Metrics computed with the scorer backbones (CLIP, DINO, the face model); every other metric is not.
_BACKBONE_METRICS = frozenset({"gen.clip_i", "gen.clip_t", "gen.dino", "gen.face_sim", "gen.face_missing",
                               "gen.face_missing_refs"})


def uses_scorer_backbones(metric: str) -> bool:
    return metric in _BACKBONE_METRICS


def random_backbones(backbones: str) -> bool:
    """Whether a scorer backbones label stands for random weights."""
    return (backbones.split() or [""])[0] in ("random", "tiny") or backbones == RANDOM_SCORERS


class GroupKey(NamedTuple):
    """What rows of one table share. ``fingerprint`` is the benchmark's content hash ("" for a
    published row, which joins every table of its benchmark's name); ``random_method``: the method
    model had random weights (``describe()["random_init"]``), so every number is plumbing only."""
    benchmark: str
    protocol: str
    backbones: str
    judge: str
    limit: str
    fingerprint: str
    random_method: bool = False

    def without_backbones(self) -> "GroupKey":
        """The key of a metric that uses no scorer backbone."""
        kept = RANDOM_SCORERS if random_backbones(self.backbones) and not self.random_method else BACKBONES_UNUSED
        return self._replace(backbones=kept)

    def for_metric(self, metric: str) -> "GroupKey":
        return self if uses_scorer_backbones(metric) else self.without_backbones()

    @property
    def uses_backbones(self) -> bool:
        """Whether the run scored anything with the scorer backbones (generation)."""
        return self.backbones != BACKBONES_UNUSED

    @property
    def random_init(self) -> bool:
        return self.random_method or random_backbones(self.backbones)

    def differences(self, other: "GroupKey") -> list[str]:
        """In words, each field in which the two keys differ."""
        return [f"{_WORDS[f]}: {_says(f, getattr(self, f))} vs {_says(f, getattr(other, f))}"
                for f in self._fields if getattr(self, f) != getattr(other, f)]


_WORDS = {"benchmark": "benchmark name", "protocol": "protocol", "backbones": "scorer backbones", "judge": "judge",
          "limit": "--limit", "fingerprint": "benchmark content", "random_method": "method model"}


def _says(field: str, value) -> str:
    if field == "random_method":
        return "random-init" if value else "not random-init"
    if field == "fingerprint":
        return f"content {value[:10]}" if value else "published"
    if field == "judge":
        return value or "no judge"
    if field == "limit":
        return value or "every item"
    if field == "backbones" and value == BACKBONES_UNUSED:
        return "none used"
    return value
