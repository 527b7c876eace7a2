"""A ``predictions.jsonl`` line as a typed Prediction: read and written back byte for byte, refused
in one line naming file and line, compared as the line's content."""
from __future__ import annotations

import json

import pytest

from unifybench.errors import BenchError
from unifybench.prediction import Prediction
from unifybench.store import RunStore

# What the runner wrote when predictions were dicts (json.dumps of these literals).
TEXT = {"key": "rec/dog/0", "task": "rec", "concept": "dog", "index": 0, "answer": "Yes."}
IMAGES = {"key": "gen/dog/1", "task": "gen", "concept": "dog", "index": 1, "prompt": "A photo of <dog>.",
          "seed": 12, "images": ["images/dog/gen/001_A_photo_of_dog/0.png", "images/dog/gen/001_A_photo_of_dog/1.png"]}


def test_a_prediction_built_as_the_runner_does_writes_the_line_the_dict_did():
    text = Prediction("rec/dog/0", "rec", "dog", 0, answer="Yes.")
    images = Prediction("gen/dog/1", "gen", "dog", 1, prompt="A photo of <dog>.", seed=12,
                        images=tuple(IMAGES["images"]))
    assert text.to_json() == json.dumps(TEXT) and images.to_json() == json.dumps(IMAGES)
    assert images.images == tuple(IMAGES["images"]) and text.images is None and images.answer is None


@pytest.mark.parametrize("record", [
    TEXT, IMAGES,
    # another order, a field the harness does not read, an explicit null, unicode: all kept
    {"answer": "Ja \u00e9\u4e2d", "index": None, "concept": "dog", "note": {"by": "hand"}, "key": "k", "task": "vqa"},
    {**TEXT, "images": []},
])
def test_a_stored_line_round_trips_byte_for_byte(tmp_path, record):
    line = json.dumps(record)
    prediction = Prediction.from_json(line.encode(), tmp_path / "predictions.jsonl", "line 1", tmp_path)
    assert prediction.to_json() == line and prediction.to_dict() == record
    assert Prediction.from_json(prediction.to_json(), tmp_path, "line 1", tmp_path) == prediction


def test_equality_is_the_lines_content_as_with_dicts(tmp_path):
    def read(record):
        return Prediction.from_json(json.dumps(record), tmp_path, "line 1", tmp_path)

    reordered = dict(reversed(list(TEXT.items())))
    assert read(reordered) == read(TEXT) == Prediction("rec/dog/0", "rec", "dog", 0, answer="Yes.")
    assert hash(read(reordered)) == hash(read(TEXT))
    assert read({**TEXT, "answer": "No."}) != read(TEXT)
    assert read({**TEXT, "note": 1}) != read(TEXT)  # a field the harness does not read still counts
    assert read({**TEXT, "seed": None}) != read(TEXT)  # as {"seed": null} != {} did


@pytest.mark.parametrize("line, message", [
    ({"key": "rec/dog/0", "task": "rec", "concept": "dog", "index": 0}, "a prediction record has an 'answer' or 'images'"),
    ({**TEXT, "answer": 3}, "'answer' must be text, got int"),
    ({"key": ["rec/dog/0"], "answer": "Yes."}, "not a prediction record (a JSON object with a text 'key')"),
    (["not", "an", "object"], "not a prediction record (a JSON object with a text 'key')"),
    ({"key": "gen/dog/0", "images": ["/etc/passwd"]}, "image path '/etc/passwd' points outside the run directory"),
    ({"key": "gen/dog/0", "images": ["../../victim.png"]}, "points outside the run directory"),
    ({"key": "gen/dog/0", "images": "0.png"}, "'images' must be a list of file names"),
    ({**TEXT, "images": ["/etc/passwd"]}, "points outside the run directory"),  # beside an answer too
    ({**TEXT, "task": "dance"}, "not a prediction record (a known 'task' and a text 'concept' are required)"),
    ({**TEXT, "concept": 7}, "not a prediction record (a known 'task' and a text 'concept' are required)"),
])
def test_a_malformed_line_is_one_line_naming_file_and_line(tmp_path, line, message):
    path = tmp_path / "predictions.jsonl"
    with pytest.raises(BenchError) as raised:
        Prediction.from_json(json.dumps(line), path, "line 3", tmp_path)
    said = raised.value.one_line()
    assert said.startswith(f"{path} [line 3]: ") and message in said and "\n" not in said


def test_an_image_path_through_a_link_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "images").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(BenchError, match="passes through a symbolic link"):
        Prediction.from_json(json.dumps({**IMAGES, "images": ["images/0.png"]}), tmp_path, "line 1", tmp_path)


def test_a_corrupt_line_is_one_line(tmp_path):
    with pytest.raises(BenchError, match=r"\[line 2\]: corrupt line \(UnicodeDecodeError\)"):
        Prediction.from_json(b'{"key": "\xff"}\n', tmp_path / "p.jsonl", "line 2", tmp_path)


def test_the_store_appends_reloads_and_merges_the_same_bytes(tmp_path):
    lines = [json.dumps(TEXT), json.dumps({"index": 2, **{k: v for k, v in TEXT.items() if k != "index"},
                                           "key": "rec/dog/2", "extra": [1, 2]})]
    (tmp_path / "predictions.rank1.jsonl").write_text(lines[1] + "\n")
    store = RunStore(tmp_path, rank=0)
    store.append(Prediction("rec/dog/0", "rec", "dog", 0, answer="Yes."))
    store.append(Prediction("rec/dog/0", "rec", "dog", 0, answer="No."))  # a key already there: not written
    assert (tmp_path / "predictions.rank0.jsonl").read_text() == lines[0] + "\n"
    again = RunStore(tmp_path)
    assert set(again.predictions) == {"rec/dog/0", "rec/dog/2"}
    assert all(isinstance(p, Prediction) for p in again.predictions.values())
    again.merge_rank_files()
    assert sorted((tmp_path / "predictions.jsonl").read_text().splitlines()) == sorted(lines)
    assert RunStore(tmp_path).predictions == again.predictions


def test_two_different_lines_for_one_key_are_refused(tmp_path):
    (tmp_path / "predictions.jsonl").write_text(json.dumps(TEXT) + "\n" + json.dumps({**TEXT, "answer": "No."}) + "\n")
    with pytest.raises(BenchError, match=r"\[line 2\]: two different predictions for 'rec/dog/0'"):
        RunStore(tmp_path)
    (tmp_path / "predictions.jsonl").write_text(json.dumps(TEXT) + "\n" + json.dumps(dict(reversed(TEXT.items())))
                                                + "\n")
    assert list(RunStore(tmp_path).predictions) == ["rec/dog/0"]  # the same record in another order: kept once
