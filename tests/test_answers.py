import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest

from unifybench.errors import BenchError
from unifybench.records import QAItem
from unifybench.scoring.answers import (choice_sample, parse_choice, parse_yes_no, recognition_sample,
                                        score_choice, score_recognition)


@pytest.mark.parametrize("reply,default,reference", [
    ("I cannot see its eyes", None, "no"),    # "cannot" contains "no"
    ("Not sure", None, "no"),
    ("Yes, I know it", "yes", "no"),           # "know" contains "no"
    ("No.", "no", "no"),
    ("Yes.", "yes", "yes"),
    ("no", "no", "no"),
    ("Nope", "no", "no"),
    ("Yes, <bo> is in the image.", "yes", "yes"),
    ("No, it is not <bo>.", "no", "no"),
    ("**Yes**, it is.", "yes", "yes"),
    ("Answer: No", "no", "no"),
    ("  yeah", "yes", None),
    ("There is no dog here", None, "no"),
    ("The eyes are blue", None, "yes"),        # "eyes" contains "yes"
    ("Maybe", None, None),
    ("", None, None),
    ("Yesterday it was here", None, "yes"),    # a word starting with "yes" is not "yes"
])
def test_parse_yes_no(reply, default, reference):
    assert parse_yes_no(reply) == default
    assert parse_yes_no(reply, "default") == default
    assert parse_yes_no(reply, "reference") == reference


def test_unknown_protocol():
    with pytest.raises(BenchError):
        parse_yes_no("yes", "lenient")


def rec(i, answer):
    return QAItem(concept="bo", index=i, kind="rec", question="Is <bo> in this image?",
                  answer=answer, image=None)


def test_recognition_set_both_protocols():
    pairs = [
        (rec(0, "Yes, <bo> is in the image."), "Yes."),                  # def ok   ref ok
        (rec(1, "Yes, <bo> is in the image."), "Yes, I know it"),        # def ok   ref wrong
        (rec(2, "Yes, <bo> is in the image."), "I cannot see its eyes"), # def unp  ref wrong
        (rec(3, "Yes, <bo> is in the image."), "No."),                   # def wrong ref wrong
        (rec(4, "No."), "No."),                                          # def ok   ref ok
        (rec(5, "No."), "Not sure"),                                     # def unp  ref ok
        (rec(6, "No."), "Yes."),                                         # def wrong ref wrong
    ]
    d = score_recognition(pairs, "default")
    assert d["n_pos"] == 4 and d["n_neg"] == 3 and d["n"] == 7
    assert d["pos_acc"] == pytest.approx(2 / 4)
    assert d["neg_acc"] == pytest.approx(1 / 3)
    assert d["weighted_acc"] == pytest.approx((2 / 4 + 1 / 3) / 2)
    assert d["accuracy"] == pytest.approx(3 / 7)
    assert d["unparsed"] == 2

    r = score_recognition(pairs, "reference")
    assert r["pos_acc"] == pytest.approx(1 / 4)
    assert r["neg_acc"] == pytest.approx(2 / 3)
    assert r["weighted_acc"] == pytest.approx((1 / 4 + 2 / 3) / 2)
    assert r["unparsed"] == 0

    assert recognition_sample(pairs[2][0], pairs[2][1]) == {"parsed": None, "correct": False}
    assert recognition_sample(pairs[5][0], pairs[5][1], "reference") == {"parsed": "no", "correct": True}


def test_recognition_one_sided_and_empty():
    only_pos = score_recognition([(rec(0, "Yes."), "yes"), (rec(1, "Yes."), "no")])
    assert only_pos["neg_acc"] is None and only_pos["weighted_acc"] == pytest.approx(0.5)
    only_neg = score_recognition([(rec(0, " No. "), "No")])
    assert only_neg["pos_acc"] is None and only_neg["weighted_acc"] == 1.0
    empty = score_recognition([])
    assert empty["weighted_acc"] is None and empty["n_pos"] == empty["n_neg"] == 0


def choice(answer="B", correct_option=None, options=(("A", "Dog"), ("B", "Cat"), ("C", "Hot dog"))):
    return QAItem(concept="bo", index=0, kind="choice", question="What is <bo>?", answer=answer,
                  image=None, options=tuple(options), correct_option=correct_option)


@pytest.mark.parametrize("reply,letter", [
    ("B", "B"), ("b", "B"), ("B.", "B"), ("(B)", "B"), ("**B**", "B"), ("Answer: B.", "B"),
    ("answer: b", "B"), ("The answer is B) Cat", "B"), ("The answer is Cat", "B"),
    ("The answer is cat.", "B"), ("A or B", None), ("A. Dog", "A"), ("A cat.", "B"),
    ("It is a hot dog", "C"), ("Dog or cat", None), ("I don't know", None), ("D", None),
])
def test_parse_choice(reply, letter):
    assert parse_choice(choice(), reply) == letter


def test_choice_samples_both_protocols():
    item = choice(answer="B")
    assert choice_sample(item, "(B)") == {"parsed": "B", "correct": True}
    assert choice_sample(item, "A or B") == {"parsed": None, "correct": False}
    # the reference's substring rule: the capital B of "But" makes this reply correct
    assert choice_sample(item, "But it is A.", "reference") == {"parsed": None, "correct": True}
    assert choice_sample(item, "But it is A.") == {"parsed": "A", "correct": False}
    assert choice_sample(item, "b", "reference")["correct"] is False  # case-sensitive substring
    # answer given as an option's text; correct_option wins when present
    assert choice_sample(choice(answer="Cat"), "B")["correct"] is True
    assert choice_sample(choice(answer="Cat", correct_option="C"), "Hot dog")["correct"] is True
    # no options: fall back to the answer text
    plain = choice(answer="Cat.", options=())
    assert choice_sample(plain, "It is a cat") == {"parsed": "Cat", "correct": True}
    assert choice_sample(plain, "It is a dog")["correct"] is False


def test_score_choice():
    item = choice(answer="B")
    pairs = [(item, "B"), (item, "A"), (item, "A or B"), (item, "no idea")]
    d = score_choice(pairs)
    assert d == {"accuracy": 0.25, "unparsed": 2, "n": 4}
    r = score_choice(pairs, "reference")
    assert r == {"accuracy": 0.5, "unparsed": None, "n": 4}
    assert score_choice([]) == {"accuracy": None, "unparsed": 0, "n": 0}
