"""`unifybench data check` through the real command line: counts for valid benchmarks, and a
one-line message with exit code 2 (never a traceback) for every kind of bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from _data_fixtures import (DREAMBENCH, UNIFYBENCH_IMAGES, make_dreambench, make_unifybench, make_yollava,
                            questions_only_yollava, write_json)
from conftest import cli, cli_env

REPO = Path(__file__).resolve().parents[1]


def check(path, *extra):
    return subprocess.run([sys.executable, "-m", "unifybench", "data", "check", str(path), "--json", *extra],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def assert_bad(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert proc.stdout == ""
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def ub(tmp_path):
    return make_unifybench(tmp_path / "bench")


# ------------------------------------------------------------------ valid benchmarks

def test_valid_unifybench_prints_one_json_object(ub):
    proc = check(ub)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)  # exactly one JSON document
    assert proc.stdout.strip().count("\n") == 0
    assert summary == {"format": "unifybench", "concepts": 2, "images": UNIFYBENCH_IMAGES,
                       "items": {"rec": 2, "vqa": 2, "text_only": 1, "choice": 2},
                       "rec_truths": {"yes": 1, "no": 1, "neither": 0, "reference_reads_otherwise": 0,
                                      "examples": []},
                       "gen_prompts": 50, "attr_prompts": 3,
                       # the fixture's two choice items: answers A (its first option) and B
                       "choice_letters": {"items": 2, "by_letter": {"A": 1, "B": 1}, "first_option": 1}}


def test_valid_dreambench_copy():
    proc = check(DREAMBENCH)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary.pop("rec_truths")["yes"] == 0
    assert summary == {"format": "dreambench", "concepts": 4, "images": 21,
                       "items": {"rec": 0, "vqa": 0, "text_only": 0, "choice": 0},
                       "gen_prompts": 100, "attr_prompts": 0}


def test_valid_yollava_with_explicit_format(tmp_path):
    proc = check(make_yollava(tmp_path / "yl"), "--format", "yollava")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["format"] == "yollava" and summary["items"]["rec"] == 10 and summary["items"]["choice"] == 3
    assert summary["images"] == 9 and summary["gen_prompts"] == 0


# ------------------------------------------------------------------ bad UnifyBench input

def _edit_items(root: Path, concept: str, fn):
    path = root / "test_data" / f"{concept}.json"
    items = json.loads(path.read_text())
    fn(items)
    write_json(path, items)
    return path


def test_item_image_missing(ub):
    _edit_items(ub, "bo", lambda items: items[2].update(image="concept/test/bo/9.png"))
    assert_bad(check(ub), "bo.json", "item 2", "9.png")


def test_item_image_resolving_nowhere(ub):
    _edit_items(ub, "pg", lambda items: items[0].update(image="/home/author/elsewhere/zzz/1.png"))
    assert_bad(check(ub), "test_data/pg.json", "item 0", "not found")


def test_missing_info_json(ub):
    (ub / "concept" / "train" / "pg" / "info.json").unlink()
    assert_bad(check(ub), "pg/info.json", "missing")


def test_malformed_json(ub):
    (ub / "test_data" / "bo.json").write_text('[\n  {"image": "x.png",\n   "type": rec}\n]\n')
    assert_bad(check(ub), "test_data/bo.json", "malformed JSON", "line 3")


def test_unknown_item_type(ub):
    _edit_items(ub, "bo", lambda items: items[1].update(type="caption"))
    assert_bad(check(ub), "test_data/bo.json", "item 1", "caption")


def test_item_not_an_object(ub):
    _edit_items(ub, "bo", lambda items: items.insert(3, ["not", "an", "object"]))
    assert_bad(check(ub), "test_data/bo.json", "item 3")


def test_item_without_conversations(ub):
    _edit_items(ub, "bo", lambda items: items[4].pop("conversations"))
    assert_bad(check(ub), "test_data/bo.json", "item 4", "conversations")


def test_unreadable_image(ub):
    (ub / "concept" / "train" / "bo" / "1.png").write_bytes(b"this is not a picture" * 10)
    assert_bad(check(ub), "concept/train/bo/1.png", "cannot read image")


def test_truncated_image(ub):
    src = sorted((DREAMBENCH / "dog").glob("*.jpg"))[0].read_bytes()
    dst = ub / "concept" / "train" / "pg" / "0.jpg"
    dst.write_bytes(src[: len(src) // 2])
    assert_bad(check(ub), "concept/train/pg/0.jpg", "cannot read image")


def test_concept_without_training_photos(ub):
    for p in (ub / "concept" / "train" / "pg").glob("*.jp*g"):
        p.unlink()
    assert_bad(check(ub), "concept/train/pg", "no training photos")


def test_listed_concept_without_folder(ub):
    write_json(ub / "concepts_list.json", ["bo", "pg", "mam"])
    assert_bad(check(ub), "concept/train/mam", "mam")


def test_info_missing_required_field(ub):
    write_json(ub / "concept" / "train" / "bo" / "info.json", {"info": "<bo> is a dog."})
    assert_bad(check(ub), "bo/info.json", "class")


def test_info_missing_info_field(ub):
    write_json(ub / "concept" / "train" / "bo" / "info.json", {"class": "dog"})
    assert_bad(check(ub), "bo/info.json", "'info'")


def test_t2i_conditions_of_neither_form(ub):
    write_json(ub / "concept" / "test" / "pg" / "t2i_conditions.json", {"prompts": ["A photo of <pg>."]})
    assert_bad(check(ub), "pg/t2i_conditions.json", "personalized_driven_generation")


def test_train_images_json_names_missing_photo(ub):
    write_json(ub / "concept" / "train" / "train_images.json", {"bo": ["0.png", "7.png"]})
    assert_bad(check(ub), "train_images.json", "7.png")


# ------------------------------------------------------------------ other formats and paths

def test_missing_folder(tmp_path):
    assert_bad(check(tmp_path / "nowhere"), "nowhere", "no such")


def test_undetectable_format(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    assert_bad(check(tmp_path), str(tmp_path), "cannot detect the format; pass --format")


def test_yollava_questions_without_photos(tmp_path):
    # Yo'LLaVA's question files as published, without the photo folder (which is released apart).
    assert_bad(check(questions_only_yollava(tmp_path)), "yollava-data/train/", "no training photos")


def test_yollava_malformed_json(tmp_path):
    root = make_yollava(tmp_path / "yl")
    (root / "yollava-text-only-qa.json").write_text('{"bo": {"0": {"question": "x",}}}')
    assert_bad(check(root), "yollava-text-only-qa.json", "malformed JSON", "line 1")


def test_yollava_wrong_shape(tmp_path):
    root = make_yollava(tmp_path / "yl")
    write_json(root / "yollava-text-only-qa.json",
               {"bo": {"0": {"question": "Is sks a dog?", "options": {"A": "Yes", "B": "No"}, "correct_answer": "A"}}})
    assert_bad(check(root), "yollava-text-only-qa.json", "bo/0", "'option'")


def test_yollava_visual_image_missing(tmp_path):
    root = make_yollava(tmp_path / "yl")
    (root / "yollava-data" / "test" / "bo" / "1.png").unlink()
    assert_bad(check(root), "yollava-visual-qa.json", "bo/./yollava-data/test/bo/1.png", "not found")


def test_dreambench_subject_folder_missing(tmp_path):
    root = make_dreambench(tmp_path / "db", nested=False)
    import shutil

    shutil.rmtree(root / "can")
    assert_bad(check(root), "can", "has no folder")


def test_dreambench_prompt_file_without_prompt_lists(tmp_path):
    root = make_dreambench(tmp_path / "db", nested=False)
    (root / "prompts_and_classes.txt").write_text("subject_name,class\ndog,dog\ncan,can\n")
    assert_bad(check(root), "prompts_and_classes.txt", "prompt_list")


def test_negatives_written_otherwise_are_negatives_counted_and_warned_about(ub):
    """Issue 24: `No`, `no.` and `No, it is not.` were read as positives, and always-yes scored 1.0."""
    def write_negatives(items):
        negatives = [it for it in items if it["type"] == "rec" and it["conversations"][1]["value"] == "No."]
        for it in negatives:
            it["conversations"][1]["value"] = "No, it is not."
        return items

    _edit_items(ub, "bo", write_negatives)
    proc = check(ub)
    assert proc.returncode == 0, proc.stderr
    truths = json.loads(proc.stdout)["rec_truths"]
    assert (truths["yes"], truths["no"], truths["reference_reads_otherwise"]) == (1, 1, 1)
    table = subprocess.run([sys.executable, "-m", "unifybench", "data", "check", str(ub)], capture_output=True,
                           text=True, env=cli_env())
    assert "read differently by --protocol reference" in table.stderr and "'No, it is not.'" in table.stderr
    ran = cli("run", "--method", "always-yes", "--tasks", "rec", "--bench", str(ub), "--out", str(ub.parent / "r"),
              "--json")
    rec = json.loads(ran.stdout)["tasks"]["rec"]
    assert (rec["neg_acc"], rec["weighted_acc"]) == (0.0, 0.5)
