"""Yes/no and multiple-choice answers: parsing and accuracy.

Two protocols, side by side in every function:

- ``"default"`` (corrected): replies are read by words, and a reply that states no decision is
  *unparsed* (counted, and scored wrong) instead of being forced into "yes" or "no".
- ``"reference"``: exactly what the UniCTokens evaluation does (FORMATS.md §5), bugs included:
  a reply is "no" if the substring ``no`` occurs anywhere in it (so "not", "know", "cannot" all
  count as "no"), else "yes" if ``yes`` occurs; a multiple-choice reply is correct if the
  ground-truth string occurs anywhere in it.
"""
from __future__ import annotations

import re
from typing import Iterable

from ..errors import BenchError
from ..records import QAItem

PROTOCOLS = ("default", "reference")

YES_WORDS = frozenset({"yes", "yeah", "yep", "yup"})
NO_WORDS = frozenset({"no", "nope", "nah"})

_WORD = re.compile(r"[a-z']+")
# Leading decoration a model may put before its first word: whitespace, markdown, quotes, brackets.
_LEAD = re.compile(r"^[\s*_#>`\"'“”‘’(\[{:\-–—.,!]+")
_ANSWER_LABEL = re.compile(r"^(?:final\s+)?answer\s*[:\-–—]?\s*", re.IGNORECASE)


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise BenchError(f"unknown answer protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})",
                         where="protocol")


# --------------------------------------------------------------------------------------- yes / no

def parse_yes_no(reply: str, protocol: str = "default") -> str | None:
    """Read a yes/no reply: ``"yes"``, ``"no"`` or ``None`` (unparsed).

    ``"reference"``: the reference rule on substrings, "no" checked first: ``"no" in reply.lower()``
    gives "no", else ``"yes" in reply.lower()`` gives "yes", else None. So "I cannot see its eyes",
    "Yes, I know it" and "Not sure" are all "no".

    ``"default"``: the reply's *first word* decides. Leading whitespace, markdown (``**``, ``#``,
    ``>``), quotes, brackets and an ``Answer:`` label are skipped; the first word (``[a-z']+`` of the
    lower-cased reply) is then looked up: yes, yeah, yep, yup give "yes"; no, nope, nah give "no";
    anything else gives None. So "Yes, I know it" is "yes", "No, it is not <bo>." is "no", and
    "I cannot see its eyes", "Not sure" and "There is no dog here" are unparsed: they state no
    yes/no decision, and reading them as one would guess.
    """
    _check_protocol(protocol)
    text = reply or ""
    if protocol == "reference":
        low = text.lower()
        if "no" in low:
            return "no"
        if "yes" in low:
            return "yes"
        return None
    text = _LEAD.sub("", text)
    text = _ANSWER_LABEL.sub("", text)
    text = _LEAD.sub("", text)
    m = _WORD.match(text.lower())
    if m is None:
        return None
    word = m.group(0)
    if word in YES_WORDS:
        return "yes"
    if word in NO_WORDS:
        return "no"
    return None


def is_negative(item: QAItem) -> bool:
    """Ground truth of a recognition item: negative iff its answer is exactly ``No.`` (stripped)."""
    return item.answer.strip() == "No."


def recognition_sample(item: QAItem, reply: str, protocol: str = "default") -> dict:
    """One recognition item: ``{"parsed": "yes"|"no"|None, "correct": bool}``; unparsed is wrong."""
    parsed = parse_yes_no(reply, protocol)
    expected = "no" if is_negative(item) else "yes"
    return {"parsed": parsed, "correct": parsed == expected}


def score_recognition(pairs: Iterable[tuple[QAItem, str]], protocol: str = "default") -> dict:
    """Accuracy on the positive and negative items of a recognition set.

    Returns ``pos_acc`` (recall on positive items), ``neg_acc`` (on negative items; None when a side
    has no items), ``weighted_acc`` (mean of the two, or the one side that has items; None when
    empty), ``accuracy`` (plain accuracy over all items), ``unparsed`` (replies read as neither yes nor
    no, counted wrong), ``n_pos``, ``n_neg`` and ``n``.
    """
    _check_protocol(protocol)
    n_pos = n_neg = pos_ok = neg_ok = unparsed = 0
    for item, reply in pairs:
        s = recognition_sample(item, reply, protocol)
        if s["parsed"] is None:
            unparsed += 1
        if is_negative(item):
            n_neg += 1
            neg_ok += s["correct"]
        else:
            n_pos += 1
            pos_ok += s["correct"]
    pos_acc = pos_ok / n_pos if n_pos else None
    neg_acc = neg_ok / n_neg if n_neg else None
    sides = [a for a in (pos_acc, neg_acc) if a is not None]
    n = n_pos + n_neg
    return {
        "pos_acc": pos_acc,
        "neg_acc": neg_acc,
        "weighted_acc": sum(sides) / len(sides) if sides else None,
        "accuracy": (pos_ok + neg_ok) / n if n else None,
        "unparsed": unparsed,
        "n_pos": n_pos,
        "n_neg": n_neg,
        "n": n,
    }


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

    ``"reference"``: correct iff ``item.answer`` occurs in the reply as an exact substring;
    ``parsed`` is None (the reference does not parse).
    ``"default"``: the letter :func:`parse_choice` reads, compared with the correct letter
    (``correct_option``, or the answer when it is a letter or an option's text). An item without
    options or without a known correct letter falls back to the answer's text (without trailing
    punctuation) occurring in the reply case-insensitively on word boundaries; ``parsed`` is then the
    matched answer text or None.
    """
    _check_protocol(protocol)
    reply = reply or ""
    if protocol == "reference":
        return {"parsed": None, "correct": item.answer in reply}
    correct = _correct_letter(item) if item.options else None
    if correct is None:
        hit = _text_mentions(reply, [("answer", item.answer)])
        text = item.answer.strip().strip(_PUNCT)
        return {"parsed": text if hit else None, "correct": bool(hit)}
    parsed = parse_choice(item, reply)
    return {"parsed": parsed, "correct": parsed == correct}


def score_choice(pairs: Iterable[tuple[QAItem, str]], protocol: str = "default") -> dict:
    """``{"accuracy", "unparsed", "n"}``; unparsed counts as wrong. Under ``"reference"``, which does
    not parse, ``unparsed`` is None."""
    _check_protocol(protocol)
    n = ok = unparsed = 0
    for item, reply in pairs:
        s = choice_sample(item, reply, protocol)
        n += 1
        ok += s["correct"]
        unparsed += s["parsed"] is None
    return {
        "accuracy": ok / n if n else None,
        "unparsed": None if protocol == "reference" else unparsed,
        "n": n,
    }
