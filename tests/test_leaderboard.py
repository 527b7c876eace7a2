"""The leaderboard: runs beside published rows, never mixing protocols or backbones in one table."""
from __future__ import annotations

import csv
import io

import pytest

from conftest import cli, only_run_dir


def test_leaderboard_separates_protocols_and_marks_not_scored(tmp_path):
    out = tmp_path / "runs"
    for extra in ([], ["--protocol", "reference"]):
        proc = cli("run", "--method", "always-yes", "--tasks", "rec,vqa,gen", "--out", str(out), *extra)
        assert proc.returncode == 0, proc.stderr

    md = cli("leaderboard", str(out))
    assert md.returncode == 0, md.stderr
    text = md.stdout
    # always-yes makes no generation scores, so no scorer backbone is named for it.
    assert "### mini: protocol default (understanding only)" in text
    assert "### mini: protocol reference (understanding only)" in text
    # A column no row has a value in is left out, with why.
    assert "No row of this table has: vqa.judge_score, vqa.judge_unparsed: no judge configured" in text
    assert "gen.clip_i, gen.clip_t, gen.dino, gen.face_sim: method always-yes does not support gen" in text
    # Published rows keep their source and confidence, in their benchmark's own table.
    assert "### dreambench: protocol default" in text and "DreamBooth (Ruiz et al., CVPR 2023)" in text
    mini_table = text.split("### mini: protocol default")[1].split("###")[0]
    assert "[published]" not in mini_table

    as_csv = cli("leaderboard", str(out), "--format", "csv", "--no-published")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert {r["protocol"] for r in rows} == {"default", "reference"}
    assert all(r["method"] == "always-yes" for r in rows)
    assert {float(r["rec.pos_acc"]) for r in rows} == {1.0}

    page = tmp_path / "board.html"
    html = cli("leaderboard", str(out), "--format", "html", "--out", str(page))
    assert html.returncode == 0, html.stderr
    assert "<table" in page.read_text()


