"""What picks and drives a judge: :class:`JudgeConfig` and the ``--judge`` spec (the key is never part of it)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ...errors import BenchError
from ...options import check_declared, option
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

    # Each field's flag, help and range declared once (options.py): the --judge-* options are generated
    # from them and validate() checks them, whichever way the config was made.
    spec: str = option(flag="--judge", type=str, metavar="openai:MODEL|hf:NAME_OR_PATH",
                       help="the judge model (default: none, and judged metrics read 'not scored')")
    base_url: str | None = option(None, flag="--judge-base-url", optional=True,
                                  help=f"OpenAI-compatible endpoint (default: {DEFAULT_BASE_URL})")
    api_key_env: str = option("OPENAI_API_KEY", flag="--judge-api-key-env", type=str,
                              help="environment variable holding the key")
    concurrency: int = option(8, flag="--judge-concurrency", type=int, low=1, high=256, noun="a number",
                              help="requests in flight at once")
    timeout: float = option(60.0, flag="--judge-timeout", type=float, low=0, high=3600, above_low=True,
                            help="seconds a request may take before a retry")
    retries: int = option(5, flag="--judge-retries", type=int, low=0, high=100, noun="a number",
                          help="retries per call (timeouts, 429, 5xx)")
    backoff: float = option(1.0, flag="--judge-backoff", type=float, low=0, high=600,
                            help="first retry delay in seconds, doubled (with jitter)")
    max_tokens: int = option(64, flag="--judge-max-tokens", type=int, low=1, high=32768, noun="a number",
                             help="longest judge reply asked for")
    samples: int = option(4, flag="--judge-samples", type=int, low=1, high=64, noun="a number",
                          help="attr_gen images judged per prompt (--protocol reference: always 4)")
    # The API's sampling seed and the seed of the attr_gen image sampling.
    seed: int = option(0, flag="--judge-seed", type=int, low=0, high=MAX_SEED, default_text="--seed",
                       help="the judge's seed")
    cache: str | None = option(None, flag="--judge-cache", optional=True,
                               help=f"SQLite file of judge replies (default: {CACHE_FILE} in the run directory)")
    mode: str = option("deterministic", flag="--judge-mode", choices=JUDGE_MODES,
                       help="DreamBench++ benches: deterministic (temperature 0, fixed seed, one run, cached) or "
                            "reference (theirs: temperature 1, three runs, mean and std; judge gpt-4o-2024-05-13)")

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
        check_declared(self, ("seed",))
        backend, _ = parse_judge_spec(self.spec)
        check_declared(self, ("timeout", "backoff", "retries", "concurrency", "max_tokens", "samples", "mode"))
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
