"""The six tasks: which requests each makes of a method, and which metrics score it.

Understanding: ``rec`` (recognition), ``vqa`` (visual QA), ``text_only`` (QA without an image),
``choice`` (multiple choice). Generation: ``gen`` (the 25 DreamBooth prompts) and ``attr_gen``
(attribute-reasoning prompts that need the concept's extra facts).
"""
from __future__ import annotations

from dataclasses import dataclass

from .methods import AnswerRequest, GenRequest
from .records import GEN_KINDS, QA_KINDS, Benchmark, GenPrompt, QAItem

NO_JUDGE = "not scored: no judge configured"

# Metric names per task, in table order. A metric that cannot be scored holds a "not scored: ..." string.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "rec": ("pos_acc", "neg_acc", "weighted_acc", "unparsed"),
    "vqa": ("bleu", "judge_score", "judge_unparsed"),
    "text_only": ("bleu", "judge_score", "judge_unparsed"),
    "choice": ("accuracy", "unparsed"),
    "gen": ("clip_i", "clip_t", "dino", "face_sim"),
    "attr_gen": ("attr_score", "unparsed"),
}


@dataclass(frozen=True)
class Work:
    """One request with the record it came from (the record stays on the scoring side)."""

    request: AnswerRequest | GenRequest
    record: QAItem | GenPrompt
    # "identity": the extra request for a human concept's identity prompt ("A photo of <c>."), whose
    # images are scored for face identity only (not for CLIP-I, CLIP-T or DINO).
    purpose: str = "prompt"


def build_requests(bench: Benchmark, tasks: list[str], concepts: list[str], *, seed: int,
                   images_per_prompt: int, limit: int | None) -> dict[str, list[Work]]:
    """Requests per concept, in a stable order: tasks in the given order, items in file order."""
    work: dict[str, list[Work]] = {}
    for name in concepts:
        concept_work: list[Work] = []
        for task in tasks:
            if task in QA_KINDS:
                items = [it for it in bench.items.get(name, []) if it.kind == task][:limit]
                for it in items:
                    req = AnswerRequest(concept=name, task=task, index=it.index, question=it.question,
                                        image=it.image, options=it.options)
                    concept_work.append(Work(req, it))
            elif task in GEN_KINDS:
                prompts = [p for p in bench.prompts.get(name, []) if p.kind == task][:limit]
                for p in prompts:
                    req = GenRequest(concept=name, task=task, index=p.index, prompt=p.prompt,
                                     n_images=images_per_prompt, seed=seed)
                    concept_work.append(Work(req, p))
                if task == "gen":
                    concept_work.extend(identity_work(bench, name, seed=seed, images_per_prompt=images_per_prompt))
        work[name] = concept_work
    return work


def identity_work(bench: Benchmark, name: str, *, seed: int, images_per_prompt: int) -> list[Work]:
    """For a human concept with an identity prompt: one more ``gen`` request for it, indexed after
    every plain prompt, whose images face identity is scored on (scoring/face.py)."""
    concept = bench.concept(name)
    if concept.kind != "human" or not concept.identity_prompt:
        return []
    index = 1 + max((p.index for p in bench.prompts.get(name, []) if p.kind == "gen"), default=-1)
    record = GenPrompt(name, index, "gen", concept.identity_prompt,
                       concept.identity_prompt.replace(concept.token, concept.class_noun))
    req = GenRequest(concept=name, task="gen", index=index, prompt=concept.identity_prompt,
                     n_images=images_per_prompt, seed=seed)
    return [Work(req, record, purpose="identity")]


# ----------------------------------------------------------------------------- scoring


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def score_answers(task: str, pairs: list[tuple[QAItem, str]], protocol: str) -> tuple[list[dict], dict]:
    """Per-sample rows and the aggregate metrics of one understanding task over the given pairs."""
    from .scoring import answers, text

    answer_protocol = "reference" if protocol == "reference" else "default"
    rows: list[dict] = []
    if task == "rec":
        for item, reply in pairs:
            rows.append(answers.recognition_sample(item, reply, answer_protocol))
        agg = answers.score_recognition(pairs, answer_protocol)
        metrics = {k: agg[k] for k in TASK_METRICS["rec"]}
    elif task == "choice":
        for item, reply in pairs:
            rows.append(answers.choice_sample(item, reply, answer_protocol))
        agg = answers.score_choice(pairs, answer_protocol)
        metrics = {k: agg[k] for k in TASK_METRICS["choice"]}
    else:  # vqa, text_only
        for item, reply in pairs:
            rows.append({"bleu": text.char_bleu(item.answer, reply)})
        # The judge scores (scoring/judges.py) replace these when a judge is configured.
        metrics = {"bleu": _mean([r["bleu"] for r in rows]), "judge_score": NO_JUDGE, "judge_unparsed": NO_JUDGE}
    return rows, {k: NOT_APPLICABLE.get((task, k), "not scored: no items") if v is None else v
                  for k, v in metrics.items()}


# Why an answer metric has no value (the scorers return None for these).
NOT_APPLICABLE = {
    ("rec", "pos_acc"): "not scored: no positive items",
    ("rec", "neg_acc"): "not scored: no negative items",
    ("choice", "unparsed"): "not scored: the reference rule matches substrings, it parses nothing",
}


def aggregate_generation(rows: list[dict], task: str, face_note: str) -> dict:
    """Flat mean over every generated image (the reference aggregation; prompts have equal counts)."""
    if task == "attr_gen":
        return {"attr_score": NO_JUDGE, "unparsed": NO_JUDGE}
    metrics: dict = {}
    for name in ("clip_i", "clip_t", "dino"):
        values = [r[name] for r in rows if r.get(name) is not None]
        metrics[name] = _mean(values) if values else f"not scored: no {name} values"
    faces = [r["face_sim"] for r in rows if r.get("face_sim") is not None]
    metrics["face_sim"] = _mean(faces) if faces else face_note
    return metrics

