"""Yes/no, multiple-choice and open answers: one row of scores per reply.

Two protocols, side by side in every function:

- ``"default"`` (corrected): replies are read by words, and a reply that states no decision is
  *unparsed* (counted, and scored wrong) instead of being forced into "yes" or "no".
- ``"reference"``: exactly what the UniCTokens evaluation does (``eval/eval_p_mmu.py``,
  ``calculate_score``), bugs included. The decoded reply is stripped; the ground truth is used as
  the file writes it (not stripped). Recognition is one-sided per item: an item whose ground truth
  is exactly ``No.`` is correct iff ``no`` occurs in the lower-cased reply ("not", "know",
  "cannot" all match), any other item iff ``yes`` occurs ("eyes" matches), and the other word is
  never looked at ("Yes, I know it." is a correct positive). A multiple-choice reply is correct iff
  the ground-truth string occurs in it. Nothing is parsed, so nothing is "unparsed".

Only per-sample rows are made here; every aggregate is computed from them in :mod:`..metrics`.
"""
from __future__ import annotations

import re

from ..errors import BenchError
from ..records import QA_KINDS, QAItem
from .text import char_bleu

PROTOCOLS = ("default", "reference")

YES_WORDS = frozenset({"yes", "yeah", "yep", "yup"})
NO_WORDS = frozenset({"no", "nope", "nah"})

_WORD = re.compile(r"[a-z']+")
# Leading decoration a model may put before its first word: whitespace, markdown, quotes, brackets.
_LEAD = re.compile(r"^[\s*_#>`\"'“”‘’(\[{:\-–—.,!]+")
_ANSWER_LABEL = re.compile(r"^(?:final\s+)?answer\s*[:\-–—]?\s*", re.IGNORECASE)

# The reference's recognition ground truth for a negative, compared exactly (``gt == "No."``).
REFERENCE_NEGATIVE = "No."


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise BenchError(f"unknown answer protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})",
                         where="protocol")


# --------------------------------------------------------------------------------------- yes / no

def parse_yes_no(reply: str) -> str | None:
    """Read a yes/no reply under the default protocol: ``"yes"``, ``"no"`` or ``None`` (unparsed).

    The reply's *first word* decides. Leading whitespace, markdown (``**``, ``#``, ``>``), quotes,
    brackets and an ``Answer:`` label are skipped; the first word (``[a-z']+`` of the lower-cased
    reply) is then looked up: yes, yeah, yep, yup give "yes"; no, nope, nah give "no"; anything
    else gives None. So "Yes, I know it" is "yes", "No, it is not <bo>." is "no", and "I cannot see
    its eyes", "Not sure" and "There is no dog here" are unparsed: they state no yes/no decision,
    and reading them as one would guess.
    """
    rest = _LEAD.sub("", reply or "")
    rest = _ANSWER_LABEL.sub("", rest)
    rest = _LEAD.sub("", rest)
    m = _WORD.match(rest.lower())
    if m is None:
        return None
    word = m.group(0)
    if word in YES_WORDS:
        return "yes"
    if word in NO_WORDS:
        return "no"
    return None


def is_negative(item: QAItem, protocol: str = "default") -> bool:
    """Ground truth of a recognition item. Default: negative iff its answer's first word says no
    (``No.``, ``No``, ``no.``, ``No, it is not.``: :func:`parse_yes_no`). Reference: iff the answer as
    the file writes it is exactly ``No.``, as the authors' script compares it (so `` No.``, ``No`` and
    ``No, it is not.`` are positives there)."""
    _check_protocol(protocol)
    if protocol == "reference":
        return item.answer_as_written == REFERENCE_NEGATIVE
    return parse_yes_no(item.answer) == "no"


def recognition_truths(items) -> dict:
    """What a benchmark's recognition truths are: how many read yes, no or neither (by their first
    word), and how many the reference's exact ``No.`` rule reads otherwise (``data check`` warns)."""
    kinds = {"yes": 0, "no": 0, "neither": 0}
    differ = []
    for it in items:
        if it.kind != "rec":
            continue
        kinds[parse_yes_no(it.answer) or "neither"] += 1
        if is_negative(it, "default") != is_negative(it, "reference"):
            differ.append(f"{it.concept} item {it.index}: {it.answer_as_written!r}")
    return {**kinds, "reference_reads_otherwise": len(differ), "examples": differ[:3]}


