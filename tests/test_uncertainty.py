"""Intervals and paired comparisons (unifybench/uncertainty.py) against independent computations:
scipy.stats.bootstrap (percentile) and scipy.stats.permutation_test on the same rows."""
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
        s.add(f"c{i:02d}", v)
    return s.frozen()


def test_with_one_item_per_concept_the_interval_is_scipys_percentile_bootstrap():
    rng = np.random.default_rng(1)
    values = rng.normal(0.7, 0.1, size=20)
    ours = interval([_one_item_per_concept(values)], seed=3, resamples=20000)
    theirs = stats.bootstrap((values,), np.mean, confidence_level=0.95, method="percentile", n_resamples=20000,
                             random_state=4).confidence_interval
    assert ours["lo"] == pytest.approx(theirs.low, abs=0.004) and ours["hi"] == pytest.approx(theirs.high, abs=0.004)
    assert ours["concepts"] == 20 and ours["items"] == 20 and "note" not in ours


def test_inside_one_concept_the_interval_resamples_its_items_as_scipy_does():
    values = np.random.default_rng(2).uniform(size=40)
    s = Samples()
    for v in values:
        s.add("only", v)
    ours = interval([s.frozen()], seed=5, resamples=20000, resample_concepts=False)
    theirs = stats.bootstrap((values,), np.mean, method="percentile", n_resamples=20000,
                             random_state=6).confidence_interval
    assert ours["lo"] == pytest.approx(theirs.low, abs=0.005) and ours["hi"] == pytest.approx(theirs.high, abs=0.005)


def test_concepts_come_first_a_concept_with_many_items_does_not_narrow_the_interval():
    """Two concepts far apart, many items each: resampling items alone would give a narrow interval;
    the concepts' disagreement must show, and few concepts say so."""
    s = Samples()
    for concept, centre in (("a", 0.2), ("b", 0.8)):
        for v in np.random.default_rng(0).normal(centre, 0.01, size=200):
            s.add(concept, v)
    found = interval([s.frozen()], seed=0, resamples=4000)
    assert found["lo"] < 0.25 and found["hi"] > 0.75 and "only 2 concept(s)" in found["note"]


def _brute_force_two_stage(concepts: dict[str, np.ndarray], resamples: int, seed: int) -> np.ndarray:
    """The textbook two-stage bootstrap, written out as loops (Davison & Hinkley 1997, sec. 3.8):
    draw the concepts with replacement, then each drawn concept's items with replacement, and pool."""
    rng = np.random.default_rng(seed)
    names = sorted(concepts)
    out = np.empty(resamples)
    for b in range(resamples):
        pooled = []
        for name in rng.choice(names, size=len(names), replace=True):
            items = concepts[name]
            pooled.extend(rng.choice(items, size=len(items), replace=True))
        out[b] = np.mean(pooled)
    return out


def test_the_two_stage_bootstrap_matches_the_textbook_loops_and_is_wider_than_concepts_alone():
    """Five concepts of equal means but different sizes: resampling the concepts alone would give no
    spread at all; only the item stage can, as the loops do."""
    from unifybench.uncertainty import replicates

    rng = np.random.default_rng(11)
    concepts = {f"c{i}": rng.permutation(np.repeat([0.0, 1.0], n)) for i, n in enumerate((3, 5, 8, 4, 6))}
    s = Samples()
    for name, values in concepts.items():
        for v in values:
            s.add(name, v)
    ours = replicates([s.frozen()], np.random.default_rng(12), 8000)
    theirs = _brute_force_two_stage(concepts, 8000, seed=13)
    assert np.std(theirs) > 0.05  # the item stage makes the spread
    assert np.mean(ours) == pytest.approx(np.mean(theirs), abs=0.005)
    assert np.std(ours) == pytest.approx(np.std(theirs), rel=0.05)
    for q in (0.025, 0.5, 0.975):
        assert np.quantile(ours, q) == pytest.approx(np.quantile(theirs, q), abs=0.02)


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
    found = paired([a.frozen()], [b.frozen()], seed=0, resamples=4000, permutations=2000)
    assert found["diff"] == pytest.approx(mean_a - mean_b) and found["diff"] > 0
    assert found["lo"] <= found["diff"] <= found["hi"] and found["items"] == 6


