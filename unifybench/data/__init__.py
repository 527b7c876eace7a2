"""Benchmark readers: every supported format becomes one :class:`~unifybench.records.Benchmark`.

Formats (see docs/formats.md): ``unifybench`` (the UniCTokens release layout, also the bundled
``mini`` bench), ``dreambench`` (the DreamBooth dataset), ``yollava``, ``myvlm`` (MyVLM's
objects: photos and captions, for the caption task) and ``dreambench_plus``. Bad input of any kind
raises :class:`~unifybench.errors.BenchError` naming the file (and item or field).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from ..errors import BenchError
from ..records import QA_KINDS, Benchmark
from . import hub
from .common import allowed_roots, check_inside, reading_inside, validate_images
from .dreambench import read_dreambench
from .dreambench_plus import CATEGORIES as DREAMBENCH_PLUS_CATEGORIES
from .dreambench_plus import prompt_kind, read_dreambench_plus
from .formats import FORMATS, check_root, detect_format
from .myvlm import check_split, read_myvlm
from .native import read_unifybench  # the UnifyBench (UniCTokens) layout
from .yollava import read_yollava

__all__ = ["FORMATS", "MINI_BENCH_PATH", "check_benchmark", "detect_format", "generation_prompts",
           "load_benchmark"]

MINI_BENCH_PATH = Path(__file__).parent / "mini"
PROMPTS_PATH = Path(__file__).parent / "prompts_to_eval.json"


@lru_cache(maxsize=1)
def _prompt_table() -> dict[str, tuple[str, ...]]:
    data = json.loads(PROMPTS_PATH.read_text(encoding="utf-8"))
    return {k: tuple(v) for k, v in data.items()}


def generation_prompts(generation_type: str | None) -> list[str]:
    """The 25 DreamBooth prompts for ``"object"`` or ``"live_subject"``, with the ``<sks>``
    placeholder; [] for any other generation type (including None)."""
    if not isinstance(generation_type, str):
        return []
    return list(_prompt_table().get(generation_type, ()))


def _gen_prompts_for(generation_type: str | None, token: str) -> list[str]:
    return [p.replace("<sks>", token) for p in generation_prompts(generation_type)]


def load_benchmark(spec: str | Path = "mini", format: str = "auto", validate_images: bool = False,
                   split: int = 0) -> Benchmark:
    """Read a benchmark: ``"mini"`` (the bundled bench), a folder in any supported format, or a
    Hugging Face dataset name (``owner/name[@revision]``, when no such folder exists; :mod:`.hub`).
    ``split``: which of MyVLM's five training splits (other formats have one: 0)."""
    check_split(split)
    source = None
    if isinstance(spec, str) and spec == "mini":
        root, name = MINI_BENCH_PATH, "mini"
        if not root.is_dir():
            raise BenchError("the bundled mini bench is missing from this installation", root)
    elif isinstance(spec, str) and hub.looks_like_hub_name(spec):
        root, source = hub.fetch(spec)
        name = source["hub"].split("/")[1]
    else:
        root = Path(spec).expanduser()
        check_root(root)
        name = root.resolve().name
    if format in (None, "auto"):
        format = detect_format(root)
    if format not in FORMATS:
        raise BenchError(f"unknown format {format!r}; known: {', '.join(FORMATS)}", where="--format")
    if split and format != "myvlm":
        raise BenchError(f"--split {split}: only MyVLM's layout has training splits ({format} has one)",
                         where="--split")
    try:
        with reading_inside(allowed_roots(root, from_hub=source is not None)):
            if format == "unifybench":
                bench = read_unifybench(root, name, _gen_prompts_for)
            elif format == "dreambench":
                bench = read_dreambench(root, name)
            elif format == "myvlm":
                bench = read_myvlm(root, name, split)
            elif format == "dreambench_plus":
                bench = read_dreambench_plus(root, name)
            else:
                bench = read_yollava(root, name)
    except BenchError:
        raise
    except OSError as exc:
        raise BenchError(f"cannot read: {exc.strerror or exc}", getattr(exc, "filename", None) or root) from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:  # a shape we did not foresee
        raise BenchError(f"malformed {format} benchmark ({type(exc).__name__}: {exc})", root) from None
    bench.source = source
    _check_inside(bench, root, source)
    if validate_images:
        _validate(bench)
    return bench


def _check_inside(bench: Benchmark, root: Path, source: dict | None) -> None:
    """Refuse a benchmark whose files lie outside its root (a training photo linked from elsewhere):
    reading it would read, and score against, files nobody shipped with it. A hub snapshot's files
    are links into the same cache repository's blobs, which belong to it."""
    allowed = allowed_roots(root, from_hub=source is not None)
    for path in sorted(bench.image_files(resolve=False)):
        check_inside(path, allowed)


def _validate(bench: Benchmark) -> None:
    validate_images(bench.image_files())


def choice_letters(items) -> dict:
    """The correct letters of the multiple-choice items (``by_letter``; ``unknown``: no letter known)
    and how many are their item's first option: what always answering the first option scores."""
    from collections import Counter

    from ..scoring.answers import _correct_letter

    letters: Counter = Counter()
    first = total = 0
    for it in items:
        if it.kind != "choice":
            continue
        total += 1
        letter = _correct_letter(it) if it.options else None
        letters[letter or "unknown"] += 1
        first += bool(letter and it.options and letter == it.options[0][0].strip().upper())
    return {"items": total, "by_letter": dict(sorted(letters.items())), "first_option": first}


def check_benchmark(path: str | Path, format: str = "auto") -> dict:
    """Load ``path`` with every image decoded and return its counts (``choice_letters``: where it
    has multiple-choice items, their answer letters)."""
    from ..scoring.answers import recognition_truths

    bench = load_benchmark(str(path), format, validate_images=True)
    counts = bench.count_items()
    letters = choice_letters(it for items in bench.items.values() for it in items)
    return {
        "rec_truths": recognition_truths(it for items in bench.items.values() for it in items),
        "format": bench.format,
        "concepts": len(bench.concepts),
        "images": len(bench.image_files()),
        "items": {k: counts.get(k, 0) for k in QA_KINDS},
        "gen_prompts": bench.count_prompts("gen"),
        "attr_prompts": bench.count_prompts("attr_gen"),
        **({"choice_letters": letters} if letters["items"] else {}),
        **({"source": bench.source} if bench.source else {}),
        **(_dreambench_plus_counts(bench) if bench.format == "dreambench_plus" else {}),
    }


def _dreambench_plus_counts(bench: Benchmark) -> dict:
    """Subjects per category, prompts per kind, and prompts that do not name their subject phrase
    (shown to methods without the concept's token)."""
    categories = {c: sum(x.kind == c for x in bench.concepts) for c in DREAMBENCH_PLUS_CATEGORIES}
    kinds: dict[str, int] = {}
    unnamed = 0
    for concept in bench.concepts:
        for p in bench.prompts.get(concept.name, []):
            kinds[prompt_kind(p.index)] = kinds.get(prompt_kind(p.index), 0) + 1
            unnamed += concept.token not in p.prompt
    return {"categories": categories, "prompt_kinds": kinds, "prompts_without_subject": unnamed}
