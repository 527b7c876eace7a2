"""How sure a number is: 95% intervals with the concept as the unit, and paired comparisons, from the
rows of ``scores.jsonl``.

What is estimated: a benchmark's mean over a population of concepts like the ones it holds. A
benchmark of this field has a few dozen concepts (UnifyBench 20, DreamBench 30, Yo'LLaVA 40) and a
concept's items are not independent of each other, so the concepts are the sample. The interval is
a delete-one-concept jackknife (Quenouille 1956; Tukey 1958; Efron & Stein 1981) of the statistic
exactly as the means compute it (pooled ratios of sums over items, weighted accuracy's two rates,
``attr_score``'s per-concept means), with a t quantile on (concepts - 1) degrees of freedom, as
cluster-robust inference with few clusters advises (Cameron & Miller, "A Practitioner's Guide to
Cluster-Robust Inference", J. Human Resources 50, 2015, sec. VI). Resampling the items again inside
resampled concepts (the two-stage bootstrap used before) counts the item noise twice and
over-covers (Field & Welsh, JRSS B 69, 2007); ``tests/test_uncertainty.py`` measures both.

One concept cannot say anything about a population of concepts: its interval is over its own
items, labelled as such (:func:`interval` with ``resample_concepts=False``, or one concept given).
Inside a concept the unit is the prompt (the images of one prompt share it); binary items with one
per unit get Wilson's score interval (Wilson, JASA 22, 1927).

:func:`paired` compares two runs on the concepts and items both scored: the same jackknife on the
difference of their statistics, and a permutation p-value that swaps the two runs' labels concept
by concept (a sign flip of each concept's differences).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

LEVEL = 0.95
DEFAULT_RESAMPLES = 1000  # kept for the --bootstrap setting (0: no intervals); the jackknife draws nothing
FEW_CONCEPTS = 5  # fewer concepts than this: an interval is shown, with a warning that it means little
METHOD = ("delete-one-concept jackknife standard error of the statistic as the mean computes it, t quantile on "
          "concepts - 1 df (Quenouille 1956, Efron & Stein 1981; Cameron & Miller 2015); one concept: over its "
          "prompts, Wilson (1927) for binary items")
ONE_CONCEPT = "one concept: the interval is over its own items, not over concepts"


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
    # Declared by the metric (an accuracy: each item right or wrong), never guessed from the values: a
    # score between 0 and 1 that happens to be 0 or 1 on every item is no proportion, and gets no Wilson.
    proportion: bool = False

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
                       {c: list(v) for c, v in self.ids.items()}, self.proportion)

    def only(self, concept: str) -> "Samples":
        return Samples({concept: self.num[concept]}, {concept: self.den[concept]}, self.combine,
                       {concept: self.ids.get(concept, [])}, self.proportion)

    def aligned(self, order: dict[str, list]) -> "Samples":
        """The items named by ``order`` ({concept: [item id, ...]}), in that order."""
        out = Samples(combine=self.combine, proportion=self.proportion)
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


# ----------------------------------------------------------------------------- the jackknife

def _prompt(item) -> object:
    """The unit inside a concept: an item's request (its images share the prompt)."""
    return item[0] if isinstance(item, tuple) else item


def _units(parts: list[Samples], by_concept: bool) -> list[tuple]:
    """The units the jackknife deletes: concepts, or (concept, prompt) pairs; only units holding an
    item of the metric (a nonzero denominator in some part)."""
    found = set()
    for part in parts:
        for c in part.num:
            for item, d in zip(part.ids.get(c) or [None] * len(part.den[c]), part.den[c]):
                if d > 0:
                    found.add((c,) if by_concept else (c, _prompt(item)))
    return sorted(found, key=repr)