def test_random_backbone_rows_are_labelled(tmp_path):
    proc = cli("run", "--method", "real-images", "--backbones", "tiny", "--limit", "1",
                   "--images-per-prompt", "1", "--concepts", "dog", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    board = cli("leaderboard", str(tmp_path), "--no-published")
    title = next(line for line in board.stdout.splitlines() if line.startswith("### "))
    assert "scorer backbones tiny, --limit 1" in title
    assert title.endswith("(random-init weights: plumbing and speed only, not results)")


def test_clip_choice_reaches_the_scorer_and_rescoring_needs_no_new_predictions(tmp_path, monkeypatch):
    """--clip ViT-L-14 is passed to the scorer and named in run.json and results.json. Like the
    judge, scorer backbones are scoring settings: the same predictions are rescored in the same run
    directory without the method, and the leaderboard puts the rescored run in the L/14 table."""
    import json

    from unifybench.cli import CLIP_CHOICES
    from unifybench.report import build_leaderboard
    from unifybench.scoring import encoders

    assert CLIP_CHOICES == encoders.CLIP_MODELS
    asked = []
    real = encoders.load_backbones

    def recording(kind="default", device="cpu", clip_name=encoders.DEFAULT_CLIP, seed=0, local_only=None):
        asked.append(clip_name)
        return real("tiny", device=device, seed=seed)  # the plumbing is under test; a real L/14 is slow here

    monkeypatch.setattr(encoders, "load_backbones", recording)
    out = tmp_path / "runs"
    common = ["run", "--method", "real-images", "--tasks", "gen", "--concepts", "dog", "--limit", "1",
              "--images-per-prompt", "1", "--backbones", "random", "--out", str(out)]
    first = cli(*common)
    assert first.returncode == 0, first.stderr
    board = build_leaderboard([out], include_published=False)
    assert "scorer backbones random, --limit 1" in board and "CLIP ViT-L-14" not in board
    second = cli(*common, "--clip", "ViT-L-14")
    assert second.returncode == 0, second.stderr
    assert asked == ["ViT-B-32", "ViT-L-14"]
    run_dir = only_run_dir(out)
    assert "method is not loaded" in second.stdout + second.stderr
    assert json.loads((run_dir / "run.json").read_text())["backbones"]["clip_model"] == "ViT-L-14"
    results = json.loads((run_dir / "results.json").read_text())
    assert "OpenAI CLIP ViT-L/14" in results["backbones"]["clip"]
    board = build_leaderboard([out], include_published=False)
    assert "scorer backbones random (CLIP ViT-L-14)" in board


def test_an_understanding_run_never_sits_under_a_random_init_heading(tmp_path):
    out = tmp_path / "runs"
    for args in (["--method", "real-images", "--backbones", "tiny", "--images-per-prompt", "1"],
                 ["--method", "random-answer", "--tasks", "rec"]):
        assert cli("run", *args, "--limit", "1", "--concepts", "dog", "--out", str(out)).returncode == 0
    board = cli("leaderboard", str(out), "--no-published").stdout
    tables = {block.splitlines()[0]: block for block in board.split("### ")[1:]}
    random_init = [t for t in tables if "random-init" in t]
    assert random_init and all("random-answer" not in tables[t] for t in random_init)
    assert sum("random-answer" in block for block in tables.values()) == 1


def test_a_column_where_every_row_ties_marks_no_row_best():
    import pandas as pd

    from unifybench.report import _best

    assert _best(pd.Series([0.0, 0.0, 0.0], dtype=object), "higher") == set()
    assert _best(pd.Series([0.5, 0.7, 0.7], dtype=object), "higher") == {1, 2}


def test_a_count_averaged_over_seeds_shows_its_mean_not_a_rounded_one():
    """Three seeds with 11, 12 and 12 unparsed replies: 11.667 (it read 11.700)."""
    from unifybench.report import LeaderboardRow, as_markdown, build_tables, seed_groups

    base = dict(benchmark="b", protocol="default", backbones="not used", judge="", limit="", fingerprint="f",
                method="m", source="run", confidence="this harness", concept_set=("a",))
    rows = seed_groups([LeaderboardRow(**base, seed=seed, metrics={"rec.unparsed": count})
                        for seed, count in ((0, 11), (1, 12), (2, 12))])
    assert len(rows) == 1 and rows[0].value("rec.unparsed") == pytest.approx(35 / 3)
    md = as_markdown(build_tables(rows))
    assert "| 11.667 |" in md and "11.700" not in md


def test_where_a_judge_scored_open_answers_its_score_leads_char_bleu(tmp_path):
    out = tmp_path / "runs"
    ran = cli("run", "--method", "random-answer", "--tasks", "vqa", "--limit", "1", "--concepts", "dog",
              "--judge", "hf:tiny", "--judge-max-tokens", "1", "--out", str(out))
    assert ran.returncode == 0, ran.stderr
    header = next(line for line in cli("leaderboard", str(out), "--no-published").stdout.splitlines()
                  if line.startswith("| method"))
    assert header.index("vqa.judge_score") < header.index("vqa.bleu")


def _decimals(half: float) -> int:
    """Two significant digits of a half-width, 1 to 4 decimals (README "Uncertainty")."""
    import math
    return min(4, max(1, 1 - math.floor(math.log10(half))))


def test_seeds_run_apart_and_sit_in_one_row_with_their_spread_and_an_interval_over_concepts(tmp_path):
    import json
    import statistics

    import numpy as np
    from scipy import stats

    out = tmp_path / "runs"
    ran = cli("run", "--method", "random-answer", "--tasks", "rec", "--seeds", "0,1,2", "--out", str(out), "--json")
    assert ran.returncode == 0, ran.stderr
    results = json.loads(ran.stdout)
    assert [r["seed"] for r in results] == [0, 1, 2] and len({r["run"] for r in results}) == 3
    values = [r["tasks"]["rec"]["accuracy"] for r in results]
    rows = list(csv.DictReader(io.StringIO(cli("leaderboard", str(out), "--format", "csv", "--no-published").stdout)))
    assert len(rows) == 1 and rows[0]["seeds"] == "3" and "seeds 0, 1, 2" in rows[0]["source"]
    assert float(rows[0]["rec.accuracy"]) == pytest.approx(statistics.mean(values))
    assert float(rows[0]["rec.accuracy_sd"]) == pytest.approx(statistics.stdev(values))
    # The interval: each concept deleted from every seed at once, the mean over seeds of the pooled
    # accuracy recomputed, the jackknife variance plus the variance of the seeds' mean (sd^2 / 3),
    # t on concepts - 1 df (written out here).
    answers = []
    for r in results:
        scores = [json.loads(line) for line in (out / r["run"] / "scores.jsonl").read_text().splitlines()]
        answers.append([(s["concept"], float(s["correct"])) for s in scores if s["scorer"] == "answer"])
    concepts = sorted({c for c, _ in answers[0]})
    deleted = np.array([np.mean([np.mean([v for c, v in seed if c != out_c]) for seed in answers])
                        for out_c in concepts])
    g = len(concepts)
    variance = (g - 1) / g * np.sum((deleted - deleted.mean()) ** 2) + statistics.variance(values) / 3
    half = stats.t.ppf(0.975, g - 1) * np.sqrt(variance)
    mean = statistics.mean(values)
    assert float(rows[0]["rec.accuracy_lo"]) == pytest.approx(mean - half)
    assert float(rows[0]["rec.accuracy_hi"]) == pytest.approx(mean + half)
    md = cli("leaderboard", str(out), "--no-published").stdout
    places = _decimals(half)
    assert f"{mean:.{places}f} ± {half:.{places}f} (sd {statistics.stdev(values):.3f}, 3 seeds)" in md


def test_intervals_show_in_every_format_and_only_a_paired_test_marks_a_row_as_not_different(tmp_path):
    import json

    out = tmp_path / "runs"
    for method in ("always-yes", "random-answer"):
        assert cli("run", "--method", method, "--tasks", "rec", "--out", str(out)).returncode == 0
    runs = {json.loads((p / "results.json").read_text())["method"]: p for p in out.iterdir()}
    results = {m: json.loads((p / "results.json").read_text()) for m, p in runs.items()}
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO(
        cli("leaderboard", str(out), "--format", "csv", "--no-published").stdout))}
    ci = results["random-answer"]["intervals"]["rec"]["weighted_acc"]
    assert float(rows["random-answer"]["rec.weighted_acc_lo"]) == pytest.approx(ci["lo"])
    assert float(rows["random-answer"]["rec.weighted_acc_hi"]) == pytest.approx(ci["hi"])
    md = cli("leaderboard", str(out), "--no-published").stdout
    value, half = results["random-answer"]["tasks"]["rec"]["weighted_acc"], (ci["hi"] - ci["lo"]) / 2
    places = _decimals(half)
    assert f"{value:.{places}f} ± {half:.{places}f}" in md
    page = tmp_path / "board.html"
    assert cli("leaderboard", str(out), "--format", "html", "--out", str(page)).returncode == 0
    html = page.read_text()
    compared = {r["metric"]: r for r in json.loads(cli("compare", str(runs["always-yes"]), str(runs["random-answer"]),
                                                       "--format", "json").stdout)}
    # weighted_acc: always-yes's 0.5 is best; random-answer's is lower, and compare's paired test
    # finds no significant difference: marked as such. pos_acc: always-yes's 1.0 beats random-answer
    # significantly: random-answer's cell is not marked.
    assert compared["rec.weighted_acc"]["p"] >= 0.05 and compared["rec.pos_acc"]["p"] < 0.05
    import re

    def cells(method):  # the main table's cells of a run, by metric, as shown
        row = re.search(rf"<tr class='run'><td class='method'>{method}</td>(.*?)</tr>", html).group(1)
        texts = [re.sub(r"<[^>]+>", " ", c).split() for c in re.findall(r"<td class='[^']*'[^>]*>(.*?)</td>", row)]
        return dict(zip(["pos_acc", "neg_acc", "weighted_acc", "accuracy", "unparsed"], texts))

    always, randoms = cells("always-yes"), cells("random-answer")
    assert always["weighted_acc"][:2] == ["★", "0.500"] and randoms["weighted_acc"][:2] == ["≈", f"{value:.{places}f}"]
    assert always["pos_acc"][0] == "★" and randoms["pos_acc"][0] not in "★≈"
    # always-yes's neg_acc of 0.000, which the overlap rule once starred as tied for best: not marked
    assert randoms["neg_acc"][0] == "★" and always["neg_acc"][0] not in "★≈" and compared["rec.neg_acc"]["p"] < 0.05
    assert "p ≥ 0.05" in html


