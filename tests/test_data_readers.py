"""The readers: every format becomes the same Benchmark record."""
from __future__ import annotations


import pytest

from _data_fixtures import (DREAMBENCH, UNIFYBENCH_IMAGES, make_dreambench, make_unifybench, make_yollava,
                            questions_only_yollava, write_json)
from unifybench.data import (MINI_BENCH_PATH, check_benchmark, detect_format, generation_prompts,
                             load_benchmark)
from unifybench.data.common import correct_option, parse_options, resolve_image
from unifybench.errors import BenchError


@pytest.fixture(scope="module")
def ub_root(tmp_path_factory):
    return make_unifybench(tmp_path_factory.mktemp("ub") / "unictokens_data")


@pytest.fixture(scope="module")
def yl_root(tmp_path_factory):
    return make_yollava(tmp_path_factory.mktemp("yl") / "yollava")


# ------------------------------------------------------------------ DreamBench

def test_dreambench_copy_counts():
    n_photos = sum(1 for p in DREAMBENCH.rglob("*.jpg") if p.is_file())
    assert n_photos == 21  # 5 + 6 + 5 + 5: bear_plushie, can, cat, dog
    summary = check_benchmark(DREAMBENCH)
    assert summary.pop("rec_truths")["no"] == 0  # DreamBench has no recognition items
    assert summary == {"format": "dreambench", "concepts": 4, "images": n_photos,
                       "items": {"rec": 0, "vqa": 0, "text_only": 0, "choice": 0},
                       "gen_prompts": 100, "attr_prompts": 0}


def test_dreambench_records():
    bench = load_benchmark(DREAMBENCH)
    assert bench.format == "dreambench" and bench.name == "dreambench"
    dog, bear = bench.concept("dog"), bench.concept("bear_plushie")
    assert (dog.kind, dog.generation_type, dog.token, dog.class_noun) == ("animal", "live_subject", "<dog>", "dog")
    assert (bear.kind, bear.generation_type, bear.class_noun) == ("object", "object", "stuffed animal")
    assert dog.train_images == dog.reference_images and dog.test_images == []
    assert dog.heldout_images == dog.reference_images
    assert [p.name for p in dog.train_images][:2] == ["00.jpg", "01.jpg"]
    p = bench.prompts["dog"]
    assert len(p) == 25 and all(x.kind == "gen" for x in p)
    assert p[0].prompt == "a <dog> dog in the jungle" and p[0].class_prompt == "a dog in the jungle"
    assert p[10].prompt == "a <dog> dog wearing a red hat"  # live-subject list
    b = bench.prompts["bear_plushie"]
    assert b[10].class_prompt == "a stuffed animal with a wheat field in the background"  # object list
    assert [x.index for x in b] == list(range(25))
    assert all(v == [] for v in bench.items.values())


def test_dreambench_nested_dataset_folder(tmp_path):
    root = make_dreambench(tmp_path / "db", nested=True)
    assert detect_format(root) == "dreambench"
    bench = load_benchmark(root)
    assert [c.name for c in bench.concepts] == ["can", "dog"]
    assert bench.count_prompts("gen") == 50


# ------------------------------------------------------------------ UnifyBench

def test_unifybench_concepts(ub_root):
    bench = load_benchmark(ub_root, validate_images=True)
    assert bench.format == "unifybench" and bench.name == "unictokens_data"
    assert [c.name for c in bench.concepts] == ["bo", "pg"]
    bo, pg = bench.concept("bo"), bench.concept("pg")
    assert (bo.token, bo.class_noun, bo.kind, bo.generation_type) == ("<bo>", "dog", "animal", "live_subject")
    assert bo.description.startswith("<bo> is") and bo.extra_facts == ["<bo> has a red hat."]
    assert [p.name for p in bo.train_images] == ["0.png", "1.png", "2.png"]
    assert [p.name for p in bo.reference_images] == ["0.png", "1.png"]  # train_images.json
    assert [p.name for p in bo.cropped_train_images] == ["0.png"]
    assert [p.name for p in bo.test_images] == ["0.png", "1.png", "2.png", "3.png"]
    assert bo.identity_prompt == "A photo of <bo>."
    assert len(bo.training_conversations) == 1
    assert (pg.kind, pg.generation_type, pg.extra_facts, pg.identity_prompt) == ("object", "object", [], None)
    assert [p.name for p in pg.train_images] == ["0.jpg", "1.jpeg"]
    assert pg.reference_images == pg.train_images  # not in train_images.json: all training photos
    assert [p.name for p in pg.test_images] == ["0.png", "1.webp"]
    assert len(bench.image_files()) == UNIFYBENCH_IMAGES


