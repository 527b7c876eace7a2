"""Every metric in one place: its task, name, direction, what it means, and why it may have no value;
and the one aggregation step that turns per-sample rows into results.

Scorers (``scoring/answers.py``, ``scoring/fidelity.py``, ``scoring/face.py``, the judge) only
write rows, one per scored sample, into ``scores.jsonl``. :func:`aggregate` is the only code that
computes a number of ``results.json`` from them: per concept over that concept's rows, and overall
by pooling every row (the reference aggregation) except ``attr_score``, which is a mean per prompt,
then per concept, then over concepts. A metric without a value holds a string from :class:`Why`.

Rows carry ``scorer`` (``answer``, ``fidelity``, ``face``, ``judge``), ``task``, ``concept`` and
``key`` (the request they score), plus the scorer's fields:

- answer: ``index``, ``question``, ``truth``, ``reply`` and the protocol's fields (``negative``,
  ``parsed``, ``correct`` for rec; ``parsed``, ``correct`` for choice; ``bleu`` for vqa/text_only);
- fidelity: ``index``, ``prompt``, ``image``, ``clip_i``, ``clip_t``, ``dino`` (plain gen prompts);
- face: ``purpose`` (``identity``: a generated image, or ``reference``: a reference photo),
  ``image``, ``face_found`` and, for identity images, ``face_sim``;
- judge: ``index``, ``judge_score`` (None when unparsed), ``judge_parsed``, ``judge_reply`` (and
  ``judge_first_reply`` when re-asked); attr_gen rows also ``image``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable


DREAMBENCH_PLUS_CATEGORIES = ("animal", "human", "object", "style")  # data.dreambench_plus (tested equal)
DREAMBENCH_PLUS_PROMPT_KINDS = ("photorealistic", "style_transfer", "imaginative")
DREAMBENCH_PLUS_METRICS = ("cp", "pf", "cp_pf", *(f"cp_{c}" for c in DREAMBENCH_PLUS_CATEGORIES),
                           *(f"pf_{k}" for k in DREAMBENCH_PLUS_PROMPT_KINDS), "cp_run_std", "pf_run_std",
                           "unparsed", "refused")


@dataclass(frozen=True)
class Metric:
    task: str
    name: str
    direction: str  # "higher" or "lower" is better
    description: str


METRICS: tuple[Metric, ...] = (
    Metric("rec", "pos_acc", "higher", "accuracy on items whose answer is yes (the reference's recall)"),
    Metric("rec", "neg_acc", "higher", "accuracy on items whose answer is 'No.' (the reference's no-recall)"),
    Metric("rec", "weighted_acc", "higher", "mean of pos_acc and neg_acc"),
    Metric("rec", "accuracy", "higher", "accuracy over all items (the reference's plain accuracy)"),
    Metric("rec", "unparsed", "lower", "replies read as neither yes nor no (scored wrong)"),
    Metric("vqa", "bleu", "higher", "character BLEU against the ground truth (weights 0.7, 0.3; nltk smoothing 1)"),
    Metric("vqa", "judge_score", "higher", "judge's 0 / 0.5 / 1, mean over parsed judgments"),
    Metric("vqa", "judge_unparsed", "lower", "judge replies unreadable after one re-ask"),
    Metric("text_only", "bleu", "higher", "character BLEU against the ground truth"),
    Metric("text_only", "judge_score", "higher", "judge's 0 / 0.5 / 1, mean over parsed judgments"),
    Metric("text_only", "judge_unparsed", "lower", "judge replies unreadable after one re-ask"),
    Metric("choice", "accuracy", "higher", "share of items answered with the correct option"),
    Metric("choice", "unparsed", "lower", "replies naming no single option (scored wrong)"),
    Metric("choice", "circular_accuracy", "higher", "--choice-eval circular (MMBench's CircularEval): share of "
                                                    "items answered right in every rotation of their options"),
    *(Metric(task, "refused", "lower", "replies that declined to answer (\"I'm sorry, I can't ...\"): scored as wrong, "
                                       "counted here too; shown only where there are some")
      for task in ("rec", "vqa", "text_only", "choice")),
    Metric("caption", "recall", "higher", "captions naming their concept (whole token, any case; RAP's recall)"),
    Metric("caption", "precision", "higher", "concept names mentioned that are the photo's concept, pooled over "
                                             "captions (RAP's precision)"),
    Metric("caption", "f1", "higher", "harmonic mean of recall and precision"),
    Metric("caption", "clip_score", "higher", "CLIPScore of photo and caption, the concept named by its category "
                                              "word (MyVLM's; benchmarks with reference captions)"),
    Metric("gen", "clip_i", "higher", "CLIP image embedding cosine to the reference photos"),
    Metric("gen", "clip_t", "higher", "CLIP cosine to the prompt with the concept replaced by its class noun"),
    Metric("gen", "dino", "higher", "DINO ViT-S/16 [CLS] cosine to the reference photos"),
    Metric("gen", "face_sim", "higher", "ArcFace cosine to the reference faces (human concepts)"),
    Metric("gen", "face_missing", "lower", "identity images in which no face was found"),
    Metric("gen", "face_missing_refs", "lower", "reference photos in which no face was found"),
    Metric("gen", "copies", "lower", "generated images that are copies of a reference photo (its bytes, or within "
                                      "6 bits of its difference hash): they score against themselves"),
    # DreamBench++ benches with a judge (scoring/judges/dreambench_plus.py): their GPT-4o protocol.
    Metric("gen", "cp", "higher", "DreamBench++ concept preservation: judge's 0-4 / 4, mean over judged first "
                                  "images; in reference mode the mean of three runs' means"),
    Metric("gen", "pf", "higher", "DreamBench++ prompt following: judge's 0-4 / 4 against the prompt as written"),
    Metric("gen", "cp_pf", "higher", "DreamBench++ CP x PF (the product of the two means)"),
    *(Metric("gen", f"cp_{c}", "higher", f"DreamBench++ CP of {c} subjects") for c in DREAMBENCH_PLUS_CATEGORIES),
    *(Metric("gen", f"pf_{k}", "higher", f"DreamBench++ PF of {k.replace('_', ' ')} prompts")
      for k in DREAMBENCH_PLUS_PROMPT_KINDS),
    Metric("gen", "cp_run_std", "lower", "DreamBench++ reference mode: sample std of CP over the three runs"),
    Metric("gen", "pf_run_std", "lower", "DreamBench++ reference mode: sample std of PF over the three runs"),
    Metric("gen", "unparsed", "lower", "DreamBench++ judgments without exactly one score after 3 calls "
                                       "(kept and counted; theirs drops them)"),
    Metric("gen", "refused", "lower", "DreamBench++ judgments the judge refused (its own count)"),
    Metric("attr_gen", "attr_score", "higher", "judge's 0 / 0.5 / 1: mean per prompt, then per concept, then overall"),
    Metric("attr_gen", "unparsed", "lower", "judge replies unreadable after one re-ask"),
)

# Columns only published results have (Yo'LLaVA reports visual and text-only multiple choice apart;
# our `choice` pools both): shown after `choice`'s own metrics, never computed here.
PUBLISHED_ONLY: tuple[Metric, ...] = (
    Metric("choice", "visual_mc", "higher", "visual multiple choice (published rows only)"),
    Metric("choice", "text_mc", "higher", "text-only multiple choice (published rows only)"),
)

TASK_METRICS: dict[str, tuple[str, ...]] = {}
for _m in METRICS:
    TASK_METRICS.setdefault(_m.task, ())
    TASK_METRICS[_m.task] += (_m.name,)
# Counts that appear only where the face scorer ran (human concepts).
# choice's accuracy and circular_accuracy: one or the other, by the run's --choice-eval; refusals
# only where a reply declined; DreamBench++'s judge metrics only on DreamBench++ benches.
OPTIONAL_METRICS = frozenset({("gen", "face_missing"), ("gen", "face_missing_refs"), ("gen", "copies"),
                              ("choice", "circular_accuracy"),
                              *((task, "refused") for task in ("rec", "vqa", "text_only", "choice"))}
                             | {("gen", m) for m in DREAMBENCH_PLUS_METRICS})
DIRECTIONS: dict[str, str] = {f"{m.task}.{m.name}": m.direction for m in METRICS + PUBLISHED_ONLY}


def column_order() -> list[str]:
    """Every ``task.metric`` column in table order (published-only columns after their task's own)."""
    order = []
    for task, names in TASK_METRICS.items():
        order += [f"{task}.{n}" for n in names]
        order += [f"{m.task}.{m.name}" for m in PUBLISHED_ONLY if m.task == task]
    return order


class Why:
    """Why a metric has no value: every such string, in one place."""

    NO_JUDGE = "not scored: no judge configured"
    NO_ITEMS = "not scored: no items"
    NO_PROMPTS = "not scored: no prompts"
    NO_POSITIVES = "not scored: no positive items"
    NO_NEGATIVES = "not scored: no negative items"
    NEEDS_BOTH_SIDES = "not scored: needs positives and negatives"
    PARSES_NOTHING = "not scored: the reference rule matches substrings, it parses nothing"
    NOTHING_TO_JUDGE = "not scored: nothing to judge"
    NOT_HUMAN = "not scored: not a human concept"
    NO_HUMANS = "not scored: no human concepts"
    NO_MENTIONS = "not scored: no caption names a concept"
    NO_REFERENCE_CAPTIONS = "not scored: the benchmark ships no reference captions"
    NO_IDENTITY_PROMPT = "not scored: the concept has no identity prompt"
    NO_FACE_IN_REFS = "not scored: no face found in any reference photo"
    NO_FACE_IN_GENS = "not scored: no face found in any generated image"

    @staticmethod
    def unsupported(method: str, task: str) -> str:
        return f"not scored: method {method} does not support {task}"

    @staticmethod
    def no_values(metric: str) -> str:
        return f"not scored: no {metric} values"

    @staticmethod
    def all_unparsed(n: int) -> str:
        return f"not scored: all {n} judge replies unparsed"

    @staticmethod
    def none_scored(unparsed: int, refused: int) -> str:
        return f"not scored: no judgment gave a score ({unparsed} unparsed, {refused} refused)"

    @staticmethod
    def no_identity_images(prompt: str) -> str:
        return f"not scored: no images for the identity prompt {prompt!r}"

    @staticmethod
    def face_unavailable(message: str) -> str:
        return f"not scored: {message}"


def is_reason(value) -> bool:
    return isinstance(value, str) and value.startswith("not scored")


@dataclass
class ScoringContext:
    """What aggregation needs besides the rows: facts about the run, never a score."""

    protocol: str = "default"  # default | reference
    requested: dict[str, list[str]] = field(default_factory=dict)  # concept -> tasks it had requests for
    humans: dict[str, str | None] = field(default_factory=dict)  # human concept -> its identity prompt
    judge: bool = False  # a judge is configured
    choice_eval: str = "plain"  # plain | circular (tasks.build_requests)
    face_unavailable: str | None = None  # why the face backend could not be loaded
    dreambench_plus: bool = False  # a DreamBench++ bench: gen has its judge's metrics


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _of(rows: list[dict], scorer: str, task: str) -> list[dict]:
    return [r for r in rows if r["scorer"] == scorer and r["task"] == task]


def _rec(rows: list[dict], ctx: ScoringContext, concepts: list[str], pooled: bool) -> dict:
    rows = _of(rows, "answer", "rec")
    pos = [r["correct"] for r in rows if not r["negative"]]
    neg = [r["correct"] for r in rows if r["negative"]]
    pos_acc, neg_acc = _mean(pos), _mean(neg)
    # The mean of the two sides' accuracies: with one side missing it would be that side alone, and
    # always-yes on positives only would score a perfect 1.0.
    return {
        "pos_acc": Why.NO_POSITIVES if pos_acc is None else pos_acc,
        "neg_acc": Why.NO_NEGATIVES if neg_acc is None else neg_acc,
        "weighted_acc": (pos_acc + neg_acc) / 2 if pos_acc is not None and neg_acc is not None
        else Why.NEEDS_BOTH_SIDES if rows else Why.NO_ITEMS,
        "accuracy": _mean(pos + neg) if rows else Why.NO_ITEMS,
        "unparsed": (Why.PARSES_NOTHING if ctx.protocol == "reference"
                     else sum(r["parsed"] is None for r in rows)),
    }


def circular_items(rows: list[dict]) -> list[dict]:
    """One row per multiple-choice item of a circular run: right only if every rotation is."""
    items: dict[str, dict] = {}
    for r in rows:
        key = r.get("item", r["key"])
        if key not in items:
            items[key] = {"concept": r["concept"], "key": key, "correct": True}
        items[key]["correct"] = items[key]["correct"] and bool(r["correct"])
    return list(items.values())


def _choice(rows: list[dict], ctx: ScoringContext, concepts: list[str], pooled: bool) -> dict:
    rows = _of(rows, "answer", "choice")
    name, scored = ("circular_accuracy", circular_items(rows)) if ctx.choice_eval == "circular" else ("accuracy", rows)
    return {
        name: _mean([r["correct"] for r in scored]) if rows else Why.NO_ITEMS,
        "unparsed": (Why.PARSES_NOTHING if ctx.protocol == "reference"
                     else sum(r["parsed"] is None for r in rows)),
    }


def _caption(rows: list[dict], ctx: ScoringContext, concepts: list[str], pooled: bool) -> dict:
    rows = _of(rows, "answer", "caption")
    if not rows:
        return {m: Why.NO_ITEMS for m in TASK_METRICS["caption"]}
    recall = _mean([float(r["correct"]) for r in rows])
    mentions = sum(r["n_mentioned"] for r in rows)
    precision = sum(float(r["correct"]) for r in rows) / mentions if mentions else None
    if precision is None:
        f1 = Why.NO_MENTIONS
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    clip = [r["clip_score"] for r in rows if r.get("clip_score") is not None]
    return {"recall": recall, "precision": Why.NO_MENTIONS if precision is None else precision, "f1": f1,
            "clip_score": _mean(clip) if clip else Why.NO_REFERENCE_CAPTIONS}


def _judged(rows: list[dict]) -> tuple[list[float], int]:
    """(parsed scores, number unparsed) of judge rows."""
    scores = [r["judge_score"] for r in rows if r["judge_parsed"]]
    return scores, len(rows) - len(scores)


def _judge_value(value: float | None, n: int, n_unparsed: int, ctx: ScoringContext):
    if value is not None:
        return value
    if not ctx.judge:
        return Why.NO_JUDGE
    return Why.NOTHING_TO_JUDGE if n == 0 else Why.all_unparsed(n_unparsed)


def _open(task: str):
    def aggregate_open(rows: list[dict], ctx: ScoringContext, concepts: list[str], pooled: bool) -> dict:
        answered = _of(rows, "answer", task)
        judged = _of(rows, "judge", task)
        scores, n_unparsed = _judged(judged)
        return {
            "bleu": _mean([r["bleu"] for r in answered]) if answered else Why.NO_ITEMS,
            "judge_score": _judge_value(_mean(scores), len(judged), n_unparsed, ctx),
            "judge_unparsed": n_unparsed if ctx.judge else Why.NO_JUDGE,
        }
    return aggregate_open


def _face_reason(concept: str, face_rows: list[dict], ctx: ScoringContext) -> str:
    if concept not in ctx.humans:
        return Why.NOT_HUMAN
    if ctx.face_unavailable:
        return Why.face_unavailable(ctx.face_unavailable)
    identity = [r for r in face_rows if r["purpose"] == "identity"]
    if not identity:
        prompt = ctx.humans[concept]
        return Why.no_identity_images(prompt) if prompt else Why.NO_IDENTITY_PROMPT
    if not any(r["face_found"] for r in face_rows if r["purpose"] == "reference"):
        return Why.NO_FACE_IN_REFS
    return Why.NO_FACE_IN_GENS


def _gen(rows: list[dict], ctx: ScoringContext, concepts: list[str], pooled: bool) -> dict:
    fidelity = _of(rows, "fidelity", "gen")
    faces = _of(rows, "face", "gen")
    judged = _of(rows, "dreambench_plus", "gen")
    if not fidelity and not faces and not judged:
        return {m: Why.NO_PROMPTS for m in TASK_METRICS["gen"] if ("gen", m) not in OPTIONAL_METRICS}
    out: dict = {}
    for name in ("clip_i", "clip_t", "dino"):
        values = [r[name] for r in fidelity if r.get(name) is not None]
        out[name] = _mean(values) if values else Why.no_values(name)
    sims = [r["face_sim"] for r in faces if r["purpose"] == "identity" and r["face_sim"] is not None]
    if sims:
        out["face_sim"] = _mean(sims)
    else:
        reasons = sorted({_face_reason(c, [r for r in faces if r["concept"] == c], ctx)
                          for c in concepts if c in ctx.humans})
        if not pooled:
            out["face_sim"] = _face_reason(concepts[0], faces, ctx)
        else:
            out["face_sim"] = "; ".join(reasons) if reasons else Why.NO_HUMANS
    if fidelity:
        out["copies"] = sum(bool(r.get("copies_reference")) for r in fidelity)
    if faces:
        out["face_missing"] = sum(not r["face_found"] for r in faces if r["purpose"] == "identity")
        out["face_missing_refs"] = sum(not r["face_found"] for r in faces if r["purpose"] == "reference")
    if ctx.dreambench_plus:
        out.update(_dreambench_plus(judged, ctx))
    return out


def dreambench_plus_selection(metric: str):
    """(criterion, the rows a DreamBench++ mean is over) for ``cp``, ``pf`` and their breakdowns."""
    criterion, _, part = metric.partition("_")
    if part in DREAMBENCH_PLUS_CATEGORIES:
        return criterion, lambda r: r["criterion"] == criterion and r["category"] == part
    if part in DREAMBENCH_PLUS_PROMPT_KINDS:
        return criterion, lambda r: r["criterion"] == criterion and r["prompt_kind"] == part
    return criterion, lambda r: r["criterion"] == criterion


def _run_means(rows: list[dict]) -> list[float]:
    """Per run: the mean of score / 4 over its scored rows (their cal_score on what they kept)."""
    means = []
    for run in sorted({r["run"] for r in rows}):
        scores = [r["score"] for r in rows if r["run"] == run and r["status"] == "scored"]
        if scores:
            means.append(sum(scores) / len(scores) / 4)
    return means


def _sample_std(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def _dreambench_plus(rows: list[dict], ctx: ScoringContext) -> dict:
    """CP, PF, CP x PF and their breakdowns from the judge's rows (one per judged image and run)."""
    if not ctx.judge:
        return {"cp": Why.NO_JUDGE, "pf": Why.NO_JUDGE, "cp_pf": Why.NO_JUDGE}
    out: dict = {}
    for metric in ("cp", "pf", *(f"cp_{c}" for c in DREAMBENCH_PLUS_CATEGORIES),
                   *(f"pf_{k}" for k in DREAMBENCH_PLUS_PROMPT_KINDS)):
        _, chosen = dreambench_plus_selection(metric)
        selected = [r for r in rows if chosen(r)]
        if not selected:
            if metric in ("cp", "pf"):
                out[metric] = Why.NOTHING_TO_JUDGE
            continue
        means = _run_means(selected)
        out[metric] = _mean(means) if means else Why.none_scored(sum(r["status"] == "unparsed" for r in selected),
                                                                 sum(r["status"] == "refused" for r in selected))
        if metric in ("cp", "pf") and len({r["run"] for r in selected}) > 1:
            std = _sample_std(means)
            out[f"{metric}_run_std"] = std if std is not None else Why.no_values(f"{metric} per run")
    cp, pf = out.get("cp"), out.get("pf")
    out["cp_pf"] = cp * pf if isinstance(cp, float) and isinstance(pf, float) else Why.no_values("cp and pf")
    out["unparsed"] = sum(r["status"] == "unparsed" for r in rows)
    out["refused"] = sum(r["status"] == "refused" for r in rows)
    return out


def _attr_concept_mean(rows: list[dict]) -> float | None:
    """Mean per prompt (over its parsed judgments), then over the concept's prompts."""
    by_prompt: dict[str, list[float]] = {}
    for r in rows:
        if r["judge_parsed"]:
            by_prompt.setdefault(r["key"], []).append(r["judge_score"])
    return _mean([_mean(v) for v in by_prompt.values()])


def _attr(rows: list[dict], ctx: ScoringContext, concepts: list[str], pooled: bool) -> dict:
    judged = _of(rows, "judge", "attr_gen")
    n_unparsed = sum(not r["judge_parsed"] for r in judged)
    means = [m for c in concepts if (m := _attr_concept_mean([r for r in judged if r["concept"] == c])) is not None]
    return {
        "attr_score": _judge_value(_mean(means), len(judged), n_unparsed, ctx),
        "unparsed": n_unparsed if ctx.judge else Why.NO_JUDGE,
    }


AGGREGATORS = {"rec": _rec, "choice": _choice, "caption": _caption, "vqa": _open("vqa"), "text_only": _open("text_only"),
               "gen": _gen, "attr_gen": _attr}


def _with_refusals(result: dict, rows: list[dict], task: str) -> dict:
    """``result`` with the task's count of refusals, where a reply declined (answers.is_refusal)."""
    refused = sum(1 for r in _of(rows, "answer", task) if r.get("refused"))
    return {**result, "refused": refused} if refused else result


def aggregate(rows: Iterable[dict], ctx: ScoringContext, tasks: list[str]) -> tuple[dict, dict]:
    """``(overall, per_concept)`` from per-sample rows: ``overall[task][metric]`` pools every concept
    that had requests for the task; ``per_concept[concept][task][metric]`` uses its rows alone."""
    rows = list(rows)
    by_concept: dict[str, list[dict]] = {c: [] for c in ctx.requested}
    for r in rows:
        by_concept.setdefault(r["concept"], []).append(r)
    overall: dict[str, dict] = {}
    per_concept: dict[str, dict] = {c: {} for c in ctx.requested}
    for task in tasks:
        concepts = [c for c, ts in ctx.requested.items() if task in ts]
        if not concepts:
            overall[task] = {m: Why.NO_PROMPTS if task in ("gen", "attr_gen") else Why.NO_ITEMS
                             for m in TASK_METRICS[task] if (task, m) not in OPTIONAL_METRICS}
            continue
        scoped = [r for r in rows if r["concept"] in set(concepts)]
        overall[task] = _with_refusals(AGGREGATORS[task](scoped, ctx, concepts, True), scoped, task)
        for c in concepts:
            per_concept[c][task] = _with_refusals(AGGREGATORS[task](by_concept[c], ctx, [c], False), by_concept[c], task)
    return overall, per_concept


# ----------------------------------------------------------------------------- intervals
# Each mean of the aggregators above as the items it averages (uncertainty.Samples), so that its
# interval (a concept jackknife) recomputes exactly what the mean is made of; :func:`aggregate_intervals` checks
# that the samples give the aggregators' own number before it trusts them.


def samples(task: str, metric: str, rows: list[dict]):
    """The Samples parts of ``task.metric`` from per-sample rows, or None (a count: no interval)."""
    from .uncertainty import Samples

    def ratio(selected, num, den=lambda r: 1.0, combine="pooled", proportion=False):
        s = Samples(combine=combine, proportion=proportion)
        for r in selected:  # an item is its request, and for an image the file it is
            s.add(r["concept"], num(r), den(r), (r["key"], r.get("image")))
        return s.frozen()

    if task == "rec":
        answered = _of(rows, "answer", "rec")
        pos = ratio(answered, lambda r: float(r["correct"] and not r["negative"]), lambda r: float(not r["negative"]),
                    proportion=True)
        neg = ratio(answered, lambda r: float(r["correct"] and r["negative"]), lambda r: float(r["negative"]),
                    proportion=True)
        return {"pos_acc": [pos], "neg_acc": [neg], "weighted_acc": [pos, neg],
                "accuracy": [ratio(answered, lambda r: float(r["correct"]), proportion=True)]}.get(metric)
    if task == "caption" and metric == "clip_score":
        return [ratio([r for r in _of(rows, "answer", "caption") if r.get("clip_score") is not None],
                      lambda r: r["clip_score"])]
    if task == "caption" and metric in ("recall", "precision"):  # f1 is no mean: no interval
        answered = _of(rows, "answer", "caption")
        return [ratio(answered, lambda r: float(r["correct"]),
                      (lambda r: 1.0) if metric == "recall" else (lambda r: float(r["n_mentioned"])),
                      proportion=metric == "recall")]
    if task == "choice" and metric == "accuracy":
        return [ratio(_of(rows, "answer", "choice"), lambda r: float(r["correct"]), proportion=True)]
    if task == "choice" and metric == "circular_accuracy":
        return [ratio(circular_items(_of(rows, "answer", "choice")), lambda r: float(r["correct"]), proportion=True)]
    if task in ("vqa", "text_only") and metric == "bleu":
        return [ratio(_of(rows, "answer", task), lambda r: r["bleu"])]
    if task in ("vqa", "text_only") and metric == "judge_score":
        judged = _of(rows, "judge", task)
        return [ratio(judged, lambda r: r["judge_score"] if r["judge_parsed"] else 0.0,
                      lambda r: float(r["judge_parsed"]))]
    if task == "gen" and metric in ("clip_i", "clip_t", "dino"):
        return [ratio([r for r in _of(rows, "fidelity", "gen") if r.get(metric) is not None], lambda r: r[metric])]
    if task == "gen" and metric == "face_sim":
        faces = [r for r in _of(rows, "face", "gen") if r["purpose"] == "identity" and r.get("face_sim") is not None]
        return [ratio(faces, lambda r: r["face_sim"])]
    if task == "gen" and metric in DREAMBENCH_PLUS_METRICS and metric not in ("cp_pf", "cp_run_std", "pf_run_std",
                                                                              "unparsed", "refused"):
        # One part per run: the metric is the mean of the runs' means, each pooled over its items.
        _, chosen = dreambench_plus_selection(metric)
        selected = [r for r in _of(rows, "dreambench_plus", "gen") if chosen(r)]
        parts = []
        for run in sorted({r["run"] for r in selected}):
            in_run = [r for r in selected if r["run"] == run]
            if any(r["status"] == "scored" for r in in_run):
                parts.append(ratio(in_run, lambda r: r["score"] / 4 if r["status"] == "scored" else 0.0,
                                   lambda r: float(r["status"] == "scored")))
        return parts or None
    if task == "attr_gen" and metric == "attr_score":  # a mean per prompt, then per concept, then over concepts
        prompts: dict[tuple[str, str], list[float]] = {}
        for r in _of(rows, "judge", "attr_gen"):
            if r["judge_parsed"]:
                prompts.setdefault((r["concept"], r["key"]), []).append(r["judge_score"])
        s = Samples(combine="concept_mean")
        for (concept, key), scores in prompts.items():
            s.add(concept, sum(scores) / len(scores), item=(key, None))
        return [s.frozen()]
    return None


def aggregate_intervals(rows: Iterable[dict], ctx: ScoringContext, tasks: list[str], overall: dict,
                        per_concept: dict, seed: int, resamples: int) -> tuple[dict, dict]:
    """``(intervals, concept_intervals)``: for every mean of ``overall`` its 95% interval over the
    concepts (:mod:`unifybench.uncertainty`), and per concept the interval over its own prompts."""
    from .uncertainty import interval

    rows = list(rows)
    intervals: dict[str, dict] = {}
    per: dict[str, dict] = {c: {} for c in per_concept}
    if resamples < 1:
        return intervals, per
    for task in tasks:
        concepts = [c for c, ts in ctx.requested.items() if task in ts]
        wanted = set(concepts)
        scoped = [r for r in rows if r["concept"] in wanted]
        for metric, value in overall.get(task, {}).items():
            parts = samples(task, metric, scoped) if isinstance(value, float) else None
            if not parts:
                continue
            estimate = sum(p.estimate() for p in parts) / len(parts)
            if abs(estimate - value) > 1e-9:  # the samples must be what the mean is made of
                raise RuntimeError(f"{task}.{metric}: interval samples give {estimate}, the aggregate {value}")
            found = interval(parts, seed, resamples)
            if found:
                intervals.setdefault(task, {})[metric] = found
            for c in concepts:
                if not isinstance(per_concept.get(c, {}).get(task, {}).get(metric), float):
                    continue
                own = [p.only(c) for p in parts if c in p.num]
                found = interval(own, seed, resamples, resample_concepts=False) if len(own) == len(parts) else None
                if found:
                    per[c].setdefault(task, {})[metric] = found
        if task == "gen" and isinstance(overall.get("gen", {}).get("cp_pf"), float):
            found = _product_interval(samples("gen", "cp", scoped), samples("gen", "pf", scoped), seed, resamples)
            if found:
                intervals.setdefault("gen", {})["cp_pf"] = found
    return intervals, per


def paired_metric(rows_a: list[dict], rows_b: list[dict], task: str, metric: str, seed: int = 0) -> dict | None:
    """``task.metric`` of run A against run B (their ``scores.jsonl`` rows) over exactly the items
    both scored: :func:`unifybench.uncertainty.paired` plus each run's mean on those items; None when
    the metric is a count or no item is shared."""
    from .uncertainty import paired

    parts_a, parts_b = samples(task, metric, rows_a), samples(task, metric, rows_b)
    if not parts_a or not parts_b:
        return None
    shared = {}
    for c in parts_a[0].ids:
        theirs = set(parts_b[0].ids.get(c, ()))
        ids = [i for i in parts_a[0].ids[c] if i in theirs]
        if ids:
            shared[c] = ids
    if not shared:
        return None
    a = [p.aligned(shared) for p in parts_a]
    b = [p.aligned(shared) for p in parts_b]
    found = paired(a, b, seed)
    if found is None:
        return None
    return {"mean_a": sum(p.estimate() for p in a) / len(a), "mean_b": sum(p.estimate() for p in b) / len(b),
            **found}


def _product_interval(cp_parts, pf_parts, seed: int, resamples: int) -> dict | None:
    """CP x PF's interval: the concept jackknife of the product of the two means (each judged image
    has a CP row and a PF row). ``seed`` and ``resamples``: as :func:`unifybench.uncertainty.interval`'s."""
    from .uncertainty import product_interval

    return product_interval(cp_parts, pf_parts)
