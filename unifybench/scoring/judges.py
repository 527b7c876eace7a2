"""LLM and VLM judges: open-answer scores (``judge_score``) and attribute-reasoning scores (``attr_score``).

One interface, two backends:

- ``openai:MODEL``: any OpenAI-compatible chat-completions endpoint (GPT-4o, DeepSeek, a local
  vLLM or Ollama server), through a small stdlib HTTP client: bounded concurrency (threads),
  a socket timeout, retries with exponential backoff and jitter on timeouts, connection errors,
  429 and 5xx. The API key is read from the environment variable named by ``api_key_env`` at call
  time and sent only in the ``Authorization`` header: it is never stored in a config, a cache, a
  run record or a message.
- ``hf:NAME_OR_PATH``: a local transformers vision-language model, batched; ``hf:tiny`` builds a
  tiny random-init LLaVA from configs in code (tests and plumbing only).

Every call is a fresh conversation (system + one user message, images as base64 JPEG), at
temperature 0 with a seed. Replies are read by a tolerant rule (:func:`parse_score`); a reply it
cannot read is asked again once (a fresh conversation with a stricter last line), and if that
fails too the judgment is recorded as unparsed: counted in the results, never dropped silently and
never scored 0.

Calls are cached in SQLite, keyed by the judge (backend, model, endpoint), the prompt-template
version, the sampling settings and a hash of the request content including the bytes of every
image. The cache is written as each call returns, so a rerun makes no calls and a killed run loses
at most the calls in flight. By default the cache lives in the run directory
(``<run_dir>/judge_cache.sqlite``); ``cache`` points several runs at one shared file.

Judge settings are scoring settings: they are recorded in ``run.json`` but not part of the run
directory's hash, so switching the judge re-scores the same predictions without re-running the
method, and switching back replays the cache.
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import os
import random
import re
import socket
import sqlite3
import threading
import time
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from ..errors import BenchError
from . import judge_prompts

BACKENDS = ("openai", "hf")
DEFAULT_BASE_URL = "https://api.openai.com/v1"
REFERENCE_ATTR_SAMPLES = 4  # images judged per attribute prompt in the reference evaluation
MAX_BACKOFF_S = 30.0
MAX_RETRY_AFTER_S = 60.0
IMAGE_MAX_SIDE = 1024  # larger images are shrunk before sending (the cache key names this setting)
JPEG_QUALITY = 90
CACHE_FILE = "judge_cache.sqlite"


@dataclass
class JudgeConfig:
    """Everything that picks and drives a judge (the key itself is never part of it)."""

    spec: str  # "openai:MODEL" or "hf:NAME_OR_PATH"
    base_url: str | None = None  # openai: the endpoint root, e.g. https://api.deepseek.com/v1
    api_key_env: str = "OPENAI_API_KEY"  # openai: the environment variable holding the key
    concurrency: int = 8  # openai: requests in flight at once
    timeout: float = 60.0  # openai: seconds a socket may wait (connect or read) before a retry
    retries: int = 5  # openai: retries per call after the first try
    backoff: float = 1.0  # openai: first backoff in seconds, doubled per retry, with jitter
    max_tokens: int = 64  # longest reply asked for
    samples: int = 4  # attr_gen: images judged per prompt (--protocol reference: always 4)
    seed: int = 0  # the API's sampling seed and the seed of the attr_gen image sampling
    cache: str | None = None  # SQLite file; None: <run_dir>/judge_cache.sqlite

    @property
    def backend(self) -> str:
        return parse_judge_spec(self.spec)[0]

    @property
    def model(self) -> str:
        return parse_judge_spec(self.spec)[1]

    def validate(self) -> None:
        backend, _ = parse_judge_spec(self.spec)
        for name in ("concurrency", "max_tokens", "samples"):
            if getattr(self, name) < 1:
                raise BenchError("must be at least 1", where=f"--judge-{name.replace('_', '-')}")
        if self.timeout <= 0 or self.retries < 0 or self.backoff < 0:
            raise BenchError("timeout must be > 0, retries and backoff >= 0", where="--judge-timeout/-retries/-backoff")
        if backend == "openai":
            url = urlsplit(self.base_url or DEFAULT_BASE_URL)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise BenchError(f"expected an http(s) URL, got {self.base_url!r}", where="--judge-base-url")
        elif self.base_url:
            raise BenchError("only the openai backend takes a base URL", where="--judge-base-url")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env or ""):
            raise BenchError(f"not an environment variable name: {self.api_key_env!r}", where="--judge-api-key-env")


def parse_judge_spec(text: str) -> tuple[str, str]:
    """``"openai:gpt-4o"`` -> ``("openai", "gpt-4o")``; anything else is a BenchError."""
    backend, sep, model = (text or "").partition(":")
    if not sep or backend not in BACKENDS or not model.strip():
        raise BenchError(f"unknown judge {text!r}; expected openai:MODEL or hf:NAME_OR_PATH", where="--judge")
    return backend, model.strip()


# ----------------------------------------------------------------------------- reply parsing

_NUMBER = r"(\d+(?:\.\d+)?|\.\d+)"
_LABELLED = re.compile(r"\bscore\b[^0-9.\n]{0,12}?" + _NUMBER + r"(?:\s*(?:/|out\s+of)\s*" + _NUMBER + r")?",
                       re.IGNORECASE)
_BARE = re.compile(r"^" + _NUMBER + r"(?:\s*(?:/|out\s+of)\s*" + _NUMBER + r")?$", re.IGNORECASE)
VALID_SCORES = (0.0, 0.5, 1.0)


def _value(number: str, denominator: str | None) -> float | None:
    try:
        value = float(number)
        if denominator is not None:
            den = float(denominator)
            if den == 0:
                return None
            value /= den
    except ValueError:
        return None
    for valid in VALID_SCORES:
        if abs(value - valid) < 1e-9:
            return valid
    return None


def parse_score(reply: str | None) -> float | None:
    """The score a reply gives, 0, 0.5 or 1, or None when it cannot be read.

    Reads "Score: 1", "score: 1/1", "1.0", "**0.5**", "Score = 0.5 out of 1", and a chatty reply
    that ends or starts with a labelled score. A labelled score wins (the last one, where a model
    reasons first); without a label the whole reply, or its first or last line, must be the number.
    Values other than 0, 0.5 and 1 (after dividing by a "/N") are unreadable, not rounded.
    """
    if not reply:
        return None
    text = re.sub(r"[*_`#]+", "", reply).strip()
    labelled = _LABELLED.findall(text)
    if labelled:
        return _value(*labelled[-1][:1], labelled[-1][1] or None)
    lines = [ln.strip().strip(".!\"'()[]").strip() for ln in text.splitlines() if ln.strip()]
    for line in ([lines[0], lines[-1]] if lines else []):
        match = _BARE.match(line)
        if match:
            return _value(match.group(1), match.group(2))
    return None


# ----------------------------------------------------------------------------- requests and replies


@dataclass(frozen=True)
class JudgePrompt:
    """One question put to a judge: a system text, a user text and the images that go with it."""

    system: str
    user: str
    images: tuple[Path, ...] = ()


@dataclass
class Reply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0


@dataclass
class Judgment:
    score: float | None  # None: unparsed after the re-ask
    reply: str  # the reply the score was read from (the re-ask's when there was one)
    reasked: bool = False
    first_reply: str | None = None  # the unreadable first reply, when re-asked

    @property
    def parsed(self) -> bool:
        return self.score is not None


class JudgeUnavailable(Exception):
    """A call that failed for good (retries spent, or an error a retry cannot fix)."""


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
    from ..records import file_digest

    return file_digest(Path(path))


def jpeg_bytes(path: Path) -> bytes:
    """The image as a JPEG, RGB, at most IMAGE_MAX_SIDE pixels on its longer side."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot read image for the judge ({exc.__class__.__name__})", path) from exc
    if max(im.size) > IMAGE_MAX_SIDE:
        im.thumbnail((IMAGE_MAX_SIDE, IMAGE_MAX_SIDE))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