def _unit_sums(part: Samples, units: list[tuple]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Per unit its ``num`` and ``den`` sums and the index of its concept (for ``concept_mean``)."""
    where = {u: k for k, u in enumerate(units)}
    num, den = np.zeros(len(units)), np.zeros(len(units))
    for c in part.num:
        ids = part.ids.get(c) or [None] * len(part.num[c])
        for item, n, d in zip(ids, part.num[c], part.den[c]):
            k = where.get((c,)) if (c,) in where else where.get((c, _prompt(item)))
            if k is not None:
                num[k] += n
                den[k] += d
    concepts = sorted({u[0] for u in units})
    group = np.array([concepts.index(u[0]) for u in units], dtype=int)
    return num, den, group, concepts


def _leave_one_out(part: Samples, units: list[tuple]) -> tuple[float, np.ndarray]:
    """The part's statistic on all units, and with each unit left out in turn (NaN where nothing is
    left). Linear in the units: a left-out unit is subtracted from its sums."""
    num, den, group, concepts = _unit_sums(part, units)
    with np.errstate(invalid="ignore", divide="ignore"):
        if part.combine == "pooled":
            total_n, total_d = num.sum(), den.sum()
            full = total_n / total_d if total_d > 0 else np.nan
            left = np.where(total_d - den > 0, (total_n - num) / (total_d - den), np.nan)
            return float(full), left
        concept_n = np.bincount(group, num, len(concepts))
        concept_d = np.bincount(group, den, len(concepts))
        valid = concept_d > 0
        ratios = np.where(valid, concept_n / np.where(valid, concept_d, 1), 0.0)
        total, count = ratios[valid].sum(), valid.sum()
        full = total / count if count else np.nan
        n_after, d_after = concept_n[group] - num, concept_d[group] - den  # the unit's concept without it
        still = d_after > 0
        after = np.where(still, n_after / np.where(still, d_after, 1), 0.0)
        new_total = total - np.where(valid[group], ratios[group], 0.0) + after
        new_count = count - valid[group] + still
        left = np.where(new_count > 0, new_total / np.where(new_count > 0, new_count, 1), np.nan)
        return float(full), left


def _combined(terms: list[tuple[float, list[Samples]]], units: list[tuple]) -> tuple[float, np.ndarray]:
    """``sum(coef * mean of the parts' statistics)`` over the terms (one run; A − B; a mean over
    seeds), on all units and with each unit left out of every term."""
    full, left = 0.0, np.zeros(len(units))
    for coef, parts in terms:
        pieces = [_leave_one_out(p, units) for p in parts]
        full += coef * float(np.mean([f for f, _ in pieces]))
        left += coef * np.mean([lo for _, lo in pieces], axis=0)
    return full, left


def _bounds(parts_list: list[list[Samples]]) -> tuple[float, float]:
    """The range the statistic cannot leave: a (weighted) mean of item ratios lies between the
    smallest and the largest of all its parts' items (weighted accuracy: the mean of two rates, each
    inside that range). A part whose items all agree does not narrow it."""
    ratios = [part.num[c][part.den[c] > 0] / part.den[c][part.den[c] > 0]
              for parts in parts_list for part in parts for c in part.num]
    ratios = np.concatenate(ratios) if ratios else np.zeros(0)
    return (float(ratios.min()), float(ratios.max())) if len(ratios) else (-np.inf, np.inf)


def jackknife(terms: list[tuple[float, list[Samples]]], by_concept: bool = True) -> dict | None:
    """``{"estimate", "se", "lo", "hi", "units"}``: the delete-one-unit jackknife standard error
    (Efron & Stein 1981: ``(G-1)/G * sum (theta_(g) - mean)^2``) and the 95% interval ``estimate ±
    t(G-1) * se`` over the units (concepts, or prompts), or None with fewer than two units."""
    units = _units([p for _, parts in terms for p in parts], by_concept)
    g = len(units)
    if g < 2:
        return None
    estimate, left = _combined(terms, units)
    if np.isnan(estimate) or np.isnan(left).any():
        return None  # a unit holds every item of a part: nothing to compare it with
    se = float(np.sqrt((g - 1) / g * np.sum((left - left.mean()) ** 2)))
    half = float(stats.t.ppf(1 - (1 - LEVEL) / 2, g - 1)) * se
    return {"estimate": estimate, "se": se, "lo": estimate - half, "hi": estimate + half, "units": g}


def wilson(successes: float, n: float) -> tuple[float, float]:
    """Wilson's score interval for a proportion (Wilson, JASA 22, 1927)."""
    z = float(stats.norm.ppf(1 - (1 - LEVEL) / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # p = 0 or 1 puts a bound at 0 or 1 exactly; rounding error would leave 1e-17 there
    lo, hi = centre - half, centre + half
    return (0.0 if lo < 1e-12 else float(lo)), (1.0 if hi > 1 - 1e-12 else float(hi))


def _binary(parts: list[Samples]) -> bool:
    """One part that its metric declares a proportion, of 0/1 items, one item per prompt: for Wilson."""
    if len(parts) != 1 or not parts[0].proportion:
        return False
    part = parts[0]
    for c in part.num:
        used = part.den[c] > 0
        if not np.all(np.isin(part.den[c], (0.0, 1.0))) or not np.all(np.isin(part.num[c][used], (0.0, 1.0))):
            return False
        prompts = [_prompt(i) for i, d in zip(part.ids.get(c) or [None] * len(used), used) if d]
        if None in prompts or len(set(prompts)) != len(prompts):
            return False
    return True


def _items(parts: list[Samples], concepts: list[str]) -> int:
    return sum(int(np.any([p.den[c] > 0 for p in parts if c in p.den], axis=0).sum()) for c in concepts)


def _within(parts: list[Samples]) -> dict | None:
    """The interval over the items themselves (one concept): Wilson for a proportion, else the
    jackknife over prompts."""
    if _binary(parts):
        part = parts[0]
        n = sum(part.den[c].sum() for c in part.num)
        if n <= 0:
            return None
        lo, hi = wilson(sum(part.num[c].sum() for c in part.num), n)
        return {"lo": lo, "hi": hi, "method": "Wilson"}
    found = jackknife([(1.0, parts)], by_concept=False)
    if found is None or found["se"] == 0:  # no spread among the prompts: nothing to say, not "± 0"
        return None
    found = _clip(found, [parts])
    return {"lo": found["lo"], "hi": found["hi"], "method": f"jackknife over {found['units']} prompts"}


def _clip(found: dict, parts_list: list[list[Samples]], signed: bool = False) -> dict:
    low, high = _bounds(parts_list)
    if signed:  # a difference of two statistics in [low, high]
        low, high = low - high, high - low
    found["lo"], found["hi"] = float(max(found["lo"], low)), float(min(found["hi"], high))
    return found


def _few(concepts: int) -> str | None:
    if concepts == 1:
        return ONE_CONCEPT
    if concepts < FEW_CONCEPTS:
        return f"only {concepts} concepts: this interval says little"
    return None


def interval(parts: list[Samples], seed: int = 0, resamples: int = DEFAULT_RESAMPLES,
             resample_concepts: bool = True) -> dict | None:
    """``{"lo", "hi", "concepts", "items", "method"[, "note"]}``: the 95% interval of the metric (the
    mean of the parts' statistics), or None when there is nothing to say. ``resample_concepts=False``
    (one concept's own numbers): over its items, Wilson for binary items, else the jackknife over
    prompts. ``seed`` and ``resamples`` are accepted for older callers: the jackknife draws nothing."""
    return interval_over_runs([parts], resample_concepts=resample_concepts)


def interval_over_runs(runs: list[list[Samples]], resample_concepts: bool = True) -> dict | None:
    """The interval of the mean over runs (seeds) of each run's statistic, the concepts as the unit:
    each deleted concept leaves every run at once (each concept averaged over the seeds), and the
    variance of the seeds' mean is added, so the seed-to-seed spread is inside the interval."""
    concepts = sorted({c for parts in runs for p in parts for c in p.num if np.any(p.den[c] > 0)})
    if not concepts:
        return None
    items = sum(_items(parts, [c for c in concepts if c in parts[0].num]) for parts in runs)
    if not resample_concepts or len(concepts) == 1:
        merged = runs[0] if len(runs) == 1 else None
        found = _within(merged) if merged is not None else None
        if found is None:
            return None
        out = {**found, "concepts": len(concepts), "items": items}
        if resample_concepts:  # asked for a benchmark interval, given one concept: say what this is
            out["note"] = ONE_CONCEPT
        return out
    found = jackknife([(1.0 / len(runs), parts) for parts in runs])
    if found is None:
        return None
    if len(runs) > 1:
        # A seed can move every concept at once (a shared draw): the deleted concepts cannot see
        # that, so the variance of the mean over seeds, sd^2 / seeds, is added. It counts each
        # concept's own seed noise twice: wider, never narrower, than the two sources together.
        per_run = [_mean_estimate(parts) for parts in runs]
        se = float(np.sqrt(found["se"] ** 2 + np.var(per_run, ddof=1) / len(runs)))
        half = float(stats.t.ppf(1 - (1 - LEVEL) / 2, found["units"] - 1)) * se
        found = {**found, "se": se, "lo": found["estimate"] - half, "hi": found["estimate"] + half}
    note = _few(len(concepts))
    if found["se"] == 0:
        # Every concept gives the same value (always-yes: pos_acc 1 everywhere): the jackknife has
        # no spread to see. For a proportion, Wilson over the items is the least the data allow (it
        # ignores the concepts, so it is no wider than the truth); otherwise the zero width says so.
        flat = "no spread between the concepts"
        pooled = _within(runs[0]) if len(runs) == 1 and _binary(runs[0]) else None
        if pooled:
            flat += ": Wilson's interval over the items"
            found = {**found, "lo": pooled["lo"], "hi": pooled["hi"]}
        note = f"{note}; {flat}" if note else flat
    else:
        found = _clip(found, runs)
    out = {"lo": found["lo"], "hi": found["hi"], "concepts": len(concepts), "items": items,
           "method": f"jackknife over {len(concepts)} concepts" + (
               f", {len(runs)} seeds averaged per concept, plus the variance of the seeds' mean" if len(runs) > 1
               else "")}
    if note:
        out["note"] = note
    return out


def product_interval(parts_x: list[Samples], parts_y: list[Samples]) -> dict | None:
    """The 95% interval of the product of two metrics' statistics on the same concepts (DreamBench++'s
    CP x PF): the delete-one-concept jackknife of the product, each deleted concept leaving both
    factors, with the same t quantile and few-concept notes as :func:`interval`."""
    units = _units(parts_x + parts_y, by_concept=True)
    g = len(units)
    if g < 2:
        return None
    full_x, left_x = _combined([(1.0, parts_x)], units)
    full_y, left_y = _combined([(1.0, parts_y)], units)
    estimate, left = full_x * full_y, left_x * left_y
    if np.isnan(estimate) or np.isnan(left).any():
        return None
    se = float(np.sqrt((g - 1) / g * np.sum((left - left.mean()) ** 2)))
    half = float(stats.t.ppf(1 - (1 - LEVEL) / 2, g - 1)) * se
    (lx, hx), (ly, hy) = _bounds([parts_x]), _bounds([parts_y])
    corners = [lx * ly, lx * hy, hx * ly, hx * hy]  # the product cannot leave these
    out = {"lo": float(max(estimate - half, min(corners))), "hi": float(min(estimate + half, max(corners))),
           "concepts": g, "items": _items(parts_x, [u[0] for u in units]),
           "method": f"jackknife of the product over {g} concepts"}
    note = _few(g)
    if note:
        out["note"] = note
    return out


def paired(parts_a: list[Samples], parts_b: list[Samples], seed: int = 0, resamples: int = DEFAULT_RESAMPLES,
           permutations: int = 10000) -> dict | None:
    """A minus B on the items both scored (the parts must hold the same concepts and items, in the
    same order): the difference, its 95% interval (the concept jackknife of the difference of the two
    statistics, each run with its own denominators: a judge parses some replies of one run and not of
    the other), and a two-sided permutation p-value that swaps A and B concept by concept. With one
    concept the interval is over its prompts, labelled, and the permutation swaps prompt by prompt. ``p_t``: the t test the interval inverts (0 is
    outside the interval exactly when ``p_t`` < 0.05). ``resamples`` is accepted and ignored."""
    concepts = sorted(c for c in parts_a[0].num if len(parts_a[0].num[c]))
    if not concepts:
        return None
    observed = _mean_estimate(parts_a) - _mean_estimate(parts_b)
    terms = [(1.0, parts_a), (-1.0, parts_b)]
    found = jackknife(terms, by_concept=len(concepts) > 1)
    if found is None:
        return None
    found = _clip(found, [parts_a, parts_b], signed=True)
    # The permutation swaps A and B unit by unit, the units the interval uses: the concepts, or with one
    # concept its prompts (swapping the one concept would only give the observed difference and its
    # negation, p = 1 whatever the data).
    by_concept = len(concepts) > 1
    units = _units([*parts_a, *parts_b], by_concept=by_concept)
    rng = np.random.default_rng(seed + 1)
    keep = rng.choice((True, False), size=(permutations, len(units)))  # False: the unit's A and B swap
    statistics = []
    for a, b in zip(parts_a, parts_b):
        num_a, den_a, group, _ = _unit_sums(a, units)
        num_b, den_b, _, _ = _unit_sums(b, units)
        na, nb = np.where(keep, num_a, num_b), np.where(keep, num_b, num_a)
        da, db = np.where(keep, den_a, den_b), np.where(keep, den_b, den_a)
        # per concept sums of the permuted units (with one concept: one column), then the statistic
        na, nb, da, db = (np.stack([x[:, group == g].sum(axis=1) for g in range(group.max() + 1)], axis=1)
                          for x in (na, nb, da, db))
        statistics.append(_ratio(na, da, a.combine) - _ratio(nb, db, b.combine))
    null = np.mean(statistics, axis=0)
    p = (np.sum(np.abs(null) >= abs(observed) - 1e-12) + 1) / (permutations + 1)
    # The t test the interval inverts: 0 outside the interval exactly when p_t < 0.05 (before any
    # clipping, which only trims where the difference cannot be).
    p_t = float(2 * stats.t.sf(abs(found["estimate"]) / found["se"], found["units"] - 1)) if found["se"] > 0 else \
        float(found["estimate"] == 0)
    out = {"diff": observed, "lo": found["lo"], "hi": found["hi"], "p": float(p), "p_t": p_t,
           "concepts": len(concepts),
           "items": _items([*parts_a, *parts_b], concepts),
           "method": f"jackknife over {found['units']} {'concepts' if len(concepts) > 1 else 'prompts'}"}
    note = _few(len(concepts))
    if note:
        out["note"] = note
    return out


def _ratio(num: np.ndarray, den: np.ndarray, combine: str) -> np.ndarray:
    """Per row of [R, C] concept sums, the statistic: pooled, or the mean of the concepts' ratios."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if combine == "pooled":
            return num.sum(1) / den.sum(1)
        return np.nanmean(np.where(den > 0, num / den, np.nan), axis=1)


def _mean_estimate(parts: list[Samples]) -> float:
    return float(np.mean([p.estimate() for p in parts]))
