"""The Method interface, the registry and the built-in reference methods.

A method personalizes on one concept's training data, answers batches of questions and draws
batches of prompts. It sees requests only, never a ground-truth answer. Methods register under the
entry-point group ``unifybench.methods`` as lazy ``module:Class`` targets, imported only when selected.
"""
from __future__ import annotations

import contextlib
import json
import random
import re
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, ContextManager, Sequence

from PIL import Image

from .errors import BenchError
from .records import TASKS, Concept

ENTRY_POINT_GROUP = "unifybench.methods"


@dataclass(frozen=True)
class AnswerRequest:
    """A question put to a method: everything about the item except its answer."""

    concept: str
    task: str  # rec | vqa | text_only | choice
    index: int
    question: str
    image: Path | None
    options: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.task}/{self.concept}/{self.index}"


@dataclass(frozen=True)
class GenRequest:
    """A prompt to draw ``n_images`` times, reproducibly from ``seed``."""

    concept: str
    task: str  # gen | attr_gen
    index: int
    prompt: str  # names the concept by its token, e.g. "a <bo> in the jungle"
    n_images: int
    seed: int

    @property
    def key(self) -> str:
        return f"{self.task}/{self.concept}/{self.index}"


GeneratedImage = Image.Image | Path


class Method:
    """Base class of every method adapter.

    Subclasses set ``name``, ``tasks`` and ``arguments`` (the ``--method-arg`` keys they accept,
    with a one-line help each) and override what their tasks need.
    """

    name: ClassVar[str] = ""
    tasks: ClassVar[frozenset[str]] = frozenset()
    arguments: ClassVar[dict[str, str]] = {}
    needs_personalization: ClassVar[bool] = False

    def __init__(self, args: dict[str, str] | None = None, *, seed: int = 0, device: str = "cpu",
                 batch_size: int = 8):
        args = dict(args or {})
        self.check_argument_names(args)
        self.args = args
        self.seed = seed
        self.device = device
        self.batch_size = batch_size

    @classmethod
    def check_argument_names(cls, args: dict[str, str]) -> None:
        unknown = sorted(set(args) - set(cls.arguments))
        if unknown:
            accepted = ", ".join(sorted(cls.arguments)) or "none"
            raise BenchError(f"unknown argument(s) {', '.join(unknown)}; accepted: {accepted}",
                             where=f"method {cls.name}")

    @classmethod
    def validate_arguments(cls, args: dict[str, str]) -> None:
        """Refuse bad ``--method-arg`` values before anything is made; must be cheap (load nothing).
        The default checks the names; an adapter that parses values overrides it."""
        cls.check_argument_names(args)

    @classmethod
    def check_concepts(cls, args: dict[str, str], concepts: Sequence[Concept]) -> None:
        """Refuse, before anything is made, concepts this method cannot run on with these arguments
        (a BenchError naming the concept); cheap, like :meth:`validate_arguments`. Default: any."""

    def progress(self, what: str, done: int, total: int) -> None:
        """Called by a method while it personalizes (``"stage 2 epoch 3/20"``, 23, 61): the runner
        replaces it with one that moves the terminal's progress bar. Default: nothing."""

    def describe(self) -> dict[str, Any]:
        """What made this method's predictions (checkpoints, dtypes), recorded in run.json."""
        return {}

    def personalize(self, concept: Concept, state_dir: Path) -> Any:
        """Learn the concept from its training data, saving what is needed to ``state_dir``."""
        return None

    def load_state(self, concept: Concept, state_dir: Path) -> Any:
        """Reload what :meth:`personalize` saved for this concept."""
        return None

    def activate(self, concept: Concept, state: Any) -> ContextManager:
        """A context in which ``concept`` is the one the method answers and draws: what it learned
        (new tokens, adapters) exists inside and nowhere else. The runner predicts each concept
        inside its own ``activate``; on leaving it the method must be as it was before, so that a
        concept's predictions never depend on which concepts came before it."""
        return contextlib.nullcontext()

    def isolation_fingerprint(self) -> str | None:
        """A cheap content hash of what must not change between concepts (the base model's
        vocabulary and rows), or None. The runner compares it before and after every concept."""
        return None

    def answer(self, concept: Concept, state: Any, requests: Sequence[AnswerRequest]) -> list[str | None]:
        """One reply per request; ``None`` where the method has no answer (recorded as missing)."""
        raise NotImplementedError

    def generate(self, concept: Concept, state: Any,
                 requests: Sequence[GenRequest]) -> list[list[GeneratedImage] | None]:
        """``n_images`` images (PIL images or existing files) per request; ``None`` if it has none."""
        raise NotImplementedError


# ----------------------------------------------------------------------------- registry

BUILTIN_METHODS: dict[str, str] = {
    "real-images": "unifybench.methods:RealImages",
    "always-yes": "unifybench.methods:AlwaysYes",
    "random-answer": "unifybench.methods:RandomAnswer",
    "precomputed": "unifybench.methods:Precomputed",
}