def test_unifybench_items(ub_root):
    bench = load_benchmark(ub_root)
    items = bench.items["bo"]
    assert [it.index for it in items] == list(range(6))
    assert [it.kind for it in items] == ["rec", "rec", "vqa", "text_only", "choice", "choice"]
    rec = items[0]
    assert rec.image == ub_root / "concept" / "test" / "bo" / "3.png"  # foreign absolute path, by tail
    assert rec.question == "Is <bo> in this image?" and rec.answer == "Yes."
    assert items[1].image == ub_root / "random_images" / "1.png" and items[1].answer == "No."
    assert items[2].image == ub_root / "concept" / "test" / "bo" / "0.png"
    assert items[2].question == "What color is <bo>'s fur?"
    assert items[3].image is None and items[3].question == "What does <bo> like?"
    mc = items[4]
    assert mc.raw_type == "multiple_choice" and mc.options == (("A", "Dog"), ("B", "Cat"))
    assert mc.correct_option == "A" and mc.image is not None
    assert items[5].image is None and items[5].options == (("A", "A scarf"), ("B", "A red hat"))
    assert items[5].correct_option == "B"  # the answer is an option's text
    assert bench.items["pg"][0].image == ub_root / "concept" / "test" / "pg" / "1.webp"


def test_unifybench_prompts(ub_root):
    bench = load_benchmark(ub_root)
    bo = bench.prompts["bo"]
    gen = [p for p in bo if p.kind == "gen"]
    attr = [p for p in bo if p.kind == "attr_gen"]
    assert len(gen) == 25 and bo[:25] == gen
    assert gen[0].prompt == "a <bo> in the jungle" and gen[0].class_prompt == "a dog in the jungle"
    assert gen[10].prompt == "a <bo> wearing a red hat"
    assert [p.prompt for p in attr] == ["A photo of <bo> resting at its resting spot.", "<bo> wearing its hat."]
    assert attr[0].class_prompt == "A photo of dog resting at its resting spot."
    assert [p.index for p in attr] == [0, 1]
    pg = bench.prompts["pg"]
    assert sum(p.kind == "gen" for p in pg) == 25 and pg[0].prompt == "a <pg> in the jungle"
    assert [p.prompt for p in pg if p.kind == "attr_gen"] == ["A photo of <pg> on its shelf."]
    assert check_benchmark(ub_root) == {
        "format": "unifybench", "concepts": 2, "images": UNIFYBENCH_IMAGES,
        "items": {"rec": 2, "vqa": 2, "text_only": 1, "choice": 2}, "gen_prompts": 50, "attr_prompts": 3,
        "rec_truths": {"yes": 1, "no": 1, "neither": 0, "reference_reads_otherwise": 0, "examples": []},
        "choice_letters": {"items": 2, "by_letter": {"A": 1, "B": 1}, "first_option": 1}}


def test_unifybench_kinds_and_optional_files(tmp_path):
    root = make_unifybench(tmp_path / "b")
    write_json(root / "concept" / "train" / "pg" / "info.json",
               {"class": "man", "info": "<pg> is a man.", "conversation_type": "human", "generation_type": "other"})
    for p in ("concepts_list.json", "concept/train/train_images.json", "test_data/pg.json",
              "concept/test/pg/t2i_conditions.json"):
        (root / p).unlink()
    bench = load_benchmark(root)
    assert [c.name for c in bench.concepts] == ["bo", "pg"]  # listed from concept/train/*/
    pg = bench.concept("pg")
    assert pg.kind == "human" and pg.generation_type is None
    assert bench.prompts["pg"] == [] and bench.items["pg"] == []
    assert bench.concept("bo").reference_images == bench.concept("bo").train_images


# ------------------------------------------------------------------ Yo'LLaVA

def test_yollava_records(yl_root):
    assert detect_format(yl_root) == "yollava"
    bench = load_benchmark(yl_root, validate_images=True)
    assert bench.format == "yollava" and [c.name for c in bench.concepts] == ["bo", "mam"]
    bo = bench.concept("bo")
    assert (bo.token, bo.kind, bo.generation_type) == ("<bo>", "object", None)
    assert len(bo.train_images) == 2 and len(bo.test_images) == 2
    items = bench.items["bo"]
    assert [it.index for it in items] == list(range(7))
    vis, txt = items[0], items[1]
    assert vis.kind == "choice" and vis.question == "What animal does <bo> resemble?"
    assert vis.options == (("A", "Cat"), ("B", "Dog")) and vis.answer == "B" and vis.correct_option == "B"
    assert vis.image == yl_root / "yollava-data" / "test" / "bo" / "1.png"
    assert txt.kind == "choice" and txt.image is None and txt.question == "Is <bo> a dog or a cat?"
    assert txt.correct_option == "A"
    recs = items[2:]
    assert [it.answer for it in recs] == ["Yes."] * 2 + ["No."] * 3
    assert all(it.kind == "rec" and "<bo>" in it.question for it in recs)
    assert {it.image.parent.name for it in recs[2:]} == {"mam"}
    mam = bench.items["mam"]
    assert mam[0].image == yl_root / "yollava-data" / "test" / "mam" / "2.png"  # by tail
    assert len(mam) == 1 + 3 + 2
    assert bench.count_items() == {"rec": 10, "vqa": 0, "text_only": 0, "choice": 3}
    assert bench.count_prompts("gen") == 0


