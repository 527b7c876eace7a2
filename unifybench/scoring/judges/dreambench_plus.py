"""DreamBench++'s GPT-4o judge, transcribed: concept preservation (CP) and prompt following (PF).

Source: github.com/yuangpeng/dreambench_plus at commit 66ca27e52b5e7daa350bdb92ac8c60d4a9339c5e,
``dreambench_plus/eval_concept_preservation.py`` and ``eval_prompt_following.py`` (the messages, the
regex, the retries), ``prompts/*_full.txt`` (copied into ``dreambench_plus_prompts/``, Apache-2.0),
``utils/gpt_utils.py`` (the image encoding) and ``benchmarking.py`` (``cal_score``: score / 4,
CP by category, PF by prompt kind, CP x PF; mean and sample std over three runs).

Each judgment is three turns and no system message: the user's task and criteria, the assistant's
acknowledgement, then for CP the reference and the generated image (``subject`` prompts for animal,
human and object subjects, ``style`` prompts for styles), for PF the prompt as written then the
generated image. Only the first image of each prompt is judged. Images: decoded, saved once as JPEG
(their generate_images.py stores every source and generated image as .jpg before judging), reopened,
resized to 512x512, JPEG again, base64, ``detail: high``. A reply is read with their regex and must
match exactly once; otherwise the call is made again, up to their ``max_retry`` of 3 calls.

Where we differ, on purpose and said in every table: an item still unreadable after the 3 calls is
kept and counted (``unparsed``; a refusal is counted apart as ``refused``), where theirs drops it
and averages the rest, which we also do for the mean; the seed of each call is derived from
(``--judge-seed``, run, attempt) instead of drawn at random, so that calls are cached and a rerun
asks nothing again; ``max_tokens`` is 4096 (theirs sets none; 4096 is gpt-4o-2024-05-13's output
ceiling, so no reply is cut that theirs would keep).

Modes (``--judge-mode``): ``reference`` is theirs (temperature 1, three independent runs, mean and
sample std over the runs; their judge is ``gpt-4o-2024-05-13``); ``deterministic`` is temperature 0
with the fixed seed, one run.
"""
from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ...errors import BenchError
from .chat import ChatMessage, ChatRequest

SOURCE = "github.com/yuangpeng/dreambench_plus@66ca27e52b5e7daa350bdb92ac8c60d4a9339c5e"
PROMPTS_DIR = Path(__file__).parent / "dreambench_plus_prompts"
REFERENCE_JUDGE = "gpt-4o-2024-05-13"  # their default model_name
SCORE_PATTERN = r"(score|Score):\s*[a-zA-Z]*\s*(\d+)"  # their pattern, both scripts
MAX_RETRY = 3  # their max_retry: calls per item
MAX_SCORE = 4  # cal_score divides by 4
IMAGE_SIDE = 512
MAX_TOKENS = 4096


@dataclass(frozen=True)
class Mode:
    name: str
    temperature: float
    runs: int
    description: str


MODES = {
    "deterministic": Mode("deterministic", 0.0, 1, "temperature 0, fixed seed, one run, cached"),
    "reference": Mode("reference", 1.0, 3, f"their protocol: temperature 1, three runs, mean and sample std "
                                           f"over runs (their judge: {REFERENCE_JUDGE})"),
}
REFUSAL = re.compile(r"^\W*(I'm sorry|I am sorry|Sorry|I can't|I cannot|I can not|I'm unable|I am unable|"
                     r"I won't|I'm not able|I am not able)\b", re.IGNORECASE)


def load_prompt(name: str) -> str:
    """A prompt file as their scripts read it: ``f.read().strip()``."""
    return (PROMPTS_DIR / f"{name}.txt").read_text(encoding="utf-8").strip()


def cp_prompt_category(category: str) -> str:
    """Their CP runs: ``subject`` for every category but style, ``style`` for styles."""
    return "style" if category == "style" else "subject"


def cp_request(category: str, reference: Path, generated: Path) -> ChatRequest:
    kind = cp_prompt_category(category)
    return ChatRequest((ChatMessage("user", (load_prompt(f"user_prompt_{kind}_full"),)),
                        ChatMessage("assistant", (load_prompt(f"gpt_prompt_{kind}_full"),)),
                        ChatMessage("user", (Path(reference), Path(generated)))))


