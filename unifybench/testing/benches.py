"""Builders of small benchmarks in a temporary folder, from the bundled mini bench's real photos
(downscaled): a test of a reader, a scorer or a method on a layout the mini bench does not have."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from ..kit.files import write_json_atomic as write_json  # noqa: F401 - the fixtures' writer, for tests too

_MINI = Path(__file__).resolve().parents[1] / "data" / "mini" / "concept"
_SOURCES = sorted((_MINI / "train" / "dog").glob("*.jpg")) + sorted((_MINI / "test" / "dog").glob("*.jpg")) + \
    sorted((_MINI / "train" / "clock").glob("*.jpg"))
_counter = [0]


def photo(dst: Path, size: int = 48) -> Path:
    """Write a small real photo to ``dst`` (format from the extension)."""
    src = _SOURCES[_counter[0] % len(_SOURCES)]
    _counter[0] += 1
    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im.convert("RGB").resize((size, size)).save(dst)
    return dst


def conv(question: str, answer: str) -> list[dict]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


# distinct files used by make_unifybench: bo 3 train + 1 cropped + 4 test; pg 2 train + 2 test; 2 random images
# (easy negatives of every concept)
UNIFYBENCH_IMAGES = 14


def make_unifybench(root: Path) -> Path:
    """Two concepts in the UnifyBench release layout; items use foreign absolute paths, both t2i forms."""
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "concepts_list.json", ["bo", "pg"])
    train = root / "concept" / "train"
    test = root / "concept" / "test"
    for i in range(3):
        photo(train / "bo" / f"{i}.png")
    photo(train / "bo" / "cropped" / "0.png")
    write_json(train / "bo" / "info.json", {
        "class": "dog", "info": "<bo> is a shiba inu with orange fur.",
        "extra_info": ["<bo> has a red hat."], "conversation_type": "animal", "generation_type": "live_subject"})
    photo(train / "pg" / "0.jpg")
    photo(train / "pg" / "1.jpeg")
    write_json(train / "pg" / "info.json", {"class": "toy", "info": "<pg> is a small plush penguin.",
                                             "generation_type": "object"})
    write_json(train / "train_images.json", {"bo": ["0.png", "1.png"]})
    for i in range(4):
        photo(test / "bo" / f"{i}.png")
    photo(test / "pg" / "0.png")
    photo(test / "pg" / "1.webp")
    write_json(test / "bo" / "t2i_conditions.json",
               ["A photo of <bo>.", "A photo of <bo> resting at its resting spot.", "<bo> wearing its hat."])
    write_json(test / "pg" / "t2i_conditions.json",
               {"personalized_driven_generation": ["A photo of <pg> on its shelf."]})
    photo(root / "random_images" / "0.png")
    photo(root / "random_images" / "1.png")
    Image.new("RGB", (512, 512)).save(root / "black_512x512.png")
    write_json(root / "test_data" / "bo.json", [
        {"image": "/home/author/data/concept/test/bo/3.png", "type": "rec",
         "conversations": conv("<image>\nIs <bo> in this image?", "Yes.")},
        {"image": "random_images/1.png", "type": "rec",
         "conversations": conv("<image>\nIs <bo> in this image?", "No.")},
        {"image": "/mnt/x/unictokens_data/concept/test/bo/0.png", "type": "vqa",
         "conversations": conv("<image>What color is <bo>'s fur?", "Orange.")},
        {"image": "/home/author/data/black_512x512.png", "type": "text_only",
         "conversations": conv("What does <bo> like?", "<bo> likes bones.")},
        {"image": "concept/test/bo/2.png", "type": "multiple_choice",
         "conversations": conv("<image>\nWhat animal is <bo>? A. Dog B. Cat", "A")},
        {"image": "/home/author/data/black_512x512.png", "type": "text_choice",
         "conversations": conv("What does <bo> wear?\nA. A scarf\nB. A red hat", "A red hat")},
    ])
    write_json(root / "test_data" / "pg.json", [
        {"image": "./concept/test/pg/1.webp", "type": "vqa",
         "conversations": conv("<image>\nWhat is <pg>?", "A plush penguin.")},
    ])
    write_json(root / "showo_training_data_stage_1" / "bo.json",
               [{"image": "concept/train/bo/0.png", "conversations": conv("<image>\nWho is this?", "<bo>.")}])
    return root


def make_yollava(root: Path) -> Path:
    """Two subjects: bo (train 2, test 2) and mam (train 2, test 3)."""
    root.mkdir(parents=True, exist_ok=True)
    data = root / "yollava-data"
    for s, n_test in (("bo", 2), ("mam", 3)):
        for i in range(2):
            photo(data / "train" / s / f"{i}.png")
        for i in range(n_test):
            photo(data / "test" / s / f"{i}.png")
    write_json(root / "yollava-visual-qa.json", {
        "bo": {"./yollava-data/test/bo/1.png": {"question": "What animal does <sks> resemble?",
                                               "options": {"B": "Dog", "A": "Cat"}, "correct_answer": "B"}},
        "mam": {"/home/someone/yollava/yollava-data/test/mam/2.png": {
            "question": "Is <sks> sitting?", "options": {"A": "Yes", "B": "No"}, "correct_answer": "A"}},
    })
    write_json(root / "yollava-text-only-qa.json", {
        "bo": {"0": {"question": "Is sks a dog or a cat?", "option": {"A": "Dog", "B": "Cat"},
                     "correct_answer": "A"}},
    })
    return root


def make_myvlm(root: Path, photos: int = 6) -> Path:
    """Two concepts in MyVLM's layout: ``<concept>/*.jpg`` and ``captions.json`` (five captions a
    photo, naming the concept by its category word as MyVLM's do)."""
    for name, noun in (("bo", "dog"), ("mam", "cat")):
        folder = root / name
        captions = {}
        for i in range(photos):
            photo(folder / f"IMG_{i}.jpg")
            captions[f"IMG_{i}.jpg"] = [f"A {noun} in photo {i}, take {k}." for k in range(5)]
        write_json(folder / "captions.json", captions)
    return root