def recognition_sample(item: QAItem, reply: str, protocol: str = "default") -> dict:
    """One recognition item's row: ``negative`` (its ground truth), ``correct``, and under the
    default protocol ``parsed`` ("yes", "no" or None: unparsed, scored wrong)."""
    _check_protocol(protocol)
    negative = is_negative(item, protocol)
    if protocol == "reference":
        low = (reply or "").strip().lower()
        return {"negative": negative, "correct": ("no" if negative else "yes") in low}
    parsed = parse_yes_no(reply)
    return {"negative": negative, "parsed": parsed, "correct": parsed == ("no" if negative else "yes")}


# ---------------------------------------------------------------------------- multiple choice

_KEYWORD_LETTER = re.compile(
    r"\b(?:answer|option|choice)(?:\s+is)?\s*[:\-–—]?\s*[(\[*\"']*\s*([A-Za-z])(?![A-Za-z0-9'])",
    re.IGNORECASE)
_STANDALONE = re.compile(r"(?<![A-Za-z0-9'’])([A-Z])(?![A-Za-z0-9'’])")
# "A" used as the article: followed by a lower-case word other than a conjunction.
_ARTICLE_A = re.compile(r"\s+(?!(?:or|and|nor)\b)[a-z]")
_PUNCT = " \t\r\n.,;:!?()[]{}*_`'\"“”‘’"


def _letters(item: QAItem) -> list[str]:
    return [letter.strip().upper() for letter, _ in item.options]


def _correct_letter(item: QAItem) -> str | None:
    """The correct option letter: ``correct_option``, else the answer if it names a letter or an
    option's text."""
    letters = _letters(item)
    if item.correct_option:
        return item.correct_option.strip(_PUNCT).upper() or None
    ans = item.answer.strip()
    bare = ans.strip(_PUNCT)
    if len(bare) == 1 and bare.isalpha() and bare.upper() in letters:
        return bare.upper()
    m = re.match(r"^\(?([A-Za-z])[).:]", ans)
    if m and m.group(1).upper() in letters:
        return m.group(1).upper()
    for letter, text in item.options:
        if text.strip().strip(_PUNCT).lower() == bare.lower():
            return letter.strip().upper()
    return None


def _text_mentions(reply: str, texts: list[tuple[str, str]]) -> set[str]:
    """Keys whose text occurs in ``reply`` (case-insensitive, on word boundaries); a text that is
    part of another matched text ("dog" inside "hot dog") does not count on its own."""
    found = []
    for key, text in texts:
        t = text.strip().strip(_PUNCT)
        if t and re.search(r"(?<!\w)" + re.escape(t) + r"(?!\w)", reply, re.IGNORECASE):
            found.append((key, t.lower()))
    keep = {k for k, t in found
            if not any(t != u and t in u for _, u in found)}
    return keep


def parse_choice(item: QAItem, reply: str) -> str | None:
    """The option letter a reply picks under the default protocol, or None (unparsed).

    Letters: the whole reply being one letter ("b", "**B**", "(B)."); a letter after "answer",
    "option" or "choice" ("Answer: b", "The answer is B) Cat"); and any standalone capital letter
    among the item's option letters ("B", "(B) Cat"), except "A" used as the article ("A cat").
    If exactly one distinct letter is mentioned it is the pick; several ("A or B") is ambiguous.
    With no letter, an option's text appearing in the reply (case-insensitive, whole words) is the
    pick when exactly one option's text appears.
    """
    letters = _letters(item)
    reply = reply or ""
    bare = reply.strip(_PUNCT)
    if len(bare) == 1 and bare.upper() in letters:
        return bare.upper()
    mentioned: set[str] = set()
    for m in _KEYWORD_LETTER.finditer(reply):
        if m.group(1).upper() in letters:
            mentioned.add(m.group(1).upper())
    for m in _STANDALONE.finditer(reply):
        letter = m.group(1)
        if letter not in letters:
            continue
        if letter == "A" and _ARTICLE_A.match(reply, m.end()):
            continue
        mentioned.add(letter)
    if len(mentioned) == 1:
        return next(iter(mentioned))
    if mentioned:
        return None
    by_text = _text_mentions(reply, [(letter.strip().upper(), text) for letter, text in item.options])
    return next(iter(by_text)) if len(by_text) == 1 else None


