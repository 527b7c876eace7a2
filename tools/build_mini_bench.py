#!/usr/bin/env python
"""(Re)build the bundled mini benchmark, unifybench/data/mini/, in UnifyBench's native layout.

Inputs: the DreamBench photos (the DreamBooth dataset's ``dataset/`` folder, given on the command line)
and the hand-written spec ``tools/mini_bench_spec.json`` (descriptions, invented facts,
QA items, attribute-reasoning prompts). Everything else is derived here, deterministically:

- photos are downscaled so the longer side is at most ``max_side`` px (LANCZOS) and saved as
  JPEG (quality from the spec, no EXIF, no optimisation passes that depend on the environment);
- per subject, the sorted photos are split: the first N-2 go to ``concept/train/<c>/`` (plus a
  centre-cropped square copy in ``cropped/``), the last 2 to ``concept/test/<c>/``;
- ``random_images/<i>.jpg`` is the first photo of each listed non-concept subject;
- ``black.png`` is the placeholder image of text-only items.

Usage:  python tools/build_mini_bench.py [DREAMBENCH_DIR] [--spec SPEC] [--out OUT]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = REPO / "tools" / "mini_bench_spec.json"
DEFAULT_OUT = REPO / "unifybench" / "data" / "mini"
PHOTO_EXTS = {".jpg", ".jpeg", ".png", ".webp"}
TEST_KINDS = {"rec", "vqa", "text_only"}  # plus any type containing "choice"
EXPECTED_PER_CONCEPT = {"rec_pos": 2, "rec_neg": 4, "vqa": 3, "text_only": 3, "choice": 2}


class SpecError(Exception):
    pass


def read_classes(src: Path) -> dict[str, str]:
    """The ``subject_name,class`` block of DreamBench's prompts_and_classes.txt."""
    path = src / "prompts_and_classes.txt"
    if not path.is_file():
        path = src / "dataset" / "prompts_and_classes.txt"
    classes: dict[str, str] = {}
    in_block = False
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line == "subject_name,class":
            in_block = True
            continue
        if in_block:
            if not line or "," not in line:
                if classes:
                    break
                continue
            name, cls = line.split(",", 1)
            classes[name.strip()] = cls.strip()
    if not classes:
        raise SpecError(f"no subject_name,class block in {path}")
    return classes


def subject_dir(src: Path, subject: str) -> Path:
    for cand in (src / subject, src / "dataset" / subject):
        if cand.is_dir():
            return cand
    raise SpecError(f"DreamBench subject {subject!r} not found under {src}")


def subject_photos(src: Path, subject: str) -> list[Path]:
    photos = sorted(p for p in subject_dir(src, subject).iterdir() if p.suffix.lower() in PHOTO_EXTS)
    if not photos:
        raise SpecError(f"DreamBench subject {subject!r} has no photos")
    return photos


def downscale(im: Image.Image, max_side: int) -> Image.Image:
    w, h = im.size
    scale = max_side / max(w, h)
    if scale >= 1:
        return im.copy()
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return im.resize(size, Image.LANCZOS)


def centre_square(im: Image.Image) -> Image.Image:
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return im.crop((left, top, left + side, top + side))


def save_jpeg(im: Image.Image, path: Path, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, "JPEG", quality=quality, optimize=False, progressive=False, subsampling=2)


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def make_item(raw: dict, placeholder: str) -> dict:
    for key in ("image", "type", "q", "a"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise SpecError(f"item {raw!r}: missing or empty {key!r}")
    text_only = raw["image"] == placeholder
    if raw["q"].startswith("<image>"):
        raise SpecError(f"item {raw['q']!r}: write q without the <image> prefix; the script adds it")
    question = raw["q"] if text_only else "<image>\n" + raw["q"]
    return {
        "image": raw["image"],
        "type": raw["type"],
        "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": raw["a"]}],
    }