def test_yollava_questions_without_photos(tmp_path):
    root = questions_only_yollava(tmp_path)
    with pytest.raises(BenchError) as exc:
        load_benchmark(root)
    assert "yollava-data/train/" in exc.value.path and "training photos" in exc.value.message


# ------------------------------------------------------------------ API details

def test_generation_prompts():
    obj, live = generation_prompts("object"), generation_prompts("live_subject")
    assert len(obj) == len(live) == 25 and all("<sks>" in p for p in obj + live)
    assert generation_prompts("nonsense") == [] and generation_prompts(None) == []


def test_detect_format_errors(tmp_path):
    with pytest.raises(BenchError, match="cannot detect the format"):
        detect_format(tmp_path)
    with pytest.raises(BenchError, match="no such"):
        detect_format(tmp_path / "nope")
    (tmp_path / "test_data").mkdir()
    assert detect_format(tmp_path) == "unifybench"


def test_mini_path_constant():
    assert MINI_BENCH_PATH.name == "mini" and MINI_BENCH_PATH.parent.name == "data"


def test_resolve_image_tails(tmp_path):
    (tmp_path / "random_images").mkdir()
    target = tmp_path / "random_images" / "17.png"
    target.write_bytes(b"x")
    assert resolve_image("/data/users/a/unictokens/random_images/17.png", tmp_path) == target
    assert resolve_image("random_images/17.png", tmp_path) == target
    assert resolve_image("C:\\data\\random_images\\17.png", tmp_path) == target
    assert resolve_image("/data/other/17.png", tmp_path) is None  # a one-part tail is not enough
    assert resolve_image(None, tmp_path) is None


@pytest.mark.parametrize("question,options", [
    ("Is it? A. Yes B. No", (("A", "Yes"), ("B", "No"))),
    ("Which?\nA. Dog\nB. Cat\nC. Bird\nAnswer with a letter.", (("A", "Dog"), ("B", "Cat"), ("C", "Bird"))),
    ("Which? (A) red hat (B) blue cap", (("A", "red hat"), ("B", "blue cap"))),
    ("Which? A: one, B: two", (("A", "one"), ("B", "two"))),
    ("What colour is <bo>?", ()),
])
def test_parse_options(question, options):
    assert parse_options(question) == options


def test_correct_option():
    opts = (("A", "Dog"), ("B", "Cat"))
    assert correct_option("B", opts) == "B"
    assert correct_option("(A)", opts) == "A"
    assert correct_option("B. Cat", opts) == "B"
    assert correct_option("cat.", opts) == "B"
    assert correct_option("A dog", opts) is None
    assert correct_option("C", opts) is None


def test_a_choice_request_carries_its_options_in_its_question_on_every_format(tmp_path):
    """Yo'LLaVA keeps the options apart from the question; every method must still be asked them,
    in one form: the UnifyBench question as written, the Yo'LLaVA one with `A. text` lines and
    LLaVA-1.5's instruction (llava/eval/model_vqa_mmbench.py) appended."""
    from unifybench.tasks import build_requests

    yollava = load_benchmark(make_yollava(tmp_path / "yl"))
    request = next(w.request for w in build_requests(yollava, ["choice"], ["bo"], seed=0, images_per_prompt=1,
                                                     limit=None)["bo"])
    assert request.question == ("What animal does <bo> resemble?\nA. Cat\nB. Dog\n"
                                "Answer with the option's letter from the given choices directly.")
    assert request.options == (("A", "Cat"), ("B", "Dog"))
    native = load_benchmark(make_unifybench(tmp_path / "ub"))
    written = [it for it in native.items["bo"] if it.kind == "choice"]
    asked = [w.request for w in build_requests(native, ["choice"], ["bo"], seed=0, images_per_prompt=1,
                                               limit=None)["bo"]]
    assert [r.question for r in asked] == [it.question for it in written] and all(r.options for r in asked)
