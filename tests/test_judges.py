"""The judge client over real sockets: retries, cache, parsing, concurrency, failures."""
from __future__ import annotations

import base64
import io
import sqlite3

import pytest
from PIL import Image

from _judge_server import JudgeServer
from unifybench.errors import BenchError
from unifybench.scoring import judge_prompts
from unifybench.scoring.judges import (Judge, JudgeConfig, JudgePrompt, attr_samples, judge_calls,
                                       parse_judge_spec, parse_score)

FAKE_KEY = "sk-test-UNIFYBENCH-0123456789-never-written"


@pytest.mark.parametrize("reply, expected", [
    ("Score: 1", 1.0), ("1.0", 1.0), ("**0.5**", 0.5), ("score: 1/1", 1.0), ("0", 0.0),
    ("Score: 0.5 out of 1", 0.5), ("SCORE=0", 0.0), ("The answer matches.\nScore: 1", 1.0),
    ("Score: 1.\nIt is right.", 1.0), (" 0.5 ", 0.5), ("1/2", 0.5), ("Score: .5", 0.5),
    ("I think 1 or 0.5", None), ("Score: 7", None), ("", None), (None, None), ("yes", None),
    ("The answer is partly right", None), ("Score: 0.7", None),
    # A sign or an exponent is part of the number: out of range or malformed, never its digits.
    ("Score: -1", None), ("Score: +1", None), ("Score: 1e308", None), ("Score: 0.5e1", None), ("1e0", None),
    ("Score: 10", None), ("-1", None), ("0.5E-0", None), ("Score - 1", 1.0), ("Score: 1.", 1.0),
])
def test_parse_score_is_tolerant_but_never_guesses(reply, expected):
    assert parse_score(reply) == expected


def test_judge_spec_parsing():
    assert parse_judge_spec("openai:gpt-4o") == ("openai", "gpt-4o")
    assert parse_judge_spec("hf:org/model-7b") == ("hf", "org/model-7b")
    for bad in ("gpt-4o", "anthropic:claude", "openai:", ""):
        with pytest.raises(BenchError, match="unknown judge"):
            parse_judge_spec(bad)


def _config(server: JudgeServer, tmp_path, **kw) -> JudgeConfig:
    base = dict(spec="openai:test-judge", base_url=server.base_url, api_key_env="UNIFYBENCH_TEST_KEY",
                concurrency=4, timeout=2.0, retries=3, backoff=0.01)
    base.update(kw)
    return JudgeConfig(**base)


def _prompts(n: int, tag: str = "q") -> list[JudgePrompt]:
    return [JudgePrompt(*judge_prompts.qa_messages(f"What colour is <bo>'s hat? ({tag}{i})", "Red.", "It is red."))
            for i in range(n)]


def _header(request: dict, name: str) -> str | None:
    return next((v for k, v in request["headers"].items() if k.lower() == name.lower()), None)


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv("UNIFYBENCH_TEST_KEY", FAKE_KEY)


def test_requests_are_fresh_deterministic_conversations_with_the_key(tmp_path, key_env):
    image = tmp_path / "img.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    with JudgeServer() as server:
        judge = Judge(_config(server, tmp_path, concurrency=1), tmp_path / "cache.sqlite")  # requests in order
        prompt = JudgePrompt(*judge_prompts.attr_messages("<bo>", "<bo> is a corgi.", ["<bo> has a red hat."],
                                                          "A photo of <bo> wearing its hat."), (image,))
        out = judge.judge(_prompts(2) + [prompt])
        judge.close()
    assert [j.score for j in out] == [float(server.score_for(r["body"])) for r in server.requests]
    for req in server.requests:
        body = req["body"]
        assert req["path"] == "/v1/chat/completions"
        assert _header(req, "Authorization") == f"Bearer {FAKE_KEY}"
        assert body["temperature"] == 0 and body["seed"] == 0 and body["model"] == "test-judge"
        assert [m["role"] for m in body["messages"]] == ["system", "user"]  # no history
    image_msg = [r for r in server.requests if isinstance(r["body"]["messages"][1]["content"], list)][0]
    parts = image_msg["body"]["messages"][1]["content"]
    url = [p for p in parts if p["type"] == "image_url"][0]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.format == "JPEG" and decoded.size == (40, 30)
    assert judge.stats.calls == 3 and judge.stats.prompt_tokens == 33 and judge.stats.completion_tokens == 9
    # The key is in no cache row.
    assert FAKE_KEY.encode() not in (tmp_path / "cache.sqlite").read_bytes()


