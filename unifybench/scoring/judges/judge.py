"""A judge: prompts through the cache and one backend, each unreadable reply asked once more, all counted."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ...errors import BenchError
from .. import judge_prompts
from .backends import IMAGE_MAX_SIDE, JPEG_QUALITY, HFBackend, JudgePrompt, JudgeUnavailable, OpenAIBackend
from .cache import JudgeCache, Reply
from .chat import ChatRequest, chat_key_content
from .config import JudgeConfig
from .parsing import parse_score


@dataclass
class Judgment:
    score: float | None  # None: unparsed after the re-ask
    reply: str  # the reply the score was read from (the re-ask's when there was one)
    reasked: bool = False
    first_reply: str | None = None  # the unreadable first reply, when re-asked

    @property
    def parsed(self) -> bool:
        return self.score is not None


@dataclass
class JudgeStats:
    calls: int = 0  # calls answered by the backend in this process
    cache_hits: int = 0
    retries: int = 0
    reasks: int = 0
    judgments: int = 0
    unparsed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _image_digest(path: Path) -> str:
    from ...records import file_digest

    return file_digest(Path(path))


def request_key(request: JudgePrompt | ChatRequest, identity: str, template: str, sampling: dict,
                image_max_side: int) -> str:
    """The cache key of a request: who answers (``identity``), the template version, the sampling,
    the request's texts and image bytes in order, and how images are encoded. A :class:`JudgePrompt`
    keeps the key it always had, so existing judge caches still answer."""
    content = {"judge": identity, "template": template, "sampling": sampling,
               # rgb2: transparency laid on white and 16-bit rescaled first (another JPEG than before)
               "image_encoding": f"jpeg q{JPEG_QUALITY} max{image_max_side} rgb2"}
    if isinstance(request, JudgePrompt):
        content.update(system=request.system, user=request.user,
                       images=[_image_digest(p) for p in request.images])
    else:
        content["messages"] = chat_key_content(request, _image_digest)
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()


def reask(request: JudgePrompt | ChatRequest, suffix: str) -> JudgePrompt | ChatRequest:
    """The request asked again with ``suffix`` after its last text."""
    if isinstance(request, JudgePrompt):
        return JudgePrompt(request.system, request.user + suffix, request.images)
    return request.with_suffix(suffix)


class Judge:
    """Judges prompts through the cache and one backend, re-asking once, counting everything.

    ``backend``, ``template`` and ``what``: another user of the same transport (the ``icl-vlm``
    method) passes its own configured backend, its template version (part of every cache key) and
    the word its error lines use for a call; it asks with :meth:`ask` and parses replies itself."""

    def __init__(self, config: JudgeConfig, cache_path: Path, *, device: str = "cpu", batch_size: int = 8,
                 backend: OpenAIBackend | HFBackend | None = None, template: str = judge_prompts.TEMPLATE_VERSION,
                 what: str = "judge"):
        if backend is None:
            config.validate()
        self.config = config
        self.backend = backend or (OpenAIBackend(config) if config.backend == "openai"
                                   else HFBackend(config, device=device, batch_size=batch_size))
        self.template = template
        self.what = what
        self.cache = JudgeCache(cache_path)
        self.stats = JudgeStats()

    @property
    def name(self) -> str:
        return self.config.spec

    def call_key(self, prompt: JudgePrompt | ChatRequest) -> str:
        return request_key(prompt, self.backend.identity, self.template, self.backend.sampling(),
                           getattr(self.backend, "image_max_side", IMAGE_MAX_SIDE))

    def ask(self, prompts: list[JudgePrompt | ChatRequest], progress=None) -> list[Reply]:
        """A reply per prompt: from the cache, or from the backend (cached as each arrives)."""
        keys = [self.call_key(p) for p in prompts]
        replies: list[Reply | None] = [self.cache.get(k) for k in keys]
        self.stats.cache_hits += sum(r is not None for r in replies)
        todo = [i for i, r in enumerate(replies) if r is None]
        if progress:
            progress(len(prompts) - len(todo))
        try:
            for j, reply in self.backend.complete([prompts[i] for i in todo]):
                i = todo[j]
                self.cache.put(keys[i], self.backend.identity, reply, self.template)
                replies[i] = reply
                self.stats.calls += 1
                self.stats.retries += reply.retries
                self.stats.prompt_tokens += reply.prompt_tokens
                self.stats.completion_tokens += reply.completion_tokens
                if progress:
                    progress(1)
        except JudgeUnavailable as exc:
            done = self.cache.count()
            raise BenchError(f"{exc}; the {done} finished {self.what} calls are kept in the cache and a rerun "
                             f"resumes from them", self.cache.path, f"{self.what} {self.name}") from None
        return replies  # type: ignore[return-value]

    def judge(self, prompts: list[JudgePrompt | ChatRequest], progress=None) -> list[Judgment]:
        first = self.ask(prompts, progress)
        judgments = [Judgment(parse_score(r.text), r.text) for r in first]
        again = [i for i, j in enumerate(judgments) if not j.parsed]
        if again:
            reasks = [reask(prompts[i], judge_prompts.REASK_SUFFIX) for i in again]
            self.stats.reasks += len(reasks)
            for i, reply in zip(again, self.ask(reasks)):
                judgments[i] = Judgment(parse_score(reply.text), reply.text, reasked=True,
                                        first_reply=judgments[i].reply)
        self.stats.judgments += len(judgments)
        self.stats.unparsed += sum(not j.parsed for j in judgments)
        return judgments

    def close(self) -> None:
        self.backend.close()
        self.cache.close()