def choice_sample(item: QAItem, reply: str, protocol: str = "default") -> dict:
    """One multiple-choice item: ``{"parsed": letter|None, "correct": bool}``.

    ``"reference"``: correct iff the answer as the file writes it occurs in the stripped reply as an
    exact substring; no ``parsed`` (the reference does not parse).
    ``"default"``: the letter :func:`parse_choice` reads, compared with the correct letter
    (``correct_option``, or the answer when it is a letter or an option's text). An item without
    options or without a known correct letter falls back to the answer's text (without trailing
    punctuation) occurring in the reply case-insensitively on word boundaries; ``parsed`` is then the
    matched answer text or None.
    """
    _check_protocol(protocol)
    reply = reply or ""
    if protocol == "reference":
        return {"correct": item.answer_as_written in reply.strip()}
    correct = _correct_letter(item) if item.options else None
    if correct is None:
        hit = _text_mentions(reply, [("answer", item.answer)])
        text = item.answer.strip().strip(_PUNCT)
        return {"parsed": text if hit else None, "correct": bool(hit)}
    parsed = parse_choice(item, reply)
    return {"parsed": parsed, "correct": parsed == correct}


# ----------------------------------------------------------------------------- open questions

def open_sample(item: QAItem, reply: str, protocol: str = "default") -> dict:
    """One open question's row: character BLEU of the stripped reply against the ground truth (as the
    file writes it under ``"reference"``, stripped under ``"default"``)."""
    _check_protocol(protocol)
    truth = item.answer_as_written if protocol == "reference" else item.answer
    return {"bleu": char_bleu(truth, (reply or "").strip())}


# ----------------------------------------------------------------------------- refusals

# A reply that declines to answer (hosted models often do on photos of people): scored as the wrong
# answer it is, and also counted apart (each task's ``refused``) so a low score can be read.
# A hedge that goes on to answer ("I can't be sure, but it is red", "I cannot say for certain: a
# corgi") is an answer, not a refusal: its BLEU stands.
_HEDGE = r"(?!\s+(?:be\s+(?:sure|certain|completely|entirely|absolutely|100)|(?:say|tell)\s+for\s+(?:sure|certain)))"
_REFUSAL = re.compile(r"^\W*(?:i'?m sorry|sorry,|i am sorry|i apologi[sz]e|i(?: can ?not| can't| am unable|'m unable|"
                      r" am not able|'m not able| won't| will not)\b" + _HEDGE + r"|as an ai\b|unfortunately,? i\b)",
                      re.IGNORECASE)


def is_refusal(reply: str | None) -> bool:
    """Whether a reply opens by declining ("I'm sorry, ...", "I can't ...", "As an AI ...")."""
    return bool(reply) and bool(_REFUSAL.search(reply.replace("\u2019", "'")))


SAMPLE_SCORERS = {"rec": recognition_sample, "choice": choice_sample, "vqa": open_sample, "text_only": open_sample}


def answer_sample(item: QAItem, reply: str, protocol: str = "default") -> dict:
    """The row of scores of one understanding item, whatever its task."""
    return SAMPLE_SCORERS[item.kind](item, reply, protocol)


def answer_rows(work, store, tasks: list[str], protocol: str) -> list[dict]:
    """scores.jsonl's rows of the understanding tasks: one per item, the reply as the method gave
    it and the protocol's scores (``work``: the run's requests per concept, :mod:`unifybench.tasks`).
    A rotated multiple-choice request (``--choice-eval circular``) is a row of its own, with its
    ``rotation`` and the ``item`` key its rotations share."""
    answer_protocol = "reference" if protocol == "reference" else "default"
    rows = []
    for name, ws in work.items():
        for w in ws:
            if w.request.task not in tasks or w.request.task not in QA_KINDS:
                continue
            item, reply = w.record, store.predictions[w.request.key].answer
            truth = item.answer_as_written if answer_protocol == "reference" else item.answer
            rows.append({"scorer": "answer", "task": item.kind, "concept": name, "key": w.request.key,
                         "index": item.index, "question": item.question, "truth": truth, "reply": reply,
                         **answer_sample(item, reply, answer_protocol)})
            if w.request.rotation:
                rows[-1].update(rotation=w.request.rotation, item=f"{item.kind}/{name}/{item.index}")
            if is_refusal(reply):
                rows[-1]["refused"] = True
                if answer_protocol == "default" and "bleu" in rows[-1]:
                    rows[-1]["bleu"] = 0.0  # a refusal is wrong; its words could still share characters with the truth
    return rows
