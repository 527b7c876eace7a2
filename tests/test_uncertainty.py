"""Intervals and paired comparisons (unifybench/uncertainty.py) against independent computations
(scipy's t interval, Wilson interval and permutation test; a jackknife written out as loops), and a
coverage simulation that the two-stage bootstrap used before fails."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from conftest import cli, only_run_dir
from unifybench.uncertainty import Samples, interval, paired


def _one_item_per_concept(values) -> Samples:
    s = Samples()
    for i, v in enumerate(values):
        s.add(f"c{i:02d}", v, item=(f"k{i}", None))
    return s.frozen()


def _concepts(values_by_concept: dict[str, list[float]], combine: str = "pooled",
              proportion: bool = False) -> Samples:
    s = Samples(combine=combine, proportion=proportion)
    for concept, values in values_by_concept.items():
        for k, v in enumerate(values):
            s.add(concept, v, item=(f"k{k}", None))
    return s.frozen()


def test_with_one_item_per_concept_the_interval_is_the_t_interval_over_concepts():
    values = np.random.default_rng(1).normal(0.7, 0.1, size=20)
    ours = interval([_one_item_per_concept(values)], seed=3)
    theirs = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert ours["lo"] == pytest.approx(theirs[0]) and ours["hi"] == pytest.approx(theirs[1])
    assert ours["concepts"] == 20 and ours["items"] == 20 and "note" not in ours


def test_a_pooled_mean_gets_the_delete_one_concept_jackknife_written_out_as_loops():
    """Concepts of different sizes: the pooled mean weighs them by their items. The jackknife
    (Efron & Stein 1981): recompute the pooled mean with each concept deleted, variance
    (G-1)/G * sum of squared deviations, interval estimate ± t(G-1) * se."""
    rng = np.random.default_rng(4)
    data = {f"c{i}": list(rng.normal(rng.normal(0.5, 0.1), 0.1, size=n)) for i, n in enumerate((3, 9, 5, 12, 7, 4))}
    pooled = np.mean([v for vs in data.values() for v in vs])
    deleted = np.array([np.mean([v for name, vs in data.items() if name != out for v in vs]) for out in data])
    g = len(data)
    se = np.sqrt((g - 1) / g * np.sum((deleted - deleted.mean()) ** 2))
    half = stats.t.ppf(0.975, g - 1) * se
    ours = interval([_concepts(data)], seed=0)
    assert ours["lo"] == pytest.approx(pooled - half) and ours["hi"] == pytest.approx(pooled + half)
    assert ours["concepts"] == 6 and ours["items"] == 40


def test_one_concepts_binary_items_get_wilsons_interval_and_say_what_it_is():
    values = [1.0] * 9 + [0.0] * 3
    ours = interval([_concepts({"dog": values}, proportion=True)], seed=0)
    theirs = stats.binomtest(9, 12).proportion_ci(confidence_level=0.95, method="wilson")
    assert ours["lo"] == pytest.approx(theirs.low) and ours["hi"] == pytest.approx(theirs.high)
    assert "one concept" in ours["note"] and ours["method"] == "Wilson"
    perfect = interval([_concepts({"dog": [1.0] * 5}, proportion=True)], seed=0)  # never "1.000 ± 0.000"
    assert perfect["hi"] == 1.0 and perfect["lo"] == pytest.approx(
        stats.binomtest(5, 5).proportion_ci(method="wilson").low) and perfect["lo"] < 0.6


def test_wilson_is_for_what_the_metric_declares_a_proportion_not_for_scores_that_happen_to_be_0_or_1():
    """A BLEU or judge score of exactly 0 or 1 on every item is still a score: the prompt jackknife,
    never Wilson. Through metrics.samples: recognition accuracy is declared a proportion, BLEU is not."""
    from unifybench.metrics import samples

    rows = [{"scorer": "answer", "task": task, "concept": "dog", "key": f"{task}/dog/{k}", "correct": k % 3 != 0,
             "negative": False, "bleu": float(k % 3 != 0)} for task in ("rec", "vqa") for k in range(12)]
    accuracy = interval(samples("rec", "accuracy", rows), seed=0)
    bleu = interval(samples("vqa", "bleu", rows), seed=0)
    assert accuracy["method"] == "Wilson" and bleu["method"] != "Wilson"
    assert accuracy["hi"] < 1 and bleu["lo"] != accuracy["lo"]


def test_inside_a_concept_the_unit_is_the_prompt_not_the_image():
    """Four images per prompt share it: the interval is the t interval over the prompts' means."""
    rng = np.random.default_rng(2)
    prompt_means = rng.normal(0.3, 0.05, size=8)
    s = Samples()
    for k, m in enumerate(prompt_means):
        for image in range(4):
            s.add("dog", m + rng.normal(0, 0.01), item=(f"p{k}", f"img{image}.png"))
    s = s.frozen()
    per_prompt = s.num["dog"].reshape(8, 4).mean(1)
    ours = interval([s], seed=0, resample_concepts=False)
    theirs = stats.t.interval(0.95, 7, loc=per_prompt.mean(), scale=stats.sem(per_prompt))
    assert ours["lo"] == pytest.approx(theirs[0]) and ours["hi"] == pytest.approx(theirs[1])


