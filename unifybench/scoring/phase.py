"""The scoring phase: the run directory's predictions -> ``scores.jsonl`` -> ``results.json``.

Every scorer builds its per-sample rows beside its own code (``answers.answer_rows``,
``fidelity.fidelity_rows``, ``face.face_rows``, ``judges.judge_rows``); ``results.json`` is then
aggregated from ``scores.jsonl`` alone (:func:`unifybench.metrics.aggregate`). It never calls a
method, and takes the method's description as a value (``method_details``).
"""
from __future__ import annotations

from ..errors import BenchError
from ..logs import get_logger
from ..kit.files import write_json_atomic, write_jsonl_atomic
from ..metrics import OPTIONAL_METRICS, TASK_METRICS, ScoringContext, aggregate, aggregate_intervals
from ..progress import progress_bars
from ..run_record import RANDOM_INIT_LABEL, backbone_names, is_random_init
from ..records import GEN_KINDS
from ..store import RESULTS_JSON, SCORES_JSONL, read_jsonl
from ..uncertainty import LEVEL, METHOD


def find_missing(work: dict, store) -> list[str]:
    missing = []
    for ws in work.values():
        for w in ws:
            record = store.predictions.get(w.request.key)
            if record is None and w.purpose == "identity":
                continue  # face identity then says "not scored: no images for the identity prompt"
            if record is None:
                missing.append(f"{w.request.key}: {store.shortfalls.get(w.request.key, 'no prediction')}")
            elif w.request.task in GEN_KINDS:
                for rel in record.images or ():
                    if not (store.run_dir / rel).is_file():
                        missing.append(f"{w.request.key}: image {rel} not found")
    return missing


def gen_tasks_scored(overall: dict) -> bool:
    return any(isinstance(v, float) for t in GEN_KINDS for v in overall.get(t, {}).values())