def test_a_paired_comparison_is_scipys_paired_bootstrap_and_permutation_test():
    rng = np.random.default_rng(7)
    a = rng.normal(0.6, 0.1, size=10)
    b = a - rng.normal(0.05, 0.05, size=10)
    found = paired([_one_item_per_concept(a)], [_one_item_per_concept(b)], seed=8, resamples=20000,
                   permutations=20000)
    assert found["diff"] == pytest.approx(np.mean(a - b))
    ci = stats.bootstrap((a, b), lambda x, y: np.mean(x - y), paired=True, method="percentile", n_resamples=20000,
                         random_state=9).confidence_interval
    assert found["lo"] == pytest.approx(ci.low, abs=0.005) and found["hi"] == pytest.approx(ci.high, abs=0.005)
    exact = stats.permutation_test((a, b), lambda x, y: np.mean(x - y), permutation_type="samples",
                                   alternative="two-sided", n_resamples=np.inf).pvalue
    assert found["p"] == pytest.approx(exact, abs=0.004)


def test_every_mean_of_a_run_has_an_interval_around_it_and_bootstrap_0_turns_them_off(tmp_path):
    out = tmp_path / "runs"
    ran = cli("run", "--method", "random-answer", "--tasks", "rec,vqa,choice", "--out", str(out), "--json")
    assert ran.returncode == 0, ran.stderr
    results = json.loads(ran.stdout)
    assert results["bootstrap"]["resamples"] == 1000 and results["bootstrap"]["level"] == 0.95
    for task, metrics in results["tasks"].items():
        for metric, value in metrics.items():
            if isinstance(value, float):
                found = results["intervals"][task][metric]
                assert found["lo"] - 1e-9 <= value <= found["hi"] + 1e-9, (task, metric)
    dog = results["concept_intervals"]["dog"]["rec"]["accuracy"]
    assert dog["concepts"] == 1 and dog["lo"] <= results["concepts"]["dog"]["rec"]["accuracy"] <= dog["hi"]
    again = cli("run", "--method", "random-answer", "--tasks", "rec,vqa,choice", "--out", str(out), "--json")
    assert json.loads(again.stdout)["intervals"] == results["intervals"]  # seeded: the same every time
    off = cli("run", "--method", "random-answer", "--tasks", "rec,vqa,choice", "--out", str(out), "--json",
              "--bootstrap", "0")
    assert json.loads(off.stdout)["intervals"] == {} and only_run_dir(out)  # rescored in the same directory


def test_compare_through_the_command_line_is_scipys_paired_bootstrap_and_permutation_test(tmp_path):
    out = tmp_path / "runs"
    for seed in ("0", "1"):  # random-answer's shuffled words differ with the seed: one vqa item per concept
        ran = cli("run", "--method", "random-answer", "--tasks", "vqa", "--limit", "1", "--seed", seed, "--out", str(out))
        assert ran.returncode == 0, ran.stderr
    runs = sorted(p for p in out.iterdir() if p.is_dir())
    runs.sort(key=lambda p: json.loads((p / "run.json").read_text())["spec"]["seed"])
    table = cli("compare", *map(str, runs), "--format", "json", "--bootstrap", "20000")
    assert table.returncode == 0, table.stderr
    row = next(r for r in json.loads(table.stdout) if r["metric"] == "vqa.bleu")

    def bleu(run):
        rows = [json.loads(line) for line in (run / "scores.jsonl").read_text().splitlines()]
        return {r["concept"]: r["bleu"] for r in rows if r["task"] == "vqa"}

    a, b = bleu(runs[0]), bleu(runs[1])
    x, y = np.array([a[c] for c in sorted(a)]), np.array([b[c] for c in sorted(a)])
    assert row["diff"] == pytest.approx(np.mean(x - y)) and row["concepts"] == len(x) == 6
    ci = stats.bootstrap((x, y), lambda u, v: np.mean(u - v), paired=True, method="percentile", n_resamples=20000,
                         random_state=1).confidence_interval
    assert row["lo"] == pytest.approx(ci.low, abs=0.01) and row["hi"] == pytest.approx(ci.high, abs=0.01)
    exact = stats.permutation_test((x, y), lambda u, v: np.mean(u - v), permutation_type="samples",
                                   n_resamples=np.inf).pvalue
    assert row["p"] == pytest.approx(exact, abs=0.01)


def test_compare_refuses_runs_that_a_table_would_keep_apart(tmp_path):
    out = tmp_path / "runs"
    for extra in ([], ["--protocol", "reference"]):
        assert cli("run", "--method", "always-yes", "--tasks", "rec", "--limit", "1", "--out", str(out),
                   *extra).returncode == 0
    ran = cli("compare", *map(str, sorted(p for p in out.iterdir() if p.is_dir())))
    assert ran.returncode == 2 and "protocol: " in ran.stderr and "reference" in ran.stderr and len(ran.stderr.strip().splitlines()) == 1
