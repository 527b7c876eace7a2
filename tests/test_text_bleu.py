import os

os.environ["HF_HUB_OFFLINE"] = "1"

import random

import pytest

from unifybench.scoring.text import char_bleu

nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")


def nltk_char_bleu(reference: str, hypothesis: str) -> float:
    return float(nltk_bleu.sentence_bleu(
        [list(reference)], list(hypothesis), weights=(0.7, 0.3),
        smoothing_function=nltk_bleu.SmoothingFunction().method1))


FIXED = [
    ("", ""), ("abc", ""), ("", "abc"), ("a", "a"), ("a", "b"), ("ab", "a"), ("a", "ab"),
    ("abc", "abc"), ("abc", "cba"), ("abc", "xyz"), ("aaaa", "aaaaaaaa"), ("aaaaaaaa", "aa"),
    ("The dog is brown.", "The dog is brown."), ("The dog is brown.", "It is a brown dog"),
    ("Yes, <bo> is in the image.", "Yes."), ("No.", "No, it is not <bo>."),
    ("café au lait", "cafe au lait"), ("日本語のテキスト", "日本語"), ("😀😀x", "😀x😀"),
    ("a b", " "), ("ab", "ba"), ("x", "xxxxxxxxxx"),
]


@pytest.mark.parametrize("reference,hypothesis", FIXED)
def test_fixed_cases(reference, hypothesis):
    assert char_bleu(reference, hypothesis) == pytest.approx(nltk_char_bleu(reference, hypothesis),
                                                             abs=1e-12)


def test_random_pairs_match_nltk():
    rng = random.Random(1234)
    alphabets = ["ab", "abc ", "abcdefghij .,", "xyzé日😀 "]
    for _ in range(200):
        alpha = rng.choice(alphabets)
        ref = "".join(rng.choice(alpha) for _ in range(rng.randint(0, 30)))
        hyp = "".join(rng.choice(alpha) for _ in range(rng.randint(0, 30)))
        assert abs(char_bleu(ref, hyp) - nltk_char_bleu(ref, hyp)) <= 1e-12, (ref, hyp)


def test_values_are_floats_in_range():
    assert char_bleu("abc", "") == 0.0 and isinstance(char_bleu("abc", ""), float)
    assert char_bleu("abc", "abc") == pytest.approx(1.0)
    assert 0.0 < char_bleu("brown dog", "a dog") < 1.0


def test_package_does_not_import_nltk():
    import unifybench.scoring.text as text

    source = open(text.__file__, encoding="utf-8").read()
    assert "import nltk" not in source and "from nltk" not in source
