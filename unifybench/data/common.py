"""Helpers the readers share: JSON loading with clear errors, image listing, image-path
resolution, image validation, concept-token substitution and multiple-choice parsing."""
from __future__ import annotations

import contextlib
import contextvars
import json
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import BenchError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp")

# Where a reader may read text files from: set by load_benchmark for the length of a read (the
# benchmark's root, and for a hub snapshot its cache repository); None outside a read.
_ALLOWED_ROOTS: contextvars.ContextVar[tuple[Path, ...] | None] = contextvars.ContextVar("allowed_roots",
                                                                                       default=None)


def allowed_roots(root: Path, from_hub: bool) -> tuple[Path, ...]:
    """The benchmark's root, and for a hub snapshot (whose files link into its cache repository's
    blobs) that repository."""
    root = Path(root).resolve()
    return (root, *[p for p in root.parents if p.name.startswith("datasets--")][:1 if from_hub else 0])


@contextlib.contextmanager
def reading_inside(roots: tuple[Path, ...]) -> Iterator[None]:
    """Every text file read in the block (JSON, captions) must resolve inside ``roots``: a file linked
    from elsewhere is refused, naming it, never read."""
    token = _ALLOWED_ROOTS.set(tuple(roots))
    try:
        yield
    finally:
        _ALLOWED_ROOTS.reset(token)


def check_inside(path: Path, roots: tuple[Path, ...] | None = None) -> None:
    roots = _ALLOWED_ROOTS.get() if roots is None else roots
    if roots is None:
        return
    real = Path(path).resolve()
    if not any(real.is_relative_to(r) for r in roots):
        raise BenchError(f"lies outside the benchmark's root ({real}); a benchmark is read only from its own "
                         f"folder: copy the file in", path)


def read_text(path: Path) -> str:
    """A UTF-8 text file's content (a BOM is dropped); unreadable or non-UTF-8 raises :class:`BenchError`.
    Inside a benchmark's read, a file outside its root is refused (:func:`reading_inside`)."""
    check_inside(path)
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BenchError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path) from None
    except OSError as exc:
        raise BenchError(f"cannot read: {exc.strerror or exc}", path) from None


