"""How sure a number is: hierarchical bootstrap intervals and paired comparisons, from the rows of
``scores.jsonl``.

A benchmark of this field has a few dozen concepts (UnifyBench 20, DreamBench 30, Yo'LLaVA 40), and
a concept's items are not independent of each other, so the uncertainty of an aggregate comes
first from which concepts were chosen. The interval is a two-stage (hierarchical) percentile
bootstrap: each resample draws the concepts with replacement, then, inside each drawn concept, its
items with replacement (Davison & Hinkley, *Bootstrap Methods and their Application*, 1997, §3.8;
Field & Welsh, "Bootstrapping clustered data", JRSS B 69, 2007). Every metric is a ratio of sums
over items (:class:`Samples`): ``num / den`` pooled over every item of the drawn concepts (what
the means pool), or the mean over drawn concepts of each concept's ratio (``attr_score``, a mean
per concept first). The draws are vectorised: the item draws of a concept are multinomial counts,
one row per time the concept was drawn.

:func:`paired` compares two runs on the concepts and items both scored: the same resampling on the
per-item differences, and a permutation p-value that swaps the two runs' labels concept by concept
(a sign flip of each concept's differences).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LEVEL = 0.95
DEFAULT_RESAMPLES = 1000
FEW_CONCEPTS = 5  # fewer concepts than this: an interval is shown, with a warning that it means little
METHOD = ("hierarchical percentile bootstrap: concepts resampled with replacement, then items within each "
          "concept (Davison & Hinkley 1997, sec. 3.8)")


@dataclass
class Samples:
    """One metric's items, concept by concept: ``num[c]`` and ``den[c]`` arrays of equal length.
    ``combine``: ``pooled`` (sum of num over sum of den across concepts) or ``concept_mean``
    (each concept's ratio, then their mean). A metric is a list of parts (``weighted_acc``: the
    positive and the negative rate, Samples on the same items)."""

    num: dict[str, np.ndarray] = field(default_factory=dict)
    den: dict[str, np.ndarray] = field(default_factory=dict)
    combine: str = "pooled"
    ids: dict[str, list] = field(default_factory=dict)  # what each item is, to pair two runs' items

    def add(self, concept: str, num: float, den: float = 1.0, item=None) -> None:
        self.num.setdefault(concept, [])
        self.den.setdefault(concept, [])
        self.ids.setdefault(concept, [])
        self.num[concept].append(float(num))
        self.den[concept].append(float(den))
        self.ids[concept].append(item)

    def frozen(self) -> "Samples":
        return Samples({c: np.asarray(v, dtype=np.float64) for c, v in self.num.items()},
                       {c: np.asarray(v, dtype=np.float64) for c, v in self.den.items()}, self.combine,
                       {c: list(v) for c, v in self.ids.items()})

    def only(self, concept: str) -> "Samples":
        return Samples({concept: self.num[concept]}, {concept: self.den[concept]}, self.combine,
                       {concept: self.ids.get(concept, [])})

    def aligned(self, order: dict[str, list]) -> "Samples":
        """The items named by ``order`` ({concept: [item id, ...]}), in that order."""
        out = Samples(combine=self.combine)
        for concept, wanted in order.items():
            where = {item: i for i, item in enumerate(self.ids[concept])}
            index = [where[item] for item in wanted]
            out.num[concept], out.den[concept] = self.num[concept][index], self.den[concept][index]
            out.ids[concept] = list(wanted)
        return out

    def estimate(self) -> float | None:
        concepts = [c for c in self.num if self.den[c].sum() > 0]
        if not concepts:
            return None
        if self.combine == "pooled":
            return float(sum(self.num[c].sum() for c in concepts) / sum(self.den[c].sum() for c in concepts))
        return float(np.mean([self.num[c].sum() / self.den[c].sum() for c in concepts]))


def _resampled_sums(parts: list[Samples], concepts: list[str], draws: np.ndarray, rng: np.random.Generator):
    """Per part, ``(num, den)`` sums of shape [B, C]: for every replicate b and drawn position j, the
    sums over a resample (multinomial counts) of the items of concept ``concepts[draws[b, j]]``. The
    item draws are shared by the parts, so the two halves of a weighted accuracy move together."""
    b, c = draws.shape
    sums = [(np.zeros((b, c)), np.zeros((b, c))) for _ in parts]
    for k, name in enumerate(concepts):
        where = draws == k
        times = int(where.sum())
        if not times:
            continue
        n = len(parts[0].num[name])
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=times) if n else np.zeros((times, 0))
        for part, (num, den) in zip(parts, sums):
            num[where] = counts @ part.num[name]
            den[where] = counts @ part.den[name]
    return sums


def _ratio(num: np.ndarray, den: np.ndarray, combine: str) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        if combine == "pooled":
            return num.sum(1) / den.sum(1)
        per = num / den  # a drawn concept whose resample holds none of the metric's items: left out
        return np.nanmean(np.where(den > 0, per, np.nan), axis=1)


def replicates(parts: list[Samples], rng: np.random.Generator, resamples: int, concepts: list[str] | None = None,
               resample_concepts: bool = True) -> np.ndarray:
    """The statistic (the mean of the parts' ratios: one part, or weighted accuracy's two) over
    ``resamples`` hierarchical resamples: [resamples] values (NaN where a resample had no item)."""
    concepts = concepts or sorted(parts[0].num)
    c = len(concepts)
    draws = (rng.integers(0, c, size=(resamples, c)) if resample_concepts
             else np.tile(np.arange(c), (resamples, 1)))
    sums = _resampled_sums(parts, concepts, draws, rng)
    values = [_ratio(num, den, part.combine) for part, (num, den) in zip(parts, sums)]
    return np.mean(values, axis=0) if len(values) > 1 else values[0]


def interval(parts: list[Samples], seed: int, resamples: int = DEFAULT_RESAMPLES,
             resample_concepts: bool = True) -> dict | None:
    """``{"lo", "hi", "concepts", "items"[, "note"]}``: the 95% percentile interval of the metric, or
    None when it has no items. One concept (``resample_concepts=False``): items only."""
    concepts = sorted(c for c in parts[0].num if len(parts[0].num[c]))
    if not concepts or resamples < 1:
        return None
    rng = np.random.default_rng(seed)
    values = replicates(parts, rng, resamples, concepts, resample_concepts)
    values = values[~np.isnan(values)]
    if not len(values):
        return None
    lo, hi = np.quantile(values, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    items = sum(int(np.any([p.den[c] > 0 for p in parts], axis=0).sum()) for c in concepts)
    out = {"lo": float(lo), "hi": float(hi), "concepts": len(concepts), "items": items}
    if resample_concepts and len(concepts) < FEW_CONCEPTS:
        out["note"] = f"only {len(concepts)} concept(s): this interval says little"
    return out


def paired(parts_a: list[Samples], parts_b: list[Samples], seed: int, resamples: int = DEFAULT_RESAMPLES,
           permutations: int = 10000) -> dict | None:
    """A minus B on the items both scored (the parts must hold the same concepts and items, in the
    same order): the difference, its interval, and a two-sided permutation p-value that swaps A and
    B within each concept. Each run keeps its own denominators (a judge parses some replies of one run
    and not of the other): the interval resamples both runs with the same draws (one seed, the same
    items) and takes the difference of their statistics."""
    concepts = sorted(c for c in parts_a[0].num if len(parts_a[0].num[c]))
    if not concepts:
        return None
    observed = _mean_estimate(parts_a) - _mean_estimate(parts_b)
    draws_a = replicates(parts_a, np.random.default_rng(seed), resamples, concepts)
    draws_b = replicates(parts_b, np.random.default_rng(seed), resamples, concepts)
    values = draws_a - draws_b
    values = values[~np.isnan(values)]
    if not len(values):
        return None
    lo, hi = np.quantile(values, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    rng = np.random.default_rng(seed + 1)
    keep = rng.choice((True, False), size=(permutations, len(concepts)))  # False: the concept's A and B swap
    stats = []
    for a, b in zip(parts_a, parts_b):
        sums = {k: np.array([getattr(part, k)[c].sum() for c in concepts]) for part, k in
                ((a, "num"), (a, "den"))}
        num_a, den_a = sums["num"], sums["den"]
        num_b = np.array([b.num[c].sum() for c in concepts])
        den_b = np.array([b.den[c].sum() for c in concepts])
        swapped = [(np.where(keep, x, y), np.where(keep, y, x)) for x, y in ((num_a, num_b), (den_a, den_b))]
        (na, nb), (da, db) = swapped
        stats.append(_ratio(na, da, a.combine) - _ratio(nb, db, b.combine))
    null = np.mean(stats, axis=0)
    p = (np.sum(np.abs(null) >= abs(observed) - 1e-12) + 1) / (permutations + 1)
    items = sum(int(np.any([q.den[c] > 0 for q in (*parts_a, *parts_b)], axis=0).sum()) for c in concepts)
    out = {"diff": observed, "lo": float(lo), "hi": float(hi), "p": float(p), "concepts": len(concepts),
           "items": items}
    if len(concepts) < FEW_CONCEPTS:
        out["note"] = f"only {len(concepts)} concept(s): this interval says little"
    return out


def _mean_estimate(parts: list[Samples]) -> float:
    return float(np.mean([p.estimate() for p in parts]))
