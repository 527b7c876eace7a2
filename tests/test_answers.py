import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest

from unifybench.errors import BenchError
from unifybench.records import QAItem
from unifybench.metrics import ScoringContext, aggregate
from unifybench.scoring.answers import answer_sample, choice_sample, parse_choice, parse_yes_no, recognition_sample


@pytest.mark.parametrize("reply,parsed", [
    ("I cannot see its eyes", None),
    ("Not sure", None),
    ("Yes, I know it", "yes"),
    ("No.", "no"),
    ("Yes.", "yes"),
    ("no", "no"),
    ("Nope", "no"),
    ("Yes, <bo> is in the image.", "yes"),
    ("No, it is not <bo>.", "no"),
    ("**Yes**, it is.", "yes"),
    ("Answer: No", "no"),
    ("  yeah", "yes"),
    ("There is no dog here", None),
    ("The eyes are blue", None),
    ("Maybe", None),
    ("", None),
    ("Yesterday it was here", None),    # a word starting with "yes" is not "yes"
])
def test_parse_yes_no_reads_the_leading_word(reply, parsed):
    assert parse_yes_no(reply) == parsed


def test_unknown_protocol():
    with pytest.raises(BenchError):
        recognition_sample(rec(0, "Yes."), "yes", "lenient")


def rec(i, answer, raw=None):
    return QAItem(concept="bo", index=i, kind="rec", question="Is <bo> in this image?",
                  answer=answer, image=None, raw_answer=raw)


def _rows(pairs, protocol):
    return [{"scorer": "answer", "task": item.kind, "concept": "bo", "key": f"{item.kind}/bo/{item.index}",
             **answer_sample(item, reply, protocol)} for item, reply in pairs]


def _aggregate(pairs, protocol, task="rec"):
    ctx = ScoringContext(protocol=protocol, requested={"bo": [task]})
    return aggregate(_rows(pairs, protocol), ctx, [task])[0][task]


def test_recognition_set_both_protocols():
    pairs = [
        (rec(0, "Yes, <bo> is in the image."), "Yes."),                  # def ok    ref ok
        (rec(1, "Yes, <bo> is in the image."), "Yes, I know it"),        # def ok    ref ok (no "no" check)
        (rec(2, "Yes, <bo> is in the image."), "I cannot see its eyes"), # def unp   ref ok ("eyes")
        (rec(3, "Yes, <bo> is in the image."), "No."),                   # def wrong ref wrong
        (rec(4, "No."), "No."),                                          # def ok    ref ok
        (rec(5, "No."), "Not sure"),                                     # def unp   ref ok
        (rec(6, "No."), "Yes."),                                         # def wrong ref wrong
    ]
    d = _aggregate(pairs, "default")
    assert d["pos_acc"] == pytest.approx(2 / 4)
    assert d["neg_acc"] == pytest.approx(1 / 3)
    assert d["weighted_acc"] == pytest.approx((2 / 4 + 1 / 3) / 2)
    assert d["accuracy"] == pytest.approx(3 / 7)
    assert d["unparsed"] == 2

    r = _aggregate(pairs, "reference")
    assert r["pos_acc"] == pytest.approx(3 / 4)
    assert r["neg_acc"] == pytest.approx(2 / 3)
    assert r["weighted_acc"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert r["accuracy"] == pytest.approx(5 / 7)
    assert r["unparsed"].startswith("not scored")  # the reference parses nothing

    assert recognition_sample(pairs[2][0], pairs[2][1]) == {"negative": False, "parsed": None, "correct": False}
    assert recognition_sample(pairs[5][0], pairs[5][1], "reference") == {"negative": True, "correct": True}


def test_recognition_one_sided_and_empty():
    only_pos = _aggregate([(rec(0, "Yes."), "yes"), (rec(1, "Yes."), "no")], "default")
    assert only_pos["neg_acc"] == "not scored: no negative items" and only_pos["pos_acc"] == pytest.approx(0.5)
    assert only_pos["weighted_acc"] == "not scored: needs positives and negatives"
    only_neg = _aggregate([(rec(0, "No.", raw=" No. "), "No")], "default")
    assert only_neg["pos_acc"] == "not scored: no positive items" and only_neg["neg_acc"] == 1.0
    assert only_neg["weighted_acc"] == "not scored: needs positives and negatives"
    # The reference compares the ground truth as written: " No. " is not "No.", so the item is a positive.
    ref = _aggregate([(rec(0, "No.", raw=" No. "), "No")], "reference")
    assert ref["neg_acc"] == "not scored: no negative items" and ref["pos_acc"] == 0.0
    empty = _aggregate([], "default")
    assert empty["weighted_acc"] == "not scored: no items"


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
    assert choice_sample(item, "But it is A.", "reference") == {"correct": True}
    assert choice_sample(item, "But it is A.") == {"parsed": "A", "correct": False}
    assert choice_sample(item, "b", "reference")["correct"] is False  # case-sensitive substring
    # answer given as an option's text; correct_option wins when present
    assert choice_sample(choice(answer="Cat"), "B")["correct"] is True
    assert choice_sample(choice(answer="Cat", correct_option="C"), "Hot dog")["correct"] is True
    # no options: fall back to the answer text
    plain = choice(answer="Cat.", options=())
    assert choice_sample(plain, "It is a cat") == {"parsed": "Cat", "correct": True}
    assert choice_sample(plain, "It is a dog")["correct"] is False


def test_choice_aggregates():
    item = choice(answer="B")
    pairs = [(item, "B"), (item, "A"), (item, "A or B"), (item, "no idea")]
    assert _aggregate(pairs, "default", "choice") == {"accuracy": 0.25, "unparsed": 2}
    r = _aggregate(pairs, "reference", "choice")
    assert r["accuracy"] == 0.5 and r["unparsed"].startswith("not scored")
    assert _aggregate([], "default", "choice")["accuracy"] == "not scored: no items"