def test_retries_on_429_500_dropped_connection_timeout_and_bad_json(tmp_path, key_env):
    with JudgeServer() as server:
        server.plan = ["429", "500", "drop", "slow", "badjson"]
        judge = Judge(_config(server, tmp_path, concurrency=1, timeout=0.3, retries=5), tmp_path / "c.sqlite")
        out = judge.judge(_prompts(1))
        judge.close()
    assert out[0].parsed
    assert judge.stats.retries == 5 and judge.stats.calls == 1
    assert len(server.requests) == 6


def test_cache_prevents_repeat_calls_and_includes_image_bytes(tmp_path, key_env):
    image = tmp_path / "img.png"
    Image.new("RGB", (16, 16), (0, 0, 255)).save(image)
    prompts = _prompts(3) + [JudgePrompt("sys", "look", (image,))]
    with JudgeServer() as server:
        first = Judge(_config(server, tmp_path), tmp_path / "c.sqlite")
        a = first.judge(prompts)
        first.close()
        n = len(server.requests)
        second = Judge(_config(server, tmp_path), tmp_path / "c.sqlite")
        b = second.judge(prompts)
        assert len(server.requests) == n and second.stats.calls == 0 and second.stats.cache_hits == 4
        assert [j.score for j in a] == [j.score for j in b]
        # Same path, new pixels: a new call.
        Image.new("RGB", (16, 16), (255, 0, 0)).save(image)
        second.judge(prompts)
        assert len(server.requests) == n + 1
        # Another judge model: its own calls.
        second.close()
        other = Judge(_config(server, tmp_path, spec="openai:other-judge"), tmp_path / "c.sqlite")
        other.judge(prompts[:1])
        other.close()
        assert len(server.requests) == n + 2


def test_chatty_replies_parse_and_garbage_is_reasked_once_then_counted(tmp_path, key_env):
    with JudgeServer("chatty") as server:
        judge = Judge(_config(server, tmp_path), tmp_path / "a.sqlite")
        out = judge.judge(_prompts(3))
        judge.close()
        assert all(j.parsed for j in out) and judge.stats.reasks == 0

        server.mode = "garbage-then-ok"
        judge = Judge(_config(server, tmp_path), tmp_path / "b.sqlite")
        out = judge.judge(_prompts(3))
        judge.close()
        assert all(j.parsed and j.reasked for j in out)
        assert judge.stats.reasks == 3 and judge.stats.calls == 6 and judge.stats.unparsed == 0

        server.mode = "garbage"
        before = len(server.requests)
        judge = Judge(_config(server, tmp_path), tmp_path / "c.sqlite")
        out = judge.judge(_prompts(3))
        judge.close()
        assert [j.score for j in out] == [None, None, None]
        assert judge.stats.unparsed == 3 and judge.stats.reasks == 3
        assert len(server.requests) - before == 6  # asked once, re-asked once, no more
        assert all(judge_prompts.REASK_SUFFIX.strip() in r["body"]["messages"][1]["content"]
                   for r in server.requests[-3:])


def test_concurrency_is_bounded(tmp_path, key_env):
    with JudgeServer() as server:
        server.delay_s = 0.05
        judge = Judge(_config(server, tmp_path, concurrency=3), tmp_path / "c.sqlite")
        judge.judge(_prompts(12))
        judge.close()
    assert 1 < server.max_inflight <= 3


