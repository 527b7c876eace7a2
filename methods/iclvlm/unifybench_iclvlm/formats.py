"""How the concept and the question are put to the model: four prompt formats, three transcribed
from the codebases whose baselines they reproduce (sources and commits: the method card).

Each format turns (token, description, reference photos, request) into a
:class:`~unifybench.scoring.judges.ChatRequest`. Where a source writes LLaVA/Chameleon ``<image>``
placeholders into its text, the images are put in place of the placeholders, in the source's order
(:func:`rendered` writes them back as ``<image>``, which is what the tests compare with the source).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from unifybench.scoring.judges import ChatMessage, ChatRequest

FORMATS = ("plain", "mmpb", "rap", "yochameleon")
# Part of every cache key and recorded in run.json: bump it whenever a format's text changes.
TEMPLATE_VERSION = "icl-vlm/1"
IMAGE_PLACEHOLDER = "<image>"


@dataclass(frozen=True)
class Question:
    """What a format needs of a request: its task, the question without its options (``stem``),
    the options, and the photo asked about (None for a text-only question)."""

    task: str
    question: str  # as the harness asks it (options included)
    stem: str
    options: tuple[tuple[str, str], ...]
    image: Path | None


def question_stem(question: str, options: tuple[tuple[str, str], ...]) -> str:
    """The question without the option lines the harness (or the benchmark) wrote into it."""
    if not options:
        return question
    first = re.escape(options[0][1])
    found = re.search(r"(?:^|\n|\s)\(?A[.):]\s*" + first, question)
    return question[:found.start()].rstrip() if found else question


def _merged(parts: list) -> tuple:
    """Adjacent texts joined, empty texts dropped: the parts of one turn as sent."""
    out: list = []
    for part in parts:
        if isinstance(part, str):
            if not part:
                continue
            if out and isinstance(out[-1], str):
                out[-1] += part
                continue
        out.append(part)
    return tuple(out)


def _user(*parts) -> ChatMessage:
    return ChatMessage("user", _merged(list(parts)))


def plain(token: str, description: str, refs: list[Path], q: Question) -> ChatRequest:
    """Our default: one user turn: the reference photos, a line naming them (and the description),
    then the photo asked about and the question as the harness asks every method (options included)."""
    intro = " ".join(x for x in (f"These photos show {token}." if refs else "", description) if x)
    return ChatRequest((_user(*refs, intro + "\n\n" if intro else "", *([q.image] if q.image else []),
                              q.question),))


# ------------------------------------------------------------------------------------------------- MMPB
def mmpb_final_query(q: Question) -> str:
    """MMPB's ``final_query``: ``'\\n{question}\\n'``, then ``'Options:\\n'`` and ``'{key}. {item}\\n'``
    lines for a multiple-choice question."""
    final_query = f"\n{q.stem}\n"
    if q.options:
        final_query += "Options:\n" + "".join(f"{key}. {item}\n" for key, item in q.options)
    return final_query


def mmpb(token: str, description: str, refs: list[Path], q: Question) -> ChatRequest:
    """MMPB's injection, the chat form (``chat_inner`` models): the reference photos with
    ``"These images presents <sks>. {preference}"`` (the description in the preference's place) or,
    with no photos, the text injection ``preference + " " + description`` (no preference here);
    the assistant's ``"I got it."``; then the photo asked about and the final query. MMPB's
    optional generic turns (its own conversation files) are not included."""
    preference = description  # our benchmarks have no preference: the description takes its place
    if refs:
        injection = _user(*refs, f"These images presents {token}. {preference}")
    else:
        injection = _user("" + " " + description)  # MMPB's preference + " " + description, no preference
    final = _user(*([q.image] if q.image else []), mmpb_final_query(q))
    return ChatRequest((injection, ChatMessage("assistant", ("I got it.",)), final))


# -------------------------------------------------------------------------------------------------- RAP
RAP_CHOICE_INSTRUCTION = "Please give a single character from the options above. \n"


def rap_question(q: Question) -> str:
    """RAP's ``q``: for multiple choice ``"Question: " + question + "\\nOptions:\\n"``, the
    ``"{option}. {content}\\n"`` lines and its instruction; any other question as it is."""
    if not q.options:
        return q.stem
    text = "Question: " + q.stem + "\nOptions:\n"
    for option, content in q.options:
        text += f"{option}. {content}\n"
    return text + RAP_CHOICE_INSTRUCTION


def rap(token: str, description: str, refs: list[Path], q: Question) -> ChatRequest:
    """RAP's retrieval prompt, the concept retrieved for sure: each reference photo is one database
    entry ``"{i+1}.<image>\\n Name: <name>, Info: {info}\\n"``; with a photo asked about,
    ``"<image>\\n[{extra_info}]{q}"`` (that photo first, then the entries'); without,
    ``"{extra_info}{q}"``."""
    extra: list = []
    for i, ref in enumerate(refs):
        extra += [f"{i + 1}.", ref, f"\n Name: {token}, Info: {description}\n"]
    if q.image is not None:
        return ChatRequest((_user(q.image, "\n[", *extra, "]", rap_question(q)),))
    return ChatRequest((_user(*extra, rap_question(q)),))


# ------------------------------------------------------------------------------------------ Yo'Chameleon
SUBJECT = "this subject"


def yochameleon_question(token: str, q: Question) -> str:
    """``question.replace('<sks>', 'this subject')`` followed, for multiple choice, by
    ``f'{option_A} or {option_B}?'`` (more options: ``'A, B or C?'``)."""
    prompt = q.stem.replace(token, SUBJECT)
    if not q.options:
        return prompt
    texts = [text for _, text in q.options]
    return prompt + (", ".join(texts[:-1]) + " or " + texts[-1] + "?" if len(texts) > 1 else texts[0] + "?")


def yochameleon(token: str, description: str, refs: list[Path], q: Question) -> ChatRequest:
    """Yo'Chameleon's baselines (``baselines/chameleon-qa.py``). Image prompt, a photo asked about:
    ``'You are seeing a photo of an subject <image>' + question + '<image>'`` (the reference photo,
    then the photo asked about); text-only: ``question + '<image>' * k``. Text prompt (no reference
    photos): ``caption + ' ' + question``, the caption naming the concept ``this subject``."""
    text = yochameleon_question(token, q)
    if refs:
        if q.image is not None:
            return ChatRequest((_user("You are seeing a photo of an subject ", *refs, text, q.image),))
        return ChatRequest((_user(text, *refs),))
    caption = description.replace(token, SUBJECT)
    return ChatRequest((_user(*([q.image] if q.image else []), (caption + " " if caption else "") + text),))


BUILDERS = {"plain": plain, "mmpb": mmpb, "rap": rap, "yochameleon": yochameleon}


def build(format: str, token: str, description: str, refs: list[Path], q: Question) -> ChatRequest:
    return BUILDERS[format](token, description, list(refs), q)


def rendered(request: ChatRequest) -> list[dict]:
    """The request with each image written as ``<image>`` and each turn's parts joined: the form the
    sources' prompts are written in (tests compare it with them)."""
    return [{"role": m.role, "content": "".join(p if isinstance(p, str) else IMAGE_PLACEHOLDER for p in m.parts)}
            for m in request.messages]
