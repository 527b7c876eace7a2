"""The tasks and the requests each makes of a method (their metrics: :mod:`.metrics`).

Understanding: ``rec`` (recognition), ``vqa`` (visual QA), ``text_only`` (QA without an image),
``choice`` (multiple choice), ``caption`` (a caption of each test photo, asked for by name with
``--tasks``: it is not among the default six). Generation: ``gen`` (the 25 DreamBooth prompts) and ``attr_gen``
(attribute-reasoning prompts that need the concept's extra facts).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .methods import AnswerRequest, GenRequest
from .records import GEN_KINDS, QA_KINDS, Benchmark, GenPrompt, QAItem
from .spec import CHOICE_EVALS  # noqa: F401 - importable here as before (declared with --choice-eval)

# The captioning instruction of MyVLM's and RAP's evaluations (RAP-MLLM eval/caption.py).
CAPTION_PROMPT = "Give a caption of the image."

TASK_DESCRIPTIONS: dict[str, str] = {
    "rec": "recognition: is the concept in this photo? (yes/no; negatives answer 'No.')",
    "vqa": "visual questions about the concept in a photo (open answers)",
    "text_only": "questions about the concept without a photo (open answers)",
    "choice": "multiple-choice questions (a letter or an option's text)",
    "caption": "'Give a caption of the image.' on the concept's test photos: is the concept named? (asked by name)",
    "gen": "the 25 DreamBooth prompts (plus the identity prompt of a human concept)",
    "attr_gen": "attribute-reasoning prompts that need the concept's extra facts",
}


@dataclass(frozen=True)
class Work:
    """One request with the record it came from (the record stays on the scoring side)."""

    request: AnswerRequest | GenRequest
    record: QAItem | GenPrompt
    # "identity": the extra request for a human concept's identity prompt ("A photo of <c>."), whose
    # images are scored for face identity only (not for CLIP-I, CLIP-T or DINO).
    purpose: str = "prompt"


def build_requests(bench: Benchmark, tasks: list[str], concepts: list[str], *, seed: int,
                   images_per_prompt: int, limit: int | None, choice_eval: str = "plain") -> dict[str, list[Work]]:
    """Requests per concept, in a stable order: tasks in the given order, items in file order.
    ``choice_eval="circular"``: each multiple-choice item once per rotation of its options
    (:func:`rotated_item`), MMBench's CircularEval."""
    work: dict[str, list[Work]] = {}
    for name in concepts:
        concept_work: list[Work] = []
        for task in tasks:
            if task in QA_KINDS:
                items = limited([it for it in bench.items.get(name, []) if it.kind == task], limit)
                for it in items:
                    rotations = len(it.options) if choice_eval == "circular" and task == "choice" else 1
                    for r in range(max(rotations, 1)):
                        shown = rotated_item(it, r) if r else it
                        req = AnswerRequest(concept=name, task=task, index=it.index,
                                            question=question_with_options(shown.question, shown.options),
                                            image=it.image, options=shown.options, rotation=r)
                        concept_work.append(Work(req, shown))
            elif task == "caption":
                for it in limited(caption_items(bench, name), limit):
                    req = AnswerRequest(concept=name, task=task, index=it.index, question=it.question, image=it.image)
                    concept_work.append(Work(req, it))
            elif task in GEN_KINDS:
                prompts = [p for p in bench.prompts.get(name, []) if p.kind == task][:limit]
                for p in prompts:
                    req = GenRequest(concept=name, task=task, index=p.index, prompt=p.prompt,
                                     n_images=images_per_prompt, seed=seed)
                    concept_work.append(Work(req, p))
                if task == "gen":
                    concept_work.extend(identity_work(bench, name, seed=seed, images_per_prompt=images_per_prompt))
        work[name] = concept_work
    return work


def caption_items(bench: Benchmark, name: str) -> list[QAItem]:
    """One caption item per test photo of the concept, in the reader's order (none without test
    photos: a reference photo would be captioned from what the method learned it on)."""
    concept = bench.concept(name)
    return [QAItem(name, i, "caption", CAPTION_PROMPT, "", photo) for i, photo in enumerate(concept.test_images)]