def test_an_interval_stays_inside_the_range_of_its_items_and_a_constant_part_does_not_narrow_it():
    """One concept's weighted accuracy: both positives wrong, two of four negatives right. The
    prompt jackknife on t(5) reaches past 0 and 1: clipped there, not at the positives' own 0."""
    pos, neg = Samples(proportion=True), Samples(proportion=True)  # a recognition rate
    for k, (negative, correct) in enumerate([(0, 0), (0, 0), (1, 1), (1, 0), (1, 1), (1, 0)]):
        pos.add("dog", correct * (not negative), float(not negative), item=(f"k{k}", None))
        neg.add("dog", correct * negative, float(negative), item=(f"k{k}", None))
    found = interval([pos.frozen(), neg.frozen()], resample_concepts=False)
    assert found["lo"] == 0.0 and 0.5 < found["hi"] <= 1.0
    wilson = interval([neg.frozen()], resample_concepts=False)  # 2 of 4
    assert wilson["method"] == "Wilson" and 0 < wilson["lo"] < 0.5 < wilson["hi"] < 1


def test_concepts_come_first_a_concept_with_many_items_does_not_narrow_the_interval():
    """Two concepts far apart, many items each: resampling items alone would give a narrow interval;
    the concepts' disagreement must show, and few concepts say so."""
    s = Samples()
    for concept, centre in (("a", 0.2), ("b", 0.8)):
        for v in np.random.default_rng(0).normal(centre, 0.01, size=200):
            s.add(concept, v)
    found = interval([s.frozen()], seed=0)
    assert found["lo"] < 0.25 and found["hi"] > 0.75 and "only 2 concepts" in found["note"]


# ----------------------------------------------------------------------------- coverage

def _two_stage(parts: list[Samples], rng, resamples: int) -> tuple[float, float]:
    """A private copy of the scheme used before (kept to show what it did): concepts with
    replacement, then each drawn concept's items with replacement, percentile interval."""
    concepts = sorted(parts[0].num)
    c = len(concepts)
    draws = rng.integers(0, c, size=(resamples, c))
    values = []
    for part in parts:
        num, den = np.zeros((resamples, c)), np.zeros((resamples, c))
        for k, name in enumerate(concepts):
            where = draws == k
            n = len(part.num[name])
            counts = rng.multinomial(n, np.full(n, 1.0 / n), size=int(where.sum()))
            num[where], den[where] = counts @ part.num[name], counts @ part.den[name]
        with np.errstate(invalid="ignore", divide="ignore"):
            values.append(num.sum(1) / den.sum(1) if part.combine == "pooled"
                          else np.nanmean(np.where(den > 0, num / den, np.nan), axis=1))
    stat = np.mean(values, axis=0)
    stat = stat[~np.isnan(stat)]
    return tuple(np.quantile(stat, [0.025, 0.975]))


