"""One group key for the leaderboard's tables and `compare` (unifybench.groups), through the command
line: two benchmarks with one name get two tables and do not compare; a run scored with backbones and
one that used none compare on the metrics that use none (UniCTokens against Yo'LLaVA), random-init
said; what the leaderboard separates, compare refuses in words."""
from __future__ import annotations

import json

from _data_fixtures import make_unifybench
from conftest import cli, make_plugin

# Two random-init "models", as UniCTokens (model=tiny: rec and gen) and Yo'LLaVA (model=tiny: rec).
PLUGIN = '''
from PIL import Image
from unifybench.methods import Method

class Unified(Method):
    name = "unified-tiny"
    tasks = frozenset({"rec", "gen"})

    def describe(self):
        return {"random_init": True}

    def answer(self, concept, state, requests):
        return ["Yes." if r.index % 2 else "No." for r in requests]

    def generate(self, concept, state, requests):
        return [[Image.new("RGB", (32, 32), (r.index * 9 % 255, 40, 90)) for _ in range(r.n_images)]
                for r in requests]

class Understanding(Method):
    name = "understanding-tiny"
    tasks = frozenset({"rec"})

    def describe(self):
        return {"random_init": True}

    def answer(self, concept, state, requests):
        return ["Yes." for r in requests]
'''


def _runs(out):
    return sorted(p for p in out.iterdir() if p.is_dir())


def test_a_unified_run_and_an_understanding_only_run_compare_on_recognition(tmp_path):
    plugin = make_plugin(tmp_path / "plugin", "groups-plugin", "groups_plugin", PLUGIN,
                         {"unified-tiny": "groups_plugin:Unified", "understanding-tiny": "groups_plugin:Understanding"})
    out = tmp_path / "runs"
    common = ("--concepts", "dog", "--limit", "2", "--images-per-prompt", "1", "--out", str(out))
    for method, tasks in (("unified-tiny", "rec,gen"), ("understanding-tiny", "rec")):
        ran = cli("run", "--method", method, "--tasks", tasks, "--backbones", "tiny", *common, pythonpath=[plugin])
        assert ran.returncode == 0, ran.stderr
    unified, understanding = sorted(_runs(out), key=lambda p: "understanding" in p.name)
    compared = cli("compare", str(unified), str(understanding), "--format", "json", "--bootstrap", "100")
    assert compared.returncode == 0, compared.stderr
    rows = json.loads(compared.stdout)
    assert {r["metric"] for r in rows} >= {"rec.accuracy"} and all(r["metric"].startswith("rec.") for r in rows)
    assert all(r["random_init"] for r in rows)
    text = cli("compare", str(unified), str(understanding), "--bootstrap", "100").stdout
    assert "random-init weights" in text
    # The leaderboard puts them in one table: the one compare uses.
    board = cli("leaderboard", str(out), "--no-published").stdout
    tables = [t for t in board.split("### ")[1:]]
    assert len(tables) == 1 and "unified-tiny" in tables[0] and "understanding-tiny" in tables[0], board

    # A real model (always-yes) beside a random-init one: separate tables, and compare refuses in words.
    assert cli("run", "--method", "always-yes", "--tasks", "rec", *common).returncode == 0
    real = next(p for p in _runs(out) if p.name.startswith("always-yes"))
    refused = cli("compare", str(real), str(understanding))
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "method model: not random-init vs random-init" in refused.stderr
    assert "('" not in refused.stderr  # words, not tuples
    board = cli("leaderboard", str(out), "--no-published").stdout
    assert len(board.split("### ")[1:]) == 2


def test_two_benchmarks_with_one_name_get_two_tables_and_do_not_compare(tmp_path):
    first = make_unifybench(tmp_path / "a" / "data")
    second = make_unifybench(tmp_path / "b" / "data")
    facts = second / "concept" / "train" / "bo" / "info.json"
    info = json.loads(facts.read_text())
    info["info"] = info["info"] + " It has one more spot."  # other content, same folder name
    facts.write_text(json.dumps(info))
    out = tmp_path / "runs"
    for bench in (first, second):
        ran = cli("run", "--method", "always-yes", "--tasks", "rec", "--bench", str(bench), "--out", str(out))
        assert ran.returncode == 0, ran.stderr
    runs = _runs(out)
    assert len(runs) == 2
    prints = sorted(json.loads((r / "run.json").read_text())["identity"]["bench"]["fingerprint"] for r in runs)
    board = cli("leaderboard", str(out), "--no-published").stdout
    titles = [line for line in board.splitlines() if line.startswith("### ")]
    assert len(titles) == 2 and len(set(titles)) == 2, board
    for fingerprint, title in zip(prints, sorted(titles, key=lambda t: t.split("content ")[1])):
        assert title.startswith(f"### data (content {fingerprint[:10]})")
    refused = cli("compare", *map(str, runs))
    assert refused.returncode == 2 and "benchmark content: content " in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_one_run_found_in_two_directories_is_one_row_saying_so(tmp_path):
    import shutil

    runs = tmp_path / "runs"
    assert cli("run", "--method", "always-yes", "--tasks", "rec", "--limit", "1", "--out", str(runs / "demo")).returncode == 0
    # The same specification run again into runs/ (as `make demo` then `unifybench run` would), and a copy.
    assert cli("run", "--method", "always-yes", "--tasks", "rec", "--limit", "1", "--out", str(runs)).returncode == 0
    shutil.copytree(next((runs / "demo").iterdir()), tmp_path / "elsewhere" / "copy")
    board = cli("leaderboard", str(runs), str(tmp_path / "elsewhere"), "--no-published", "--format", "csv")
    assert board.returncode == 0, board.stderr
    lines = board.stdout.strip().splitlines()
    assert len(lines) == 2, board.stdout  # the header and one row
    assert "the same run found in 3 directories" in lines[1]
    # Another specification (another --limit) is another row.
    assert cli("run", "--method", "always-yes", "--tasks", "rec", "--limit", "2", "--out", str(runs)).returncode == 0
    assert len(cli("leaderboard", str(runs), "--no-published", "--format", "csv").stdout.strip().splitlines()) == 3


def test_metrics_the_leaderboard_keeps_apart_are_named_by_compare(tmp_path):
    """Two runs of one method scored with other scorer backbones (tiny, random): recognition
    compares, generation does not; compare says which metrics it left out and why."""
    plugin = make_plugin(tmp_path / "plugin", "groups-plugin", "groups_plugin", PLUGIN,
                         {"unified-tiny": "groups_plugin:Unified", "understanding-tiny": "groups_plugin:Understanding"})
    out = tmp_path / "runs"
    for backbones in ("tiny", "random"):
        ran = cli("run", "--method", "unified-tiny", "--tasks", "rec,gen", "--backbones", backbones, "--concepts",
                  "dog", "--limit", "2", "--images-per-prompt", "1", "--out", str(out / backbones), pythonpath=[plugin])
        assert ran.returncode == 0, ran.stderr
    a, b = _runs(out / "tiny")[0], _runs(out / "random")[0]
    text = cli("compare", str(a), str(b))
    assert text.returncode == 0, text.stderr
    assert "| rec.accuracy |" in text.stdout and "| gen.clip_i |" not in text.stdout
    line = next(x for x in text.stdout.splitlines() if x.startswith("Not compared"))
    assert "gen.clip_i (" in line and "scorer backbones" in line
    as_json = cli("compare", str(a), str(b), "--format", "json")
    assert all(r["metric"].startswith("rec.") for r in json.loads(as_json.stdout))
    assert "not compared" in as_json.stderr and "gen.clip_i" in as_json.stderr
