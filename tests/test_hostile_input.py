"""Hostile and broken input (issue 24): nothing written outside --out through links planted in a
run directory, no silent wrong number, one line for everything else. Every case through the
command line."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import cli, only_run_dir

QUICK = ["--method", "always-yes", "--tasks", "rec", "--concepts", "dog", "--limit", "1"]


def _run_dir(tmp_path: Path) -> Path:
    """The run directory QUICK maps to, made once and emptied of its files."""
    out = tmp_path / "runs"
    assert cli("run", *QUICK, "--out", str(out)).returncode == 0
    return only_run_dir(out)


@pytest.mark.parametrize("entry", [".lock", "predictions.jsonl", "log.txt"])
def test_a_link_planted_in_a_run_directory_is_refused_and_its_target_untouched(tmp_path, entry):
    run_dir = _run_dir(tmp_path)
    (run_dir / "predictions.jsonl").unlink()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    target = run_dir / entry
    target.unlink(missing_ok=True)
    target.symlink_to(victim)
    ran = cli("run", *QUICK, "--out", str(tmp_path / "runs"))
    assert ran.returncode == 2 and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
    assert "symbolic link" in ran.stderr and entry in ran.stderr
    assert victim.read_text() == "precious\n"


def test_a_linked_folder_inside_a_run_directory_is_refused(tmp_path):
    run_dir = _run_dir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run_dir / "state").mkdir(exist_ok=True)
    (run_dir / "state" / "dog").symlink_to(elsewhere, target_is_directory=True)
    (run_dir / "predictions.jsonl").unlink()
    ran = cli("run", *QUICK, "--out", str(tmp_path / "runs"))
    assert ran.returncode == 2 and "state/dog" in ran.stderr and not list(elsewhere.iterdir())


@pytest.mark.parametrize("line, message", [
    ({"key": "rec/dog/0", "task": "rec", "concept": "dog", "index": 0}, "has an 'answer' or 'images'"),
    ({"key": "rec/dog/0", "task": "rec", "concept": "dog", "index": 0, "answer": 3}, "'answer' must be text"),
    ({"key": ["rec/dog/0"], "answer": "Yes."}, "a text 'key'"),
    (["not", "an", "object"], "not a prediction record"),
    ({"key": "gen/dog/0", "images": ["/etc/passwd"]}, "points outside the run directory"),
    ({"key": "gen/dog/0", "images": ["../../victim.png"]}, "points outside the run directory"),
])
def test_wrong_shaped_or_outside_pointing_prediction_lines_are_one_line_naming_file_and_line(tmp_path, line, message):
    run_dir = _run_dir(tmp_path)
    bad_line = len((run_dir / "predictions.jsonl").read_text().splitlines()) + 1
    with open(run_dir / "predictions.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")
    for args in (["run", *QUICK, "--out", str(tmp_path / "runs")], ["gallery", str(run_dir)]):
        ran = cli(*args)
        assert ran.returncode == 2 and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
        assert message in ran.stderr and f"predictions.jsonl [line {bad_line}]" in ran.stderr


def test_invalid_utf8_and_conflicting_duplicates_are_refused_naming_the_line(tmp_path):
    run_dir = _run_dir(tmp_path)
    path = run_dir / "predictions.jsonl"
    first = path.read_text().splitlines()[0]
    record = json.loads(first)
    path.write_bytes((first + "\n").encode() + b'{"key": "\xff"}\n')
    ran = cli("run", *QUICK, "--out", str(tmp_path / "runs"))
    assert ran.returncode == 2 and "corrupt line (UnicodeDecodeError)" in ran.stderr and "[line 2]" in ran.stderr
    path.write_text(first + "\n" + first + "\n")  # the same line twice: kept once
    assert cli("run", *QUICK, "--out", str(tmp_path / "runs")).returncode == 0
    path.write_text(first + "\n" + json.dumps({**record, "answer": "No."}) + "\n")
    ran = cli("run", *QUICK, "--out", str(tmp_path / "runs"))
    assert ran.returncode == 2 and f"two different predictions for {record['key']!r}" in ran.stderr
    # across rank files too: the first rank's line no longer silently wins
    path.write_text(first + "\n")
    (run_dir / "predictions.rank1.jsonl").write_text(json.dumps({**record, "answer": "No."}) + "\n")
    ran = cli("run", *QUICK, "--out", str(tmp_path / "runs"))
    assert ran.returncode == 2 and "predictions.rank1.jsonl [line 1]" in ran.stderr
    os.remove(run_dir / "predictions.rank1.jsonl")


def test_predictions_without_their_run_record_are_not_rescored(tmp_path):
    """A model=tiny run that lost run.json would otherwise lose its random-init label on rescoring."""
    out = tmp_path / "runs"
    args = ["run", "--method", "text-prompt", "--method-arg", "backend=janus", "--method-arg", "model=tiny",
            "--method-arg", "max_new_tokens=2", "--tasks", "rec", "--concepts", "dog", "--limit", "1", "--out", str(out)]
    assert cli(*args).returncode == 0
    run_dir = only_run_dir(out)
    assert json.loads((run_dir / "results.json").read_text())["label"].startswith("every score: random-init")
    (run_dir / "run.json").unlink()
    ran = cli(*args)
    assert ran.returncode == 2 and "run.json is missing" in ran.stderr and len(ran.stderr.strip().splitlines()) == 1
    (run_dir / "run.json").write_text("[1, 2]")
    ran = cli(*args)
    assert ran.returncode == 2 and "not a run record" in ran.stderr


def test_a_run_record_of_the_wrong_shape_is_refused_like_a_missing_one(tmp_path):
    out = tmp_path / "runs"
    args = ["run", "--method", "always-yes", "--tasks", "rec", "--concepts", "dog", "--limit", "1", "--out", str(out)]
    assert cli(*args).returncode == 0
    run_dir = only_run_dir(out)
    good = json.loads((run_dir / "run.json").read_text())
    for bad, field in (({"spec": 5}, "'spec'"), ({**good, "method_details": None}, "'method_details'"),
                       ({**good, "method_code": "x"}, "'method_code'"), ({**good, "identity": []}, "'identity'")):
        (run_dir / "run.json").write_text(json.dumps(bad))
        ran = cli(*args)
        assert ran.returncode == 2, ran.stdout
        line = ran.stderr.strip()
        assert len(line.splitlines()) == 1 and "not a run record" in line and field in line and "run.json" in line
    (run_dir / "run.json").write_text(json.dumps(good))
    assert cli(*args).returncode == 0  # the record as written resumes


# ----------------------------------------------------------------------------- the machine says no


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    import errno

    from unifybench.kit import files

    real = Path.write_text

    def full(self, text, *a, **kw):
        if self.name.startswith(".results.json"):  # half the file lands, then the disk is full
            real(self, text[: len(text) // 2], *a, **kw)
            raise OSError(errno.ENOSPC, "No space left on device")  # as a failing write() raises it: no file
        return real(self, text, *a, **kw)

    monkeypatch.setattr(Path, "write_text", full)
    out = tmp_path / "runs"
    ran = cli("run", *QUICK, "--out", str(out))
    assert ran.returncode == 2 and len(ran.stderr.strip().splitlines()) == 1 and "No space left" in ran.stderr
    run_dir = only_run_dir(out)
    assert f"{run_dir / 'results.json'}: No space left" in ran.stderr  # the file being written, named
    assert not list(run_dir.glob(".*.tmp")) and not (run_dir / "results.json").exists()
    assert (run_dir / "predictions.jsonl").is_file()
    monkeypatch.setattr(Path, "write_text", real)
    assert cli("run", *QUICK, "--out", str(out)).returncode == 0  # the rerun finishes the same run
    assert files.read_json(run_dir / "results.json")["tasks"]["rec"]["weighted_acc"] == 0.5


def test_an_unreadable_benchmark_photo_is_one_line_naming_it(tmp_path, monkeypatch):
    real = Path.read_bytes
    photo = None

    def denied(self):
        nonlocal photo
        if self.suffix == ".jpg" and "train" in self.parts and photo in (None, self):
            photo = self
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    from unifybench import records

    monkeypatch.setattr(records, "_DIGEST_CACHE", {})  # hashed in this process before: read it again
    monkeypatch.setattr(Path, "read_bytes", denied)
    ran = cli("run", *QUICK, "--out", str(tmp_path / "runs"))
    assert ran.returncode == 2 and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
    assert "cannot read (Permission denied)" in ran.stderr and str(photo) in ran.stderr


def test_a_benchmark_folder_of_a_240_character_name_gets_a_run_directory(tmp_path):
    import shutil

    from unifybench.data import MINI_BENCH_PATH

    bench = tmp_path / ("b" * 240)
    shutil.copytree(MINI_BENCH_PATH, bench)
    ran = cli("run", *QUICK, "--bench", str(bench), "--out", str(tmp_path / "runs"))
    assert ran.returncode == 0, ran.stderr
    assert len(only_run_dir(tmp_path / "runs").name) < 100


# ----------------------------------------------------------------------------- careless numbers and names


@pytest.mark.parametrize("args, message", [
    (["run", *QUICK, "--judge", "hf:tiny", "--judge-timeout", "inf"], "[--judge-timeout]: expected a number > 0"),
    (["run", *QUICK, "--judge", "hf:tiny", "--judge-timeout", "nan"], "[--judge-timeout]: expected a number > 0"),
    (["run", *QUICK, "--judge", "hf:tiny", "--judge-retries", "1000000000"], "[--judge-retries]: expected a number"),
    (["score-images", "--refs", ".", "--gens", ".", "--workers", "-1"], "expected an integer >= 1, <= 256, got -1"),
    (["score-images", "--refs", ".", "--gens", ".", "--batch-size", "0"], "expected an integer >= 1"),
    (["gallery", ".", "--images-per-prompt", "-1"], "expected an integer >= 1"),
    (["run", *QUICK, "--out", ""], "[--out]: expected a path, got an empty value"),
    (["run", "--method", "always-yes", "--bogus"], "unrecognized arguments: --bogus"),
    (["run", "--method", "always-yes", "--concepts", "dog\x1b[31m"], "unknown concept(s) dog\\x1b[31m"),
])
def test_careless_numbers_and_names_are_one_line(tmp_path, args, message):
    ran = cli(*args)
    assert ran.returncode == 2 and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
    assert message in ran.stderr and "\x1b" not in ran.stderr, ran.stderr


def test_a_judge_cache_under_a_file_and_a_key_in_the_url_are_refused(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    ran = cli("run", *QUICK, "--judge", "hf:tiny", "--judge-cache", str(a_file / "cache.sqlite"))
    assert ran.returncode == 2 and "lies under a file" in ran.stderr
    ran = cli("run", *QUICK, "--judge", "openai:m", "--judge-base-url", "http://user:sk-SECRET@127.0.0.1:9/v1")
    assert ran.returncode == 2 and "credentials in the URL" in ran.stderr and "sk-SECRET" not in ran.stderr


def test_a_stray_world_size_without_torchrun_is_one_line_not_an_hours_wait(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    ran = cli("run", *QUICK, "--out", str(tmp_path / "runs"))
    assert ran.returncode == 2 and "no torchrun launched this process" in ran.stderr


def test_pages_and_tables_never_overwrite_a_runs_own_files(tmp_path):
    run_dir = _run_dir(tmp_path)
    before = (run_dir / "predictions.jsonl").read_bytes()
    for args in (["gallery", str(run_dir), "--out", str(run_dir / "predictions.jsonl")],
                 ["leaderboard", str(run_dir), "--out", str(run_dir / "results.json")]):
        ran = cli(*args)
        assert ran.returncode == 2 and "is a file of the run directory" in ran.stderr
    assert (run_dir / "predictions.jsonl").read_bytes() == before


def test_csv_cells_never_start_a_formula_and_markdown_shows_markup_as_text(tmp_path):
    import csv
    import io
    import shutil

    from unifybench.data import MINI_BENCH_PATH

    bench = tmp_path / "=cmd|' -C calc'!A0 <b>x<b>"
    shutil.copytree(MINI_BENCH_PATH, bench)
    out = tmp_path / "runs"
    assert cli("run", *QUICK, "--bench", str(bench), "--out", str(out)).returncode == 0
    rows = list(csv.DictReader(io.StringIO(cli("leaderboard", str(out), "--format", "csv", "--no-published").stdout)))
    assert rows[0]["benchmark"].startswith("'=") and rows[0]["limit"] == "1"
    md = cli("leaderboard", str(out), "--no-published").stdout
    assert "<b>" not in md and "&lt;b&gt;" in md


@pytest.mark.parametrize("layout", ["unifybench", "myvlm"])
def test_a_text_file_linked_from_outside_the_benchmark_root_is_never_read(tmp_path, layout):
    """A question file or captions.json linked from elsewhere: refused, naming it (every reader reads
    its text through data.common.read_text, which checks the root)."""
    import shutil

    from unifybench.data import MINI_BENCH_PATH, load_benchmark
    from unifybench.errors import BenchError
    from unifybench.testing.benches import make_myvlm

    if layout == "unifybench":
        bench = tmp_path / "bench"
        shutil.copytree(MINI_BENCH_PATH, bench)
        linked = bench / "test_data" / "dog.json"
    else:
        bench = make_myvlm(tmp_path / "bench")
        linked = sorted(bench.glob("*/captions.json"))[0]
    outside = tmp_path / "elsewhere.json"
    shutil.copy(linked, outside)
    linked.unlink()
    linked.symlink_to(outside)
    with pytest.raises(BenchError) as refused:
        load_benchmark(str(bench), validate_images=False)
    line = refused.value.one_line()
    assert "lies outside the benchmark's root" in line and linked.name in line and "\n" not in line


def test_files_outside_the_benchmark_root_are_never_read(tmp_path):
    import shutil

    from unifybench.data import MINI_BENCH_PATH

    bench = tmp_path / "bench"
    shutil.copytree(MINI_BENCH_PATH, bench)
    outside = tmp_path / "secret.jpg"
    photo = sorted((bench / "concept" / "train" / "dog").glob("*.jpg"))[0]
    shutil.copy(photo, outside)
    photo.unlink()
    photo.symlink_to(outside)  # a training photo linked from elsewhere
    ran = cli("data", "check", str(bench))
    assert ran.returncode == 2 and "lies outside the benchmark's root" in ran.stderr and photo.name in ran.stderr
    photo.unlink()
    shutil.copy(outside, photo)
    items = json.loads((bench / "test_data" / "dog.json").read_text())
    items[0]["image"] = str(outside)  # an absolute path outside the root, found nowhere inside by its tail
    (bench / "test_data" / "dog.json").write_text(json.dumps(items))
    ran = cli("data", "check", str(bench))
    assert ran.returncode == 2 and "not found" in ran.stderr and "secret.jpg" in ran.stderr


def test_a_runs_files_are_readable_by_colleagues_on_a_shared_out(tmp_path):
    import stat

    run_dir = _run_dir(tmp_path)
    umask = os.umask(0)
    os.umask(umask)
    for name in ("run.json", "results.json", "scores.jsonl", "predictions.jsonl"):
        mode = stat.S_IMODE((run_dir / name).stat().st_mode)
        assert mode == 0o666 & ~umask, (name, oct(mode))  # as any file the user makes, not 0600


def test_a_resume_keeps_the_thread_count_its_predictions_were_made_with(tmp_path, monkeypatch):
    import os

    # An idle 4-core machine: the automatic count (4) differs from the recorded one (1).
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    out = tmp_path / "runs"
    args = ["run", "--method", "random-answer", "--tasks", "rec", "--concepts", "dog", "--limit", "2", "--out", str(out)]
    assert cli(*args, "--threads", "1").returncode == 0
    run_dir = only_run_dir(out)
    predictions = run_dir / "predictions.jsonl"
    lines = predictions.read_text().splitlines(keepends=True)
    predictions.write_text("".join(lines[:1]))  # as if killed after the first request
    ran = cli(*args, "--threads", "2")
    assert ran.returncode == 2 and "made with 1 threads" in ran.stderr and "--threads 1" in ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1
    assert predictions.read_text() == lines[0]  # nothing predicted with the other count
    assert cli(*args).returncode == 0  # the automatic count defers to the recorded one
    threads = json.loads((run_dir / "run.json").read_text())["threads"]
    assert threads["threads"] == 1 and "as recorded" in threads["why"]
    assert cli(*args, "--threads", "2").returncode == 0  # nothing left to predict: scoring only


# ----------------------------------------------------------------------------- one validation everywhere

def _refused(ran, *needles):
    assert ran.returncode == 2, (ran.returncode, ran.stdout, ran.stderr)
    line = ran.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, ran.stderr
    for needle in needles:
        assert needle in line, (needle, line)


@pytest.mark.parametrize("kwargs, where", [
    ({"protocol": "refrence"}, "--protocol"), ({"seed": -1}, "--seed"), ({"seed": "x"}, "--seed"),
    ({"limit": "abc"}, "--limit"), ({"bootstrap": 10**12}, "--bootstrap"), ({"bootstrap": -1}, "--bootstrap"),
    ({"images_per_prompt": 10**6}, "--images-per-prompt"), ({"tasks": 5}, "--tasks"), ({"concepts": 5}, "--concepts"),
    ({"method_args": ["a=b"]}, "method_args"), ({"out": ""}, "out"), ({"judge": 5}, "--judge"),
    ({"batch_size": True}, "--batch-size"), ({"backbones": "tinny"}, "--backbones"),
])
def test_evaluate_refuses_what_the_command_line_refuses_before_anything_is_made(tmp_path, monkeypatch, kwargs, where):
    import unifybench
    from unifybench.errors import BenchError

    monkeypatch.chdir(tmp_path)
    options = {"tasks": ["rec"], "out": str(tmp_path / "runs"), **kwargs}
    with pytest.raises(BenchError) as err:
        unifybench.evaluate("always-yes", **options)
    assert where in err.value.one_line() and "\n" not in err.value.one_line()
    assert list(tmp_path.iterdir()) == []  # no run directory, nothing in the current folder


@pytest.mark.parametrize("spec, needles", [
    ({"limit": "abc"}, ("--limit", "expected an integer")), ({"seed": "x"}, ("--seed",)),
    ({"seed": -1}, ("--seed", ">= 0")), ({"bootstrap": 10**12}, ("--bootstrap",)), ({"bootstrap": -1}, ("--bootstrap",)),
    ({"judge": "nonsense"}, ("judge",)), ({"judge": {"spec": "openai:x", "timout": 5}}, ("timout", "timeout")),
    ({"judge": {"spec": "openai:x", "timeout": "slow"}}, ("--judge-timeout",)), ({"protocol": "refrence"}, ("reference",)),
])
def test_config_values_are_checked_like_flags_before_the_run_directory(tmp_path, spec, needles):
    config = tmp_path / "spec.json"
    config.write_text(json.dumps({"method": "always-yes", "tasks": ["rec"], **spec}))
    out = tmp_path / "runs"
    _refused(cli("run", "--config", str(config), "--out", str(out)), *needles)
    assert not out.exists()


def test_negative_seeds_are_refused_everywhere_before_anything_is_made(tmp_path):
    out = tmp_path / "runs"
    common = ("--method", "always-yes", "--tasks", "rec", "--limit", "1", "--out", str(out))
    _refused(cli("run", *common, "--seed", "-1"), "--seed")
    _refused(cli("run", *common, "--seeds", "1,-1"), "--seeds")
    assert not out.exists()  # not even seed 1's run
    assert cli("run", *common).returncode == 0
    runs = [str(only_run_dir(out))] * 2
    _refused(cli("compare", *runs, "--seed", "-1"), "--seed")


def test_a_yaml_config_with_aliases_is_refused_before_it_expands(tmp_path):
    import time

    laughs = ["a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]"]
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        laughs.append(f"{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]")
    config = tmp_path / "laughs.yaml"
    config.write_text("method: always-yes\n" + "\n".join(laughs) + "\n")
    started = time.monotonic()
    ran = cli("run", "--config", str(config), "--out", str(tmp_path / "runs"))
    assert time.monotonic() - started < 10
    _refused(ran, "aliases", "laughs.yaml")
    plain = tmp_path / "plain.yaml"
    plain.write_text("method: always-yes\ntasks: [rec]\nlimit: 1\n")
    assert cli("run", "--config", str(plain), "--out", str(tmp_path / "runs")).returncode == 0


SURROGATE_PLUGIN = '''
from unifybench.methods import Method

class Surrogate(Method):
    name = "surrogate-replies"
    tasks = frozenset({"rec", "vqa"})

    def answer(self, concept, state, requests):
        return ["Yes \\udc80 indeed" for r in requests]
'''


def test_text_utf8_cannot_hold_is_escaped_in_leaderboard_and_gallery(tmp_path):
    from _data_fixtures import make_unifybench
    from conftest import make_plugin

    bench = make_unifybench(tmp_path / os.fsdecode(b"caf\xe9"))  # a folder named in Latin-1
    plugin = make_plugin(tmp_path / "plugin", "surrogate-plugin", "surrogate", SURROGATE_PLUGIN,
                         {"surrogate-replies": "surrogate:Surrogate"})
    out = tmp_path / "runs"
    ran = cli("run", "--method", "surrogate-replies", "--bench", str(bench), "--tasks", "rec,vqa", "--limit", "1",
              "--out", str(out), pythonpath=[plugin])
    assert ran.returncode == 0, ran.stderr
    run_dir = only_run_dir(out)
    for fmt in ("html", "csv", "md"):
        page = tmp_path / f"board.{fmt}"
        made = cli("leaderboard", str(out), "--format", fmt, "--out", str(page))
        assert made.returncode == 0, made.stderr
        assert "caf\\udce9" in page.read_text(encoding="utf-8")
        shown = cli("leaderboard", str(out), "--format", fmt)
        assert shown.returncode == 0 and "caf\\udce9" in shown.stdout
    gallery = cli("gallery", str(run_dir), "--out", str(tmp_path / "gallery.html"))
    assert gallery.returncode == 0, gallery.stderr
    assert "\\udc80" in (tmp_path / "gallery.html").read_text(encoding="utf-8")


@pytest.fixture
def finished_run(tmp_path):
    out = tmp_path / "runs"
    args = ("run", "--method", "always-yes", "--tasks", "rec", "--concepts", "dog", "--limit", "1", "--out", str(out))
    assert cli(*args).returncode == 0
    return args, only_run_dir(out)


@pytest.mark.parametrize("name, make", [
    ("scores.jsonl", "folder"), ("results.json", "folder"), ("log.txt", "folder"), ("predictions.jsonl", "folder"),
    ("images", "file"), (".lock", "hardlink"), ("predictions.jsonl", "hardlink"),
])
def test_run_files_of_the_wrong_type_are_one_line_naming_them(finished_run, tmp_path, name, make):
    import shutil

    args, run_dir = finished_run
    target = run_dir / name
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    if make == "folder":
        target.mkdir()
    elif make == "file":
        target.write_text("x")
    else:
        victim = tmp_path / "victim.txt"
        victim.write_text("keep me\n")
        os.link(victim, target)
    ran = cli(*args)
    assert ran.returncode == 2, ran.stdout
    line = ran.stderr.strip()
    assert len(line.splitlines()) == 1 and name in line, line
    if make == "hardlink":
        assert (tmp_path / "victim.txt").read_text() == "keep me\n"


def _edit_json(path, change):
    data = json.loads(path.read_text())
    path.write_text(json.dumps(change(data)))


def _edit_lines(path, change):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    change(rows[0])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("damage, name", [
    (lambda d: _edit_json(d / "results.json", lambda r: {**r, "tasks": [1]}), "results.json"),
    (lambda d: (d / "results.json").write_text("null"), "results.json"),
    (lambda d: _edit_lines(d / "predictions.jsonl", lambda r: r.pop("concept")), "predictions.jsonl"),
    (lambda d: _edit_lines(d / "scores.jsonl", lambda r: r.update(task="bogus")), "scores.jsonl"),
    (lambda d: _edit_json(d / "results.json", lambda r: {**r, "concepts": {"dog": 3}}), "results.json"),
])
def test_leaderboard_and_gallery_refuse_wrong_shaped_run_files_in_one_line(finished_run, tmp_path, damage, name):
    _, run_dir = finished_run
    damage(run_dir)
    for command in (("gallery", str(run_dir), "--out", str(tmp_path / "g.html")),
                    ("leaderboard", str(run_dir.parent), "--no-published")):
        ran = cli(*command)
        if command[0] == "leaderboard" and name in ("predictions.jsonl", "scores.jsonl"):
            assert ran.returncode == 0, ran.stderr  # the leaderboard reads results.json only
            continue
        assert ran.returncode == 2, (command, ran.stdout)
        line = ran.stderr.strip()
        assert len(line.splitlines()) == 1 and name in line and "Traceback" not in line, line


def test_the_gallery_says_when_the_benchmark_changed_since_the_run(tmp_path):
    from _data_fixtures import make_unifybench

    bench = make_unifybench(tmp_path / "bench")
    out = tmp_path / "runs"
    assert cli("run", "--method", "always-yes", "--tasks", "rec", "--bench", str(bench), "--out", str(out)).returncode == 0
    run_dir = only_run_dir(out)
    page = tmp_path / "g.html"
    assert cli("gallery", str(run_dir), "--out", str(page)).returncode == 0
    assert "is not the one this run was scored on" not in page.read_text()
    info = bench / "concept" / "train" / "bo" / "info.json"
    info.write_text(info.read_text().replace('"dog"', '"cat"', 1))  # the folder edited after the run
    assert cli("gallery", str(run_dir), "--out", str(page)).returncode == 0
    assert "is not the one this run was scored on" in page.read_text()
