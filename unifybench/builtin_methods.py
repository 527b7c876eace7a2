"""The reference rows every leaderboard has: weight-free methods, built the way a plugin is.

``real-images`` (the generation upper bound), ``always-yes`` (the recognition floor),
``always-first`` (the multiple-choice floor), ``random-answer`` (chance) and ``precomputed``
(predictions made elsewhere). Their source is this module alone, so the code hash a run records
for them (``run.json``'s ``method_code``) moves only when they do.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

from .errors import BenchError
from .kit.args import Arg, Derived
from .methods import AnswerRequest, GenRequest, GeneratedImage, Method
from .data.common import is_image
from .records import ANSWER_TASKS, TASKS, Concept


def _request_rng(seed: int, request: AnswerRequest | GenRequest) -> random.Random:
    """A generator that depends only on the seed and the request, so resumed runs agree."""
    return random.Random(f"{seed}/{request.key}")


class RealImages(Method):
    """DreamBooth's upper-bound row: 'generates' held-out real photos of the concept. Without held-out
    photos (DreamBench) it returns the reference photos, and the scorer compares each with the other
    reference photos only (leave-one-out, scoring/fidelity.pair_scores)."""

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


class AlwaysFirst(Method):
    """The multiple-choice floor: always the first option's letter. On a set whose answers are
    mostly "A" (Yo'LLaVA's text-only questions: 390 of 400) it scores what a model that reads
    nothing would; under ``--choice-eval circular`` it cannot score above chance."""

    name = "always-first"
    tasks = frozenset({"choice"})

    def answer(self, concept, state, requests):
        return [req.options[0][0] if req.options else "A" for req in requests]


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
    concept's test items); a caption names its task, ``{"task": "caption", ...}`` (index = position
    in the concept's test photos). ``images=DIR``: ``<concept>/.../<prompt>/<i>.png``, where the prompt
    folder names the concept by ``<sks>``, its token, its bare name, or learned tokens followed by
    its token: the UniCTokens layout (``gen_saved/``), or a UnifyBench run's ``images/`` folder.
    ``attr_images=DIR``: the same for attribute-reasoning prompts (UniCTokens: ``t2i_saved/``;
    default: ``images``).
    """

    name = "precomputed"
    tasks = frozenset(TASKS)
    arguments = {
        "answers": Arg(Path, None, "JSONL of {concept, index, answer} made elsewhere", exists="file"),
        "images": Arg(Path, None, "folder of generated images, <concept>/.../<prompt>/<i>.png", exists="dir"),
        "attr_images": Arg(Path, Derived(lambda a: a.images, "the images folder"),
                           "folder of attribute-reasoning images, same layout", exists="dir"),
    }

    @classmethod
    def check_run(cls, args, concepts, tasks):
        # Refused before the run directory exists: otherwise the run could only fail when predicting.
        needs = []
        if args.answers is None and any(t in ANSWER_TASKS for t in tasks):
            needs.append("answers=FILE for " + ", ".join(t for t in tasks if t in ANSWER_TASKS))
        if args.images is None and "gen" in tasks:
            needs.append("images=DIR for gen")
        if args.attr_images is None and "attr_gen" in tasks:
            needs.append("attr_images=DIR (or images=DIR) for attr_gen")
        if needs:
            raise BenchError(f"needs --method-arg {'; '.join(needs)} (or leave those tasks out with --tasks)",
                             where="method precomputed")

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        self._answers: dict[tuple[str | None, str, int], str] | None = None
        self._image_dirs: dict[tuple[str, str], dict[str, list[Path]]] = {}

    def _load_answers(self) -> dict[tuple[str | None, str, int], str]:
        if self._answers is None:
            path = self.args.answers
            if path is None:
                raise BenchError("needs --method-arg answers=FILE for understanding tasks",
                                 where="method precomputed")
            answers: dict[tuple[str | None, str, int], str] = {}
            for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    key = (row.get("task"), str(row["concept"]), int(row["index"]))
                    answers[key] = str(row["answer"])
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                    raise BenchError(f"bad answer line ({exc.__class__.__name__}: {exc})", path,
                                     f"line {line_no}") from exc
            self._answers = answers
        return self._answers

    def answer(self, concept, state, requests):
        answers = self._load_answers()
        # A line without a task answers the test item of that index (captions are numbered apart).
        return [answers.get((req.task, req.concept, req.index),
                            None if req.task == "caption" else answers.get((None, req.concept, req.index)))
                for req in requests]

    def _images_root(self, task: str) -> tuple[str, Path]:
        arg = "attr_images" if task == "attr_gen" else "images"
        root = self.args[arg]
        if root is None:
            raise BenchError(f"needs --method-arg {arg}=DIR for {task}", where="method precomputed")
        return arg, root

    def _prompt_dirs(self, concept: Concept, task: str) -> dict[str, list[Path]]:
        """Folder key -> folders holding images under DIR/<concept> (every folder of that key)."""
        arg, root = self._images_root(task)
        if (arg, concept.name) not in self._image_dirs:
            found: dict[str, list[Path]] = {}
            base = root / concept.name
            if base.is_dir():
                for d in sorted(p for p in base.rglob("*") if p.is_dir()):
                    if any(is_image(f) for f in d.iterdir() if f.is_file()):
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
            images = sorted((p for p in folders[0].iterdir() if is_image(p)),
                            key=lambda p: (len(p.stem), p.stem))
            out.append(images[: req.n_images] if len(images) >= req.n_images else None)
        return out
