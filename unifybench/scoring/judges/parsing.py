"""Reading a judge's reply: the score it gives (0, 0.5 or 1), or None when it gives none readably."""
from __future__ import annotations

import re

# A plain decimal, whole: never the head of "1e308" or "0.5e1" (read as 1 and 0.5 before).
_NUMBER = r"(\d+(?:\.\d+)?|\.\d+)(?!\d|\.\d|[eE][-+]?\d|\.\d*[eE])"
# Between the label and the number: no sign ("Score: -1" is out of range, not 1); a dash with a
# space after it is punctuation ("Score - 1").
_LABELLED = re.compile(r"\bscore\b(?:[^0-9.\n+-]|-(?=\s)){0,12}?" + _NUMBER + r"(?:\s*(?:/|out\s+of)\s*" + _NUMBER + r")?",
                       re.IGNORECASE)
_BARE = re.compile(r"^" + _NUMBER + r"(?:\s*(?:/|out\s+of)\s*" + _NUMBER + r")?$", re.IGNORECASE)
VALID_SCORES = (0.0, 0.5, 1.0)


def _value(number: str, denominator: str | None) -> float | None:
    try:
        value = float(number)
        if denominator is not None:
            den = float(denominator)
            if den == 0:
                return None
            value /= den
    except ValueError:
        return None
    for valid in VALID_SCORES:
        if abs(value - valid) < 1e-9:
            return valid
    return None


def parse_score(reply: str | None) -> float | None:
    """The score a reply gives, 0, 0.5 or 1, or None when it cannot be read.

    Reads "Score: 1", "score: 1/1", "1.0", "**0.5**", "Score = 0.5 out of 1", and a chatty reply
    that ends or starts with a labelled score. A labelled score wins (the last one, where a model
    reasons first); without a label the whole reply, or its first or last line, must be the number.
    Values other than 0, 0.5 and 1 (after dividing by a "/N") are unreadable, not rounded.
    """
    if not reply:
        return None
    text = re.sub(r"[*_`#]+", "", reply).strip()
    labelled = _LABELLED.findall(text)
    if labelled:
        return _value(*labelled[-1][:1], labelled[-1][1] or None)
    lines = [ln.strip().strip(".!\"'()[]").strip() for ln in text.splitlines() if ln.strip()]
    for line in ([lines[0], lines[-1]] if lines else []):
        match = _BARE.match(line)
        if match:
            return _value(match.group(1), match.group(2))
    return None