def pf_request(instruction: str, generated: Path) -> ChatRequest:
    return ChatRequest((ChatMessage("user", (load_prompt("user_prompt_text_full"),)),
                        ChatMessage("assistant", (load_prompt("gpt_prompt_text_full"),)),
                        ChatMessage("user", (instruction, Path(generated)))))


def parse_score(content: str | None) -> int | None:
    """Their reading: every match of the pattern, exactly one required (``assert len(score) == 1``)."""
    if not isinstance(content, str):
        return None
    found = [int(s) for _, s in re.findall(SCORE_PATTERN, content)]
    return found[0] if len(found) == 1 else None


def is_refusal(content: str | None) -> bool:
    return isinstance(content, str) and parse_score(content) is None and bool(REFUSAL.match(content.strip()))


def encode_image(path: Path) -> bytes:
    """The JPEG bytes they send: their ``load_image`` (EXIF orientation, transparency on white, RGB),
    stored as .jpg once (generate_images.py), reopened, ``.resize((512, 512))`` (PIL's default
    filter), ``image.save(buffered, format="JPEG")`` (PIL's default quality)."""
    from PIL import Image

    from ...images import open_rgb

    im = open_rgb(path, exif_transpose=True, what="image for the DreamBench++ judge")
    stored = io.BytesIO()
    im.save(stored, format="JPEG")
    stored.seek(0)
    with Image.open(stored) as reopened:
        im = reopened.convert("RGB").resize((IMAGE_SIDE, IMAGE_SIDE))
    out = io.BytesIO()
    im.save(out, format="JPEG")
    return out.getvalue()


def _backend_class():
    from .backends import OpenAIBackend

    class DreamBenchPlusBackend(OpenAIBackend):
        """The OpenAI transport (retries, deadlines, concurrency) sending their image encoding."""

        def _image_url(self, path: Path) -> str:
            return f"data:image/jpeg;base64,{base64.b64encode(encode_image(path)).decode('ascii')}"

    return DreamBenchPlusBackend


def check_judge(config) -> None:
    """Their protocol is written for a chat-completions endpoint (sampled at temperature 1 in reference mode)."""
    if config.backend != "openai":
        raise BenchError("the DreamBench++ judge protocol talks to an OpenAI-compatible endpoint: give "
                         "--judge openai:MODEL (with --judge-base-url for a local server)", where=f"--judge {config.spec}")


def call_seed(seed: int, run: int, attempt: int) -> int:
    """The API seed of one call: distinct per run and attempt (theirs: truly_random_seed())."""
    return seed * 1000 + run * MAX_RETRY + attempt


@dataclass
class Item:
    """One judged image of one criterion: the request and the row fields it fills."""

    criterion: str  # "cp" | "pf"
    request: ChatRequest
    base: dict


def items_for(bench, work: dict, store) -> list[Item]:
    """A CP and a PF judgment for the first image of every plain ``gen`` prompt (their ``_0.jpg``)."""
    from ...data.dreambench_plus import prompt_kind

    items = []
    for name, ws in work.items():
        concept = bench.concept(name)
        for w in ws:
            if w.request.task != "gen" or w.purpose != "prompt":
                continue
            images = store.predictions[w.request.key].images or ()
            if not images:
                continue
            first = images[0]
            generated = store.run_dir / first
            base = {"task": "gen", "concept": name, "key": w.request.key, "index": w.request.index,
                    "image": first, "category": concept.kind, "prompt_kind": prompt_kind(w.request.index)}
            items.append(Item("cp", cp_request(concept.kind, concept.reference_images[0], generated),
                              {**base, "criterion": "cp"}))
            items.append(Item("pf", pf_request(w.record.class_prompt, generated),
                              {**base, "criterion": "pf", "instruction": w.record.class_prompt}))
    return items