def load_json(path: Path, what: str | None = None) -> Any:
    """Read a JSON file; a missing, unreadable or malformed file raises :class:`BenchError`."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"missing {what or 'file'}" if what else "file not found", path)
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BenchError(f"malformed JSON: {exc.msg}", path, f"line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise BenchError("malformed JSON: nested too deeply", path) from None


def _natural_key(path: Path) -> tuple:
    parts = re.split(r"(\d+)", path.name)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts)


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTS and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder`` (not recursive), in natural order; [] if absent."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_file() and is_image(p)), key=_natural_key)


def attach_negatives(concepts, random_images: list[Path]) -> None:
    """Each concept's easy negatives: the benchmark's random images, then every other concept's
    training photos (in the benchmark's concept order)."""
    for c in concepts:
        others = [p for o in concepts if o.name != c.name for p in o.train_images]
        c.easy_negatives = list(random_images) + others


def list_dirs(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def resolve_image(raw: Any, root: Path) -> Path | None:
    """Find the file an item's image path means, or None.

    Tried in order: the path as given (absolute paths inside ``root`` only), relative to ``root``,
    then by its tail under ``root``: progressively shorter suffixes of its parts, down to two parts
    (``concept/test/bo/3.png``, ``test/bo/3.png``, ``bo/3.png``; ``random_images/17.png``). A file
    outside ``root`` is never used: a benchmark reads only what it ships.
    """
    if not isinstance(raw, str) or not raw.strip():
        return None
    raw = raw.strip().replace("\\", "/")
    p = Path(raw)
    if p.is_absolute() and p.is_file() and p.resolve().is_relative_to(root.resolve()):
        return p
    if not p.is_absolute():
        cand = root / p
        if cand.is_file():
            return cand
    parts = [x for x in p.parts if x not in ("/", ".", "..", "") and not x.endswith(":")]
    if p.anchor:
        parts = [x for x in parts if x != p.anchor]
    shortest = 2 if len(parts) >= 2 else 1
    for k in range(len(parts), shortest - 1, -1):
        cand = root.joinpath(*parts[-k:])
        if cand.is_file():
            return cand
    return None


_DECODED: set[tuple[str, int, int]] = set()  # (path, size, mtime) of images that decoded, this process


def validate_images(paths: Iterable[Path]) -> None:
    """Open and fully decode every image; a missing, unreadable or truncated one raises BenchError
    naming the file. An unchanged file that decoded once in this process is not decoded again."""
    from ..images import check_decodes

    for path in sorted(set(paths)):
        try:
            st = Path(path).stat()
        except OSError as exc:
            raise BenchError(f"cannot read image ({exc.strerror or exc})", path) from None
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in _DECODED:
            check_decodes(path)
            _DECODED.add(key)


def token_for(name: str) -> str:
    return f"<{name}>"


_SKS = re.compile(r"<sks>|\bsks\b")


def replace_sks(text: str, token: str) -> str:
    """Replace the ``<sks>`` / ``sks`` placeholder by the concept token."""
    return _SKS.sub(lambda _m: token, text)


def class_prompt(prompt: str, token: str, class_noun: str) -> str:
    return re.sub(r"\s+", " ", prompt.replace(token, class_noun)).strip()


def concept_phrase(concept) -> str:
    """The concept in words, for prompts without its token: the first sentence of its description
    without the leading "<c> is " ("a fluffy Pembroke Welsh Corgi ..."), else "a <class noun>"."""
    desc = concept.description.strip()
    for lead in (f"{concept.token} is ", f"{concept.name} is "):
        if desc.startswith(lead):
            desc = desc[len(lead):]
    first = desc.split(". ")[0].rstrip(".")
    return first or f"a {concept.class_noun}"


def strip_image_tag(text: str) -> str:
    text = text.lstrip()
    if text.startswith("<image>"):
        text = text[len("<image>"):]
        text = text.lstrip("\n").lstrip()
    return text


# ---------------------------------------------------------------- multiple choice

_MARK = re.compile(r"(?:^|(?<=[\s,;:?.!]))(?:([A-H])[.:)]|\(([A-H])\)[.:]?)(?=\s|$)")


def parse_options(question: str) -> tuple[tuple[str, str], ...]:
    """Options written in the question text: "A. Dog B. Cat", "A: ...", "(A) ...", one per line or inline.

    Returns () unless at least two consecutive letters starting at A are found.
    """
    marks = [(m.group(1) or m.group(2), m.start(), m.end()) for m in _MARK.finditer(question)]
    # choose a chain A, B, C, ... in text order
    chain: list[tuple[str, int, int]] = []
    for letter, start, end in marks:
        expected = chr(ord("A") + len(chain))
        if letter == expected:
            chain.append((letter, start, end))
        elif letter == "A":  # restart: a later "A." begins the real list
            chain = [(letter, start, end)]
    if len(chain) < 2:
        return ()
    options = []
    for i, (letter, _start, end) in enumerate(chain):
        stop = chain[i + 1][1] if i + 1 < len(chain) else len(question)
        text = question[end:stop]
        if i + 1 == len(chain):  # the last option ends at its line
            text = text.split("\n", 1)[0]
        text = text.strip().rstrip(",;").strip()
        if not text:
            return ()
        options.append((letter, text))
    return tuple(options)


def _norm(text: str) -> str:
    return re.sub(r"[\s\W_]+", " ", text.lower()).strip()


def correct_option(answer: str, options: tuple[tuple[str, str], ...]) -> str | None:
    """The correct letter: the answer is a letter ("B", "B.", "(B)") or starts with one ("B. Cat",
    "B: Cat", "(B) Cat"), or equals an option's text; else None."""
    ans = answer.strip()
    letters = {k for k, _ in options}
    m = re.fullmatch(r"\(?([A-H])\)?[.:)]?", ans) or re.match(r"\(?([A-H])(?:\)|\.|:)(?:\s|$)", ans) \
        or re.match(r"\(([A-H])\)", ans)
    if m and (not options or m.group(1) in letters):
        return m.group(1)
    norm = _norm(ans)
    for letter, text in options:
        if norm and _norm(text) == norm:
            return letter
    return None


def training_qa(concept) -> list[tuple[str, Path | None, str]]:
    """A concept's training conversations as (question, image or None, answer) triples: the
    benchmark's (UnifyBench's ``showo_training_data_stage_1/<c>.json``), else
    ``concept/train/<c>/conversations.json`` beside its photos. A turn's image counts only when its
    question carries ``<image>``; the tag itself is stripped."""
    convs = list(concept.training_conversations)
    root = None
    if concept.train_images:
        train_dir = Path(concept.train_images[0]).parent
        root = train_dir.parent.parent.parent
        if not convs and (train_dir / "conversations.json").is_file():
            convs = load_json(train_dir / "conversations.json")
    triples: list[tuple[str, Path | None, str]] = []
    for i, conv in enumerate(convs if isinstance(convs, list) else []):
        turns = conv.get("conversations") if isinstance(conv, dict) else None
        if not isinstance(turns, list):
            raise BenchError("conversation has no 'conversations' list", where=f"concept {concept.name} item {i}")
        pending = None
        for turn in turns:
            if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
                continue
            if turn.get("from") == "human":
                pending = turn["value"]
            elif turn.get("from") == "gpt" and pending is not None:
                image = None
                if "<image>" in pending and conv.get("image") and root is not None:
                    image = resolve_image(conv["image"], root)
                triples.append((strip_image_tag(pending), image, turn["value"].strip()))
                pending = None
    return triples
