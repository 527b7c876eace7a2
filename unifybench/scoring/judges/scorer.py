"""The judge as a scorer of a run: one row per judgment into ``scores.jsonl``; aggregation is
:mod:`unifybench.metrics`'s, like every other scorer's."""
from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from .. import judge_prompts
from .backends import JudgePrompt
from .config import CACHE_FILE, REFERENCE_ATTR_SAMPLES, JudgeConfig
from .judge import Judge, Judgment

OPEN_TASKS = ("vqa", "text_only")


def attr_samples(images: Sequence[str], k: int, seed: int, key: str) -> list[str]:
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


def samples_per_prompt(config: JudgeConfig, protocol: str) -> int:
    return REFERENCE_ATTR_SAMPLES if protocol == "reference" else config.samples


def _row(base: dict, judgment: Judgment) -> dict:
    row = {"scorer": "judge", **base, "judge_score": judgment.score, "judge_parsed": judgment.parsed,
           "judge_reply": judgment.reply}
    if judgment.reasked:
        row["judge_first_reply"] = judgment.first_reply
    return row


def judge_rows(bench, work: dict, store, *, config: JudgeConfig, protocol: str, tasks: list[str],
               device: str = "cpu", batch_size: int = 8, console=None) -> tuple[list[dict], dict | None]:
    """Judge a run's open answers (vqa, text_only) and sampled attribute-reasoning images (attr_gen):
    ``(rows, info)``, ``info`` being what goes under ``results["judge"]`` (None: nothing to judge)."""
    cache_path = Path(config.cache) if config.cache else store.run_dir / CACHE_FILE
    k = samples_per_prompt(config, protocol)
    prompts: list[JudgePrompt] = []
    bases: list[dict] = []
    for name, ws in work.items():
        for w in ws:
            task = w.request.task
            if task not in tasks:
                continue
            prediction = store.predictions[w.request.key]
            base = {"task": task, "concept": name, "key": w.request.key, "index": w.request.index}
            if task in OPEN_TASKS:
                item = w.record
                prompts.append(JudgePrompt(*judge_prompts.qa_messages(item.question, item.answer,
                                                                      prediction.answer)))
                bases.append(base)
            elif task == "attr_gen":
                concept = bench.concept(name)
                for rel in attr_samples(prediction.images, k, config.seed, w.request.key):
                    system, user = judge_prompts.attr_messages(concept.token, concept.description,
                                                               concept.extra_facts, w.record.prompt)
                    prompts.append(JudgePrompt(system, user, (store.run_dir / rel,)))
                    bases.append({**base, "image": rel})
    if not prompts:
        return [], None

    judge = Judge(config, cache_path, device=device, batch_size=batch_size)
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=False,
                      disable=console is None or not console.is_terminal) as progress:
            bar = progress.add_task("judging", total=len(prompts))
            judgments = judge.judge(prompts, progress=lambda n: progress.advance(bar, n))
    finally:
        judge.close()

    stats = asdict(judge.stats)
    info = {"judge": config.spec, **judge.backend.describe(), "template_version": judge_prompts.TEMPLATE_VERSION,
            "attr_samples_per_prompt": k, "attr_sample_seed": config.seed, "cache": str(cache_path), **stats}
    if console is not None:
        console.print(f"judge {config.spec}: {stats['judgments']} judgments, {stats['calls']} calls, "
                      f"{stats['cache_hits']} cache hits, {stats['retries']} retries, {stats['reasks']} re-asked, "
                      f"{stats['unparsed']} unparsed", markup=False, emoji=False, highlight=False)
    return [_row(base, j) for base, j in zip(bases, judgments)], info
