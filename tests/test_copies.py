"""Generated images that copy a reference photo are flagged per image, counted, and marked in the
leaderboard and the gallery (issue 21): they score against themselves."""
from __future__ import annotations

import json

from PIL import Image

from conftest import cli, make_plugin, only_run_dir

COPYING = '''
from PIL import Image
from unifybench.methods import Method

class Copying(Method):
    """Returns the concept's reference photos: the first image as they are, the second re-encoded."""
    name = "copying"
    tasks = frozenset({"gen"})

    def generate(self, concept, state, requests):
        out = []
        for r in requests:
            ref = concept.reference_images[r.index % len(concept.reference_images)]
            with Image.open(ref) as im:
                near = im.convert("RGB").resize((im.width // 2, im.height // 2))
            out.append([ref, near] + [Image.new("RGB", (64, 64), (200, 30, 30))] * (r.n_images - 2))
        return out


class Grey(Method):
    """An honest method of no skill: a grey square per image."""
    name = "grey"
    tasks = frozenset({"gen"})

    def generate(self, concept, state, requests):
        return [[Image.new("RGB", (64, 64), (128, 128, 128))] * r.n_images for r in requests]
'''


def test_copies_of_reference_photos_are_flagged_counted_and_marked(tmp_path):
    plugin = make_plugin(tmp_path / "plugin", "copying-plugin", "copying", COPYING, {"copying": "copying:Copying"})
    out = tmp_path / "runs"
    ran = cli("run", "--method", "copying", "--tasks", "gen", "--concepts", "dog", "--limit", "2",
              "--images-per-prompt", "3", "--backbones", "tiny", "--out", str(out), "--json", pythonpath=[plugin])
    assert ran.returncode == 0, ran.stderr
    results = json.loads(ran.stdout)
    run_dir = only_run_dir(out)
    rows = [json.loads(line) for line in (run_dir / "scores.jsonl").read_text().splitlines()]
    flags = [r["copies_reference"] for r in rows if r["scorer"] == "fidelity"]
    assert flags == ["exact", "near", None] * 2
    assert results["tasks"]["gen"]["copies"] == 4
    board = cli("leaderboard", str(out), "--no-published").stdout
    assert "[copies reference photos: 4 images]" in board
    assert cli("gallery", str(run_dir)).returncode == 0
    page = (run_dir / "gallery.html").read_text()
    assert "4 generated image(s) are copies of a reference photo" in page and "(exact)" in page and "(near)" in page


def test_a_run_that_copies_its_reference_photos_is_never_marked_best(tmp_path):
    """It scores against itself, so it beats every honest run on CLIP-I and DINO: the leaderboard
    gives the best mark to the best of the others, and per-concept tables mark no concept."""
    import re

    plugin = make_plugin(tmp_path / "plugin", "copying-plugin", "copying", COPYING,
                         {"copying": "copying:Copying", "grey": "copying:Grey"})
    out = tmp_path / "runs"
    common = ["--tasks", "gen", "--concepts", "dog,cat", "--limit", "2", "--images-per-prompt", "3",
              "--backbones", "tiny", "--out", str(out)]
    for method in ("copying", "real-images", "grey"):
        ran = cli("run", "--method", method, *common, pythonpath=[plugin])
        assert ran.returncode == 0, ran.stderr
    page = tmp_path / "board.html"
    assert cli("leaderboard", str(out), "--format", "html", "--out", str(page), "--no-published",
               pythonpath=[plugin]).returncode == 0
    html = page.read_text()
    main = html.split("<details>")[0]
    rows = dict(re.findall(r"<tr class='run'><td class='method'>([^<]*)</td>(.*?)</tr>", main))
    copying = next(cells for name, cells in rows.items() if name.startswith("copying"))
    others = [cells for name, cells in rows.items() if not name.startswith("copying")]
    assert "★" not in copying and "≈" not in copying
    assert any("★" in cells for cells in others)  # the best honest run keeps its mark
    per_concept = "".join(re.findall(r"<details><summary>per concept:.*?</details>", html, re.S))
    assert per_concept and "★" not in per_concept and "class='best'" not in per_concept


def test_real_images_and_distinct_photos_are_not_copies(tmp_path):
    ran = cli("run", "--method", "real-images", "--concepts", "dog,cat", "--limit", "2", "--backbones", "tiny",
              "--out", str(tmp_path / "runs"), "--json")
    assert json.loads(ran.stdout)["tasks"]["gen"]["copies"] == 0  # held-out photos, not the references
    from unifybench.data import load_benchmark
    from unifybench.scoring.fidelity import copy_flags

    dog = load_benchmark("mini").concept("dog")
    plain = tmp_path / "plain.png"
    Image.new("RGB", (64, 64), (128, 128, 128)).save(plain)
    assert copy_flags(dog.reference_images, dog.test_images + [plain]) == [None] * (len(dog.test_images) + 1)


def test_a_reference_mirrored_cropped_or_rescaled_and_re_encoded_is_flagged_near(tmp_path):
    from unifybench.data import load_benchmark
    from unifybench.scoring.fidelity import copy_flags

    dog = load_benchmark("mini").concept("dog")
    made = []
    for i, ref in enumerate(dog.reference_images):
        with Image.open(ref) as im:
            photo = im.convert("RGB")
        w, h = photo.size
        five = (round(w * 0.05), round(h * 0.05))
        for name, copy in {
            "mirrored": photo.transpose(Image.FLIP_LEFT_RIGHT),
            "cropped": photo.crop((five[0], five[1], w, h)).resize((w, h)),  # 5% off two sides
            "centre-cropped": photo.crop((five[0] // 2, five[1] // 2, w - five[0] // 2, h - five[1] // 2)),
            "rescaled": photo.resize((w * 2 // 3, h * 2 // 3)),
            "mirrored-and-cropped": photo.crop((0, 0, w - five[0], h - five[1])).transpose(Image.FLIP_LEFT_RIGHT),
        }.items():
            made.append(tmp_path / f"{i}-{name}.jpg")
            copy.save(made[-1], quality=85)  # re-encoded
    assert copy_flags(dog.reference_images, made) == ["near"] * len(made)


def test_different_real_photos_of_one_concept_are_not_copies_of_each_other():
    """Every photo of each concept of the bundled mini bench (DreamBench's photos), held-out and
    training, against the others of its concept as references: none is flagged."""
    from unifybench.data import load_benchmark
    from unifybench.scoring.fidelity import copy_flags

    bench = load_benchmark("mini")
    for concept in bench.concepts:
        photos = list(dict.fromkeys(list(concept.train_images) + list(concept.test_images)))
        for photo in photos:
            others = [p for p in photos if p != photo]
            assert copy_flags(others, [photo]) == [None], (concept.name, photo)