# ----------------------------------------------------------------------------- the cache


class JudgeCache:
    """Replies by call key, in SQLite; each insert is committed before the next call is recorded."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
            self.db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, judge TEXT NOT NULL, "
                            "template TEXT NOT NULL, reply TEXT NOT NULL, prompt_tokens INTEGER, "
                            "completion_tokens INTEGER, created TEXT)")
        except sqlite3.DatabaseError as exc:
            raise BenchError(f"unusable judge cache ({exc}); move it aside to start afresh", self.path) from exc

    def get(self, key: str) -> Reply | None:
        row = self.db.execute("SELECT reply, prompt_tokens, completion_tokens FROM calls WHERE key = ?",
                              (key,)).fetchone()
        return Reply(row[0], row[1] or 0, row[2] or 0) if row else None

    def put(self, key: str, judge: str, reply: Reply) -> None:
        self.db.execute("INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (key, judge, judge_prompts.TEMPLATE_VERSION, reply.text, reply.prompt_tokens,
                         reply.completion_tokens, time.strftime("%Y-%m-%dT%H:%M:%S")))

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        self.db.close()


# ----------------------------------------------------------------------------- backends


class OpenAIBackend:
    """An OpenAI-compatible ``/chat/completions`` endpoint over http.client, with threads for concurrency."""

    def __init__(self, config: JudgeConfig):
        self.config = config
        self.model = config.model
        self.base_url = (config.base_url or DEFAULT_BASE_URL).rstrip("/")
        url = urlsplit(self.base_url)
        self._scheme, self._host, self._port = url.scheme, url.hostname, url.port
        self._path = (url.path.rstrip("/") or "") + "/chat/completions"
        self.identity = f"openai:{self.model}@{self.base_url}"
        self._rng = random.Random(config.seed)
        self._rng_lock = threading.Lock()

    def describe(self) -> dict:
        return {"backend": "openai", "model": self.model, "base_url": self.base_url,
                "api_key_env": self.config.api_key_env, "concurrency": self.config.concurrency,
                "timeout_s": self.config.timeout, "max_retries": self.config.retries,
                "temperature": 0, "seed": self.config.seed, "max_tokens": self.config.max_tokens}

    def sampling(self) -> dict:
        return {"temperature": 0, "seed": self.config.seed, "max_tokens": self.config.max_tokens}

    def _body(self, prompt: JudgePrompt) -> bytes:
        if prompt.images:
            content: Any = [{"type": "text", "text": prompt.user}]
            for path in prompt.images:
                data = base64.b64encode(jpeg_bytes(path)).decode("ascii")
                content.append({"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{data}"}})
        else:
            content = prompt.user
        body = {"model": self.model,
                "messages": [{"role": "system", "content": prompt.system}, {"role": "user", "content": content}],
                "temperature": 0, "seed": self.config.seed, "max_tokens": self.config.max_tokens}
        return json.dumps(body).encode("utf-8")

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": "unifybench-judge"}
        key = os.environ.get(self.config.api_key_env, "").strip()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _post_once(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self.config.timeout)
        try:
            conn.request("POST", self._path, body=body, headers=self._headers())
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def _sleep_before_retry(self, attempt: int, retry_after: str | None) -> None:
        delay = min(MAX_BACKOFF_S, self.config.backoff * (2 ** attempt))
        with self._rng_lock:
            delay = delay / 2 + self._rng.uniform(0, delay / 2)  # "equal jitter"
        if retry_after:
            try:
                delay = max(delay, min(MAX_RETRY_AFTER_S, float(retry_after)))
            except ValueError:
                pass
        time.sleep(delay)

    def call(self, prompt: JudgePrompt) -> Reply:
        body = self._body(prompt)
        last = ""
        retry_after: str | None = None
        for attempt in range(self.config.retries + 1):
            if attempt:
                self._sleep_before_retry(attempt - 1, retry_after)
                retry_after = None
            try:
                status, headers, data = self._post_once(body)
            except (socket.timeout, TimeoutError):
                last = f"timed out after {self.config.timeout:g} s"
                continue
            except (OSError, http.client.HTTPException) as exc:
                last = f"connection error ({exc.__class__.__name__})"
                continue
            if status == 429 or status >= 500:
                last = f"HTTP {status}"
                retry_after = headers.get("retry-after")
                continue
            if status != 200:
                snippet = data[:200].decode("utf-8", "replace").replace("\n", " ")
                hint = f" (is ${self.config.api_key_env} set to a valid key?)" if status in (401, 403) else ""
                raise JudgeUnavailable(f"HTTP {status} from {self.base_url}{hint}: {snippet}")
            try:
                payload = json.loads(data)
                text = payload["choices"][0]["message"]["content"]
                usage = payload.get("usage") or {}
            except (ValueError, KeyError, IndexError, TypeError):
                last = "a reply that is not chat-completions JSON"
                continue
            return Reply(text if isinstance(text, str) else "", int(usage.get("prompt_tokens") or 0),
                         int(usage.get("completion_tokens") or 0), retries=attempt)
        raise JudgeUnavailable(f"no reply from {self.base_url} after {self.config.retries + 1} tries "
                               f"(last: {last})")

    def complete(self, prompts: list[JudgePrompt]) -> Iterator[tuple[int, Reply]]:
        """(index, reply) as calls finish. After a failure nothing new starts; calls in flight still
        report, then the first failure is raised."""
        if not prompts:
            return
        failure: JudgeUnavailable | None = None
        pool = ThreadPoolExecutor(max_workers=min(self.config.concurrency, len(prompts)),
                                  thread_name_prefix="judge")
        try:
            futures = {pool.submit(self.call, p): i for i, p in enumerate(prompts)}
            for future in as_completed(futures):
                try:
                    reply = future.result()
                except CancelledError:
                    continue
                except JudgeUnavailable as exc:
                    if failure is None:
                        failure = exc
                        for f in futures:
                            f.cancel()
                    continue
                yield futures[future], reply
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if failure is not None:
            raise failure


def _tiny_llava(seed: int):
    """A tiny random-init LLaVA (CLIP vision tower + Llama text model) with a word-level tokenizer
    built in code: nothing is downloaded. It exists for tests: every reply is the score "0" or "1",
    by the sign of a random projection of its last hidden state, so the scoring path always runs
    whatever a transformers version's weight initialisation draws; the values mean nothing."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
    words = "Score: 0 0.5 1 the answer is right wrong photo concept image".split()
    vocab = {w: i for i, w in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", unk_token="<unk>",
                                        extra_special_tokens={"image_token": "<image>"})
    tokenizer.padding_side = "left"
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=32)
    text = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                       pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=vocab["<image>"],
                         vision_feature_layer=-1, vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    head = model.get_output_embeddings().weight
    if head is model.get_input_embeddings().weight:
        raise RuntimeError("tiny LLaVA: the output head must not be tied to the embeddings")
    with torch.no_grad():  # logits: +p for "0", -p for "1", 0 for every other token (p = a random projection)
        direction = head[vocab["0"]].clone()
        head.zero_()
        head[vocab["0"]], head[vocab["1"]] = direction, -direction
    template = ("{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
                "{% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}"
                "{% if add_generation_prompt %}Score:{% endif %}")
    processor = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                  crop_size={"height": 32, "width": 32}),
                               tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
                               chat_template=template, num_additional_image_tokens=1)
    return model, processor


