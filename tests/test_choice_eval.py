"""Multiple choice that measures something: the always-first floor, --choice-eval circular
(MMBench's CircularEval) and the answer-letter line of `data check`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO, cli, make_plugin, only_run_dir, read_results
from unifybench.data import load_benchmark
from unifybench.records import QAItem
from unifybench.tasks import build_requests, rotated_item
from unifybench.testing.benches import photo

# Picks the option whose text sorts first: the same text in every rotation, right or wrong.
FIRST_TEXT_PLUGIN = '''
from unifybench.methods import Method

class FirstText(Method):
    name = "first-text"
    tasks = frozenset({"choice"})

    def answer(self, concept, state, requests):
        return [min(text for _, text in r.options) for r in requests]
'''


def test_a_rotation_moves_texts_under_the_letters_and_the_answer_with_its_text():
    item = QAItem("dog", 4, "choice", "Which toy?\nA. Ball\nB. Stick\nC. Rope\nAnswer with the letter.", "B", None,
                  (("A", "Ball"), ("B", "Stick"), ("C", "Rope")), "B")
    one = rotated_item(item, 1)
    assert one.options == (("A", "Stick"), ("B", "Rope"), ("C", "Ball"))
    assert one.correct_option == "A" and one.answer == "A"
    assert one.question == "Which toy?\nA. Stick\nB. Rope\nC. Ball\nAnswer with the letter."
    two = rotated_item(item, 2)
    assert two.options == (("A", "Rope"), ("B", "Ball"), ("C", "Stick")) and two.correct_option == "C"
    # Options kept apart from the question (Yo'LLaVA's): the question is untouched.
    apart = QAItem("bo", 0, "choice", "Is <bo> a dog or a cat?", "A", None, (("A", "Dog"), ("B", "Cat")), "A")
    assert rotated_item(apart, 1).question == apart.question and rotated_item(apart, 1).correct_option == "B"


def test_circular_requests_ask_each_choice_item_once_per_rotation_and_nothing_else_twice():
    bench = load_benchmark("mini", "auto")
    plain = build_requests(bench, ["rec", "choice"], ["dog"], seed=0, images_per_prompt=1, limit=None)["dog"]
    circular = build_requests(bench, ["rec", "choice"], ["dog"], seed=0, images_per_prompt=1, limit=None,
                              choice_eval="circular")["dog"]
    choice = [w for w in plain if w.request.task == "choice"]
    assert len(circular) == len(plain) - len(choice) + sum(len(w.request.options) for w in choice)
    keys = [w.request.key for w in circular]
    assert len(keys) == len(set(keys))
    for w in choice:  # rotation 0 is the plain request itself
        assert w.request in [c.request for c in circular]


def _choice_truth(bench, concepts):
    """(share of items whose answer is their first option, share whose right text sorts first), from the bench."""
    items = [it for c in concepts for it in bench.items[c] if it.kind == "choice"]
    first = sum(it.correct_option == it.options[0][0] for it in items) / len(items)
    by_text = sum(dict(it.options)[it.correct_option] == min(t for _, t in it.options) for it in items) / len(items)
    return first, by_text


def test_always_first_and_circular_mode_end_to_end(tmp_path):
    bench = load_benchmark("mini", "auto")
    concepts = ["dog", "cat", "clock"]
    first_share, text_share = _choice_truth(bench, concepts)
    out = tmp_path / "runs"
    common = ["--tasks", "choice", "--concepts", ",".join(concepts), "--out", str(out)]
    plain = cli("run", "--method", "always-first", *common)
    assert plain.returncode == 0, plain.stderr
    circular = cli("run", "--method", "always-first", "--choice-eval", "circular", *common)
    assert circular.returncode == 0, circular.stderr
    dirs = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(dirs) == 2  # another request set, another run directory
    by_mode = {read_results(d)["choice_eval"]: (d, read_results(d)) for d in dirs}
    assert by_mode["plain"][1]["tasks"]["choice"]["accuracy"] == pytest.approx(first_share)
    circ_dir, circ = by_mode["circular"]
    assert "accuracy" not in circ["tasks"]["choice"]
    assert circ["tasks"]["choice"]["circular_accuracy"] == 0.0  # the right text is first in one rotation only
    assert json.loads((circ_dir / "run.json").read_text())["spec"]["choice_eval"] == "circular"
    assert "circular_accuracy" in circ["intervals"]["choice"]

    plugin = make_plugin(tmp_path / "plugin", "first-text-plugin", "firsttext", FIRST_TEXT_PLUGIN,
                         {"first-text": "firsttext:FirstText"})
    ran = cli("run", "--method", "first-text", "--choice-eval", "circular", *common, pythonpath=[plugin])
    assert ran.returncode == 0, ran.stderr
    texts = [read_results(d) for d in out.iterdir() if d.name.startswith("first-text")][0]
    assert texts["tasks"]["choice"]["circular_accuracy"] == pytest.approx(text_share)

    board = cli("leaderboard", str(out), "--no-published")
    assert board.returncode == 0, board.stderr
    assert "always-first [choice: circular]" in board.stdout and "choice.circular_accuracy" in board.stdout
    assert "always-first row is what answering the first option scores" in board.stdout


def test_data_check_gives_the_answer_letters_of_choice_items(tmp_path):
    ran = cli("data", "check", "mini", "--json")
    letters = json.loads(ran.stdout)["choice_letters"]
    bench = load_benchmark("mini", "auto")
    items = [it for its in bench.items.values() for it in its if it.kind == "choice"]
    assert letters["items"] == len(items) == sum(letters["by_letter"].values())
    assert letters["by_letter"] == {l: sum(it.correct_option == l for it in items) for l in letters["by_letter"]}


def test_yollavas_text_only_choice_file_is_answered_a_390_times_of_400(tmp_path):
    """The copy published with RAP (tests/data/yollava/, data card yollava-text-only-qa.md): a Yo'LLaVA
    folder is made around it (one tiny photo per subject) and `data check` counts its letters."""
    source = REPO / "tests" / "data" / "yollava" / "yollava-text-only-qa.json"
    root = tmp_path / "yollava"
    root.mkdir()
    shutil.copy(source, root / source.name)
    for subject in json.loads(source.read_text()):
        photo(root / "yollava-data" / "train" / subject / "0.png")
    ran = cli("data", "check", str(root), "--format", "yollava")
    assert ran.returncode == 0, ran.stderr
    assert "A 390 / B 10" in ran.stdout
    assert "first option is the answer of 390 of 400" in ran.stderr and "scores 0.975" in ran.stderr
