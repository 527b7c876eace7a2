"""The typed records every reader produces and every later stage consumes.

Readers (``unifybench.data``) turn any supported format into a :class:`Benchmark`; tasks turn its
records into requests; methods see requests only (never a ground-truth answer); scorers see the
records and the stored predictions.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

QA_KINDS = ("rec", "vqa", "text_only", "choice")  # the kinds of a benchmark's test items
# Tasks a method answers in text: the items' kinds, and captions of a concept's test photos
# (made by tasks.py from the photos, not read from a file).
ANSWER_TASKS = QA_KINDS + ("caption",)
GEN_KINDS = ("gen", "attr_gen")
TASKS = ANSWER_TASKS + GEN_KINDS
# What a run does without --tasks: captioning is asked for by name.
DEFAULT_TASKS = QA_KINDS + GEN_KINDS

ConceptKind = Literal["human", "animal", "object", "style"]  # style: DreamBench++ style subjects
GenerationType = Literal["object", "live_subject"]


@dataclass(frozen=True)
class QAItem:
    """One understanding question with its ground truth.

    ``index`` is the item's position in its concept's list of test items (for UnifyBench: in
    ``test_data/<c>.json``), the key that predictions made elsewhere refer to.
    """

    concept: str
    index: int
    kind: str  # one of QA_KINDS, or "caption" (tasks.caption_items)
    question: str  # without the leading "<image>\n"; the concept appears as its token, e.g. "<bo>"
    answer: str  # the ground-truth reply as written in the benchmark
    image: Path | None  # None for text-only questions
    options: tuple[tuple[str, str], ...] = ()  # multiple choice: (("A", "Dog"), ("B", "Cat"))
    correct_option: str | None = None  # multiple choice: the correct letter when known
    raw_type: str = ""  # the type string as the file wrote it
    # The ground truth exactly as the file writes it, where that differs from ``answer`` (which is
    # stripped); ``--protocol reference`` compares with this, as the reference evaluation does.
    raw_answer: str | None = None

    @property
    def answer_as_written(self) -> str:
        return self.answer if self.raw_answer is None else self.raw_answer


@dataclass(frozen=True)
class GenPrompt:
    """One generation prompt.

    ``prompt`` names the concept by its token ("a <bo> in the jungle"); ``class_prompt`` is the
    same prompt with the concept replaced by its class noun ("a dog in the jungle"), the text that
    CLIP-T compares against.
    """

    concept: str
    index: int
    kind: str  # "gen" (plain DreamBooth prompts) or "attr_gen" (attribute reasoning)
    prompt: str
    class_prompt: str


@dataclass
class Concept:
    name: str  # "bo"
    token: str  # "<bo>": how questions and prompts name the concept
    class_noun: str  # "dog"
    description: str = ""  # visual description, "<bo> is ..."
    extra_facts: list[str] = field(default_factory=list)  # non-visual facts for attribute reasoning
    kind: ConceptKind = "object"
    generation_type: GenerationType | None = None
    train_images: list[Path] = field(default_factory=list)
    cropped_train_images: list[Path] = field(default_factory=list)
    reference_images: list[Path] = field(default_factory=list)  # what CLIP-I / DINO compare against
    test_images: list[Path] = field(default_factory=list)  # held-out photos
    training_conversations: list[dict] = field(default_factory=list)
    identity_prompt: str | None = None  # "A photo of <bo>.": images for face identity
    # Photos that are not the concept, for methods that learn recognition (Yo'LLaVA): hard negatives
    # (UnifyBench's negative_example/, Yo'LLaVA's retrieved ones) and easy ones (the benchmark's random
    # images, then the other concepts' training photos). Benchmark content, never run-dependent.
    hard_negatives: list[Path] = field(default_factory=list)
    easy_negatives: list[Path] = field(default_factory=list)
    # Reference captions of test photos (MyVLM's captions.json), by photo: what the caption task's
    # optional similarity scores compare with. Empty where a benchmark ships none.
    captions: dict[Path, list[str]] = field(default_factory=dict)

    @property
    def heldout_images(self) -> list[Path]:
        """Real photos not used as references; the reference set itself when there is no split."""
        return self.test_images or self.reference_images


@dataclass
class Benchmark:
    name: str  # "mini", or the folder name
    format: str  # "unifybench" | "dreambench" | "yollava" | "dreambench_plus"
    root: Path
    concepts: list[Concept]
    items: dict[str, list[QAItem]]  # concept name -> its test items, in file order
    prompts: dict[str, list[GenPrompt]]  # concept name -> gen prompts then attr_gen prompts
    extra_images: list[Path] = field(default_factory=list)  # other files the bench uses (negatives, placeholder)
    source: dict | None = None  # fetched by hub name: {"hub": repo, "revision": commit, ...}

    def concept(self, name: str) -> Concept:
        for c in self.concepts:
            if c.name == name:
                return c
        raise KeyError(name)

    def image_files(self, resolve: bool = True) -> set[Path]:
        """Distinct image files the benchmark uses (as the readers found them, with ``resolve=False``)."""
        files: set[Path] = set(self.extra_images)
        for c in self.concepts:
            files.update(c.train_images, c.cropped_train_images, c.reference_images, c.test_images,
                         c.hard_negatives, c.easy_negatives)
        for items in self.items.values():
            files.update(it.image for it in items if it.image is not None)
        return {p.resolve() for p in files} if resolve else set(files)

    def count_items(self) -> dict[str, int]:
        counts = {k: 0 for k in QA_KINDS}
        for items in self.items.values():
            for it in items:
                counts[it.kind] += 1
        return counts

    def count_prompts(self, kind: str) -> int:
        return sum(1 for ps in self.prompts.values() for p in ps if p.kind == kind)

    def fingerprint(self) -> str:
        """A hash of the benchmark's content: records and the bytes of every image it uses."""
        h = hashlib.sha256()
        h.update(self.format.encode())
        for c in sorted(self.concepts, key=lambda c: c.name):
            h.update(repr((c.name, c.token, c.class_noun, c.description, c.extra_facts, c.kind,
                           c.generation_type, [p.name for p in c.reference_images])).encode())
            if c.training_conversations:  # only then: benchmarks without them keep their hash
                h.update(repr(c.training_conversations).encode())
            if c.captions:  # likewise
                h.update(repr(sorted((p.name, v) for p, v in c.captions.items())).encode())
            for it in self.items.get(c.name, []):
                h.update(repr((it.index, it.kind, it.question, it.answer, it.options,
                               it.correct_option)).encode())
                if it.raw_answer not in (None, it.answer):  # only then: other run dirs keep their hash
                    h.update(repr(it.raw_answer).encode())
            for p in self.prompts.get(c.name, []):
                h.update(repr((p.index, p.kind, p.prompt, p.class_prompt)).encode())
        for path in sorted(self.image_files()):
            h.update(file_digest(path).encode())
        return h.hexdigest()[:16]


_DIGEST_CACHE: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, memoised on (path, size, mtime) within a process."""
    from .errors import BenchError

    try:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in _DIGEST_CACHE:
            _DIGEST_CACHE[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise BenchError(f"cannot read ({exc.strerror or exc.__class__.__name__})", path) from None
    return _DIGEST_CACHE[key]