class HFBackend:
    """A local transformers vision-language model, greedy decoding, batched."""

    def __init__(self, config: JudgeConfig, *, device: str = "cpu", batch_size: int = 8):
        self.config = config
        self.name_or_path = config.model
        self.device = device
        self.batch_size = max(1, batch_size)
        self.identity = f"hf:{self.name_or_path}"
        self._model = None
        self._processor = None

    def describe(self) -> dict:
        detail = ("tiny LLaVA config, random init (tests): replies are noise"
                  if self.name_or_path == "tiny" else self.name_or_path)
        return {"backend": "hf", "model": detail, "device": self.device, "batch_size": self.batch_size,
                "decoding": "greedy", "seed": self.config.seed, "max_tokens": self.config.max_tokens}

    def sampling(self) -> dict:
        return {"decoding": "greedy", "max_tokens": self.config.max_tokens}

    def _load(self):
        if self._model is not None:
            return
        import torch

        if self.name_or_path == "tiny":
            model, processor = _tiny_llava(self.config.seed)
        else:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
            try:
                processor = AutoProcessor.from_pretrained(self.name_or_path)
                model = AutoModelForImageTextToText.from_pretrained(self.name_or_path, dtype=dtype)
            except (OSError, ValueError, KeyError) as exc:
                raise BenchError(f"cannot load the judge model ({exc.__class__.__name__}: "
                                 f"{str(exc).splitlines()[0][:200]})", where=f"--judge hf:{self.name_or_path}") from exc
            tok = getattr(processor, "tokenizer", None)
            if tok is not None:
                tok.padding_side = "left"
                if tok.pad_token is None:
                    tok.pad_token = tok.eos_token
        self._model = model.to(self.device).eval()
        self._processor = processor

    def _texts(self, prompts: list[JudgePrompt]) -> list[str]:
        texts = []
        for p in prompts:
            content = [{"type": "image"} for _ in p.images]
            content.append({"type": "text", "text": p.system + "\n\n" + p.user})
            texts.append(self._processor.apply_chat_template([{"role": "user", "content": content}],
                                                             add_generation_prompt=True, tokenize=False))
        return texts

    def _generate(self, prompts: list[JudgePrompt]) -> list[Reply]:
        import torch
        from PIL import Image

        texts = self._texts(prompts)
        images = []
        for p in prompts:
            for path in p.images:
                images.append(Image.open(io.BytesIO(jpeg_bytes(path))).convert("RGB"))
        kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
        if images:
            kwargs["images"] = images
        inputs = self._processor(**kwargs).to(self.device)
        torch.manual_seed(self.config.seed)
        with torch.inference_mode():
            out = self._model.generate(**inputs, max_new_tokens=self.config.max_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1]:]
        tok = getattr(self._processor, "tokenizer", self._processor)
        eos = tok.eos_token_id
        replies = []
        for row, mask in zip(new, inputs["attention_mask"]):
            n_new = int((row != tok.pad_token_id).sum()) if eos is None else \
                next((i + 1 for i, t in enumerate(row.tolist()) if t == eos), len(row))
            replies.append(Reply(tok.decode(row, skip_special_tokens=True).strip(), int(mask.sum()), n_new))
        return replies

    def complete(self, prompts: list[JudgePrompt]) -> Iterator[tuple[int, Reply]]:
        if not prompts:
            return
        self._load()
        # Batch prompts with the same number of images together (text-only apart from image prompts).
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].images))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            groups: dict[int, list[int]] = {}
            for i in chunk:
                groups.setdefault(len(prompts[i].images), []).append(i)
            for ids in groups.values():
                for i, reply in zip(ids, self._generate([prompts[i] for i in ids])):
                    yield i, reply


