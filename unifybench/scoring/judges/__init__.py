"""LLM and VLM judges: open-answer scores (``judge_score``) and attribute-reasoning scores (``attr_score``).

- ``config``: :class:`JudgeConfig` and the ``--judge`` spec;
- ``parsing``: reading a score from a reply (:func:`parse_score`);
- ``cache``: every reply in SQLite, keyed by judge, template version, sampling and request content;
- ``chat``: :class:`ChatRequest`, a multi-turn request with texts and images in order (a judge
  prompt is one case of it: :meth:`JudgePrompt.as_chat`);
- ``backends``: ``openai:MODEL`` (any OpenAI-compatible endpoint, through the ``openai`` package)
  and ``hf:NAME_OR_PATH`` (a local transformers model; ``hf:tiny`` for tests);
- ``judge``: :class:`Judge`: cache, backend, one re-ask per unreadable reply, counts;
- ``scorer``: the judge as a scorer of a run (:func:`judge_rows`): rows into ``scores.jsonl``.

Every judge call is a fresh conversation (system + one user message, images as base64 JPEG), at
temperature 0 with a seed. A reply that cannot be read is asked again once; if that fails too the
judgment is unparsed: counted, never dropped silently and never scored 0. Judge settings are scoring
settings: recorded in ``run.json`` but not part of the run directory's hash, so switching the judge
re-scores the same predictions without re-running the method, and switching back replays the cache.
"""
from .backends import HFBackend, JudgePrompt, JudgeUnavailable, OpenAIBackend, jpeg_bytes
from .cache import JudgeCache, Reply
from .chat import ChatMessage, ChatRequest
from .config import (BACKENDS, CACHE_FILE, DEFAULT_BASE_URL, REFERENCE_ATTR_SAMPLES, JudgeConfig,
                     parse_judge_spec)
from .judge import Judge, JudgeStats, Judgment, reask, request_key
from .parsing import parse_score
from .scorer import attr_samples, judge_calls, judge_rows, samples_per_prompt

__all__ = ["BACKENDS", "CACHE_FILE", "ChatMessage", "ChatRequest", "DEFAULT_BASE_URL", "REFERENCE_ATTR_SAMPLES",
           "HFBackend", "Judge",
           "JudgeCache", "JudgeConfig", "JudgePrompt", "JudgeStats", "JudgeUnavailable", "Judgment",
           "OpenAIBackend", "Reply", "attr_samples", "jpeg_bytes", "judge_calls", "judge_rows", "parse_judge_spec",
           "parse_score", "reask", "request_key", "samples_per_prompt"]