def _binary_no_concept_effect(rng):
    return [_concepts({f"c{i}": list((rng.random(10) < 0.7).astype(float)) for i in range(20)}, proportion=True)], 0.7


def _clip_like_three_concepts(rng):
    return [_concepts({f"c{i}": list(rng.normal(0.7 + rng.normal(0, 0.05), 0.05, size=12)) for i in range(3)})], 0.7


def _weighted_accuracy(rng):
    """20 concepts, each 6 positive and 12 negative questions, concept effects on both rates."""
    pos, neg = Samples(proportion=True), Samples(proportion=True)
    for i in range(20):
        rates = np.clip([0.75 + rng.normal(0, 0.08), 0.6 + rng.normal(0, 0.08)], 0, 1)
        for k in range(18):
            negative = k >= 6
            correct = float(rng.random() < rates[int(negative)])
            pos.add(f"c{i}", correct * (not negative), float(not negative), item=(f"k{k}", None))
            neg.add(f"c{i}", correct * negative, float(negative), item=(f"k{k}", None))
    return [pos.frozen(), neg.frozen()], (0.75 + 0.6) / 2


@pytest.mark.parametrize("make", [_binary_no_concept_effect, _clip_like_three_concepts, _weighted_accuracy])
def test_the_interval_covers_the_benchmark_mean_95_percent_of_the_time(make):
    """400 simulated benchmarks per configuration: the Monte-Carlo standard error of a coverage near
    0.95 is about 0.011, so the band is about ±2.7 of them (at 2,000 replications the three
    coverages are 0.945, 0.947 and 0.948)."""
    rng = np.random.default_rng(1)
    covered = []
    for _ in range(400):
        parts, truth = make(rng)
        found = interval(parts, seed=0)
        covered.append(found["lo"] <= truth <= found["hi"])
    assert 0.92 <= np.mean(covered) <= 0.98, np.mean(covered)


def test_the_two_stage_bootstrap_used_before_misses_the_band():
    """The same simulations as above: the old scheme over-covers with many concepts (item noise
    counted twice) and under-covers with three."""
    coverage = {}
    for make in (_binary_no_concept_effect, _clip_like_three_concepts):
        rng, resampling = np.random.default_rng(1), np.random.default_rng(7)
        covered = []
        for _ in range(400):
            parts, truth = make(rng)
            lo, hi = _two_stage(parts, resampling, 400)
            covered.append(lo <= truth <= hi)
        coverage[make.__name__] = np.mean(covered)
    assert coverage["_binary_no_concept_effect"] > 0.98 and coverage["_clip_like_three_concepts"] < 0.9, coverage


# ----------------------------------------------------------------------------- paired

def _paired_binary(rng, shift: float):
    """Two runs on 20 concepts of 12 binary items: A's success rate is B's plus ``shift``, and both
    share each concept's difficulty."""
    a, b = Samples(), Samples()
    for i in range(20):
        base = np.clip(0.55 + rng.normal(0, 0.15), 0.05, 0.9)
        for k in range(12):
            a.add(f"c{i}", float(rng.random() < base + shift), item=(f"k{k}", None))
            b.add(f"c{i}", float(rng.random() < base), item=(f"k{k}", None))
    return [a.frozen()], [b.frozen()]


def test_compares_interval_excludes_zero_when_its_p_value_says_significant():
    """On simulated true differences, the runs the permutation test calls significant at 5% are
    the ones whose interval leaves out 0 (the two-stage interval left 0 in for 39-59% of them)."""
    rng = np.random.default_rng(5)
    agree, significant, excluded = 0, 0, 0
    for rep in range(150):
        a, b = _paired_binary(rng, shift=0.06)
        found = paired(a, b, seed=rep, permutations=2000)
        is_significant, leaves_out_zero = found["p"] < 0.05, not found["lo"] <= 0 <= found["hi"]
        assert (found["p_t"] < 0.05) == leaves_out_zero  # the t test the interval inverts, exactly
        agree += is_significant == leaves_out_zero
        significant += is_significant
        excluded += is_significant and leaves_out_zero
    assert significant >= 30  # the simulation holds significant differences
    assert excluded / significant >= 0.9 and agree / 150 >= 0.9, (excluded, significant, agree)