# ----------------------------------------------------------------------------- the judge


class Judge:
    """Judges prompts through the cache and one backend, re-asking once, counting everything."""

    def __init__(self, config: JudgeConfig, cache_path: Path, *, device: str = "cpu", batch_size: int = 8):
        config.validate()
        self.config = config
        self.backend = (OpenAIBackend(config) if config.backend == "openai"
                        else HFBackend(config, device=device, batch_size=batch_size))
        self.cache = JudgeCache(cache_path)
        self.stats = JudgeStats()

    @property
    def name(self) -> str:
        return self.config.spec

    def call_key(self, prompt: JudgePrompt) -> str:
        content = {"judge": self.backend.identity, "template": judge_prompts.TEMPLATE_VERSION,
                   "sampling": self.backend.sampling(), "system": prompt.system, "user": prompt.user,
                   "images": [_image_digest(p) for p in prompt.images],
                   "image_encoding": f"jpeg q{JPEG_QUALITY} max{IMAGE_MAX_SIDE}"}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()

    def _ask(self, prompts: list[JudgePrompt], progress=None) -> list[Reply]:
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
                self.cache.put(keys[i], self.backend.identity, reply)
                replies[i] = reply
                self.stats.calls += 1
                self.stats.retries += reply.retries
                self.stats.prompt_tokens += reply.prompt_tokens
                self.stats.completion_tokens += reply.completion_tokens
                if progress:
                    progress(1)
        except JudgeUnavailable as exc:
            done = self.cache.count()
            raise BenchError(f"{exc}; the {done} finished judge calls are kept in the cache and a rerun "
                             f"resumes from them", self.cache.path, f"judge {self.name}") from None
        return replies  # type: ignore[return-value]

    def judge(self, prompts: list[JudgePrompt], progress=None) -> list[Judgment]:
        first = self._ask(prompts, progress)
        judgments = [Judgment(parse_score(r.text), r.text) for r in first]
        again = [i for i, j in enumerate(judgments) if not j.parsed]
        if again:
            reasks = [JudgePrompt(prompts[i].system, prompts[i].user + judge_prompts.REASK_SUFFIX, prompts[i].images)
                      for i in again]
            self.stats.reasks += len(reasks)
            for i, reply in zip(again, self._ask(reasks)):
                judgments[i] = Judgment(parse_score(reply.text), reply.text, reasked=True,
                                        first_reply=judgments[i].reply)
        self.stats.judgments += len(judgments)
        self.stats.unparsed += sum(not j.parsed for j in judgments)
        return judgments

    def close(self) -> None:
        self.cache.close()