def question_with_options(question: str, options: tuple[tuple[str, str], ...]) -> str:
    """A multiple-choice question as every method receives it, whatever the format wrote: with its
    options, one per line as ``A. text``. UnifyBench writes them into the question already (kept as
    written); Yo'LLaVA keeps them apart: appended here, then LLaVA-1.5's instruction to answer with
    the letter. ``AnswerRequest.options`` holds them too."""
    from .data.common import parse_options

    if not options or parse_options(question):
        return question
    lines = "\n".join(f"{letter}. {text}" for letter, text in options)
    return f"{question.rstrip()}\n{lines}\n{CHOICE_INSTRUCTION}"


def rotated_item(item: QAItem, r: int) -> QAItem:
    """The item with its option texts moved ``r`` places under the same letters (letter i shows the
    text of letter i+r), the question's own option lines rewritten to match, and the correct letter
    moved with its text. MMBench's CircularEval asks every rotation: an item counts as right only
    if all are, which always answering one letter (or one position) cannot manage."""
    n = len(item.options)
    letters = [letter for letter, _ in item.options]
    texts = [text for _, text in item.options]
    shifted = tuple((letters[i], texts[(i + r) % n]) for i in range(n))
    correct = item.correct_option
    if correct in letters:
        correct = letters[(letters.index(correct) - r) % n]
    answer = item.answer
    if answer.strip() in letters:
        answer = letters[(letters.index(answer.strip()) - r) % n]
    question = _rewrite_option_lines(item.question, item.options, shifted)
    return replace(item, options=shifted, correct_option=correct, answer=answer, raw_answer=None, question=question)


def _rewrite_option_lines(question: str, options, shifted) -> str:
    """``question`` with the options it writes itself (UnifyBench's questions do; Yo'LLaVA's keep them
    apart) replaced by ``shifted``, one ``A. text`` line each; any text around them kept."""
    from .data.common import parse_options

    if not parse_options(question):
        return question
    start = re.search(r"(?:^|(?<=\s))\(?" + re.escape(options[0][0]) + r"[.):]\s*" + re.escape(options[0][1]), question)
    last = options[-1][1]
    end = question.find(last, start.end() if start else 0) if start else -1
    if start is None or end < 0:
        raise ValueError(f"cannot find the options {options!r} in the question {question!r}")
    lines = "\n".join(f"{letter}. {text}" for letter, text in shifted)
    return question[:start.start()] + lines + question[end + len(last):]


# LLaVA-1.5's multiple-choice instruction (llava/eval/model_vqa_mmbench.py), for questions whose
# format keeps the options apart (Yo'LLaVA's): UnifyBench's own questions end with one of theirs.
CHOICE_INSTRUCTION = "Answer with the option's letter from the given choices directly."


def limited(items: list[QAItem], limit: int | None) -> list[QAItem]:
    """At most ``limit`` items in file order. Recognition items are taken alternately from the
    positives and the negatives (the other side fills in when one runs out), and at least one of
    each where the concept has both (``--limit 1`` takes two), so a ``--limit`` run still scores
    both sides; other tasks take the first ``limit``."""
    if limit is None or len(items) <= limit:
        return list(items)
    if not items or items[0].kind != "rec":
        return items[:limit]
    from .scoring.answers import is_negative

    sides = [[it for it in items if not is_negative(it)], [it for it in items if is_negative(it)]]
    if all(sides):
        limit = max(limit, 2)  # one of each at least: weighted accuracy needs both sides
    chosen: list[QAItem] = []
    turn = 0
    while len(chosen) < limit:
        side = sides[turn % 2] if sides[turn % 2] else sides[(turn + 1) % 2]
        chosen.append(side.pop(0))
        turn += 1
    return sorted(chosen, key=lambda it: it.index)


def identity_work(bench: Benchmark, name: str, *, seed: int, images_per_prompt: int) -> list[Work]:
    """For a human concept with an identity prompt: one more ``gen`` request for it, indexed after
    every plain prompt, whose images face identity is scored on (scoring/face.py)."""
    concept = bench.concept(name)
    if concept.kind != "human" or not concept.identity_prompt:
        return []
    index = 1 + max((p.index for p in bench.prompts.get(name, []) if p.kind == "gen"), default=-1)
    record = GenPrompt(name, index, "gen", concept.identity_prompt,
                       concept.identity_prompt.replace(concept.token, concept.class_noun))
    req = GenRequest(concept=name, task="gen", index=index, prompt=concept.identity_prompt,
                     n_images=images_per_prompt, seed=seed)
    return [Work(req, record, purpose="identity")]
