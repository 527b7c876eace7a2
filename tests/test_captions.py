"""The caption task: RAP's recall / precision / F1 (Table 3's definitions) from hand-worked captions,
through the real command line, and MyVLM's layout read with its five seeded training splits."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli
from unifybench.data import detect_format, load_benchmark
from unifybench.errors import BenchError
from unifybench.scoring.captions import caption_sample, mentioned
from unifybench.testing import cli, only_run_dir, read_results
from unifybench.testing.benches import make_myvlm, write_json

NAMES = ["bo", "mam", "shiba-bo", "dog", "dog2"]


@pytest.mark.parametrize("caption, found", [
    ("<bo> is lying on the grass.", ["bo"]),
    ("BO and Mam's bowl", ["bo", "mam"]),  # any case; a possessive still names
    ("a bonnie dog near shiba-bo", ["shiba-bo", "dog"]),  # 'bonnie' is not bo; shiba-bo is not bo
    ("dog2 beside a dog", ["dog", "dog2"]),
    ("", []),
])
def test_a_name_counts_as_a_whole_token_in_any_case(caption, found):
    assert mentioned(caption, NAMES) == found


def test_a_caption_is_right_when_it_names_its_own_concept():
    assert caption_sample("bo", "<bo> with <mam>", NAMES) == {"mentioned": ["bo", "mam"], "correct": True,
                                                              "n_mentioned": 2}
    assert caption_sample("bo", "a dog", NAMES) == {"mentioned": ["dog"], "correct": False, "n_mentioned": 1}


def _answers(path, rows):
    path.write_text("".join(json.dumps({"task": "caption", **r}) + "\n" for r in rows))
    return path


def test_recall_precision_and_f1_through_the_command_line(tmp_path):
    # The mini bench's test photos: cat 2, dog 2 (concept names cat, dog, dog2, clock, backpack,
    # bear_plushie). Worked by hand:
    #   cat 0 "<cat> on a sofa"          names cat             -> right, 1 name
    #   cat 1 "a cat and a dog"          names cat, dog        -> right, 2 names
    #   dog 0 "<dog2> in a park"         names dog2            -> wrong, 1 name
    #   dog 1 "a sleepy animal"          names nothing         -> wrong, 0 names
    # recall = 2/4 = 0.5; precision = 2 right of 4 names = 0.5; F1 = 0.5.
    # Per concept: cat recall 1, precision 2/3, F1 0.8; dog recall 0, precision 0, F1 0.
    answers = _answers(tmp_path / "answers.jsonl", [
        {"concept": "cat", "index": 0, "answer": "<cat> on a sofa"},
        {"concept": "cat", "index": 1, "answer": "a cat and a dog"},
        {"concept": "dog", "index": 0, "answer": "<dog2> in a park"},
        {"concept": "dog", "index": 1, "answer": "a sleepy animal"}])
    ran = cli("run", "--method", "precomputed", "--method-arg", f"answers={answers}", "--tasks", "caption",
              "--concepts", "cat,dog", "--out", str(tmp_path / "runs"))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    results = read_results(only_run_dir(tmp_path / "runs"))
    def rap_metrics(values):
        return {k: values[k] for k in ("recall", "precision", "f1")}

    assert rap_metrics(results["tasks"]["caption"]) == pytest.approx({"recall": 0.5, "precision": 0.5, "f1": 0.5})
    assert rap_metrics(results["concepts"]["cat"]["caption"]) == pytest.approx(
        {"recall": 1.0, "precision": 2 / 3, "f1": 0.8})
    assert rap_metrics(results["concepts"]["dog"]["caption"]) == pytest.approx(
        {"recall": 0.0, "precision": 0.0, "f1": 0.0})
    assert set(results["intervals"]["caption"]) == {"recall", "precision"}  # F1 is no mean: no interval


def test_captions_that_name_nobody_have_no_precision(tmp_path):
    answers = _answers(tmp_path / "answers.jsonl", [{"concept": "cat", "index": i, "answer": "a sofa"}
                                                    for i in range(2)])
    ran = cli("run", "--method", "precomputed", "--method-arg", f"answers={answers}", "--tasks", "caption",
              "--concepts", "cat", "--out", str(tmp_path / "runs"))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    caption = read_results(only_run_dir(tmp_path / "runs"))["tasks"]["caption"]
    assert caption["recall"] == 0.0
    assert caption["precision"] == caption["f1"] == "not scored: no caption names a concept"


def test_caption_is_asked_for_by_name_only(tmp_path):
    ran = cli("run", "--method", "always-yes", "--concepts", "cat", "--limit", "1", "--out", str(tmp_path))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "caption" not in read_results(only_run_dir(tmp_path))["tasks"]


# ----------------------------------------------------------------------------- MyVLM's layout

def test_myvlm_layout_is_detected_and_split_four_photos_for_training(tmp_path):
    root = make_myvlm(tmp_path / "myvlm", photos=7)
    assert detect_format(root) == "myvlm"
    bench = load_benchmark(root)
    assert bench.format == "myvlm" and [c.name for c in bench.concepts] == ["bo", "mam"]
    for c in bench.concepts:
        assert len(c.train_images) == 4 and len(c.test_images) == 3
        assert not set(c.train_images) & set(c.test_images)
        assert c.reference_images == c.train_images and c.token == f"<{c.name}>"
        assert c.captions[c.test_images[0]][0].startswith("A ")
        assert len(c.captions) == 7 and all(len(v) == 5 for v in c.captions.values())
    assert bench.items == {"bo": [], "mam": []}


def test_the_five_splits_are_seeded_per_concept(tmp_path):
    root = make_myvlm(tmp_path / "myvlm", photos=9)
    splits = [{c.name: c.train_images for c in load_benchmark(root, split=s).concepts} for s in range(5)]
    assert splits[0] == {c.name: c.train_images for c in load_benchmark(root, split=0).concepts}
    assert len({tuple(s["bo"]) for s in splits}) > 1  # the splits differ
    # A concept's split depends on its name alone, not on the other concepts beside it.
    alone = tmp_path / "alone"
    (alone / "bo").mkdir(parents=True)
    for f in (root / "bo").iterdir():
        (alone / "bo" / f.name).write_bytes(f.read_bytes())
    assert [p.name for p in load_benchmark(alone, split=3).concepts[0].train_images] == \
        [p.name for p in splits[3]["bo"]]
    fingerprints = {load_benchmark(root, split=s).fingerprint() for s in range(5)}
    assert len(fingerprints) == len({tuple(s["bo"] + s["mam"]) for s in splits})


@pytest.mark.parametrize("captions, message", [
    ({"missing.jpg": ["a dog"]}, "is not a file of the concept's folder"),
    ({"../x.jpg": ["a dog"]}, "is not a file of the concept's folder"),
    ({"IMG_0.jpg": "a dog"}, "must be a list of strings"),
    ([], "expected a JSON object"),
])
def test_bad_captions_are_one_line(tmp_path, captions, message):
    root = make_myvlm(tmp_path / "myvlm")
    write_json(root / "bo" / "captions.json", captions)
    with pytest.raises(BenchError, match=message):
        load_benchmark(root)


def test_split_is_refused_out_of_range_and_on_other_layouts(tmp_path):
    root = make_myvlm(tmp_path / "myvlm")
    with pytest.raises(BenchError, match="expected a split 0 to 4"):
        load_benchmark(root, split=5)
    ran = cli("run", "--method", "always-yes", "--tasks", "rec", "--split", "1", "--out", str(tmp_path / "runs"))
    assert ran.returncode == 2 and "only MyVLM's layout has training splits" in ran.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# ----------------------------------------------------------------------------- every free-text method

@pytest.mark.parametrize("method, args", [
    ("llava-prompt", {"model": "tiny", "max_new_tokens": "3"}),
    ("yollava", {"model": "tiny", "epochs": "1", "positives_per_photo": "1", "max_hard": "1", "max_easy": "1",
                 "max_new_tokens": "3"}),
    ("text-prompt", {"model": "tiny", "max_new_tokens": "3"}),
    ("unictokens", {"backend": "janus", "model": "tiny", "epochs": "1", "transition_images": "1",
                    "max_new_tokens": "3"}),
    ("yochameleon", {"model": "tiny", "epochs": "1", "max_negatives": "1", "max_new_tokens": "3"}),
    ("rap", {"model": "tiny", "max_new_tokens": "3"}),
])
def test_every_method_that_answers_in_text_captions(tmp_path, method, args):
    flags = [part for k, v in args.items() for part in ("--method-arg", f"{k}={v}")]
    ran = cli("run", "--method", method, *flags, "--tasks", "caption", "--concepts", "cat", "--limit", "1",
              "--out", str(tmp_path))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    results = read_results(only_run_dir(tmp_path))
    assert results["counts"]["items"] == 1 and isinstance(results["tasks"]["caption"]["recall"], float)


def test_the_gallery_shows_each_caption_beside_its_own_photo(tmp_path):
    from unifybench.pages import thumbnail_uri

    from PIL import Image

    bench = make_myvlm(tmp_path / "myvlm", photos=5)
    for i, path in enumerate(sorted(bench.rglob("*.jpg"))):  # every photo its own colour: thumbnails differ
        Image.new("RGB", (200, 200), (25 * i, 120, 250 - 25 * i)).save(path)
    answers = _answers(tmp_path / "answers.jsonl", [{"concept": c, "index": 0, "answer": f"<{c}> at home"}
                                                    for c in ("bo", "mam")])
    ran = cli("run", "--method", "precomputed", "--method-arg", f"answers={answers}", "--bench", str(bench),
              "--tasks", "caption", "--split", "2", "--backbones", "tiny", "--out", str(tmp_path / "runs"))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    run_dir = only_run_dir(tmp_path / "runs")
    assert cli("gallery", str(run_dir)).returncode == 0
    page = (run_dir / "gallery.html").read_text()
    for concept in load_benchmark(bench, split=2).concepts:
        assert thumbnail_uri(concept.test_images[0], side=64) in page  # split 2's test photo, not split 0's
    assert thumbnail_uri(load_benchmark(bench, split=0).concept("bo").test_images[0], side=64) not in page
    assert "&lt;bo&gt; at home" in page


def test_clip_score_where_the_benchmark_ships_captions(tmp_path):
    """MyVLM's CLIPScore, recomputed here from the CLIP encoder's raw outputs: 2.5 * max(cos, 0)
    between the photo (resize 224 bicubic, centre crop, CLIP normalisation) and "A photo depicts "
    + the caption with the concept named by its category word."""
    import torch
    import torch.nn.functional as F
    import torchvision.transforms.functional as TF
    from PIL import Image

    from unifybench.scoring.encoders import load_backbones

    bench = make_myvlm(tmp_path / "myvlm", photos=6)
    answers = _answers(tmp_path / "answers.jsonl", [
        {"concept": "bo", "index": 0, "answer": "<bo> sleeps on a sofa"},
        {"concept": "bo", "index": 1, "answer": "Bo and a ball"}])
    ran = cli("run", "--method", "precomputed", "--method-arg", f"answers={answers}", "--bench", str(bench),
              "--tasks", "caption", "--concepts", "bo", "--backbones", "tiny", "--out", str(tmp_path / "runs"))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    run_dir = only_run_dir(tmp_path / "runs")
    results = read_results(run_dir)
    assert results["label"].startswith("caption CLIPScores")  # tiny backbones say so
    rows = [json.loads(line) for line in (run_dir / "scores.jsonl").read_text().splitlines()]
    texts = ["A photo depicts object sleeps on a sofa", "A photo depicts object and a ball"]
    assert [r["clip_text"] for r in rows] == texts
    clip = load_backbones("tiny", seed=0).clip_model.eval()
    import open_clip

    tokens = open_clip.get_tokenizer("ViT-B-32")(texts)
    expected = []
    for row, token in zip(rows, tokens):
        with Image.open(row["image"]) as im:
            x = TF.resize(im.convert("RGB"), [224], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        x = TF.normalize(TF.pil_to_tensor(TF.center_crop(x, [224, 224])).float() / 255,
                         (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
        with torch.no_grad():
            cos = F.cosine_similarity(clip.encode_image(x[None]), clip.encode_text(token[None])).item()
        expected.append(2.5 * max(cos, 0.0))
    assert [r["clip_score"] for r in rows] == pytest.approx(expected, abs=1e-5)
    assert results["tasks"]["caption"]["clip_score"] == pytest.approx(sum(expected) / 2, abs=1e-5)


def test_no_clip_score_without_reference_captions(tmp_path):
    answers = _answers(tmp_path / "answers.jsonl", [{"concept": "cat", "index": 0, "answer": "<cat>"}])
    ran = cli("run", "--method", "precomputed", "--method-arg", f"answers={answers}", "--tasks", "caption",
              "--concepts", "cat", "--limit", "1", "--out", str(tmp_path / "runs"))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    caption = read_results(only_run_dir(tmp_path / "runs"))["tasks"]["caption"]
    assert caption["clip_score"] == "not scored: the benchmark ships no reference captions"


def test_myvlm_by_its_hub_name(tmp_path, monkeypatch):
    """`--bench yuvalalaluf/MyVLM` from a cache laid out as huggingface_hub lays it out (offline)."""
    home, commit = tmp_path / "hf", "a" * 40
    folder = home / "hub" / "datasets--yuvalalaluf--MyVLM"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    make_myvlm(folder / "snapshots" / commit / "data" / "objects")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    answers = _answers(tmp_path / "a.jsonl", [{"concept": c, "index": i, "answer": f"<{c}>"}
                                              for c in ("bo", "mam") for i in range(2)])
    # A process of its own: huggingface_hub reads HF_HOME when it is imported.
    ran = run_cli("run", "--method", "precomputed", "--method-arg", f"answers={answers}",
                  "--bench", "yuvalalaluf/MyVLM", "--tasks", "caption", "--backbones", "tiny",
                  "--out", str(tmp_path / "runs"))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    run_dir = only_run_dir(tmp_path / "runs")
    assert run_dir.name.startswith("precomputed__MyVLM__")
    record = json.loads((run_dir / "run.json").read_text())["benchmark"]
    assert record["format"] == "myvlm" and record["source"]["hub"] == "yuvalalaluf/MyVLM"
    assert read_results(run_dir)["tasks"]["caption"]["recall"] == 1.0