# ----------------------------------------------------------------------------- scoring a run


def attr_samples(images: list[str], k: int, seed: int, key: str) -> list[str]:
    """The images judged for one attribute prompt: k of them, chosen by a RNG seeded with the seed and
    the prompt's key (so a prompt's choice does not depend on which other prompts run)."""
    if k >= len(images):
        return list(images)
    rng = random.Random(f"{seed}/{key}")
    return sorted(rng.sample(list(images), k), key=images.index)


def judge_calls(counts: dict, attr_prompts: int, samples: int = REFERENCE_ATTR_SAMPLES,
                images_per_prompt: int = 4) -> dict[str, int]:
    """How many judgments a full run makes (each may add one re-ask): one per open question, and
    min(samples, images_per_prompt) per attribute-reasoning prompt."""
    qa = int(counts.get("vqa", 0)) + int(counts.get("text_only", 0))
    attr = attr_prompts * min(samples, images_per_prompt)
    return {"open_questions": qa, "attr_images": attr, "total": qa + attr}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _score_or_reason(value: float | None, n: int, n_unparsed: int) -> float | str:
    if value is not None:
        return value
    if n == 0:
        return "not scored: nothing to judge"
    return f"not scored: all {n_unparsed} judge replies unparsed"


def judge_run(bench, work: dict, store, spec, tasks_run: list[str], per_concept: dict, overall: dict,
              score_rows: list[dict], console) -> dict | None:
    """Fill ``judge_score``/``judge_unparsed`` (vqa, text_only) and ``attr_score``/``unparsed``
    (attr_gen) in the run's metrics and score rows; return what goes under ``results["judge"]``."""
    config: JudgeConfig = spec.judge
    cache_path = Path(config.cache) if config.cache else store.run_dir / CACHE_FILE
    k = REFERENCE_ATTR_SAMPLES if spec.protocol == "reference" else config.samples

    qa_tasks = [t for t in tasks_run if t in ("vqa", "text_only")]
    attr = "attr_gen" in tasks_run
    prompts: list[JudgePrompt] = []
    qa_slots: list[tuple[str, str, Any]] = []  # (task, concept, item) per QA prompt
    attr_slots: list[tuple[str, Any, str]] = []  # (concept, work, image) per attr prompt
    for name, ws in work.items():
        for w in ws:
            task = w.request.task
            if task in qa_tasks:
                item = w.record
                system, user = judge_prompts.qa_messages(item.question, item.answer,
                                                         store.predictions[w.request.key]["answer"])
                prompts.append(JudgePrompt(system, user))
                qa_slots.append((task, name, item))
            elif task == "attr_gen" and attr:
                concept = bench.concept(name)
                images = store.predictions[w.request.key]["images"]
                for rel in attr_samples(images, k, config.seed, w.request.key):
                    system, user = judge_prompts.attr_messages(concept.token, concept.description,
                                                               concept.extra_facts, w.record.prompt)
                    prompts.append(JudgePrompt(system, user, (store.run_dir / rel,)))
                    attr_slots.append((name, w, rel))
    if not prompts:
        return None

    judge = Judge(config, cache_path, device=spec.device, batch_size=spec.batch_size)
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=False) as progress:
            bar = progress.add_task("judging", total=len(prompts))
            judgments = judge.judge(prompts, progress=lambda n: progress.advance(bar, n))
    finally:
        judge.close()

    qa_judged = judgments[:len(qa_slots)]
    attr_judged = judgments[len(qa_slots):]
    rows_by_key: dict[tuple, dict] = {}
    for row in score_rows:
        if row.get("task") in ("vqa", "text_only"):
            rows_by_key[(row["task"], row["concept"], row["index"])] = row
        elif row.get("task") == "attr_gen" and "image" in row:
            rows_by_key[("attr_gen", row["concept"], row["image"])] = row

    # Open questions: mean over the parsed judgments per concept, and pooled over all concepts.
    for task in qa_tasks:
        pooled: list[float] = []
        n_all = unparsed_all = 0
        for name in work:
            scored = [(item, j) for (t, c, item), j in zip(qa_slots, qa_judged) if t == task and c == name]
            if not scored:
                continue
            values = [j.score for _, j in scored if j.parsed]
            n_unparsed = len(scored) - len(values)
            per_concept[name][task]["judge_score"] = _score_or_reason(_mean(values), len(scored), n_unparsed)
            per_concept[name][task]["judge_unparsed"] = n_unparsed
            pooled += values
            n_all += len(scored)
            unparsed_all += n_unparsed
            for item, j in scored:
                row = rows_by_key.get((task, name, item.index))
                if row is not None:
                    row.update(_row_fields(j))
        if n_all and task in overall:
            overall[task]["judge_score"] = _score_or_reason(_mean(pooled), n_all, unparsed_all)
            overall[task]["judge_unparsed"] = unparsed_all

    # Attribute reasoning: mean per prompt, then per concept, then over concepts.
    if attr_slots:
        concept_means: list[float] = []
        unparsed_all = 0
        for name in work:
            slots = [(w, rel, j) for (c, w, rel), j in zip(attr_slots, attr_judged) if c == name]
            if not slots:
                continue
            prompt_means = []
            for key in dict.fromkeys(w.request.key for w, _, _ in slots):
                values = [j.score for w, _, j in slots if w.request.key == key and j.parsed]
                if values:
                    prompt_means.append(sum(values) / len(values))
            n_unparsed = sum(not j.parsed for _, _, j in slots)
            mean = _mean(prompt_means)
            per_concept[name]["attr_gen"]["attr_score"] = _score_or_reason(mean, len(slots), n_unparsed)
            per_concept[name]["attr_gen"]["unparsed"] = n_unparsed
            if mean is not None:
                concept_means.append(mean)
            unparsed_all += n_unparsed
            for w, rel, j in slots:
                row = rows_by_key.get(("attr_gen", name, rel))
                if row is not None:
                    row.update(_row_fields(j))
        if "attr_gen" in overall:
            overall["attr_gen"]["attr_score"] = _score_or_reason(_mean(concept_means), len(attr_slots), unparsed_all)
            overall["attr_gen"]["unparsed"] = unparsed_all

    stats = asdict(judge.stats)
    info = {"judge": config.spec, **judge.backend.describe(), "template_version": judge_prompts.TEMPLATE_VERSION,
            "attr_samples_per_prompt": k, "attr_sample_seed": config.seed,
            "cache": str(cache_path), **stats}
    console.print(f"judge {config.spec}: {stats['judgments']} judgments, {stats['calls']} calls, "
                  f"{stats['cache_hits']} cache hits, {stats['retries']} retries, {stats['reasks']} re-asked, "
                  f"{stats['unparsed']} unparsed", markup=False, emoji=False, highlight=False)
    return info


def _row_fields(j: Judgment) -> dict:
    fields: dict[str, Any] = {"judge_score": j.score, "judge_reply": j.reply, "judge_parsed": j.parsed}
    if j.reasked:
        fields["judge_first_reply"] = j.first_reply
    return fields