# ----------------------------------------------------------------------------- --method-arg values
# One parser per kind, so that every adapter says the same thing about the same mistake.


class ConceptLayers:
    """``activate`` for adapters whose concept adds something to a shared base model (token rows,
    LoRA layers): :meth:`concept_layers` is entered once per concept, and a nested ``activate`` of
    the same concept (``generate`` inside the runner's block) adds nothing twice. Mix in before
    :class:`Method`."""

    _active_concept: str | None = None

    def concept_layers(self, concept: Concept, state: Any) -> ContextManager:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def activate(self, concept, state):
        if self._active_concept == concept.name:  # already active (the harness activated it)
            yield
            return
        if self._active_concept is not None:
            raise RuntimeError(f"concept {self._active_concept} is still active while {concept.name} is activated")
        with self.concept_layers(concept, state):
            self._active_concept = concept.name
            try:
                yield
            finally:
                self._active_concept = None


def float_arg(args: dict, key: str, default: float) -> float:
    try:
        return float(args.get(key, default))
    except ValueError as exc:
        raise BenchError(f"expected a number, got {args[key]!r}", where=f"--method-arg {key}") from exc


def int_arg(args: dict, key: str, default: int | None) -> int | None:
    """A count: an integer >= 0."""
    if key not in args:
        return default
    try:
        value = int(args[key])
    except ValueError as exc:
        raise BenchError(f"expected an integer, got {args[key]!r}", where=f"--method-arg {key}") from exc
    if value < 0:
        raise BenchError(f"must be >= 0, got {value}", where=f"--method-arg {key}")
    return value


def flag_arg(args: dict, key: str, default: bool) -> bool:
    value = str(args.get(key, default)).strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise BenchError(f"expected true or false, got {args[key]!r}", where=f"--method-arg {key}")
    return value in ("true", "1", "yes")