def test_a_judge_that_keeps_failing_is_a_one_line_error_and_loses_no_finished_work(tmp_path, key_env):
    prompts = _prompts(5)
    prompts[4] = JudgePrompt("sys", "FAIL-ME please")
    with JudgeServer("fail-on") as server:
        judge = Judge(_config(server, tmp_path, concurrency=1, retries=2), tmp_path / "c.sqlite")
        with pytest.raises(BenchError) as err:
            judge.judge(prompts)
        judge.close()
        message = err.value.one_line()
        assert "\n" not in message and "HTTP 500" in message and "3 tries" in message and FAKE_KEY not in message
        done = sqlite3.connect(tmp_path / "c.sqlite").execute("SELECT COUNT(*) FROM calls").fetchone()[0]
        assert done == 4
        server.mode = "normal"
        before = len(server.requests)
        judge = Judge(_config(server, tmp_path), tmp_path / "c.sqlite")
        out = judge.judge(prompts)
        judge.close()
        assert all(j.parsed for j in out) and len(server.requests) - before == 1


def test_client_errors_are_not_retried(tmp_path, monkeypatch):
    with JudgeServer() as server:
        cfg = _config(server, tmp_path, base_url=server.base_url.replace("/v1", "/nowhere"))
        judge = Judge(cfg, tmp_path / "c.sqlite")
        with pytest.raises(BenchError, match="HTTP 404"):
            judge.judge(_prompts(1))
        judge.close()
        assert len(server.requests) == 1
        # No key set: the placeholder local servers ignore (the client needs one), never a real key.
        assert _header(server.requests[0], "Authorization") == "Bearer EMPTY"


def test_attr_sampling_is_seeded_and_counts():
    images = [f"{i}.png" for i in range(10)]
    a = attr_samples(images, 4, 0, "attr_gen/bo/1")
    assert a == attr_samples(images, 4, 0, "attr_gen/bo/1") and len(a) == 4
    assert attr_samples(images, 4, 1, "attr_gen/bo/1") != a or attr_samples(images, 4, 2, "attr_gen/bo/1") != a
    assert attr_samples(images[:3], 4, 0, "k") == images[:3]
    assert judge_calls({"vqa": 18, "text_only": 18}, 18) == {"open_questions": 36, "attr_images": 72, "total": 108}


def test_attr_gen_samples_k_images_and_reference_protocol_samples_four(tmp_path, key_env):
    from unifybench.data import load_benchmark
    from unifybench.metrics import ScoringContext, aggregate
    from unifybench.scoring.judges import judge_rows
    from unifybench.prediction import Prediction
    from unifybench.store import RunStore
    from unifybench.tasks import build_requests

    bench = load_benchmark("mini")
    work = build_requests(bench, ["attr_gen"], ["dog"], seed=0, images_per_prompt=6, limit=2)
    store = RunStore(tmp_path / "run")
    for w in work["dog"]:
        images = [Image.new("RGB", (8, 8), (i * 40, w.request.index * 90, 0)) for i in range(6)]
        paths = store.save_images(store.image_folder("dog", "attr_gen", w.request.index, w.request.prompt), images)
        store.append(Prediction(w.request.key, "attr_gen", "dog", w.request.index, images=paths))
    with JudgeServer() as server:
        for protocol, expected in (("default", 2), ("reference", 4)):
            cfg = _config(server, tmp_path, samples=2, seed=7, cache=str(tmp_path / f"{protocol}.sqlite"))
            before = len(server.requests)
            rows, info = judge_rows(bench, work, store, config=cfg, protocol=protocol, tasks=["attr_gen"])
            assert len(server.requests) - before == 2 * expected
            assert info["attr_samples_per_prompt"] == expected and info["attr_sample_seed"] == 7
            assert len(rows) == 2 * expected and all(r["scorer"] == "judge" and r["image"] for r in rows)
            # One row per judged image; the chosen images are the seeded sample of each prompt.
            for w in work["dog"]:
                chosen = [r["image"] for r in rows if r["key"] == w.request.key]
                assert chosen == attr_samples(store.predictions[w.request.key].images, expected, 7, w.request.key)
            overall, per_concept = aggregate(rows, ScoringContext(protocol=protocol, requested={"dog": ["attr_gen"]},
                                                                  judge=True), ["attr_gen"])
            assert overall["attr_gen"]["attr_score"] == per_concept["dog"]["attr_gen"]["attr_score"]
            # Every image the judge saw went through the prompt's attribute instructions.
            assert all("Facts about it:" in r["body"]["messages"][1]["content"][0]["text"]
                       for r in server.requests[before:])