def test_a_paired_comparison_keeps_each_runs_own_denominators():
    """A judge parses some replies of one run and not of the other: each run's score is its own mean
    over its parsed items, and A − B is the difference of those (it came out with the wrong sign when
    B was divided by A's denominators)."""
    a, b = Samples(), Samples()
    # (score, parsed) per item, A then B, over two concepts of three items
    rows = {"x": [((1.0, 1), (0.5, 1)), ((1.0, 1), (0.0, 0)), ((0.5, 1), (1.0, 1))],
            "y": [((1.0, 1), (0.5, 1)), ((0.0, 0), (1.0, 1)), ((1.0, 1), (0.5, 1))]}
    for concept, items in rows.items():
        for k, ((sa, pa), (sb, pb)) in enumerate(items):
            a.add(concept, sa * pa, pa, item=k)
            b.add(concept, sb * pb, pb, item=k)
    mean_a = (1.0 + 1.0 + 0.5 + 1.0 + 1.0) / 5  # the parsed scores of A
    mean_b = (0.5 + 1.0 + 0.5 + 1.0 + 0.5) / 5
    found = paired([a.frozen()], [b.frozen()], seed=0, permutations=2000)
    assert found["diff"] == pytest.approx(mean_a - mean_b) and found["diff"] > 0
    assert found["lo"] <= found["diff"] <= found["hi"] and found["items"] == 6


