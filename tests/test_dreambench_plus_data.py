"""The DreamBench++ reader: its layout, counts, prompts by token and as written, refusals of bad input."""
from __future__ import annotations

import json

import pytest

from tests._dreambench_plus import PROMPT_SHAPES, SUBJECTS, make_dreambench_plus
from tests.conftest import run_cli
from unifybench.data import FORMATS, detect_format, load_benchmark
from unifybench.errors import BenchError


def test_reader_reads_subjects_prompts_and_kinds(tmp_path):
    root = make_dreambench_plus(tmp_path)
    assert detect_format(root) == "dreambench_plus"
    bench = load_benchmark(str(root))
    assert bench.format == "dreambench_plus"
    assert [c.name for c in bench.concepts] == ["animal_00", "human_00", "object_00", "style_00"]
    assert [c.kind for c in bench.concepts] == ["animal", "human", "object", "style"]
    human = bench.concept("human_00")
    assert human.identity_prompt == "A photo of <human_00>."  # the face scorer's identity prompt
    assert human.train_images == human.reference_images == [root / "images" / "human" / "00.jpg"]
    prompts = bench.prompts["object_00"]
    assert len(prompts) == 9
    assert prompts[4].prompt == "a watercolor painting of a <object_00>"
    assert prompts[4].class_prompt == "a watercolor painting of a red backpack"  # as written: PF and CLIP-T
    assert bench.concept("style_00").class_noun == "ukiyo-e painting"


def test_data_check_counts_categories_and_prompt_kinds(tmp_path):
    root = make_dreambench_plus(tmp_path)
    proc = run_cli("data", "check", str(root), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["format"] == "dreambench_plus"
    assert summary["concepts"] == len(SUBJECTS) and summary["images"] == len(SUBJECTS)
    assert summary["gen_prompts"] == 9 * len(SUBJECTS)
    assert summary["categories"] == {"animal": 1, "human": 1, "object": 1, "style": 1}
    assert summary["prompt_kinds"] == {"photorealistic": 16, "style_transfer": 12, "imaginative": 8}
    assert summary["prompts_without_subject"] == 0
    table = run_cli("data", "check", str(root))
    assert "subjects: human" in table.stdout and "prompts: imaginative" in table.stdout


def test_cli_format_choices_match_the_readers():
    from unifybench.cli import FORMAT_CHOICES

    assert FORMAT_CHOICES == ("auto", *FORMATS)


@pytest.mark.parametrize("damage, message", [
    ("short", "expected the subject phrase then 9 prompts"),
    ("no-image", "no image images/animal/00.jpg"),
])
def test_bad_caption_files_are_one_line(tmp_path, damage, message):
    root = make_dreambench_plus(tmp_path)
    caption = root / "captions" / "animal" / "00.txt"
    if damage == "short":
        caption.write_text("kitten\na kitten on a beach\n", encoding="utf-8")
    else:
        (root / "images" / "animal" / "00.jpg").unlink()
    with pytest.raises(BenchError, match=message) as info:
        load_benchmark(str(root))
    assert "00.txt" in str(info.value) and "\n" not in str(info.value)


def test_a_prompt_without_its_subject_phrase_is_counted(tmp_path):
    root = make_dreambench_plus(tmp_path, subjects=(("animal", "00", "kitten"),))
    caption = root / "captions" / "animal" / "00.txt"
    lines = caption.read_text(encoding="utf-8").splitlines()
    lines[3] = "a cat in the snow"
    caption.write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = run_cli("data", "check", str(root))
    assert proc.returncode == 0 and "1 prompt(s) do not contain their subject phrase" in proc.stderr
    assert PROMPT_SHAPES[0].format(s="kitten") in caption.read_text(encoding="utf-8")


def test_by_hub_name_the_data_zip_is_unpacked_and_read(tmp_path, monkeypatch):
    import zipfile

    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    commit = "0" * 40
    repo = home / "hub" / "datasets--yuangpeng--dreambench_plus"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    built = make_dreambench_plus(tmp_path / "built")  # built/data/...: data.zip holds data/
    with zipfile.ZipFile(snapshot / "data.zip", "w") as zf:
        for p in sorted(built.rglob("*")):
            if p.is_file():
                zf.write(p, str(p.relative_to(built.parent)))
    proc = run_cli("data", "check", "yuangpeng/dreambench_plus", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["format"] == "dreambench_plus" and summary["concepts"] == len(SUBJECTS)
    assert summary["source"]["hub"] == "yuangpeng/dreambench_plus" and summary["source"]["path"].endswith("/data")


def test_metric_names_follow_the_reader():
    from unifybench.data.dreambench_plus import CATEGORIES, PROMPT_KINDS
    from unifybench.metrics import DREAMBENCH_PLUS_CATEGORIES, DREAMBENCH_PLUS_PROMPT_KINDS

    assert DREAMBENCH_PLUS_CATEGORIES == CATEGORIES and DREAMBENCH_PLUS_PROMPT_KINDS == tuple(PROMPT_KINDS)


def test_odd_file_names_and_links_out_of_the_bench_are_refused(tmp_path):
    root = make_dreambench_plus(tmp_path / "a")
    (root / "captions" / "animal" / "00.txt").rename(root / "captions" / "animal" / "0 0.txt")
    with pytest.raises(BenchError, match="named like 00.txt"):
        load_benchmark(str(root))
    root = make_dreambench_plus(tmp_path / "b")
    outside = tmp_path / "elsewhere.txt"
    caption = root / "captions" / "animal" / "00.txt"
    outside.write_text(caption.read_text(encoding="utf-8"), encoding="utf-8")
    caption.unlink()
    caption.symlink_to(outside)
    with pytest.raises(BenchError, match="outside the benchmark's root"):
        load_benchmark(str(root))
