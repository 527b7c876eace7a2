"""`--protocol reference` against an independent transcription of the UniCTokens authors' scoring code.

The oracle below is written from ``eval/eval_p_mmu.py`` (``run_one_test_item``, ``calculate_score``,
``calculate_bleu``, ``statistic``) and ``eval/clip_eval.py`` (``SHOWO_P_CLIPEvaluator``) of
arctanxarc/UniCTokens, on the raw JSON file rather than through our reader, with nltk's BLEU
rather than ours: nothing of the harness's scoring code is used to compute the expected numbers.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from _data_fixtures import photo, write_json
from conftest import only_run_dir, read_results, cli

nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")


# ------------------------------------------------------------------ the oracle (the authors' rules)

def oracle_bleu(reference: str, candidate: str) -> float:
    return nltk_bleu.sentence_bleu([list(reference)], list(candidate), weights=(0.7, 0.3),
                                   smoothing_function=nltk_bleu.SmoothingFunction().method1)


def oracle_score(gt: str, pred: str, test_type: str) -> dict:
    """``calculate_score`` without the judge; ``gt`` as the file writes it, ``pred`` already stripped."""
    if test_type == "rec":
        if gt == "No.":
            ok = 1.0 if "no" in pred.lower() else 0.0
            return {"no_recall": ok, "accuracy": ok}
        ok = 1.0 if "yes" in pred.lower() else 0.0
        return {"recall": ok, "accuracy": ok}
    if "choice" in test_type:
        return {"accuracy": 1.0 if gt in pred else 0.0}
    return {"bleu": oracle_bleu(gt, pred)}


def oracle_statistic(items: list[dict], replies: list[str]) -> dict:
    """``statistic``: per test type, the mean of each key over the items that have it."""
    by_type: dict[str, list[dict]] = {}
    for item, reply in zip(items, replies):
        gt = item["conversations"][1]["value"]
        by_type.setdefault(item["type"], []).append(oracle_score(gt, reply.strip(), item["type"]))
    out = {}
    for test_type, scores in by_type.items():
        keys = {k for s in scores for k in s}
        out[test_type] = {k: sum(s[k] for s in scores if k in s) / sum(k in s for s in scores) for k in keys}
    return out


# ------------------------------------------------------------------ a bench whose replies separate the protocols

# (type, ground truth as the file writes it, reply as the model decoded it)
CASES = [
    ("rec", "Yes.", "Yes, I know it."),               # reference: correct ("no" is never checked)
    ("rec", "Yes.", "Yes. No doubt about it."),       # reference: correct; default: "yes" too
    ("rec", "Yes.", "Yes, <bo> is playing in the snow."),  # correct ("snow" is never read as "no")
    ("rec", "Yes, it is <bo>.", "I see its eyes."),   # reference: correct ("eyes"); default: unparsed
    ("rec", "Yes.", "  yes  "),
    ("rec", "Yes.", "No, that is not <bo>."),
    ("rec", "No.", "I do not know."),                 # reference: correct ("not"); default: unparsed
    ("rec", "No.", "Yes."),
    ("rec", "No.", "No."),
    ("rec", " No.", "No."),                            # reference: gt != "No." exactly, so a positive: wrong
    ("rec", "No.\n", "Nope"),                          # likewise
    ("multiple_choice", "B", "The answer is b."),     # case-sensitive substring: wrong under reference
    ("multiple_choice", "B", "But I think A."),       # substring "B" of "But": correct under reference
    ("multiple_choice", "A red hat ", "A red hat"),   # gt kept as written: its trailing space is not in the reply
    ("text_choice", "A red hat", "  A red hat  "),
    ("vqa", "Orange.", "  Orange.\n"),                # stripped reply
    ("vqa", "  Orange. ", "Orange."),                 # gt as written, spaces included
    ("text_only", "<bo> likes bones.", "It likes bones a lot."),
]


def make_bench(root: Path) -> tuple[Path, list[dict], Path]:
    """One concept, items built from CASES; the answers file a model made elsewhere."""
    train, test = root / "concept" / "train" / "bo", root / "concept" / "test" / "bo"
    for i in range(2):
        photo(train / f"{i}.png")
        photo(test / f"{i}.png")
    write_json(train / "info.json", {"class": "dog", "info": "<bo> is a shiba inu.", "extra_info": [],
                                     "generation_type": "live_subject"})
    write_json(root / "concept" / "train" / "train_images.json", {"bo": ["0.png", "1.png"]})
    write_json(root / "concepts_list.json", ["bo"])
    Image.new("RGB", (64, 64)).save(root / "black_512x512.png")
    items = []
    for kind, gt, _ in CASES:
        question = "<image>\nIs <bo> in this image?" if kind == "rec" else "<image>\nWhat about <bo>? A. Cat B. Dog"
        items.append({"image": "concept/test/bo/0.png", "type": kind,
                      "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": gt}]})
    write_json(root / "test_data" / "bo.json", items)
    answers = root.parent / "answers.jsonl"
    answers.write_text("".join(json.dumps({"concept": "bo", "index": i, "answer": reply}) + "\n"
                               for i, (_, _, reply) in enumerate(CASES)), encoding="utf-8")
    return root, items, answers


def _run(tmp_path: Path, protocol: str):
    bench, items, answers = make_bench(tmp_path / "bench")
    out = tmp_path / f"runs-{protocol}"
    proc = cli("run", "--method", "precomputed", "--bench", str(bench), "--tasks", "rec,choice,vqa,text_only",
                   "--protocol", protocol, "--method-arg", f"answers={answers}", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = only_run_dir(out)
    rows = [json.loads(line) for line in (run_dir / "scores.jsonl").read_text().splitlines()]
    return items, rows, read_results(run_dir)


def test_reference_protocol_equals_the_authors_rules_item_by_item_and_per_concept(tmp_path):
    items, rows, results = _run(tmp_path, "reference")
    replies = [reply for _, _, reply in CASES]
    by_index = {r["index"]: r for r in rows if r["scorer"] == "answer"}
    assert len(by_index) == len(CASES)
    for i, (item, reply) in enumerate(zip(items, replies)):
        expected = oracle_score(item["conversations"][1]["value"], reply.strip(), item["type"])
        row = by_index[i]
        assert row["reply"] == reply  # the raw reply is kept
        if "accuracy" in expected:
            assert row["correct"] == bool(expected["accuracy"]), (i, CASES[i])
        else:
            assert row["bleu"] == pytest.approx(expected["bleu"], abs=1e-12), (i, CASES[i])

    stats = oracle_statistic(items, replies)
    rec = results["concepts"]["bo"]["rec"]
    assert rec["accuracy"] == pytest.approx(stats["rec"]["accuracy"])
    assert rec["pos_acc"] == pytest.approx(stats["rec"]["recall"])
    assert rec["neg_acc"] == pytest.approx(stats["rec"]["no_recall"])
    assert rec["weighted_acc"] == pytest.approx((stats["rec"]["recall"] + stats["rec"]["no_recall"]) / 2)
    # The reference keeps each choice type apart; we pool them: the pooled mean of its per-item scores.
    choice_scores = [oracle_score(it["conversations"][1]["value"], r.strip(), it["type"])["accuracy"]
                     for it, r in zip(items, replies) if "choice" in it["type"]]
    assert results["concepts"]["bo"]["choice"]["accuracy"] == pytest.approx(sum(choice_scores) / len(choice_scores))
    assert results["concepts"]["bo"]["vqa"]["bleu"] == pytest.approx(stats["vqa"]["bleu"])
    assert results["concepts"]["bo"]["text_only"]["bleu"] == pytest.approx(stats["text_only"]["bleu"])


def test_the_replies_that_separate_the_two_protocols(tmp_path):
    _, ref_rows, _ = _run(tmp_path, "reference")
    _, def_rows, _ = _run(tmp_path, "default")
    ref = {r["index"]: r for r in ref_rows}
    default = {r["index"]: r for r in def_rows}
    # Positives that also hold "no" ("know", "No doubt", "snow"): correct under the reference,
    # which never looks for "no" in a positive's reply (a first transcription did, and got them wrong).
    for i in (0, 1, 2):
        assert ref[i]["correct"] and default[i]["correct"], CASES[i]
    # reference correct, default not: a yes hidden in "eyes", a negative holding "no" only in "not"
    for i in (3, 6):
        assert ref[i]["correct"] and not default[i]["correct"], CASES[i]
    assert default[3]["parsed"] is None and default[6]["parsed"] is None
    # the ground truth as written: " No." is a positive under reference, a negative under default
    assert ref[9]["negative"] is False and default[9]["negative"] is True
    assert not ref[9]["correct"] and default[9]["correct"]
    # choice: the reference's substring of "But"; the default reads the letter A
    assert ref[12]["correct"] and not default[12]["correct"]
    assert not ref[11]["correct"] and default[11]["correct"]
    # the stored ground truth is the one each protocol compared with
    assert ref[16]["truth"] == "  Orange. " and default[16]["truth"] == "Orange."
    assert ref[16]["bleu"] != default[16]["bleu"]


# ------------------------------------------------------------------ CLIP-I / CLIP-T preprocessing

def _authors_clip_input(path: Path) -> torch.Tensor:
    """``SHOWO_P_CLIPEvaluator.image_transform`` then ``CLIPEvaluator.preprocess``, built with
    torchvision's v1 transforms as the authors build them (CLIP's transforms[:2] + [4:])."""
    from torchvision import transforms as T

    bicubic = T.InterpolationMode.BICUBIC
    image = Image.open(path).convert("RGB")
    image = T.ToTensor()(T.CenterCrop((512, 512))(T.Resize(512, interpolation=bicubic)(image)))
    clip_tail = [T.Resize(224, interpolation=bicubic), T.CenterCrop(224),
                 T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))]
    preprocess = T.Compose([T.Normalize(mean=[-1.0, -1.0, -1.0], std=[2.0, 2.0, 2.0])] + clip_tail)
    return preprocess(image.unsqueeze(0))[0]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("clipref")
    sizes = [(640, 480), (480, 700), (512, 512), (300, 200)]
    paths = []
    for i, size in enumerate(sizes):
        p = photo(root / f"{i}.png", size=max(size))
        with Image.open(p) as im:
            im.resize(size).save(p)
        paths.append(p)
    return paths


def test_reference_clip_input_is_the_authors_transform(photos):
    from unifybench.scoring import fidelity

    for p in photos:
        ours = fidelity.clip_reference(Image.open(p).convert("RGB"))
        theirs = _authors_clip_input(p)
        assert ours.shape == theirs.shape == (3, 224, 224)
        assert (ours - theirs).abs().max().item() < 1e-5


def test_reference_clip_i_and_clip_t_match_the_authors_per_image_loop(photos, tmp_path):
    from unifybench.scoring.encoders import load_backbones
    from unifybench.scoring.fidelity import FidelityScorer

    tiny = load_backbones("tiny", seed=0)
    refs, gens = photos[:2], photos[2:]
    prompt = "a dog in the jungle"
    ours = FidelityScorer(tiny, "reference", cache_dir=tmp_path / "cache").score(refs, gens, [prompt] * len(gens))
    src = tiny.clip_image(torch.stack([_authors_clip_input(p) for p in refs]))
    text = tiny.clip_text([prompt])
    for i, g in enumerate(gens):
        gen = tiny.clip_image(_authors_clip_input(g).unsqueeze(0))
        assert ours["clip_i"][i] == pytest.approx((src @ gen.T).mean().item(), abs=2e-6)
        assert ours["clip_t"][i] == pytest.approx((text @ gen.T).mean().item(), abs=2e-6)


def test_the_reference_cache_keys_on_what_the_preprocessing_computes(monkeypatch, photos, tmp_path):
    """An entry written under another CLIP transform is never replayed, even with the same description."""
    from unifybench.scoring import fidelity
    from unifybench.scoring.encoders import load_backbones

    tiny = load_backbones("tiny", seed=0)
    cache = tmp_path / "cache"
    first = fidelity.FidelityScorer(tiny, "reference", cache_dir=cache).reference_embeddings(photos[:2])

    def without_clip_normalisation(img):  # the old, wrong transform
        x = fidelity._to_unit(fidelity._resize_crop(img, 512, 512))
        x = fidelity.TF.normalize(x, [-1.0] * 3, [2.0] * 3)
        return fidelity.TF.resize(x, [224, 224], interpolation=fidelity.BICUBIC, antialias=True)

    spec = dict(fidelity.PROTOCOLS["reference"], clip=without_clip_normalisation)
    monkeypatch.setitem(fidelity.PROTOCOLS, "reference", spec)
    second = fidelity.FidelityScorer(tiny, "reference", cache_dir=cache).reference_embeddings(photos[:2])
    assert not torch.allclose(first["clip"], second["clip"])
    assert torch.equal(first["dino"], second["dino"])


# ------------------------------------------------------------------ the authors' image folders

def _authors_folders(root: Path, concept: str, prompts: list[str], ckpts=("test_train_s3",)) -> None:
    for ckpt in ckpts:
        for prompt in prompts:
            for i in range(2):
                photo(root / concept / ckpt / "15" / prompt / f"{i}.png")


def test_precomputed_reads_the_authors_gen_saved_and_t2i_saved_layout(tmp_path):
    from unifybench.data import load_benchmark

    bench = load_benchmark("mini")
    dog = bench.concept("dog")
    gen = [p.prompt for p in bench.prompts["dog"] if p.kind == "gen"][:3]
    attr = [p.prompt for p in bench.prompts["dog"] if p.kind == "attr_gen"][:3]
    gen_saved, t2i_saved = tmp_path / "gen_saved", tmp_path / "t2i_saved"
    learned = "".join(f"<token_{i}>" for i in range(24))
    # The reference's folders: the raw prompt with <sks>; another codebase's: learned tokens then the token.
    folders = [gen[0].replace(dog.token, "<sks>"), gen[1].replace(dog.token, "<sks>"),
               gen[2].replace(dog.token, f"{learned} {dog.token}")]
    _authors_folders(gen_saved, "dog", folders)
    _authors_folders(t2i_saved, "dog", attr)
    base = ["run", "--method", "precomputed", "--concepts", "dog", "--tasks", "gen,attr_gen", "--limit", "3",
            "--images-per-prompt", "2", "--backbones", "tiny", "--method-arg", f"images={gen_saved}",
            "--method-arg", f"attr_images={t2i_saved}"]
    proc = cli(*base, "--out", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = read_results(only_run_dir(tmp_path / "runs"))
    assert isinstance(results["tasks"]["gen"]["clip_i"], float)

    # Two checkpoints under one concept: which one is meant cannot be guessed.
    _authors_folders(gen_saved, "dog", folders[:1], ckpts=("other_ckpt",))
    proc = cli(*base, "--out", str(tmp_path / "runs2"))
    assert proc.returncode == 2
    message = proc.stderr.strip()
    assert "\n" not in message and "2 folders match the prompt" in message and "other_ckpt" in message
