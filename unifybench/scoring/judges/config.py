"""What picks and drives a judge: :class:`JudgeConfig` and the ``--judge`` spec (the key is never part of it)."""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ...errors import BenchError
from ...seeding import MAX_SEED

BACKENDS = ("openai", "hf")
DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Sent as the key to an endpoint of the user's own that needs none (vLLM's documented convention):
# the openai client refuses to start without one, and such servers ignore it.
NO_KEY_PLACEHOLDER = "EMPTY"
REFERENCE_ATTR_SAMPLES = 4  # images judged per attribute prompt in the reference evaluation
CACHE_FILE = "judge_cache.sqlite"
JUDGE_MODES = ("deterministic", "reference")  # dreambench_plus.MODES (tested equal)


@dataclass
class JudgeConfig:
    """Everything that picks and drives a judge (the key itself is never part of it)."""

    spec: str  # "openai:MODEL" or "hf:NAME_OR_PATH"
    base_url: str | None = None  # openai: the endpoint root, e.g. https://api.deepseek.com/v1
    api_key_env: str = "OPENAI_API_KEY"  # openai: the environment variable holding the key
    concurrency: int = 8  # openai: requests in flight at once
    timeout: float = 60.0  # openai: seconds a whole request may take before a retry
    retries: int = 5  # openai: retries per call after the first try
    backoff: float = 1.0  # openai: first backoff in seconds, doubled per retry, with jitter
    max_tokens: int = 64  # longest reply asked for
    samples: int = 4  # attr_gen: images judged per prompt (--protocol reference: always 4)
    seed: int = 0  # the API's sampling seed and the seed of the attr_gen image sampling
    cache: str | None = None  # SQLite file; None: <run_dir>/judge_cache.sqlite
    # DreamBench++'s judge (dreambench_plus.MODES): "deterministic" (temperature 0, one run) or
    # "reference" (theirs: temperature 1, three runs, mean and std over runs).
    mode: str = "deterministic"

    @property
    def backend(self) -> str:
        return parse_judge_spec(self.spec)[0]

    @property
    def model(self) -> str:
        return parse_judge_spec(self.spec)[1]

    def api_key(self) -> str:
        """The key from the environment at call time ('' when unset); never stored anywhere."""
        return os.environ.get(self.api_key_env, "").strip()

    def validate(self) -> None:
        if not isinstance(self.spec, str):
            raise BenchError(f"expected a judge spec such as openai:MODEL, got {self.spec!r}", where="--judge")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise BenchError(f"expected an integer >= 0, <= {MAX_SEED}, got {self.seed!r}", where="--judge-seed")
        backend, _ = parse_judge_spec(self.spec)
        for name, value, low, high in (("timeout", self.timeout, 0, 3600), ("backoff", self.backoff, 0, 600),
                                       ("retries", self.retries, 0, 100), ("concurrency", self.concurrency, 1, 256),
                                       ("max-tokens", self.max_tokens, 1, 32768), ("samples", self.samples, 1, 64)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not low <= value <= high or (name == "timeout" and value == 0):
                bound = f"> 0, <= {high}" if name == "timeout" else f">= {low}, <= {high}"
                raise BenchError(f"expected a number {bound}, got {value!r}", where=f"--judge-{name}")
        if self.mode not in JUDGE_MODES:
            raise BenchError(f"unknown judge mode {self.mode!r}; known: {', '.join(JUDGE_MODES)}", where="--judge-mode")
        if self.cache is not None:
            cache = Path(self.cache)
            for parent in cache.parents:
                if parent.exists():
                    if not parent.is_dir():
                        raise BenchError(f"lies under a file ({parent})", cache, "--judge-cache")
                    break
            if cache.is_dir():
                raise BenchError("is a folder; give a file name", cache, "--judge-cache")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env or ""):
            raise BenchError(f"not an environment variable name: {self.api_key_env!r}", where="--judge-api-key-env")
        if backend == "openai":
            url = urlsplit(self.base_url or DEFAULT_BASE_URL)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise BenchError(f"expected an http(s) URL, got {redact_url(self.base_url)!r}", where="--judge-base-url")
            if url.username or url.password:  # a key in the URL would be recorded everywhere the URL is
                raise BenchError(f"credentials in the URL ({redact_url(self.base_url)}): give the key through "
                                 f"${self.api_key_env} instead", where="--judge-base-url")
            if self.base_url is None and not self.api_key():
                raise BenchError(f"${self.api_key_env} is not set: export your key, or name another variable "
                                 f"with --judge-api-key-env, or give --judge-base-url of a server that needs none",
                                 where=f"--judge {self.spec}")
        elif self.base_url:
            raise BenchError("only the openai backend takes a base URL", where="--judge-base-url")
        if backend == "hf":  # a model that cannot load is refused before any prediction is made
            from ...kit.models import check_available

            try:
                check_available(self.model, builtins=("tiny",), what="judge model")
            except BenchError as exc:
                raise BenchError(exc.message, exc.path, f"--judge {self.spec}") from None


def redact_url(url: str | None) -> str | None:
    """``url`` with any ``user:password@`` replaced by ``***@``."""
    if not url:
        return url
    parts = urlsplit(url)
    if not (parts.username or parts.password):
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def parse_judge_spec(text: str) -> tuple[str, str]:
    """``"openai:gpt-4o"`` -> ``("openai", "gpt-4o")``; anything else is a BenchError."""
    backend, sep, model = (text or "").partition(":")
    if not sep or backend not in BACKENDS or not model.strip():
        raise BenchError(f"unknown judge {text!r}; expected openai:MODEL or hf:NAME_OR_PATH", where="--judge")
    return backend, model.strip()
