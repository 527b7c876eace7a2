"""A request to a chat model as a list of turns, each a sequence of texts and images in order.

The judge's prompt (a system text, a user text, images after it) is one case of it
(:meth:`JudgePrompt.as_chat`); a multi-turn conversation with images before the question (an
in-context personalized model, a pairwise judge) is another. Backends send a :class:`ChatRequest`
as it is; the cache key is taken from its content (:func:`chat_key_content`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

ROLES = ("system", "user", "assistant")
Part = Union[str, Path]  # a str is text, a Path is an image file


@dataclass(frozen=True)
class ChatMessage:
    """One turn: a role and its parts, texts (``str``) and images (``Path``) in the order sent."""

    role: str
    parts: tuple[Part, ...]

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"unknown chat role {self.role!r}")
        parts = (self.parts,) if isinstance(self.parts, (str, os.PathLike)) else tuple(self.parts)
        parts = tuple(p if isinstance(p, str) else Path(p) for p in parts)
        if not parts:
            raise ValueError(f"an empty {self.role} turn")
        if self.role != "user" and any(isinstance(p, Path) for p in parts):
            raise ValueError(f"images are sent in user turns only, not in a {self.role} turn")
        object.__setattr__(self, "parts", parts)

    @property
    def images(self) -> tuple[Path, ...]:
        return tuple(p for p in self.parts if isinstance(p, Path))


@dataclass(frozen=True)
class ChatRequest:
    """A whole conversation sent as one request; the model answers its last (user) turn."""

    messages: tuple[ChatMessage, ...]

    def __post_init__(self):
        messages = tuple(self.messages)
        if not messages or messages[-1].role != "user":
            raise ValueError("a chat request ends with a user turn")
        object.__setattr__(self, "messages", messages)

    @property
    def images(self) -> tuple[Path, ...]:
        return tuple(p for m in self.messages for p in m.images)

    def as_chat(self) -> "ChatRequest":
        return self

    def with_suffix(self, suffix: str) -> "ChatRequest":
        """The same conversation with ``suffix`` appended to the last text of the last turn (a re-ask)."""
        last = self.messages[-1]
        at = max((i for i, p in enumerate(last.parts) if isinstance(p, str)), default=None)
        parts = list(last.parts)
        if at is None:
            parts.append(suffix.lstrip())
        else:
            parts[at] = parts[at] + suffix
        return ChatRequest(self.messages[:-1] + (ChatMessage(last.role, tuple(parts)),))


def openai_messages(request: ChatRequest, image_url, detail: str | None = None) -> list[dict]:
    """The chat-completions ``messages``: a turn that is one text is sent as a plain string (what the
    judge always sent), any other as content parts in order, each image as ``image_url(path)``
    (a ``data:image/jpeg;base64,...`` URL), with ``"detail": detail`` when one is given."""
    def image(p) -> dict:
        return {"url": image_url(p)} if detail is None else {"url": image_url(p), "detail": detail}

    out = []
    for message in request.messages:
        if len(message.parts) == 1 and isinstance(message.parts[0], str):
            content: object = message.parts[0]
        else:
            content = [{"type": "text", "text": p} if isinstance(p, str)
                       else {"type": "image_url", "image_url": image(p)} for p in message.parts]
        out.append({"role": message.role, "content": content})
    return out


def chat_key_content(request: ChatRequest, image_digest) -> list[dict]:
    """What of a request goes into its cache key: every turn's role, texts and image digests in order."""
    return [{"role": m.role, "parts": [{"text": p} if isinstance(p, str) else {"image": image_digest(p)}
                                       for p in m.parts]} for m in request.messages]
