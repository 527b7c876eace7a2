"""The bundled mini bench: valid, complete, and counted the same by `data check` and by hand."""
from __future__ import annotations

import json

from conftest import run_cli

from unifybench.data import MINI_BENCH_PATH, load_benchmark


def test_data_check_counts_the_bundled_bench():
    proc = run_cli("data", "check", "mini", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)

    # Independent count straight from the files.
    concepts = json.loads((MINI_BENCH_PATH / "concepts_list.json").read_text())
    counts = {"rec": 0, "vqa": 0, "text_only": 0, "choice": 0}
    truths = {"yes": 0, "no": 0}
    letters: dict[str, int] = {}  # the mini bench's choice answers are bare letters; A is always the first option
    attr = 0
    for c in concepts:
        for item in json.loads((MINI_BENCH_PATH / "test_data" / f"{c}.json").read_text()):
            counts["choice" if "choice" in item["type"] else item["type"]] += 1
            if item["type"] == "rec":
                truths["no" if item["conversations"][1]["value"] == "No." else "yes"] += 1
            if "choice" in item["type"]:
                letter = item["conversations"][1]["value"]
                letters[letter] = letters.get(letter, 0) + 1
        t2i = json.loads((MINI_BENCH_PATH / "concept" / "test" / c / "t2i_conditions.json").read_text())
        attr += len(t2i) - 1  # the first entry is the plain "A photo of <c>."
    images = [p for p in MINI_BENCH_PATH.rglob("*") if p.suffix in (".jpg", ".png")]
    assert summary == {"format": "unifybench", "concepts": len(concepts), "images": len(images),
                       "items": counts, "gen_prompts": 25 * len(concepts), "attr_prompts": attr,
                       "rec_truths": {**truths, "neither": 0, "reference_reads_otherwise": 0, "examples": []},
                       "choice_letters": {"items": counts["choice"], "by_letter": dict(sorted(letters.items())),
                                          "first_option": letters.get("A", 0)}}


def test_mini_bench_has_every_task_for_every_concept():
    bench = load_benchmark("mini")
    live = [c for c in bench.concepts if c.generation_type == "live_subject"]
    assert len(bench.concepts) in (5, 6) and len(live) >= 2
    for concept in bench.concepts:
        kinds = {it.kind for it in bench.items[concept.name]}
        assert kinds == {"rec", "vqa", "text_only", "choice"}, concept.name
        rec = [it for it in bench.items[concept.name] if it.kind == "rec"]
        assert any(it.answer == "No." for it in rec) and any(it.answer != "No." for it in rec)
        assert concept.extra_facts and concept.description.startswith(concept.token)
        assert concept.train_images and concept.test_images and concept.identity_prompt
        assert any(p.kind == "attr_gen" for p in bench.prompts[concept.name])
        # Photos stay small so the repository does.
        from PIL import Image
        for photo in concept.train_images + concept.test_images:
            with Image.open(photo) as im:
                assert max(im.size) <= 256
