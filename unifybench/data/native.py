"""Reader for the UnifyBench (UniCTokens) release layout (docs/formats.md section 1)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import BenchError
from ..records import Benchmark, Concept, GenPrompt, QAItem
from .common import (attach_negatives, class_prompt, correct_option, list_dirs, list_images, load_json,
                     parse_options, replace_sks, resolve_image, strip_image_tag, token_for)

_NAME = re.compile(r"^[^/\\<>\x00]+$")


def _concept_names(root: Path) -> list[str]:
    listing = root / "concepts_list.json"
    if listing.is_file():
        names = load_json(listing)
        if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
            raise BenchError("expected a JSON list of concept names", listing)
        names = [n.strip() for n in names]
        for i, n in enumerate(names):
            if not _NAME.match(n) or n in (".", ".."):
                raise BenchError(f"invalid concept name {n!r}", listing, f"entry {i}")
        seen: set[str] = set()
        for i, n in enumerate(names):
            if n in seen:
                raise BenchError(f"concept {n!r} listed twice", listing, f"entry {i}")
            seen.add(n)
        if not names:
            raise BenchError("no concepts listed", listing)
        return names
    train = root / "concept" / "train"
    names = [d.name for d in list_dirs(train)]
    if not names:
        raise BenchError("no concepts found (no concepts_list.json and no concept/train/<c>/ folders)", train)
    return names


def _str_field(info: dict, key: str, path: Path, required: bool, default: str | None = None) -> str | None:
    if key not in info or info[key] is None:
        if required:
            raise BenchError(f"missing required field {key!r}", path, key)
        return default
    value = info[key]
    if not isinstance(value, str):
        raise BenchError(f"field {key!r} must be a string, got {type(value).__name__}", path, key)
    return value


def _read_info(train_dir: Path) -> dict[str, Any]:
    path = train_dir / "info.json"
    info = load_json(path, "info.json")
    if not isinstance(info, dict):
        raise BenchError("expected a JSON object", path)
    out: dict[str, Any] = {
        "class": _str_field(info, "class", path, True).strip(),
        "info": _str_field(info, "info", path, True),
        "conversation_type": _str_field(info, "conversation_type", path, False, ""),
        "generation_type": _str_field(info, "generation_type", path, False, None),
    }
    if not out["class"]:
        raise BenchError("field 'class' is empty", path, "class")
    extra = info.get("extra_info", [])
    if extra is None:
        extra = []
    if isinstance(extra, str):
        extra = [extra]
    if not isinstance(extra, list) or not all(isinstance(x, str) for x in extra):
        raise BenchError("field 'extra_info' must be a list of strings", path, "extra_info")
    out["extra_info"] = list(extra)
    return out


def _reference_images(root: Path, name: str, train_dir: Path, train: list[Path],
                      refs_spec: dict | None) -> list[Path]:
    path = root / "concept" / "train" / "train_images.json"
    if refs_spec is None or name not in refs_spec:
        return list(train)
    entry = refs_spec[name]
    if not isinstance(entry, list) or not all(isinstance(x, str) for x in entry):
        raise BenchError("expected a list of file names", path, name)
    refs = []
    for i, raw in enumerate(entry):
        cand = train_dir / raw
        found = cand if cand.is_file() else resolve_image(raw, root)
        if found is None:
            raise BenchError(f"reference photo {raw!r} not found in {train_dir}", path, f"{name}[{i}]")
        refs.append(found)
    return refs


def _parse_item(raw: Any, index: int, name: str, root: Path, path: Path) -> QAItem:
    where = f"item {index}"
    if not isinstance(raw, dict):
        raise BenchError(f"item must be a JSON object, got {type(raw).__name__}", path, where)
    rtype = raw.get("type")
    if not isinstance(rtype, str):
        raise BenchError("item has no 'type' string", path, where)
    t = rtype.strip()
    if "choice" in t.lower():
        kind = "choice"
    elif t in ("rec", "vqa", "text_only"):
        kind = t
    else:
        raise BenchError(f"unknown item type {rtype!r} (expected rec, vqa, text_only or *choice*)", path, where)
    conv = raw.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise BenchError("item has no 'conversations' list", path, where)
    question = answer = None
    for j, turn in enumerate(conv):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise BenchError(f"conversation turn {j} must be an object with a string 'value'", path, where)
        who = turn.get("from")
        if who == "human" and question is None:
            question = turn["value"]
        elif who == "gpt" and answer is None:
            answer = turn["value"]
    if question is None:
        raise BenchError("no 'human' turn in 'conversations'", path, where)
    if answer is None:
        raise BenchError("no 'gpt' turn in 'conversations'", path, where)
    question = strip_image_tag(question)
    raw_answer = answer
    answer = answer.strip()
    text_only = kind == "text_only" or "text" in t.lower()
    image = None
    if not text_only:
        if "image" not in raw:
            raise BenchError("item has no 'image'", path, where)
        image = resolve_image(raw["image"], root)
        if image is None:
            raise BenchError(f"image {raw['image']!r} not found (tried as given, under the root and by its tail)",
                             path, where)
    options: tuple = ()
    correct = None
    if kind == "choice":
        options = parse_options(question)
        correct = correct_option(answer, options)
    return QAItem(concept=name, index=index, kind=kind, question=question, answer=answer, image=image,
                  options=options, correct_option=correct, raw_type=rtype,
                  raw_answer=raw_answer if raw_answer != answer else None)


def _t2i(path: Path, token: str) -> tuple[str | None, list[str]]:
    if not path.is_file():
        return None, []
    data = load_json(path)
    if isinstance(data, dict) and "personalized_driven_generation" in data:
        prompts = data["personalized_driven_generation"]
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise BenchError("'personalized_driven_generation' must be a list of strings", path,
                             "personalized_driven_generation")
        return None, [replace_sks(p, token).strip() for p in prompts]
    if isinstance(data, list):
        for i, p in enumerate(data):
            if not isinstance(p, str):
                raise BenchError(f"entry must be a string, got {type(p).__name__}", path, f"entry {i}")
        prompts = [replace_sks(p, token).strip() for p in data]
        if prompts and re.fullmatch(r"a photo of " + re.escape(token) + r"\s*\.?", prompts[0], re.I):
            return prompts[0], prompts[1:]
        return None, prompts
    raise BenchError("expected a list of prompts or an object with 'personalized_driven_generation'", path)


def read_unifybench(root: Path, name: str, gen_prompts) -> Benchmark:
    root = Path(root)
    names = _concept_names(root)
    refs_path = root / "concept" / "train" / "train_images.json"
    refs_spec = None
    if refs_path.is_file():
        refs_spec = load_json(refs_path)
        if not isinstance(refs_spec, dict):
            raise BenchError('expected a JSON object {"<concept>": ["0.png", ...]}', refs_path)

    concepts: list[Concept] = []
    items: dict[str, list[QAItem]] = {}
    prompts: dict[str, list[GenPrompt]] = {}
    for cname in names:
        token = token_for(cname)
        train_dir = root / "concept" / "train" / cname
        if not train_dir.is_dir():
            raise BenchError(f"concept {cname!r} has no training folder", train_dir)
        info = _read_info(train_dir)
        train = list_images(train_dir)
        if not train:
            raise BenchError(f"concept {cname!r} has no training photos (.png/.jpg/.jpeg/.webp)", train_dir)
        test_dir = root / "concept" / "test" / cname
        if info["conversation_type"] == "human":
            kind = "human"
        elif info["generation_type"] == "live_subject":
            kind = "animal"
        else:
            kind = "object"
        gtype = info["generation_type"] if info["generation_type"] in ("object", "live_subject") else None
        identity, attr = _t2i(test_dir / "t2i_conditions.json", token)

        conversations: list[dict] = []
        conv_path = root / "showo_training_data_stage_1" / f"{cname}.json"
        if conv_path.is_file():
            data = load_json(conv_path)
            if not isinstance(data, list):
                raise BenchError("expected a JSON list of conversations", conv_path)
            for i, c in enumerate(data):
                if not isinstance(c, dict):
                    raise BenchError("conversation must be a JSON object", conv_path, f"item {i}")
            conversations = data

        concept = Concept(
            name=cname, token=token, class_noun=info["class"], description=info["info"],
            extra_facts=info["extra_info"], kind=kind, generation_type=gtype,
            train_images=train, cropped_train_images=list_images(train_dir / "cropped"),
            reference_images=_reference_images(root, cname, train_dir, train, refs_spec),
            test_images=list_images(test_dir), training_conversations=conversations,
            identity_prompt=identity, hard_negatives=list_images(train_dir / "negative_example"),
        )
        concepts.append(concept)

        data_path = root / "test_data" / f"{cname}.json"
        citems: list[QAItem] = []
        if data_path.is_file():
            data = load_json(data_path)
            if not isinstance(data, list):
                raise BenchError("expected a JSON list of test items", data_path)
            citems = [_parse_item(raw, i, cname, root, data_path) for i, raw in enumerate(data)]
        items[cname] = citems

        cprompts = [GenPrompt(cname, i, "gen", p, class_prompt(p, token, concept.class_noun))
                    for i, p in enumerate(gen_prompts(gtype, token))]
        cprompts += [GenPrompt(cname, i, "attr_gen", p, class_prompt(p, token, concept.class_noun))
                     for i, p in enumerate(attr)]
        prompts[cname] = cprompts
    attach_negatives(concepts, list_images(root / "random_images"))
    return Benchmark(name=name, format="unifybench", root=root, concepts=concepts, items=items, prompts=prompts)