def test_a_paired_comparison_is_the_paired_t_interval_and_scipys_permutation_test():
    rng = np.random.default_rng(7)
    a = rng.normal(0.6, 0.1, size=10)
    b = a - rng.normal(0.05, 0.05, size=10)
    found = paired([_one_item_per_concept(a)], [_one_item_per_concept(b)], seed=8, permutations=20000)
    assert found["diff"] == pytest.approx(np.mean(a - b))
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert found["lo"] == pytest.approx(ci.low) and found["hi"] == pytest.approx(ci.high)
    assert found["p_t"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    exact = stats.permutation_test((a, b), lambda x, y: np.mean(x - y), permutation_type="samples",
                                   alternative="two-sided", n_resamples=np.inf).pvalue
    assert found["p"] == pytest.approx(exact, abs=0.004)


# ----------------------------------------------------------------------------- through the command line

def test_every_mean_of_a_run_has_an_interval_around_it_and_bootstrap_0_turns_them_off(tmp_path):
    out = tmp_path / "runs"
    ran = cli("run", "--method", "random-answer", "--tasks", "rec,vqa,choice", "--out", str(out), "--json")
    assert ran.returncode == 0, ran.stderr
    results = json.loads(ran.stdout)
    assert results["bootstrap"]["level"] == 0.95 and "jackknife" in results["bootstrap"]["method"]
    for task, metrics in results["tasks"].items():
        for metric, value in metrics.items():
            if isinstance(value, float):
                found = results["intervals"][task][metric]
                assert found["lo"] - 1e-9 <= value <= found["hi"] + 1e-9, (task, metric)
    dog = results["concept_intervals"]["dog"]["rec"]["accuracy"]
    assert dog["concepts"] == 1 and dog["lo"] <= results["concepts"]["dog"]["rec"]["accuracy"] <= dog["hi"]
    rows = [json.loads(line) for line in (only_run_dir(out) / "scores.jsonl").read_text().splitlines()]
    correct = [r["correct"] for r in rows if r["concept"] == "dog" and r["task"] == "rec" and r["scorer"] == "answer"]
    wilson = stats.binomtest(sum(correct), len(correct)).proportion_ci(method="wilson")
    assert dog["lo"] == pytest.approx(wilson.low) and dog["hi"] == pytest.approx(wilson.high)
    again = cli("run", "--method", "random-answer", "--tasks", "rec,vqa,choice", "--out", str(out), "--json")
    assert json.loads(again.stdout)["intervals"] == results["intervals"]  # the same every time
    off = cli("run", "--method", "random-answer", "--tasks", "rec,vqa,choice", "--out", str(out), "--json",
              "--bootstrap", "0")
    assert json.loads(off.stdout)["intervals"] == {} and only_run_dir(out)  # rescored in the same directory


def test_compare_through_the_command_line_is_the_paired_t_interval_and_scipys_permutation_test(tmp_path):
    out = tmp_path / "runs"
    for seed in ("0", "1"):  # random-answer's shuffled words differ with the seed: one vqa item per concept
        ran = cli("run", "--method", "random-answer", "--tasks", "vqa", "--limit", "1", "--seed", seed, "--out", str(out))
        assert ran.returncode == 0, ran.stderr
    runs = sorted(p for p in out.iterdir() if p.is_dir())
    runs.sort(key=lambda p: json.loads((p / "run.json").read_text())["spec"]["seed"])
    table = cli("compare", *map(str, runs), "--format", "json")
    assert table.returncode == 0, table.stderr
    row = next(r for r in json.loads(table.stdout) if r["metric"] == "vqa.bleu")

    def bleu(run):
        rows = [json.loads(line) for line in (run / "scores.jsonl").read_text().splitlines()]
        return {r["concept"]: r["bleu"] for r in rows if r["task"] == "vqa"}

    a, b = bleu(runs[0]), bleu(runs[1])
    x, y = np.array([a[c] for c in sorted(a)]), np.array([b[c] for c in sorted(a)])
    assert row["diff"] == pytest.approx(np.mean(x - y)) and row["concepts"] == len(x) == 6
    ci = stats.ttest_rel(x, y).confidence_interval(0.95)
    assert row["lo"] == pytest.approx(max(ci.low, -1)) and row["hi"] == pytest.approx(min(ci.high, 1))
    exact = stats.permutation_test((x, y), lambda u, v: np.mean(u - v), permutation_type="samples",
                                   n_resamples=np.inf).pvalue
    assert row["p"] == pytest.approx(exact, abs=0.01)
    md = cli("compare", *map(str, runs)).stdout
    assert "jackknife" in md and "permutation" in md


def test_compare_refuses_runs_that_a_table_would_keep_apart(tmp_path):
    out = tmp_path / "runs"
    for extra in ([], ["--protocol", "reference"]):
        assert cli("run", "--method", "always-yes", "--tasks", "rec", "--limit", "1", "--out", str(out),
                   *extra).returncode == 0
    ran = cli("compare", *map(str, sorted(p for p in out.iterdir() if p.is_dir())))
    assert ran.returncode == 2 and "protocol: " in ran.stderr and "reference" in ran.stderr and len(ran.stderr.strip().splitlines()) == 1


def test_with_one_concept_the_permutation_swaps_prompts_as_the_interval_uses_them():
    """One concept: swapping A and B as a whole only gives ± the observed difference (p = 1 always).
    The permutation swaps prompt by prompt; with 10 prompts its p is the exact sign-flip test over the
    prompts' differences, enumerated here (2^10 relabellings)."""
    import itertools

    rng = np.random.default_rng(5)
    a_values, b_values = rng.normal(0.6, 0.1, 10), rng.normal(0.5, 0.1, 10)
    a, b = Samples(), Samples()
    for k, (x, y) in enumerate(zip(a_values, b_values)):
        a.add("dog", x, item=(f"k{k}", None))
        b.add("dog", y, item=(f"k{k}", None))
    ours = paired([a.frozen()], [b.frozen()], seed=0)
    d = a_values - b_values
    flips = [abs(np.mean(np.array(s) * d)) >= abs(d.mean()) - 1e-12 for s in itertools.product((1, -1), repeat=10)]
    exact = np.mean(flips)
    assert exact < 0.2 and ours["p"] == pytest.approx(exact, abs=0.01)
    assert ours["p"] < 1