def test_the_html_page_draws_each_metric_and_each_runs_concepts_with_their_intervals(tmp_path):
    import json
    import re

    out = tmp_path / "runs"
    for method in ("always-yes", "random-answer"):
        assert cli("run", "--method", method, "--tasks", "rec", "--out", str(out)).returncode == 0
    page = tmp_path / "board.html"
    assert cli("leaderboard", str(out), "--format", "html", "--out", str(page), "--no-published").returncode == 0
    html = page.read_text()
    plot = re.search(r"<svg class='plot'[^>]*aria-label='rec.weighted_acc'>(.*?)</svg>", html, re.S).group(1)
    assert plot.count("<circle") == 2 and plot.count("<line") == 2  # two runs, each with its interval
    results = json.loads(next(p for p in out.iterdir() if p.name.startswith("random")).joinpath("results.json")
                         .read_text())
    ci = results["intervals"]["rec"]["weighted_acc"]
    assert f"[{ci['lo']:.3f}, {ci['hi']:.3f}]" in plot
    per_concept = re.search(r"aria-label='rec.weighted_acc per concept'>(.*?)</svg>", html, re.S).group(1)
    assert per_concept.count("<circle") == len(results["concepts"])
    assert "<script" not in html and "http" not in plot


def test_few_concepts_are_said_wherever_the_number_is_and_one_concept_is_never_plus_minus_zero(tmp_path):
    import json

    out, one = tmp_path / "runs", tmp_path / "one"
    for seed in ("0", "1"):
        ran = cli("run", "--method", "random-answer", "--tasks", "rec", "--concepts", "dog,cat,clock", "--seed", seed,
                  "--out", str(out / seed))
        assert ran.returncode == 0, ran.stderr
    few = "only 3 concepts: this interval says little"
    assert few in ran.stdout + ran.stderr  # the terminal table's note
    md = cli("leaderboard", str(out / "0"), "--no-published").stdout
    assert f"[1] {few}" in md and "[note 1]" in md
    rows = list(csv.DictReader(io.StringIO(cli("leaderboard", str(out / "0"), "--format", "csv",
                                               "--no-published").stdout)))
    assert f"rec.accuracy: {few}" in rows[0]["interval_notes"]
    page = tmp_path / "board.html"
    assert cli("leaderboard", str(out / "0"), "--format", "html", "--out", str(page)).returncode == 0
    assert few in page.read_text()
    compared = cli("compare", *(str(next((out / s).iterdir())) for s in ("0", "1")))
    assert compared.returncode == 0 and few in compared.stdout
    # One concept, every answer right (always-yes on the positives): Wilson's interval, labelled.
    ran = cli("run", "--method", "always-yes", "--tasks", "rec", "--concepts", "dog", "--out", str(one), "--json")
    results = json.loads(ran.stdout)
    pos = results["intervals"]["rec"]["pos_acc"]
    assert pos["hi"] == 1.0 and pos["lo"] < 0.9 and "one concept" in pos["note"]
    assert "weighted_acc" not in results["intervals"]["rec"]  # no spread among its prompts: no interval
    md = cli("leaderboard", str(one), "--no-published").stdout
    assert "one concept" in md and "± 0.0" not in md


def test_a_group_of_seeds_that_copies_its_reference_photos_is_never_marked_best():
    """column_marks leaves copying runs unmarked; a group of such runs folded by seed copies too."""
    from unifybench.leaderboard.marks import column_marks
    from unifybench.report import LeaderboardRow, seed_groups

    base = dict(benchmark="b", protocol="default", backbones="tiny", judge="", limit="", fingerprint="f",
                source="run", confidence="this harness", concept_set=("a",))
    copying = [LeaderboardRow(**base, method="real-images [copies reference photos: 3 images]", seed=seed,
                              copies=True, metrics={"gen.clip_i": 0.95}) for seed in (0, 1, 2)]
    real = LeaderboardRow(**base, method="m", metrics={"gen.clip_i": 0.5})
    other = LeaderboardRow(**base, method="n", metrics={"gen.clip_i": 0.4})
    rows = seed_groups([*copying, real, other])
    assert len(rows) == 3 and rows[0].seeds == 3 and rows[0].copies
    assert column_marks(rows, "gen.clip_i") == {1: "best"}
