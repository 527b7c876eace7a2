"""The judge's transport generalized: a request is a list of turns with texts and images in order.
The judge's own prompts keep their wire format and their cache keys."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import sqlite3

import pytest
from PIL import Image

from _judge_server import JudgeServer
from unifybench.scoring import judge_prompts
from unifybench.scoring.judges import ChatMessage, ChatRequest, Judge, JudgeCache, JudgeConfig, JudgePrompt, Reply


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv("UNIFYBENCH_TEST_KEY", "sk-test-chat")


def _config(server: JudgeServer, **kw) -> JudgeConfig:
    base = dict(spec="openai:test-judge", base_url=server.base_url, api_key_env="UNIFYBENCH_TEST_KEY",
                concurrency=1, timeout=2.0, retries=2, backoff=0.01)
    base.update(kw)
    return JudgeConfig(**base)


def _images(tmp_path, n: int) -> list:
    paths = []
    for i in range(n):
        path = tmp_path / f"im{i}.png"
        Image.new("RGB", (10 + i, 8), (40 * i, 0, 0)).save(path)
        paths.append(path)
    return paths


def _decoded_sizes(parts: list[dict]) -> list:
    return [Image.open(io.BytesIO(base64.b64decode(p["image_url"]["url"].split(",", 1)[1]))).size
            for p in parts if p["type"] == "image_url"]


def test_a_multi_turn_request_is_sent_turn_by_turn_with_images_in_place(tmp_path, key_env):
    a, b, c = _images(tmp_path, 3)
    chat = ChatRequest((ChatMessage("system", ("Be brief.",)),
                        ChatMessage("user", (a, b, "These are <bo>.")),
                        ChatMessage("assistant", ("I got it.",)),
                        ChatMessage("user", ("Is <bo> here?", c, "Answer yes or no."))))
    with JudgeServer() as server:
        judge = Judge(_config(server), tmp_path / "c.sqlite")
        judge.judge([chat])
        judge.close()
    messages = server.requests[0]["body"]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"] == "Be brief." and messages[2]["content"] == "I got it."
    assert [p["type"] for p in messages[1]["content"]] == ["image_url", "image_url", "text"]
    assert [p["type"] for p in messages[3]["content"]] == ["text", "image_url", "text"]
    assert _decoded_sizes(messages[1]["content"]) == [(10, 8), (11, 8)] and _decoded_sizes(messages[3]["content"]) == [(12, 8)]
    assert all(p["image_url"]["url"].startswith("data:image/jpeg;base64,")
               for m in (messages[1], messages[3]) for p in m["content"] if p["type"] == "image_url")


def test_a_judge_prompt_is_sent_and_keyed_as_before(tmp_path, key_env):
    (image,) = _images(tmp_path, 1)
    prompt = JudgePrompt("sys text", "user text", (image,))
    with JudgeServer() as server:
        judge = Judge(_config(server), tmp_path / "c.sqlite")
        judge.judge([prompt, JudgePrompt("sys", "plain")])
        key = judge.call_key(prompt)
        judge.close()
    first, second = (r["body"]["messages"] for r in server.requests)
    assert first[0] == {"role": "system", "content": "sys text"}
    assert [p["type"] for p in first[1]["content"]] == ["text", "image_url"] and first[1]["content"][0]["text"] == "user text"
    assert second == [{"role": "system", "content": "sys"}, {"role": "user", "content": "plain"}]
    # The key as the judge computed it before requests became chats (copied from that code), so caches still answer.
    from unifybench.records import file_digest
    before = {"judge": f"openai:test-judge@{server.base_url}", "template": judge_prompts.TEMPLATE_VERSION,
              "sampling": {"temperature": 0, "seed": 0, "max_tokens": 64}, "system": "sys text", "user": "user text",
              "images": [file_digest(image)], "image_encoding": "jpeg q90 max1024 rgb2"}
    assert key == hashlib.sha256(json.dumps(before, sort_keys=True).encode("utf-8")).hexdigest()


def test_chat_keys_follow_roles_order_and_image_bytes(tmp_path, key_env):
    a, b = _images(tmp_path, 2)
    with JudgeServer() as server:
        judge = Judge(_config(server), tmp_path / "c.sqlite")
        base = ChatRequest((ChatMessage("user", (a, b, "q")),))
        keys = {judge.call_key(base),
                judge.call_key(ChatRequest((ChatMessage("user", (b, a, "q")),))),
                judge.call_key(ChatRequest((ChatMessage("user", ("q", a, b)),))),
                judge.call_key(ChatRequest((ChatMessage("system", ("q",)), ChatMessage("user", (a, b, "q"))))),
                judge.call_key(JudgePrompt("", "q", (a, b)))}
        assert len(keys) == 5
        assert judge.call_key(ChatRequest((ChatMessage("user", (a, b, "q")),))) == judge.call_key(base)
        Image.new("RGB", (3, 3)).save(a)
        assert judge.call_key(base) not in keys
        judge.close()


def test_an_unreadable_reply_to_a_chat_is_asked_again_with_the_suffix_on_its_last_text(tmp_path, key_env):
    (image,) = _images(tmp_path, 1)
    chat = ChatRequest((ChatMessage("user", ("first",)), ChatMessage("assistant", ("ok",)),
                        ChatMessage("user", ("second", image))))
    with JudgeServer("garbage-then-ok") as server:
        judge = Judge(_config(server), tmp_path / "c.sqlite")
        (out,) = judge.judge([chat])
        judge.close()
    assert out.parsed and out.reasked and len(server.requests) == 2
    again = server.requests[1]["body"]["messages"]
    assert again[0]["content"] == "first"
    assert again[2]["content"][0]["text"] == "second" + judge_prompts.REASK_SUFFIX
    assert again[2]["content"][1]["type"] == "image_url"


def test_served_model_and_fingerprint_are_kept_with_the_cached_reply(tmp_path, key_env):
    with JudgeServer() as server:
        server.served_model, server.system_fingerprint = "served-model-v2", "fp_123"
        judge = Judge(_config(server), tmp_path / "c.sqlite")
        judge.judge([JudgePrompt("s", "u")])
        key = judge.call_key(JudgePrompt("s", "u"))
        judge.close()
    cached = JudgeCache(tmp_path / "c.sqlite").get(key)
    assert (cached.model, cached.system_fingerprint) == ("served-model-v2", "fp_123")


def test_a_cache_written_before_the_served_column_still_answers(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE calls (key TEXT PRIMARY KEY, judge TEXT NOT NULL, template TEXT NOT NULL, "
               "reply TEXT NOT NULL, prompt_tokens INTEGER, completion_tokens INTEGER, created TEXT)")
    db.execute("INSERT INTO calls VALUES ('k', 'j', 't', 'Score: 1', 5, 2, 'then')")
    db.commit()
    db.close()
    cache = JudgeCache(path)
    assert cache.get("k") == Reply("Score: 1", 5, 2)
    cache.put("k2", "j", Reply("x", model="m"))
    assert cache.get("k2").model == "m"
    cache.close()


@pytest.mark.parametrize("bad", [
    lambda p: ChatMessage("tool", ("x",)), lambda p: ChatMessage("assistant", (p,)), lambda p: ChatMessage("user", ()),
    lambda p: ChatRequest(()), lambda p: ChatRequest((ChatMessage("user", ("q",)), ChatMessage("assistant", ("a",)))),
])
def test_malformed_chats_are_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        bad(tmp_path / "x.png")


def test_the_local_hf_backend_takes_a_multi_turn_chat_with_images_in_place(tmp_path):
    a, b = _images(tmp_path, 2)
    chat = ChatRequest((ChatMessage("user", (a, "This is <bo>.")), ChatMessage("assistant", ("I got it.",)),
                        ChatMessage("user", ("Is <bo> here?", b))))
    judge = Judge(JudgeConfig(spec="hf:tiny", max_tokens=2), tmp_path / "c.sqlite")
    judge.backend._load()
    text = judge.backend._texts([chat])[0]
    assert text.index("<image>") < text.index("This is <bo>.") < text.index("I got it.") \
        < text.index("Is <bo> here?") < text.rindex("<image>") and text.count("<image>") == 2
    (reply,) = judge.ask([chat])
    # the tiny model says only "0" or "1", once per new token (max_tokens=2)
    assert set(reply.text.split()) <= {"0", "1"} and len(reply.text.split()) == 2 and judge.stats.calls == 1
    judge.close()
