"""Reader for the DreamBench (DreamBooth dataset) layout (docs/formats.md section 2).

``prompts_and_classes.txt`` is parsed as text: it is never evaluated.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import BenchError
from ..records import Benchmark, Concept, GenPrompt
from .common import attach_negatives, list_images, read_text, token_for

LIVE_SUBJECTS = frozenset({"cat", "cat2", "dog", "dog2", "dog3", "dog5", "dog6", "dog7", "dog8"})
PROMPTS_FILE = "prompts_and_classes.txt"

_BLOCK = re.compile(r"prompt_list\s*=\s*\[(.*?)\]", re.S)
_TEMPLATE = re.compile(r"""^\s*(?P<q>['"])(?P<t>.*?)(?P=q)\s*\.format\s*\(""")


def find_prompts_file(root: Path) -> Path | None:
    for cand in (root / PROMPTS_FILE, root / "dataset" / PROMPTS_FILE):
        if cand.is_file():
            return cand
    return None


def parse_prompts_and_classes(path: Path) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """(subject, class) pairs, object templates, live-subject templates; templates keep {0} {1}."""
    text = read_text(path)
    lines = text.splitlines()
    header = next((i for i, ln in enumerate(lines) if ln.strip().replace(" ", "") == "subject_name,class"), None)
    if header is None:
        raise BenchError("no 'subject_name,class' block", path)
    classes: list[tuple[str, str]] = []
    for lineno in range(header + 1, len(lines)):
        ln = lines[lineno].strip()
        if not ln:
            if classes:
                break
            continue
        subject, sep, cls = ln.partition(",")
        subject, cls = subject.strip(), cls.strip()
        if not sep or not subject or not cls or "/" in subject or "\\" in subject or subject in (".", ".."):
            if classes:
                break
            raise BenchError(f"expected 'subject_name,class', got {ln!r}", path, f"line {lineno + 1}")
        classes.append((subject, cls))
    if not classes:
        raise BenchError("the 'subject_name,class' block is empty", path)
    blocks = _BLOCK.findall(text)
    if len(blocks) != 2:
        raise BenchError(f"expected 2 'prompt_list = [...]' blocks (object, live subject), found {len(blocks)}", path)
    lists: list[list[str]] = []
    for b, block in enumerate(blocks):
        templates = []
        for ln in block.splitlines():
            if not ln.strip():
                continue
            m = _TEMPLATE.match(ln)
            if not m:
                raise BenchError(f"cannot read prompt line {ln.strip()!r}", path, f"prompt_list {b + 1}")
            t = m.group("t")
            if "{0}" not in t:
                raise BenchError(f"prompt {t!r} has no {{0}} placeholder", path, f"prompt_list {b + 1}")
            templates.append(t)
        if not templates:
            raise BenchError("empty prompt list", path, f"prompt_list {b + 1}")
        lists.append(templates)
    return classes, lists[0], lists[1]


def _fill(template: str, token: str, class_noun: str) -> str:
    return re.sub(r"\s+", " ", template.replace("{0}", token).replace("{1}", class_noun)).strip()


def read_dreambench(root: Path, name: str) -> Benchmark:
    root = Path(root)
    pfile = find_prompts_file(root)
    if pfile is None:
        raise BenchError(f"no {PROMPTS_FILE} (looked in the root and in dataset/)", root)
    classes, obj_templates, live_templates = parse_prompts_and_classes(pfile)
    concepts, items, prompts = [], {}, {}
    seen = set()
    for subject, cls in classes:
        if subject in seen:
            continue
        seen.add(subject)
        folder = next((d for d in (root / subject, root / "dataset" / subject, pfile.parent / subject)
                       if d.is_dir()), None)
        if folder is None:
            raise BenchError(f"subject {subject!r} listed in {PROMPTS_FILE} has no folder", root / subject)
        photos = list_images(folder)
        if not photos:
            raise BenchError(f"subject {subject!r} has no photos", folder)
        live = subject in LIVE_SUBJECTS
        token = token_for(subject)
        concepts.append(Concept(
            name=subject, token=token, class_noun=cls, kind="animal" if live else "object",
            generation_type="live_subject" if live else "object",
            train_images=photos, reference_images=list(photos), test_images=[],
        ))
        items[subject] = []
        templates = live_templates if live else obj_templates
        prompts[subject] = [GenPrompt(subject, i, "gen", _fill(t, token, cls), _fill(t, "", cls))
                            for i, t in enumerate(templates)]
    attach_negatives(concepts, [])
    return Benchmark(name=name, format="dreambench", root=root, concepts=concepts, items=items, prompts=prompts)
