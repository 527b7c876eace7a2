"""The two judge backends behind one method, ``complete(requests) -> (index, Reply)`` as calls finish.

A request is a :class:`JudgePrompt` (system text, user text, images) or any multi-turn
:class:`~.chat.ChatRequest` (texts and images in order); both are sent the same way.

- :class:`OpenAIBackend`: any OpenAI-compatible chat-completions endpoint (GPT-4o, DeepSeek, a
  local vLLM or Ollama server) through the ``openai`` package's client, which brings request
  timeouts, pooled keep-alive connections shared by all threads, and typed errors. Retries are
  ours (the client's own are turned off), so that each call counts its retries and
  ``--judge-backoff`` sets the schedule: exponential with jitter, honouring ``Retry-After``, on
  timeouts, dropped connections, 429, 5xx and replies that are not chat-completions JSON; any
  other HTTP error stops at once. The key is read from the environment when the client is made and
  lives only in it.
- :class:`HFBackend`: a local transformers vision-language model, batched; ``hf:tiny`` builds a
  tiny random-init LLaVA from configs in code (tests and plumbing only).
"""
from __future__ import annotations

import base64
import io
import random
import threading
import time
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ...errors import BenchError
from .cache import Reply
from .chat import ChatMessage, ChatRequest, openai_messages
from .config import DEFAULT_BASE_URL, NO_KEY_PLACEHOLDER, JudgeConfig

MAX_BACKOFF_S = 30.0
MAX_RETRY_AFTER_S = 60.0
IMAGE_MAX_SIDE = 1024  # larger images are shrunk before sending (the cache key names this setting)
JPEG_QUALITY = 90


@dataclass(frozen=True)
class JudgePrompt:
    """One question put to a judge: a system text, a user text and the images that go with it."""

    system: str
    user: str
    images: tuple[Path, ...] = ()

    def as_chat(self) -> ChatRequest:
        """The system turn, then the user turn: its text, then its images."""
        return ChatRequest((ChatMessage("system", (self.system,)), ChatMessage("user", (self.user, *self.images))))


class JudgeUnavailable(Exception):
    """A call that failed for good (retries spent, or an error a retry cannot fix)."""


def jpeg_bytes(path: Path, max_side: int = IMAGE_MAX_SIDE) -> bytes:
    """The image as a JPEG, RGB, at most ``max_side`` pixels on its longer side."""
    from ...images import open_rgb

    im = open_rgb(path, exif_transpose=True, what="image for the judge")
    if max(im.size) > max_side:
        im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


class _DeadlinePassed(Exception):
    """A whole request took longer than the judge timeout."""