def dreambench_plus_rows(bench, work: dict, store, *, config, console=None) -> tuple[list[dict], dict | None]:
    """Judge a DreamBench++ run: ``(rows, info)``, one row per item and run (scorer ``dreambench_plus``)."""
    from dataclasses import asdict

    from .cache import JudgeCache
    from .config import CACHE_FILE
    from .judge import JudgeStats, request_key
    from .backends import JudgeUnavailable

    check_judge(config)
    mode = MODES[config.mode]
    items = items_for(bench, work, store)
    if not items:
        return [], None
    cache_path = Path(config.cache) if config.cache else store.run_dir / CACHE_FILE
    cache = JudgeCache(cache_path)
    stats = JudgeStats()
    backend_class = _backend_class()
    backends: dict[tuple[int, int], object] = {}
    template = f"dreambench_plus@{SOURCE}"

    def backend(run: int, attempt: int):
        if (run, attempt) not in backends:
            tuned = replace(config, seed=call_seed(config.seed, run, attempt), max_tokens=MAX_TOKENS)
            backends[run, attempt] = backend_class(tuned, temperature=mode.temperature, image_max_side=IMAGE_SIDE,
                                                   image_detail="high")
        return backends[run, attempt]

    def ask(run: int, attempt: int, requests: list[ChatRequest]) -> list[str]:
        b = backend(run, attempt)
        sampling = {**b.sampling(), "image": "jpeg, resize 512x512, jpeg (PIL defaults), detail high"}
        keys = [request_key(r, b.identity, template, sampling, IMAGE_SIDE) for r in requests]
        texts: list[str | None] = []
        for k in keys:
            hit = cache.get(k)
            texts.append(None if hit is None else hit.text)
        stats.cache_hits += sum(t is not None for t in texts)
        todo = [i for i, t in enumerate(texts) if t is None]
        try:
            for j, reply in b.complete([requests[i] for i in todo]):
                i = todo[j]
                cache.put(keys[i], b.identity, reply)
                texts[i] = reply.text
                stats.calls += 1
                stats.retries += reply.retries
                stats.prompt_tokens += reply.prompt_tokens
                stats.completion_tokens += reply.completion_tokens
        except JudgeUnavailable as exc:
            raise BenchError(f"{exc}; the {cache.count()} finished judge calls are kept in the cache and a rerun "
                             f"resumes from them", cache.path, f"judge {config.spec}") from None
        return texts  # type: ignore[return-value]

    rows: list[dict] = []
    try:
        for run in range(mode.runs):
            replies: list[list[str]] = [[] for _ in items]
            pending = list(range(len(items)))
            for attempt in range(MAX_RETRY):
                if not pending:
                    break
                if attempt:
                    stats.reasks += len(pending)
                texts = ask(run, attempt, [items[i].request for i in pending])
                for i, text in zip(pending, texts):
                    replies[i].append(text)
                pending = [i for i in pending if parse_score(replies[i][-1]) is None]
            for item, got in zip(items, replies):
                score = parse_score(got[-1])
                status = "scored" if score is not None else "refused" if is_refusal(got[-1]) else "unparsed"
                rows.append({"scorer": "dreambench_plus", **item.base, "run": run, "mode": mode.name,
                             "score": score, "status": status, "attempts": len(got), "replies": got})
    finally:
        for b in backends.values():
            b.close()
        cache.close()
    stats.judgments = len(rows)
    stats.unparsed = sum(r["status"] != "scored" for r in rows)
    info = {"judge": config.spec, "protocol": "dreambench_plus", "mode": mode.name,
            "mode_description": mode.description, "runs": mode.runs, "temperature": mode.temperature,
            "max_retry": MAX_RETRY, "source": SOURCE, "reference_judge": REFERENCE_JUDGE,
            "reference_compatible": mode.name == "reference" and config.model == REFERENCE_JUDGE,
            "base_url": next(iter(backends.values())).base_url if backends else None,
            "cache": str(cache_path), **asdict(stats)}
    if console is not None:
        console.print(f"DreamBench++ judge {config.spec} ({mode.name}): {len(items)} judgments x {mode.runs} run(s), "
                      f"{stats.calls} calls, {stats.cache_hits} cache hits, {stats.reasks} asked again, "
                      f"{sum(r['status'] == 'unparsed' for r in rows)} unparsed, "
                      f"{sum(r['status'] == 'refused' for r in rows)} refused",
                      markup=False, emoji=False, highlight=False)
    return rows, info
