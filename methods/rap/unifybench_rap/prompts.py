"""RAP's evaluation prompts, transcribed from Hoar012/RAP-MLLM (``eval/*.py``, ``retriever.py``,
``llava/conversation.py``). Each builder returns the user turn and the images in the order their
``<image>`` placeholders appear (the question's photo first, then the retrieved reference).

Retrieval is by name only, as their ``VQA.py``, ``TQA.py`` and ``recognition.py`` call it
(``retrieve(database, inp=question, queries=[])``): an entry is retrieved when its key (the token,
``<bo>``) occurs in the question text. ``caption.py`` retrieves by image (YOLO-World crops, CLIP
search); over a one-concept database that search can only return the concept, so the entry is given.
"""
from __future__ import annotations

import re
from pathlib import Path

IMAGE = "<image>"
# conv_llava_v0 and conv_llava_v1 share this system text.
SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the human's questions.")
CONVERSATIONS = ("v1", "v0")

# recognition_test.json's question (after "<image>\n"), with the concept's token.
RECOGNITION_QUESTION = "Is {token} in this image? Answer with a single word or phrase."
CAPTION_QUESTION = "Give a caption of the image."
CHOICE_INSTRUCTION = "Please give a single character from the options above. \n"

_FIRST_OPTION = re.compile(r"(?:^|\n|\s)\(?A[.):]\s")


def conversation(user: str, conv: str) -> str:
    """``conv_templates[...].get_prompt()`` after one user turn and an empty assistant turn:
    llava_v0 (SeparatorStyle.SINGLE, sep "###") or llava_v1 (SeparatorStyle.TWO, sep " ")."""
    if conv == "v0":
        return f"{SYSTEM}###Human: {user}###Assistant:"
    if conv == "v1":
        return f"{SYSTEM} USER: {user} ASSISTANT:"
    raise ValueError(f"unknown conversation template {conv!r}")


def entry_text(entry: dict | None) -> str:
    """``ClipRetriever.retrieve``'s ``extra_info`` for the one retrieved entry (empty when none)."""
    if entry is None:
        return ""
    return f"1.{IMAGE}\n Name: {entry['token']}, Info: {entry['info']}\n"


def retrieved(entry: dict, text: str) -> dict | None:
    """Retrieval by name: the entry when its key occurs in the text (``if concept in inp``)."""
    return entry if entry["token"] in text else None


def choice_question(stem: str, options) -> str:
    """VQA.py's and TQA.py's multiple-choice text: ``Question: ...`` then the options, one a line."""
    q = "Question: " + stem + "\nOptions:\n"
    for letter, text in options:
        q += f"{letter}. {text}\n"
    return q + CHOICE_INSTRUCTION


def question_stem(question: str) -> str:
    """The question without the options the harness writes into it (UnifyBench's ``A. ...`` lines)."""
    m = _FIRST_OPTION.search(question)
    return (question[:m.start()] if m else question).strip()


def build(task: str, question: str, image: Path | None, entry: dict, options=()) -> tuple[str, list]:
    """(user turn, images) for one request: ``entry`` is the concept's database entry
    ({name, token, image, info, category})."""
    if task == "caption":  # caption.py with retrieval: the detector's crops retrieve the one entry
        return f"{IMAGE}\n[{entry_text(entry)}]{CAPTION_QUESTION}", [image, entry["image"]]
    if task == "choice":
        q = choice_question(question_stem(question), options)
    else:
        q = question
    hit = retrieved(entry, q)
    references = [hit["image"]] if hit else []
    if image is None:  # TQA.py: the reference photo is shown, no "<image>\n" and no brackets
        return f"{entry_text(hit)}{q}", references
    # VQA.py / recognition.py: question.replace("<image>\n", "") then "<image>\n[extra_info]question"
    q = q.replace(f"{IMAGE}\n", "")
    return f"{IMAGE}\n[{entry_text(hit)}]{q}", [image] + references
