"""Tables and pages people read: the leaderboard (md, csv, html), the gallery and `unifybench tasks`,
all through the real command line, on runs laid out as `make demo` lays them out."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import zipfile

import pandas as pd
import pytest

from conftest import REPO, cli

HOSTILE = "<script>alert('x')</script> & <b>bold</b>"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """runs/demo/ as `make demo` writes it, plus a --limit run, a run whose replies hold markup, and
    an unfinished run directory."""
    root = tmp_path_factory.mktemp("pages")
    out = root / "runs" / "demo"
    common = ["--out", str(out), "--backbones", "tiny"]
    for args in (["--method", "real-images", "--tasks", "gen", "--images-per-prompt", "2", "--limit", "2"],
                 ["--method", "always-yes", "--tasks", "rec,choice"],
                 ["--method", "always-yes", "--tasks", "rec,choice", "--limit", "2"],
                 ["--method", "random-answer", "--tasks", "rec,choice"]):
        proc = cli("run", *args, *common)
        assert proc.returncode == 0, proc.stderr[-2000:]
    answers = root / "answers.jsonl"
    answers.write_text("".join(json.dumps({"concept": c, "index": i, "answer": HOSTILE}) + "\n"
                               for c in ("dog", "cat") for i in range(20)), encoding="utf-8")
    proc = cli("run", "--method", "precomputed", "--tasks", "vqa", "--concepts", "dog,cat",
                   "--method-arg", f"answers={answers}", *common)
    assert proc.returncode == 0, proc.stderr[-2000:]
    unfinished = out / "half-done"
    unfinished.mkdir()
    (unfinished / "run.json").write_text("{}", encoding="utf-8")
    return root, out


def test_leaderboard_finds_runs_recursively_and_names_unfinished_ones(demo):
    root, out = demo
    md = cli("leaderboard", "--no-published", cwd=root)  # default: ./runs, searched recursively
    assert md.returncode == 0, md.stderr
    assert "skipped 1 unfinished run(s)" in md.stderr and "half-done" in md.stderr
    for method in ("real-images", "always-yes", "random-answer", "precomputed"):
        assert f"| {method}" in md.stdout


def test_a_limit_run_never_shares_a_table_with_a_full_run(demo):
    _, out = demo
    md = cli("leaderboard", str(out), "--no-published").stdout
    tables = [t for t in md.split("### ")[1:]]
    limited = [t for t in tables if "--limit 2" in t.splitlines()[0]]
    full = [t for t in tables if "--limit" not in t.splitlines()[0]]
    assert limited and full
    assert any("| always-yes" in t for t in limited) and any("| always-yes" in t for t in full)
    assert not any("| random-answer" in t for t in limited)  # random-answer ran on the full bench
    # real-images (--limit 2, tiny backbones) has a random-init table; always-yes (--limit 2) is not put
    # under that heading, and the full always-yes is in no --limit table
    scored = [t for t in limited if "| real-images" in t]
    assert len(scored) == 1 and "random-init" in scored[0].splitlines()[0] and "| always-yes" not in scored[0]
    assert sum(t.count("| always-yes") for t in limited) == 1


def test_csv_metric_columns_are_numeric_with_reasons_apart(demo):
    _, out = demo
    text = cli("leaderboard", str(out), "--format", "csv").stdout
    frame = pd.read_csv(io.StringIO(text))
    metric_columns = [c for c in frame.columns if "." in c]
    assert metric_columns and all(frame[c].dtype.kind == "f" for c in metric_columns), frame.dtypes
    yes = frame[(frame.method == "always-yes") & frame["limit"].isna()].iloc[0]
    assert yes["rec.pos_acc"] == 1.0 and yes["rec.neg_acc"] == 0.0
    assert pd.isna(yes["gen.clip_i"])
    assert pd.isna(yes.not_scored)  # it ran rec and choice only, and both scored everything
    images = frame[frame.method == "real-images"].iloc[0]
    assert "gen.face_sim: not scored: no human concepts" in images.not_scored
    published = frame[frame.method.str.endswith("[published]")]
    assert len(published) >= 10 and published["gen.clip_i"].notna().any()


def test_html_leaderboard_is_self_contained_marks_best_and_flags_random_init(demo, tmp_path):
    _, out = demo
    page_path = tmp_path / "board.html"
    proc = cli("leaderboard", str(out), "--format", "html", "--out", str(page_path))
    assert proc.returncode == 0, proc.stderr
    html = page_path.read_text(encoding="utf-8")
    assert "<script" not in html.lower()  # no script of ours, and the markup in a reply stays text
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", html)  # nothing fetched from a network
    assert "random-init weights: plumbing and speed only" in html and "class='random'" in html
    assert "pos_acc ↑" in html and "unparsed ↓" in html and "<th class='task' colspan=" in html
    # Best per column: always-yes's pos_acc 1.0 beats random-answer in the full table; in the
    # published DreamBench table "Real images" has the best CLIP-I.
    assert re.search(r"<td class='[^']*best[^']*'>★ 1\.000</td>", html)
    assert "★ 0.885" in html
    assert html.count("<details><summary>per concept:") >= 4


def test_gallery_shows_samples_beside_scores_with_every_text_escaped(demo, tmp_path):
    _, out = demo
    run_dir = next(out.glob("precomputed__*"))
    proc = cli("gallery", str(run_dir), "--out", str(tmp_path / "g.html"))
    assert proc.returncode == 0, proc.stderr
    html = (tmp_path / "g.html").read_text(encoding="utf-8")
    assert "<script" not in html.lower() and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "<b>bold</b>" not in html
    assert "What color" in html or "question" in html  # the understanding table
    assert "data:image/jpeg;base64," in html  # item images embedded, nothing outside the file

    images_run = next(out.glob("real-images__*"))
    proc = cli("gallery", str(images_run))
    assert proc.returncode == 0, proc.stderr
    page = (images_run / "gallery.html").read_text(encoding="utf-8")
    assert "reference photos" in page and "CLIP-I" in page and "DINO" in page
    shown = page.count("<figure")
    # every reference photo and every generated image of the run
    generated = sum(len(json.loads(line)["images"]) for line in (images_run / "predictions.jsonl").open())
    assert shown >= generated + 6


def test_gallery_of_an_unscored_run_is_a_one_line_error(demo):
    _, out = demo
    proc = cli("gallery", str(out / "half-done"))
    assert proc.returncode == 2 and "no results.json" in proc.stderr and proc.stderr.count("\n") == 1


def test_tasks_lists_every_metric_a_run_reports_with_its_direction(demo):
    _, out = demo
    listing = json.loads(cli("tasks", "--json").stdout)
    directions = {(t["task"], m["name"]): m["direction"] for t in listing for m in t["metrics"]}
    assert set(directions.values()) == {"higher", "lower"}
    assert directions[("rec", "unparsed")] == "lower" and directions[("gen", "clip_i")] == "higher"
    for results in out.glob("*/results.json"):
        for task, metrics in json.loads(results.read_text())["tasks"].items():
            for metric in metrics:
                assert (task, metric) in directions, (task, metric)
    table = cli("tasks")
    assert table.returncode == 0 and "weighted_acc" in table.stdout and "attr_score" in table.stdout


def test_published_rows_ship_inside_the_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("unifybench-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "unifybench/data/published.csv" in names
    assert "unifybench/scoring/judges/backends.py" in names