def check_items(name: str, items: list[dict], out: Path, placeholder: str, test: bool) -> None:
    token = f"<{name}>"
    counts = {k: 0 for k in EXPECTED_PER_CONCEPT}
    for it in items:
        q, a, kind, image = it["q"], it["a"], it["type"], it["image"]
        where = f"{name}: {q!r}"
        if not (out / image).is_file():
            raise SpecError(f"{where}: image {image!r} was not produced")
        if token not in q:
            raise SpecError(f"{where}: the question does not mention {token}")
        if kind in ("text_only",) and image != placeholder:
            raise SpecError(f"{where}: text_only items must use {placeholder!r}")
        if kind == "vqa" and image == placeholder:
            raise SpecError(f"{where}: vqa items need a photo")
        if "choice" in kind:
            letters = [line[0] for line in q.splitlines()[1:] if len(line) > 2 and line[1:3] == ". "]
            if a not in letters or len(letters) < 2:
                raise SpecError(f"{where}: answer {a!r} is not one of the options {letters}")
            counts["choice"] += 1
        elif kind == "rec":
            positive = image.startswith(f"concept/test/{name}/") or image.startswith(f"concept/train/{name}/")
            if positive:
                if not a.startswith("Yes") or "no" in a.lower().replace(token.lower(), ""):
                    raise SpecError(f"{where}: a positive recognition answer must be a plain yes")
                counts["rec_pos"] += 1
            else:
                if a != "No.":
                    raise SpecError(f"{where}: a recognition negative's answer must be exactly 'No.'")
                counts["rec_neg"] += 1
        elif kind in TEST_KINDS:
            counts[kind] += 1
        else:
            raise SpecError(f"{where}: unknown type {kind!r}")
    if test and counts != EXPECTED_PER_CONCEPT:
        raise SpecError(f"{name}: test items per kind {counts}, expected {EXPECTED_PER_CONCEPT}")


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def build(src: Path, spec_path: Path, out: Path) -> dict:
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    img_cfg = spec["image"]
    max_side, quality = int(img_cfg["max_side"]), int(img_cfg["jpeg_quality"])
    placeholder = img_cfg["placeholder"]
    n_test = int(spec["n_test_photos"])
    classes = read_classes(src)
    names = [c["name"] for c in spec["concepts"]]
    if len(set(names)) != len(names):
        raise SpecError("duplicate concept names in the spec")
    overlap = set(names) & set(spec["random_images"])
    if overlap:
        raise SpecError(f"random_images subjects overlap the concepts: {sorted(overlap)}")

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    # placeholder for text-only items
    size = int(img_cfg["placeholder_size"])
    Image.new("RGB", (size, size), (0, 0, 0)).save(out / placeholder, "PNG", optimize=False)

    # random negatives
    provenance: dict[str, str] = {}
    for i, subject in enumerate(spec["random_images"]):
        photo = subject_photos(src, subject)[0]
        rel = f"random_images/{i}.jpg"
        save_jpeg(downscale(load_rgb(photo), max_side), out / rel, quality)
        provenance[rel] = f"{subject}/{photo.name}"

    # concept photos
    train_images: dict[str, list[str]] = {}
    for c in spec["concepts"]:
        name = c["name"]
        if name not in classes:
            raise SpecError(f"{name!r} has no class in prompts_and_classes.txt")
        photos = subject_photos(src, name)
        if len(photos) < n_test + 3:
            raise SpecError(f"{name!r} has {len(photos)} photos; need at least {n_test + 3}")
        train, test = photos[:-n_test], photos[-n_test:]
        tdir, edir = out / "concept" / "train" / name, out / "concept" / "test" / name
        train_images[name] = []
        for i, photo in enumerate(train):
            im = load_rgb(photo)
            save_jpeg(downscale(im, max_side), tdir / f"{i}.jpg", quality)
            save_jpeg(downscale(centre_square(im), max_side), tdir / "cropped" / f"{i}.jpg", quality)
            train_images[name].append(f"{i}.jpg")
            provenance[f"concept/train/{name}/{i}.jpg"] = f"{name}/{photo.name}"
        for i, photo in enumerate(test):
            save_jpeg(downscale(load_rgb(photo), max_side), edir / f"{i}.jpg", quality)
            provenance[f"concept/test/{name}/{i}.jpg"] = f"{name}/{photo.name}"

    # text files (after every image exists, so items can be checked against them)
    write_json(out / "concepts_list.json", names)
    write_json(out / "concept" / "train" / "train_images.json", train_images)
    totals = {"rec": 0, "vqa": 0, "text_only": 0, "choice": 0, "train_conversations": 0, "attr_prompts": 0}
    for c in spec["concepts"]:
        name, token = c["name"], f"<{c['name']}>"
        info = c["info"]
        if not info["info"].startswith(f"{token} is "):
            raise SpecError(f"{name}: info must start with '{token} is '")
        if not all(token in fact for fact in info["extra_info"]):
            raise SpecError(f"{name}: every extra_info fact must mention {token}")
        write_json(out / "concept" / "train" / name / "info.json", {
            "class": classes[name],
            "info": info["info"],
            "extra_info": info["extra_info"],
            "conversation_type": info["conversation_type"],
            "generation_type": info["generation_type"],
        })
        t2i = c["t2i_conditions"]
        if not t2i or t2i[0] != f"A photo of {token}.":
            raise SpecError(f"{name}: t2i_conditions must start with 'A photo of {token}.'")
        write_json(out / "concept" / "test" / name / "t2i_conditions.json", t2i)
        totals["attr_prompts"] += len(t2i) - 1

        check_items(name, c["train_conversations"], out, placeholder, test=False)
        write_json(out / "concept" / "train" / name / "conversations.json",
                   [make_item(it, placeholder) for it in c["train_conversations"]])
        totals["train_conversations"] += len(c["train_conversations"])

        check_items(name, c["test_items"], out, placeholder, test=True)
        write_json(out / "test_data" / f"{name}.json", [make_item(it, placeholder) for it in c["test_items"]])
        for it in c["test_items"]:
            totals["choice" if "choice" in it["type"] else it["type"]] += 1

    return {"concepts": len(names), "images": len(provenance), "provenance": provenance, **totals}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dreambench", type=Path, help="DreamBench folder (the DreamBooth dataset's `dataset/`)")
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--provenance", action="store_true", help="print which source photo became which file")
    args = parser.parse_args(argv)
    try:
        summary = build(args.dreambench, args.spec, args.out)
    except (SpecError, OSError, KeyError, ValueError) as exc:
        print(f"build_mini_bench: error: {exc}", file=sys.stderr)
        return 2
    provenance = summary.pop("provenance")
    print(json.dumps(summary))
    if args.provenance:
        for rel, source in provenance.items():
            print(f"{rel} <- {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
