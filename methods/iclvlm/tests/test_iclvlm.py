"""icl-vlm against a scripted OpenAI-compatible server on 127.0.0.1: the requests it makes (messages,
image order and count, sampling), the replies it records (served model, fingerprint, refusals), retries,
the reply cache, the key kept out of everything, and the command line end to end."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from _scripted import JudgeServer, scripted_reply
from unifybench.errors import BenchError
from unifybench.testing import cli, only_run_dir, read_results

from unifybench.scoring.answers import is_refusal
from unifybench_iclvlm.method import ENDPOINT_RECORD, ICLVLM, MANIFEST

KEY_ENV = "UNIFYBENCH_ICL_TEST_KEY"
FAKE_KEY = "sk-icl-UNIFYBENCH-5e4d3c2b1a-never-written"


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    with JudgeServer() as s:
        s.responder = scripted_reply
        s.served_model, s.system_fingerprint = "served/qwen2.5-vl-7b", "fp_abc123"
        yield s


def _run(server, out: Path, *extra: str, tasks: str = "rec,vqa,text_only,choice", method_args=()):
    args = ["run", "--method", "icl-vlm", "--bench", "mini", "--concepts", "dog", "--tasks", tasks, "--limit", "2",
            "--backbones", "tiny", "--out", str(out),
            "--method-arg", f"base_url={server.base_url}", "--method-arg", "model=test-vlm",
            "--method-arg", f"api_key_env={KEY_ENV}", "--method-arg", "backoff=0.01", *extra]
    for a in method_args:
        args += ["--method-arg", a]
    return cli(*args)


def _parts(body: dict) -> list[list[dict]]:
    return [m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
            for m in body["messages"]]


def test_the_command_line_runs_against_a_local_server_and_records_the_endpoint(server, tmp_path):
    ran = _run(server, tmp_path / "out", method_args=["k_images=2", "format=plain"])
    assert ran.returncode == 0, ran.stderr
    run_dir = only_run_dir(tmp_path / "out")
    results = read_results(run_dir)
    assert set(results["tasks"]) >= {"rec", "vqa", "text_only", "choice"}
    bodies = [r["body"] for r in server.requests]
    assert len(bodies) == 8 and all(r["path"] == "/v1/chat/completions" for r in server.requests)
    for body in bodies:
        assert body["model"] == "test-vlm" and body["temperature"] == 0 and body["seed"] == 0
        assert body["max_tokens"] == 64 and [m["role"] for m in body["messages"]] == ["user"]
        images = [p for p in _parts(body)[0] if p["type"] == "image_url"]
        text_only = "favourite toy" in json.dumps(body) or "sleep?" in json.dumps(body)
        assert len(images) == (2 if text_only else 3)  # the references, and the photo asked about
        for part in images:  # base64 JPEG data URLs, no larger than image_max_side
            url = part["image_url"]["url"]
            assert url.startswith("data:image/jpeg;base64,")
            assert max(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size) <= 1024
    # The two reference photos come first in every request, the same two, in manifest order.
    manifest = json.loads((run_dir / "state" / "dog" / MANIFEST).read_text())
    assert len(manifest["images"]) == 2 and manifest["description"].startswith("<dog>")
    firsts = {tuple(p["image_url"]["url"] for p in _parts(b)[0][:2]) for b in bodies}
    assert len(firsts) == 1
    # What answered is recorded; the refusal is counted and scored like any wrong reply.
    record = json.loads((run_dir / "state" / "dog" / ENDPOINT_RECORD).read_text())
    assert record["totals"]["served_models"] == {"served/qwen2.5-vl-7b": 8}
    assert record["totals"]["system_fingerprints"] == {"fp_abc123": 8}
    refused = [k for k, r in record["replies"].items() if r["refused"]]
    assert refused == ["vqa/dog/7"] and record["totals"]["refusals"] == 1
    assert results["tasks"]["vqa"]["refused"] == 1 and "refused" not in results["tasks"]["rec"]
    rows = [json.loads(line) for line in (run_dir / "scores.jsonl").read_text().splitlines()]
    assert [(r["key"], r["bleu"]) for r in rows if r.get("refused")] == [("vqa/dog/7", 0.0)]
    details = json.loads((run_dir / "run.json").read_text())["method_details"]
    assert details["template_version"] == "icl-vlm/1" and details["k_images"] == 2
    assert details["sampling"] == {"temperature": 0.0, "seed": 0, "max_tokens": 64}
    # A rerun asks nothing; the key is in no file.
    before = len(server.requests)
    assert _run(server, tmp_path / "out", method_args=["k_images=2", "format=plain"]).returncode == 0
    assert len(server.requests) == before
    for file in run_dir.rglob("*"):
        if file.is_file():
            assert FAKE_KEY.encode() not in file.read_bytes(), file


def test_a_deleted_prediction_is_asked_from_the_reply_cache_not_the_server(server, tmp_path):
    assert _run(server, tmp_path / "out", tasks="rec").returncode == 0
    run_dir = only_run_dir(tmp_path / "out")
    (run_dir / "predictions.jsonl").unlink()
    before = len(server.requests)
    assert _run(server, tmp_path / "out", tasks="rec").returncode == 0
    assert len(server.requests) == before and (run_dir / "predictions.jsonl").exists()


@pytest.mark.parametrize("fmt, k, roles, images", [
    ("mmpb", 1, ["user", "assistant", "user"], [1, 0, 1]),
    ("mmpb", 0, ["user", "assistant", "user"], [0, 0, 1]),
    ("rap", 3, ["user"], [4]),
    ("yochameleon", 1, ["user"], [2]),
])
def test_each_format_sends_its_turns_and_images(server, tmp_path, fmt, k, roles, images):
    extra = [f"format={fmt}", f"k_images={k}"] + (["use_description=false"] if fmt == "yochameleon" else [])
    ran = _run(server, tmp_path / "out", tasks="rec", method_args=extra)
    assert ran.returncode == 0, ran.stderr
    for r in server.requests:
        body = r["body"]
        assert [m["role"] for m in body["messages"]] == roles
        assert [sum(p["type"] == "image_url" for p in parts) for parts in _parts(body)] == images
    if fmt == "mmpb":
        assert server.requests[0]["body"]["messages"][1]["content"] == "I got it."


def test_transient_failures_are_retried_and_a_dead_endpoint_is_one_line(server, tmp_path):
    server.plan = ["429", "500", "drop"]
    assert _run(server, tmp_path / "a", tasks="rec").returncode == 0
    server.mode, server.responder = "fail", None
    ran = _run(server, tmp_path / "b", tasks="rec", method_args=["retries=1"])
    assert ran.returncode == 2
    line = ran.stderr.strip().splitlines()[-1]
    assert "HTTP 500" in line and "icl-vlm" in line and FAKE_KEY not in ran.stderr + ran.stdout


def test_nothing_leaves_loopback_and_bad_settings_are_refused_before_anything_is_made(server, tmp_path):
    out = tmp_path / "out"
    for args, text in ((["base_url=ftp://x"], "expected an http(s) URL"),
                       (["base_url=http://user:secret@127.0.0.1:1/v1"], "credentials in the URL"),
                       (["format=yochameleon"], "use_description=false"),
                       (["k_images=0", "use_description=false"], "holds nothing of the concept"),
                       (["k_images=99"], "<= 16")):
        ran = _run(server, out, tasks="rec", method_args=args)
        assert ran.returncode == 2 and text in ran.stderr, (args, ran.stderr)
        assert "secret" not in ran.stderr and not out.exists()
    ran = cli("run", "--method", "icl-vlm", "--bench", "mini", "--tasks", "rec", "--out", str(out))
    assert ran.returncode == 2 and "needs --method-arg base_url=... and model=..." in ran.stderr
    assert not out.exists() and not server.requests


@pytest.mark.parametrize("reply, refused", [
    ("I'm sorry, but I can't identify people.", True), ("I cannot help with that.", True),
    ("Sorry, I can't tell who this is.", True), ("As an AI, I do not recognise faces.", True),
    ("I\u2019m unable to identify real people.", True),
    ("Yes.", False), ("No.", False), ("A", False), ("I think it is A.", False), ("", False), (None, False),
    # hedges that go on to answer: answers, their BLEU kept
    ("I can't be sure, but it is red.", False), ("I cannot say for certain, but it looks like a corgi.", False),
    ("I can\u2019t tell for sure; it is a mug.", False), ("I can't tell who this is.", True),
])
def test_refusals_are_told_from_answers(reply, refused):
    assert is_refusal(reply) is refused


def test_a_changed_reference_photo_is_refused_on_reload(tmp_path):
    photo = tmp_path / "0.png"
    Image.new("RGB", (8, 8)).save(photo)

    class Concept:
        name, token, description = "bo", "<bo>", "<bo> is a corgi."
        cropped_train_images, train_images = [], [photo]

    method = ICLVLM({"base_url": "http://127.0.0.1:9/v1", "model": "m"})
    state = method.personalize(Concept, tmp_path / "state")
    assert [e["path"] for e in state["manifest"]["images"]] == [str(photo.resolve())]
    Image.new("RGB", (8, 8), (9, 9, 9)).save(photo)
    with pytest.raises(BenchError, match="changed since it was chosen"):
        method.load_state(Concept, tmp_path / "state")


def test_a_manifest_naming_other_photos_is_refused_on_reload(tmp_path):
    """The run directory may come from someone else: a manifest that names another file (with that
    file's own digest) would send it to the endpoint. The photos come from the concept."""
    import json

    from unifybench.records import file_digest

    photo, private = tmp_path / "0.png", tmp_path / "private.png"
    Image.new("RGB", (8, 8)).save(photo)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(private)

    class Concept:
        name, token, description = "bo", "<bo>", "<bo> is a corgi."
        cropped_train_images, train_images = [], [photo]

    method = ICLVLM({"base_url": "http://127.0.0.1:9/v1", "model": "m"})
    method.personalize(Concept, tmp_path / "state")
    manifest_path = tmp_path / "state" / "references.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["images"] = [{"path": str(private), "sha256": file_digest(private)}]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BenchError, match="not the one this concept"):
        method.load_state(Concept, tmp_path / "state")
