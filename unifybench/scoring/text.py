"""Character-level BLEU for open answers (vqa, text_only).

The reference evaluation calls nltk as
``sentence_bleu([list(reference)], list(hypothesis), weights=(0.7, 0.3),
smoothing_function=SmoothingFunction().method1)``; :func:`char_bleu` reproduces that number exactly
without importing nltk.
"""
from __future__ import annotations

import math
from collections import Counter

WEIGHTS = (0.7, 0.3)
EPSILON = 0.1  # nltk SmoothingFunction().method1: added to the numerator of a zero-count precision


def _ngram_counts(chars: str, n: int) -> Counter:
    if len(chars) < n:
        return Counter()
    return Counter(chars[i:i + n] for i in range(len(chars) - n + 1))


def char_bleu(reference: str, hypothesis: str) -> float:
    """Character BLEU with weights (0.7, 0.3) on 1- and 2-grams and nltk's smoothing method 1.

    As nltk computes it: modified (clipped) n-gram precision with denominator at least 1; 0 when no
    character of the hypothesis occurs in the reference (including an empty hypothesis); a
    zero-count bigram precision becomes 0.1 / denominator; brevity penalty exp(1 - r / h) when the
    hypothesis is not longer than the reference (1 when it is longer).
    """
    ref, hyp = str(reference), str(hypothesis)
    p_n = []
    for n in range(1, len(WEIGHTS) + 1):
        counts = _ngram_counts(hyp, n)
        ref_counts = _ngram_counts(ref, n)
        numerator = sum(min(c, ref_counts[g]) for g, c in counts.items())
        denominator = max(1, sum(counts.values()))
        p_n.append((numerator, denominator))
    if p_n[0][0] == 0:
        return 0.0
    hyp_len, ref_len = len(hyp), len(ref)
    if hyp_len > ref_len:
        bp = 1
    elif hyp_len == 0:
        bp = 0
    else:
        bp = math.exp(1 - ref_len / hyp_len)
    smoothed = [(num + EPSILON) / den if num == 0 else num / den for num, den in p_n]
    s = math.fsum(w * math.log(p) for w, p in zip(WEIGHTS, smoothed) if p > 0)
    return float(bp * math.exp(s))
