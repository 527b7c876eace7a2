"""A scripted vision-language model for the scripted OpenAI-compatible server of the harness's judge
tests (tests/_judge_server.py, made importable here and re-exported): replies from the request's
content alone."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[3] / "tests"
if str(_TESTS) not in sys.path:
    sys.path.append(str(_TESTS))

from _judge_server import JudgeServer  # noqa: E402

__all__ = ["JudgeServer", "REFUSE_MARKER", "scripted_reply"]

REFUSE_MARKER = "Which way is"  # a question the scripted model declines (as hosted models do on people)


def scripted_reply(body: dict) -> str:
    """Yes/No for recognition, a letter for options, a short phrase otherwise; a refusal to REFUSE_MARKER.
    Depends on the texts and image bytes of the request only."""
    texts, images = [], []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
            continue
        for part in content:
            if part.get("type") == "text":
                texts.append(part["text"])
            else:
                images.append(part["image_url"]["url"])
    text = "\n".join(texts)
    digest = hashlib.sha256("\n".join([text, *images]).encode()).digest()
    if REFUSE_MARKER in text:
        return "I'm sorry, but I can't help with identifying that."
    if "Options:" in text or "\nA. " in text or " or " in text.rsplit("\n", 1)[-1]:
        return "AB"[digest[0] % 2]
    if "Is " in text and ("in this image" in text or "this subject" in text):
        return ("Yes.", "No.")[digest[0] % 2]
    return f"It looks like number {digest[0] % 7}."