def registered_methods() -> dict[str, str]:
    """Method name -> ``module:Class`` target, built-ins first, then installed plugins."""
    targets = dict(BUILTIN_METHODS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        targets.setdefault(ep.name, ep.value)
    return targets


def load_method_class(name: str) -> type[Method]:
    targets = registered_methods()
    if name not in targets:
        raise BenchError(f"unknown method {name!r}; known: {', '.join(sorted(targets))}",
                         where="--method")
    target = targets[name]
    module_name, _, attr = target.partition(":")
    try:
        obj = import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise BenchError(f"cannot import {target} ({exc})", where=f"method {name}") from exc
    if not (isinstance(obj, type) and issubclass(obj, Method)):
        raise BenchError(f"{target} is not a unifybench Method subclass", where=f"method {name}")
    unknown = set(obj.tasks) - set(TASKS)
    if unknown:
        raise BenchError(f"declares unknown tasks {sorted(unknown)}", where=f"method {name}")
    return obj


# ----------------------------------------------------------------------------- built-ins


def _request_rng(seed: int, request: AnswerRequest | GenRequest) -> random.Random:
    """A generator that depends only on the seed and the request, so resumed runs agree."""
    return random.Random(f"{seed}/{request.key}")


class RealImages(Method):
    """DreamBooth's upper-bound row: 'generates' held-out real photos of the concept."""

    name = "real-images"
    tasks = frozenset({"gen"})

    def generate(self, concept, state, requests):
        photos = concept.heldout_images
        if not photos:
            raise BenchError("concept has no real photos to return", where=f"concept {concept.name}")
        out = []
        for req in requests:
            # Start each prompt at a different photo so every held-out photo is used evenly.
            start = req.index * req.n_images
            out.append([photos[(start + i) % len(photos)] for i in range(req.n_images)])
        return out


class AlwaysYes(Method):
    """The floor for recognition's negatives: replies "Yes." to everything."""

    name = "always-yes"
    tasks = frozenset({"rec", "vqa", "text_only", "choice"})

    def answer(self, concept, state, requests):
        return ["Yes." for _ in requests]


class RandomAnswer(Method):
    """The chance floor: a seeded coin for yes/no, a seeded option letter, shuffled words otherwise."""

    name = "random-answer"
    tasks = frozenset({"rec", "vqa", "text_only", "choice"})

    def answer(self, concept, state, requests):
        replies = []
        for req in requests:
            rng = _request_rng(self.seed, req)
            if req.task == "rec":
                replies.append(rng.choice(["Yes.", "No."]))
            elif req.task == "choice":
                letters = [letter for letter, _ in req.options] or ["A", "B", "C", "D"]
                replies.append(rng.choice(letters))
            else:
                words = req.question.split()
                rng.shuffle(words)
                replies.append(" ".join(words))
        return replies


def normalized_name(text: str) -> str:
    """Lower-case letters and digits only: how folder names are matched to prompts."""
    return re.sub(r"[^a-z0-9]+", "", text.lower())


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
# Placeholders other codebases write where the concept goes: DreamBooth's and UniCTokens' "sks".
CONCEPT_PLACEHOLDERS = ("<sks>", "sks")


def folder_key(name: str, token: str) -> str:
    """A folder name as it is compared with prompts: a run of learned tokens written before the
    concept's token (``<token_0>…<token_23> <bo>``) stands for the token alone; then letters and
    digits only."""
    collapsed = re.sub(r"(?:<[^<>\s]+>\s*)+?" + re.escape(token), token, name) if token else name
    return normalized_name(collapsed)


def prompt_keys(prompt: str, concept: Concept, index: int) -> set[str]:
    """Every folder key a prompt may be saved under: the concept named by its token, its bare name or
    a placeholder (``a <sks> in the jungle``, the reference's layout), with or without a run's
    ``NNN_`` index prefix."""
    names = {concept.token, concept.name, *CONCEPT_PLACEHOLDERS}
    keys = {normalized_name(prompt.replace(concept.token, n)) for n in names} if concept.token in prompt \
        else {normalized_name(prompt)}
    return keys | {f"{index:03d}{k}" for k in keys}


class Precomputed(Method):
    """Scores predictions made elsewhere.

    ``answers=FILE``: JSONL of ``{"concept", "index", "answer"}`` (index = position in the
    concept's test items). ``images=DIR``: ``<concept>/.../<prompt>/<i>.png``, where the prompt
    folder names the concept by ``<sks>``, its token, its bare name, or learned tokens followed by
    its token: the UniCTokens layout (``gen_saved/``), or a UnifyBench run's ``images/`` folder.
    ``attr_images=DIR``: the same for attribute-reasoning prompts (UniCTokens: ``t2i_saved/``;
    default: ``images``).
    """

    name = "precomputed"
    tasks = frozenset(TASKS)
    arguments = {
        "answers": "JSONL of {concept, index, answer} made elsewhere",
        "images": "folder of generated images, <concept>/.../<prompt>/<i>.png",
        "attr_images": "folder of attribute-reasoning images, same layout (default: images)",
    }

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        self._answers: dict[tuple[str, int], str] | None = None
        self._image_dirs: dict[tuple[str, str], dict[str, list[Path]]] = {}

    def _load_answers(self) -> dict[tuple[str, int], str]:
        if self._answers is None:
            path = Path(self.args.get("answers", ""))
            if "answers" not in self.args:
                raise BenchError("needs --method-arg answers=FILE for understanding tasks",
                                 where="method precomputed")
            if not path.is_file():
                raise BenchError("answers file not found", path)
            answers: dict[tuple[str, int], str] = {}
            for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    key = (str(row["concept"]), int(row["index"]))
                    answers[key] = str(row["answer"])
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                    raise BenchError(f"bad answer line ({exc.__class__.__name__}: {exc})", path,
                                     f"line {line_no}") from exc
            self._answers = answers
        return self._answers

    def answer(self, concept, state, requests):
        answers = self._load_answers()
        return [answers.get((req.concept, req.index)) for req in requests]

    def _images_root(self, task: str) -> tuple[str, Path]:
        arg = "attr_images" if task == "attr_gen" and "attr_images" in self.args else "images"
        if arg not in self.args:
            raise BenchError("needs --method-arg images=DIR for generation tasks", where="method precomputed")
        root = Path(self.args[arg])
        if not root.is_dir():
            raise BenchError("images folder not found", root, f"--method-arg {arg}")
        return arg, root

    def _prompt_dirs(self, concept: Concept, task: str) -> dict[str, list[Path]]:
        """Folder key -> folders holding images under DIR/<concept> (every folder of that key)."""
        arg, root = self._images_root(task)
        if (arg, concept.name) not in self._image_dirs:
            found: dict[str, list[Path]] = {}
            base = root / concept.name
            if base.is_dir():
                for d in sorted(p for p in base.rglob("*") if p.is_dir()):
                    if any(f.suffix.lower() in IMAGE_SUFFIXES for f in d.iterdir() if f.is_file()):
                        found.setdefault(folder_key(d.name, concept.token), []).append(d)
            self._image_dirs[(arg, concept.name)] = found
        return self._image_dirs[(arg, concept.name)]

    def generate(self, concept, state, requests):
        out: list[list[GeneratedImage] | None] = []
        for req in requests:
            dirs = self._prompt_dirs(concept, req.task)
            folders = sorted({d for k in prompt_keys(req.prompt, concept, req.index) for d in dirs.get(k, [])})
            if len(folders) > 1:
                shown = ", ".join(str(f) for f in folders[:4]) + (" ..." if len(folders) > 4 else "")
                raise BenchError(f"{len(folders)} folders match the prompt {req.prompt!r}: {shown}; point "
                                 f"images= at one checkpoint's folder", where=f"method precomputed, concept {concept.name}")
            if not folders:
                out.append(None)
                continue
            images = sorted((p for p in folders[0].iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                            key=lambda p: (len(p.stem), p.stem))
            out.append(images[: req.n_images] if len(images) >= req.n_images else None)
        return out