def score_run(bench, work: dict, store, spec, backbones: str, skipped: dict[str, str], console,
              method_details: dict, method_args: dict, loaded_backbones=None) -> dict:
    """Score every prediction of ``work`` and write ``scores.jsonl`` and ``results.json``.
    ``method_args``: the parsed arguments, every default filled (the given ones label the run)."""
    missing = find_missing(work, store)
    if missing:
        listing = store.run_dir / "missing.txt"
        listing.write_text("\n".join(missing) + "\n", encoding="utf-8")
        shown = "; ".join(missing[:5]) + (f"; ... ({len(missing)} in all)" if len(missing) > 5 else "")
        raise BenchError(f"cannot score: {len(missing)} prediction(s) missing or unreadable: {shown} "
                         f"(full list in {listing})", store.predictions_path)

    tasks_run = [t for t in spec.tasks if t not in skipped]
    context = ScoringContext(
        protocol=spec.protocol,
        requested={c: [t for t in tasks_run if any(w.request.task == t for w in ws)] for c, ws in work.items()},
        humans={c: bench.concept(c).identity_prompt for c in work if bench.concept(c).kind == "human"},
        judge=spec.judge is not None, choice_eval=spec.choice_eval,
        dreambench_plus=bench.format == "dreambench_plus")
    from .answers import answer_rows
    from .captions import caption_rows

    rows = answer_rows(work, store, tasks_run, spec.protocol) + caption_rows(bench, work, store, tasks_run)
    backbone_info: dict | None = None
    caption_clip: dict | None = None
    if any(r["task"] == "caption" and bench.concept(r["concept"]).captions for r in rows):  # MyVLM's CLIPScore
        from .captions import add_clip_scores
        from .encoders import load_backbones

        if loaded_backbones is None:
            loaded_backbones = load_backbones(backbones, device=spec.device, seed=spec.seed, clip_name=spec.clip_model)
        add_clip_scores(rows, bench, loaded_backbones, batch_size=max(spec.batch_size, 32))
        caption_clip = loaded_backbones.describe()
    if "gen" in tasks_run:
        from .encoders import load_backbones
        from .face import face_rows
        from .fidelity import FidelityScorer, fidelity_rows

        from .encoders import DINO_CHECKPOINT, DINO_VITS8

        fidelity_protocol = "reference" if spec.protocol == "reference" else "dreambooth"
        dino_name = DINO_CHECKPOINT
        if bench.format == "dreambench_plus" and spec.protocol == "reference":  # their CLIP/DINO, their DINO
            fidelity_protocol, dino_name = "dreambench_plus", DINO_VITS8
        if loaded_backbones is None or getattr(loaded_backbones, "dino_name", DINO_CHECKPOINT) != dino_name:
            other_dino = {} if dino_name == DINO_CHECKPOINT else {"dino_name": dino_name}
            loaded_backbones = load_backbones(backbones, device=spec.device, seed=spec.seed,
                                              clip_name=spec.clip_model, **other_dino)
        scorer = FidelityScorer(loaded_backbones, protocol=fidelity_protocol, batch_size=max(spec.batch_size, 32),
                                device=spec.device)
        backbone_info = scorer.describe()
        gen_works = {name: [w for w in ws if w.request.task == "gen"] for name, ws in work.items()}
        gen_works = {name: ws for name, ws in gen_works.items() if ws}
        n_images = sum(len(store.predictions[w.request.key].images) for ws in gen_works.values() for w in ws
                       if w.purpose != "identity")
        with progress_bars(console) as progress:
            bar = progress.add_task("scoring images", total=n_images)
            rows += fidelity_rows(scorer, bench, gen_works, store, lambda n: progress.advance(bar, n))
        faces, face_backend, context.face_unavailable = face_rows(bench, gen_works, store, backbones, spec.device,
                                                                  spec.seed, spec.batch_size, console)
        rows += faces
        if face_backend:
            backbone_info["face"] = face_backend

    judge_info = None
    if spec.judge is not None:
        from .judges import judge_rows

        judge_tasks = [t for t in tasks_run if t in ("vqa", "text_only", "attr_gen")]
        judged, judge_info = judge_rows(bench, work, store, config=spec.judge, protocol=spec.protocol,
                                        tasks=judge_tasks, device=spec.device, batch_size=spec.batch_size,
                                        console=console)
        rows += judged
    dreambench_plus_info = None
    if spec.judge is not None and bench.format == "dreambench_plus" and "gen" in tasks_run:
        from .judges.dreambench_plus import dreambench_plus_rows

        judged, dreambench_plus_info = dreambench_plus_rows(bench, work, store, config=spec.judge, console=console)
        rows += judged

    scores_path = store.run_dir / SCORES_JSONL
    write_jsonl_atomic(scores_path, rows)
    scored = read_jsonl(scores_path)
    overall, per_concept = aggregate(scored, context, tasks_run)
    intervals, concept_intervals = aggregate_intervals(scored, context, tasks_run, overall, per_concept, spec.seed,
                                                       spec.bootstrap)
    for task, reason in skipped.items():
        overall[task] = {m: reason for m in TASK_METRICS[task] if (task, m) not in OPTIONAL_METRICS}
    random_scores = ("every score" if is_random_init(method_details) else
                     "generation scores" if backbones in ("random", "tiny") and gen_tasks_scored(overall) else None)
    if (backbones in ("random", "tiny") and not is_random_init(method_details)
            and isinstance(overall.get("caption", {}).get("clip_score"), float)):
        random_scores = f"{random_scores} and caption CLIPScores" if random_scores else "caption CLIPScores"
    if spec.judge is not None and spec.judge.spec == "hf:tiny" and not is_random_init(method_details):
        random_scores = f"{random_scores} and judged scores" if random_scores else "judged scores"
    results = {
        "run": store.run_dir.name,
        "method": spec.method,
        # The arguments given, as parsed (0.850 reads 0.85): they label the run in the leaderboard.
        "method_args": {k: method_args[k] for k in sorted(spec.method_args) if k in method_args},
        "method_details": method_details,
        "bench": {"name": bench.name, "format": bench.format},
        "protocol": spec.protocol,
        "choice_eval": spec.choice_eval,
        "limit": spec.limit,
        "backbones": {"kind": backbones, **backbone_names(backbones, spec.clip_model)},
        "generation_scoring": backbone_info or "not used",
        **({"caption_clip_score": caption_clip} if caption_clip else {}),  # the CLIP that scored captions
        # Which numbers come from random weights: all of them (the method's model), or generation's.
        "label": f"{random_scores}: {RANDOM_INIT_LABEL}" if random_scores else None,
        "seed": spec.seed,
        "judge": judge_info,
        # DreamBench++'s judge protocol, its mode among it (deterministic or reference): every table says which.
        **({"dreambench_plus_judge": dreambench_plus_info} if dreambench_plus_info else {}),
        "tasks": {t: overall[t] for t in spec.tasks if t in overall},
        # What the numbers rest on: a table of runs on different concept sets says so.
        "counts": {"concepts": len(work), "items": sum(r["scorer"] == "answer" for r in scored),
                   "images": sum(r["scorer"] == "fidelity" for r in scored)},
        "concepts": per_concept,
        # 95% intervals of every mean (uncertainty.py); per concept, over that concept's items alone.
        "bootstrap": {"resamples": spec.bootstrap, "seed": spec.seed, "level": LEVEL, "method": METHOD}
        if spec.bootstrap else None,
        "intervals": intervals,
        "concept_intervals": concept_intervals,
    }
    write_json_atomic(store.run_dir / RESULTS_JSON, results)
    get_logger("scoring").info(f"scored {len(scored)} samples of {len(work)} concept(s): {store.run_dir / 'results.json'}")
    print_summary(results, console, skipped)
    return results


def format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def print_summary(results: dict, console, skipped: dict | None = None) -> None:
    """The tasks the method does, each mean with its interval; the skipped tasks were named once
    when the run began."""
    from rich.table import Table

    mode = (results.get("dreambench_plus_judge") or {}).get("mode")
    table = Table(title=f"{results['method']} on {results['bench']['name']} (protocol {results['protocol']}"
                        + (f"; DreamBench++ judge mode {mode}" if mode else "") + ")")
    table.add_column("task")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% interval", justify="right")
    from rich.markup import escape

    from ..report import interval_parts

    intervals = results.get("intervals") or {}
    notes: dict[str, int] = {}
    for task, metrics in results["tasks"].items():
        if task in (skipped or {}):
            continue
        for metric, value in metrics.items():
            ci = intervals.get(task, {}).get(metric)
            if ci and ci.get("note"):
                notes.setdefault(ci["note"], len(notes) + 1)
            shown = interval_parts(value, ci["lo"], ci["hi"]) if ci and isinstance(value, float) else None
            table.add_row(task, metric, shown[0] if shown else format_value(value),
                          escape(shown[1] + (f" [note {notes[ci['note']]}]" if ci.get("note") else "")) if shown else "")
    console.print(table)
    for note, number in notes.items():  # fewer than 5 concepts: said under the numbers it concerns
        console.print(f"[yellow]\\[note {number}] {escape(note)}[/yellow]")
    if results.get("label"):
        console.print(f"[yellow]{results['label']}[/yellow]")