def _within(seconds: float, slots: threading.Semaphore, call):
    """``call()``, or :class:`_DeadlinePassed` once ``seconds`` have passed. The client's own timeout
    bounds each read, not the request: a server trickling a byte a second would hold it for as
    long as it likes. The call runs in a daemon thread, left to end on its own when abandoned; it
    holds one of ``slots`` until it really ends, so abandoned requests still count against
    ``--judge-concurrency`` and a retry waits (within its own deadline) for a free slot."""
    box: dict = {}

    def run():
        if not slots.acquire(timeout=seconds):
            return  # the caller's deadline has passed too: nothing is sent
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller as it was raised
            box["error"] = exc
        finally:
            slots.release()

    worker = threading.Thread(target=run, name="unifybench-judge-call", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive() or not box:  # still running, or it never got a slot in time
        raise _DeadlinePassed
    if "error" in box:
        raise box["error"]
    return box["value"]


class OpenAIBackend:
    """An OpenAI-compatible ``/chat/completions`` endpoint, ``concurrency`` calls in flight at once.

    ``temperature`` and ``image_max_side`` default to the judge's (0, IMAGE_MAX_SIDE); a method
    that talks to a model through this transport sets its own (and its ``user_agent``)."""

    def __init__(self, config: JudgeConfig, *, temperature: float = 0, image_max_side: int = IMAGE_MAX_SIDE,
                 user_agent: str = "unifybench-judge", image_detail: str | None = None):
        try:
            import openai
        except ImportError as exc:
            raise BenchError("the openai package is not installed: pip install openai",
                             where=f"--judge {config.spec}") from exc
        self.config = config
        self.model = config.model
        self.base_url = (config.base_url or DEFAULT_BASE_URL).rstrip("/")
        self.identity = f"openai:{self.model}@{self.base_url}"
        self._openai = openai
        self._client = openai.OpenAI(api_key=config.api_key() or NO_KEY_PLACEHOLDER, base_url=self.base_url,
                                     timeout=config.timeout, max_retries=0,
                                     default_headers={"User-Agent": user_agent})
        self.temperature = temperature
        self.image_max_side = image_max_side
        self.image_detail = image_detail  # the image_url "detail" sent ("high", as DreamBench++ asks), or none
        self._rng = random.Random(config.seed)
        self._rng_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(config.concurrency)  # requests really in flight

    def describe(self) -> dict:
        return {"backend": "openai", "model": self.model, "base_url": self.base_url,
                "api_key_env": self.config.api_key_env, "concurrency": self.config.concurrency,
                "timeout_s": self.config.timeout, "max_retries": self.config.retries,
                "temperature": self.temperature, "seed": self.config.seed, "max_tokens": self.config.max_tokens}

    def sampling(self) -> dict:
        return {"temperature": self.temperature, "seed": self.config.seed, "max_tokens": self.config.max_tokens}

    def _image_url(self, path: Path) -> str:
        data = base64.b64encode(jpeg_bytes(path, self.image_max_side)).decode("ascii")
        return f"data:image/jpeg;base64,{data}"

    def _messages(self, request: JudgePrompt | ChatRequest) -> list[dict]:
        return openai_messages(request.as_chat(), self._image_url, self.image_detail)

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

    def call(self, request: JudgePrompt | ChatRequest) -> Reply:
        openai = self._openai
        messages = self._messages(request)
        last = ""
        retry_after: str | None = None
        for attempt in range(self.config.retries + 1):
            if attempt:
                self._sleep_before_retry(attempt - 1, retry_after)
                retry_after = None
            try:
                completion = _within(self.config.timeout, self._slots, lambda: self._client.chat.completions.create(
                    model=self.model, messages=messages, temperature=self.temperature, seed=self.config.seed,
                    max_tokens=self.config.max_tokens))
                text = completion.choices[0].message.content
                usage = completion.usage
                served = getattr(completion, "model", None)
                fingerprint = getattr(completion, "system_fingerprint", None)
            except (openai.APITimeoutError, _DeadlinePassed):
                last = f"timed out after {self.config.timeout:g} s"
                continue
            except openai.APIConnectionError as exc:
                last = f"connection error ({(exc.__cause__ or exc).__class__.__name__})"
                continue
            except openai.APIStatusError as exc:
                status = exc.status_code
                if status == 429 or status >= 500:
                    last = f"HTTP {status}"
                    retry_after = exc.response.headers.get("retry-after")
                    continue
                snippet = exc.response.text or ""
                key = self.config.api_key()
                if key:  # a server may echo the Authorization header: never print the key (nor a cut part of it)
                    snippet = snippet.replace(key, "***")
                snippet = snippet[:200].replace("\n", " ")
                hint = f" (is ${self.config.api_key_env} set to a valid key?)" if status in (401, 403) else ""
                raise JudgeUnavailable(f"HTTP {status} from {self.base_url}{hint}: {snippet}") from None
            except (openai.APIResponseValidationError, ValueError, AttributeError, IndexError, TypeError,
                    RecursionError):  # RecursionError: a body of deeply nested JSON
                last = "a reply that is not chat-completions JSON"
                continue
            return Reply(text if isinstance(text, str) else "", int(getattr(usage, "prompt_tokens", 0) or 0),
                         int(getattr(usage, "completion_tokens", 0) or 0), retries=attempt,
                         model=served if isinstance(served, str) else "",
                         system_fingerprint=fingerprint if isinstance(fingerprint, str) else "")
        raise JudgeUnavailable(f"no reply from {self.base_url} after {self.config.retries + 1} tries "
                               f"(last: {last})")

    def complete(self, prompts: list[JudgePrompt | ChatRequest]) -> Iterator[tuple[int, Reply]]:
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

    def close(self) -> None:
        self._client.close()


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

    @staticmethod
    def _chat_template_messages(p: JudgePrompt | ChatRequest) -> list[dict]:
        if isinstance(p, JudgePrompt):  # one user turn, images first (as the judge always asked)
            content = [{"type": "image"} for _ in p.images]
            content.append({"type": "text", "text": p.system + "\n\n" + p.user})
            return [{"role": "user", "content": content}]
        return [{"role": m.role, "content": [{"type": "text", "text": part} if isinstance(part, str)
                                             else {"type": "image"} for part in m.parts]}
                for m in p.messages]

    def _texts(self, prompts: list[JudgePrompt | ChatRequest]) -> list[str]:
        return [self._processor.apply_chat_template(self._chat_template_messages(p), add_generation_prompt=True,
                                                    tokenize=False) for p in prompts]

    def _generate(self, prompts: list[JudgePrompt | ChatRequest]) -> list[Reply]:
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

    def complete(self, prompts: list[JudgePrompt | ChatRequest]) -> Iterator[tuple[int, Reply]]:
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


    def close(self) -> None:
        pass
