"""Predict into a resumable run directory, then score from it.

The two phases meet only in the run directory (``store.py``): scoring reads what prediction
wrote, so scores can be recomputed without the model, and a rerun of the same command redoes
nothing that finished. When every prediction already exists the method is not even constructed.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .devices import check_device
from .errors import BenchError
from .methods import GenRequest, Method, load_method_class
from .records import GEN_KINDS, QA_KINDS, Benchmark
from .scoring.judges import JudgeConfig
from .store import RunStore, write_json_atomic, write_jsonl_atomic
from .tasks import TASK_METRICS, Work, aggregate_generation, build_requests, score_answers

RANDOM_INIT_LABEL = "random-init weights: plumbing and speed only, not a result"
BACKBONES_UNUSED = "not used"


@dataclass
class RunSpec:
    method: str
    bench: str = "mini"
    format: str = "auto"
    tasks: list[str] = field(default_factory=lambda: list(QA_KINDS + GEN_KINDS))
    concepts: list[str] | None = None
    seed: int = 0
    batch_size: int = 16
    device: str = "cpu"
    backbones: str = "default"  # default | auto | random | tiny
    clip_model: str = "ViT-B-32"  # scoring.encoders.CLIP_MODELS; ignored by tiny backbones
    protocol: str = "default"  # default | reference
    images_per_prompt: int = 4
    limit: int | None = None
    method_args: dict[str, str] = field(default_factory=dict)
    # Scoring only: recorded in run.json, not part of the run directory's hash (scoring/judges.py).
    judge: JudgeConfig | None = None


@dataclass
class RunOutcome:
    run_dir: Path
    results: dict


def _null_console():
    from rich.console import Console

    return Console(quiet=True)


def _versions() -> dict[str, str | None]:
    found = {}
    for package in ("unifybench", "torch", "torchvision", "transformers", "open_clip_torch", "pillow"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    found["python"] = platform.python_version()
    return found


def _git_commit() -> str | None:
    source = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def resolve_backbones(kind: str, console, *, device: str = "cpu", seed: int = 0, clip_model: str = "ViT-B-32"):
    """``(kind, backbones)``: ``auto`` becomes ``default`` when the real checkpoints load (returned
    loaded, so scoring does not load them again), else ``random`` with one line saying so."""
    if kind != "auto":
        return kind, None
    from .scoring.encoders import load_backbones

    if not _hub_reachable():
        # Without a network the hub client retries for ~20 s per file; look in the cache only.
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return "default", load_backbones("default", device=device, seed=seed, clip_name=clip_model)
    except BenchError as exc:
        console.print(f"[yellow]real scorer checkpoints unavailable ({exc.message}); "
                      f"continuing with --backbones random: every generation score is {RANDOM_INIT_LABEL}[/yellow]")
        return "random", None


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _select_concepts(bench: Benchmark, wanted: list[str] | None) -> list[str]:
    names = [c.name for c in bench.concepts]
    if not wanted:
        return names
    unknown = [c for c in wanted if c not in names]
    if unknown:
        raise BenchError(f"unknown concept(s) {', '.join(unknown)}; known: {', '.join(names)}", where="--concepts")
    return wanted


def run(spec: RunSpec, out_root: Path, console=None) -> RunOutcome:
    from .data import load_benchmark

    console = console or _null_console()
    check_device(spec.device)
    method_cls = load_method_class(spec.method)
    bench = load_benchmark(spec.bench, spec.format)
    concepts = _select_concepts(bench, spec.concepts)
    if spec.images_per_prompt < 1 or spec.batch_size < 1:
        raise BenchError("must be at least 1", where="--images-per-prompt/--batch-size")
    if spec.judge is not None:
        spec.judge.validate()  # before any prediction, not after

    supported = [t for t in spec.tasks if t in method_cls.tasks]
    skipped = {t: f"not scored: method {spec.method} does not support {t}"
               for t in spec.tasks if t not in method_cls.tasks}
    if skipped:
        console.print(f"skipping {', '.join(skipped)}: method {spec.method} does not support them")

    # Scorer backbones matter only to generation scores; a run without them is comparable to any.
    backbones, loaded_backbones = BACKBONES_UNUSED, None
    if any(t in GEN_KINDS for t in supported):
        backbones, loaded_backbones = resolve_backbones(spec.backbones, console, device=spec.device,
                                                        seed=spec.seed, clip_model=spec.clip_model)

    identity = {
        "method": spec.method, "method_args": dict(sorted(spec.method_args.items())),
        "bench": {"name": bench.name, "format": bench.format, "fingerprint": bench.fingerprint()},
        "tasks": spec.tasks, "concepts": concepts, "seed": spec.seed, "protocol": spec.protocol,
        "backbones": backbones, "images_per_prompt": spec.images_per_prompt, "limit": spec.limit,
    }
    clip_model = _clip_model(backbones, spec.clip_model)
    if clip_model not in (None, "ViT-B-32"):  # only when not the default: existing run dirs keep their hash
        identity["clip_model"] = clip_model
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    run_dir = Path(out_root) / f"{spec.method}__{bench.name}__{digest}"
    store = RunStore(run_dir)
    run_json = _write_run_json(run_dir, spec, identity, bench, backbones)
    console.print(f"run directory: {run_dir}")

    work = build_requests(bench, supported, concepts, seed=spec.seed,
                          images_per_prompt=spec.images_per_prompt, limit=spec.limit)
    pending = {c: [w for w in ws if w.request.key not in store] for c, ws in work.items()}
    n_pending = sum(len(ws) for ws in pending.values())
    if n_pending:
        method = method_cls(spec.method_args, seed=spec.seed, device=spec.device, batch_size=spec.batch_size)
        run_json["method_details"] = method.describe()
        write_json_atomic(run_dir / "run.json", run_json)
        _predict(method, bench, pending, store, spec, console)
    else:
        console.print("every prediction exists: the method is not loaded")

    results = score_run(bench, work, store, spec, backbones, skipped, console, loaded_backbones)
    return RunOutcome(run_dir, results)


def _write_run_json(run_dir: Path, spec: RunSpec, identity: dict, bench: Benchmark, backbones: str) -> dict:
    path = run_dir / "run.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    run_json = {
        "spec": asdict(spec),
        "identity": identity,
        "benchmark": {"name": bench.name, "format": bench.format, "root": str(bench.root),
                      "fingerprint": identity["bench"]["fingerprint"]},
        "dtype": "bfloat16" if spec.device.startswith("cuda") else "float32",
        "backbones": {"kind": backbones, **_backbone_names(backbones, spec.clip_model)},
        "versions": _versions(),
        "git_commit": _git_commit(),
        "created": previous.get("created", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
        "method_details": previous.get("method_details", {}),
    }
    write_json_atomic(path, run_json)
    return run_json


def _clip_model(kind: str, clip_model: str) -> str | None:
    """The CLIP architecture a run's scores use: None without backbones, "tiny" for the test models."""
    if kind == BACKBONES_UNUSED:
        return None
    return "tiny" if kind == "tiny" else clip_model


def _backbone_names(kind: str, clip_model: str = "ViT-B-32") -> dict[str, str]:
    """The checkpoints a backbone kind stands for, written into run.json before any is loaded."""
    arch, _, patch = clip_model.rpartition("-")  # open_clip's ViT-B-32 is OpenAI's ViT-B/32
    clip = f"OpenAI CLIP {arch}/{patch} (open_clip {clip_model}, pretrained=openai)"
    dino = "facebook/dino-vits16 ([CLS] of the last layer)"
    if kind == BACKBONES_UNUSED:
        return {}
    names = {"clip_model": _clip_model(kind, clip_model)}
    if kind == "random":
        return {**names, "clip": f"{clip} architecture, random init (seeded)",
                "dino": f"{dino} architecture, random init (seeded)"}
    if kind == "tiny":
        return {**names, "clip": "tiny CLIP config, random init (tests)", "dino": "tiny ViT config, random init (tests)"}
    return {**names, "clip": clip, "dino": dino}


def _progress(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


def _predict(method: Method, bench: Benchmark, pending: dict[str, list[Work]], store: RunStore,
             spec: RunSpec, console) -> None:
    concepts = [c for c, ws in pending.items() if ws]
    with _progress(console) as progress:
        if method.needs_personalization:
            bar = progress.add_task("personalizing", total=len(concepts))
        states: dict[str, Any] = {}
        for name in concepts:
            concept = bench.concept(name)
            if method.needs_personalization:
                state_dir = store.state_dir(name)
                done_marker = state_dir / ".done"
                if done_marker.exists():
                    states[name] = method.load_state(concept, state_dir)
                else:
                    state_dir.mkdir(parents=True, exist_ok=True)
                    states[name] = method.personalize(concept, state_dir)
                    done_marker.touch()
                progress.advance(bar)
            else:
                states[name] = None

        bar = progress.add_task("predicting", total=sum(len(ws) for ws in pending.values()))
        for name in concepts:
            concept = bench.concept(name)
            answer_work = [w for w in pending[name] if w.request.task in QA_KINDS]
            gen_work = [w for w in pending[name] if w.request.task in GEN_KINDS]
            for batch in _batches(answer_work, spec.batch_size):
                replies = method.answer(concept, states[name], [w.request for w in batch])
                _check_count(method, replies, batch)
                for w, reply in zip(batch, replies):
                    if reply is not None:
                        req = w.request
                        store.append({"key": req.key, "task": req.task, "concept": req.concept,
                                      "index": req.index, "answer": str(reply)})
                progress.advance(bar, len(batch))
            gen_batch = max(1, spec.batch_size // spec.images_per_prompt)
            for batch in _batches(gen_work, gen_batch):
                outputs = method.generate(concept, states[name], [w.request for w in batch])
                _check_count(method, outputs, batch)
                for w, images in zip(batch, outputs):
                    req: GenRequest = w.request  # type: ignore[assignment]
                    if images is None or len(images) != req.n_images:
                        continue  # recorded as missing; scoring names it
                    folder = store.image_folder(req.concept, req.task, req.index, req.prompt)
                    paths = store.save_images(folder, list(images))
                    store.append({"key": req.key, "task": req.task, "concept": req.concept,
                                  "index": req.index, "prompt": req.prompt, "seed": req.seed,
                                  "images": paths})
                progress.advance(bar, len(batch))


def _check_count(method: Method, outputs: list, batch: list) -> None:
    if not isinstance(outputs, list) or len(outputs) != len(batch):
        raise BenchError(f"returned {len(outputs) if isinstance(outputs, list) else type(outputs).__name__} "
                         f"results for {len(batch)} requests", where=f"method {method.name}")


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


# ----------------------------------------------------------------------------- scoring phase


def _find_missing(work: dict[str, list[Work]], store: RunStore) -> list[str]:
    missing = []
    for ws in work.values():
        for w in ws:
            record = store.predictions.get(w.request.key)
            if record is None and w.purpose == "identity":
                continue  # face identity then says "not scored: no images for the identity prompt"
            if record is None:
                missing.append(f"{w.request.key}: no prediction")
            elif w.request.task in GEN_KINDS:
                for rel in record.get("images", []):
                    if not (store.run_dir / rel).is_file():
                        missing.append(f"{w.request.key}: image {rel} not found")
    return missing


def score_run(bench: Benchmark, work: dict[str, list[Work]], store: RunStore, spec: RunSpec,
              backbones: str, skipped: dict[str, str], console, loaded_backbones=None) -> dict:
    missing = _find_missing(work, store)
    if missing:
        listing = store.run_dir / "missing.txt"
        listing.write_text("\n".join(missing) + "\n", encoding="utf-8")
        shown = "; ".join(missing[:5]) + (f"; ... ({len(missing)} in all)" if len(missing) > 5 else "")
        raise BenchError(f"cannot score: {len(missing)} prediction(s) missing or unreadable: {shown} "
                         f"(full list in {listing})", store.predictions_path)

    tasks_run = [t for t in spec.tasks if t not in skipped]
    per_concept: dict[str, dict[str, dict]] = {c: {} for c in work}
    overall: dict[str, dict] = {}
    score_rows: list[dict] = []
    backbone_info: dict | None = None

    with _progress(console) as progress:
        bar = progress.add_task("scoring", total=sum(len(ws) for ws in work.values()))
        for task in [t for t in tasks_run if t in QA_KINDS]:
            all_pairs = []
            for name, ws in work.items():
                pairs = [(w.record, store.predictions[w.request.key]["answer"])
                         for w in ws if w.request.task == task]
                if not pairs:
                    continue
                rows, metrics = score_answers(task, pairs, spec.protocol)
                per_concept[name][task] = metrics
                for (item, reply), row in zip(pairs, rows):
                    score_rows.append({"key": f"{task}/{name}/{item.index}", "task": task, "concept": name,
                                       "index": item.index, "reply": reply, **row})
                all_pairs.extend(pairs)
                progress.advance(bar, len(pairs))
            overall[task] = (score_answers(task, all_pairs, spec.protocol)[1] if all_pairs
                             else {m: "not scored: no items" for m in TASK_METRICS[task]})

        gen_tasks = [t for t in tasks_run if t in GEN_KINDS]
        if gen_tasks:
            from .scoring.encoders import load_backbones
            from .scoring.fidelity import FidelityScorer

            fidelity_protocol = "reference" if spec.protocol == "reference" else "dreambooth"
            if loaded_backbones is None:
                loaded_backbones = load_backbones(backbones, device=spec.device, seed=spec.seed,
                                                  clip_name=spec.clip_model)
            scorer = FidelityScorer(loaded_backbones, protocol=fidelity_protocol, batch_size=max(spec.batch_size, 32),
                                    device=spec.device)
            backbone_info = scorer.describe()
            has_humans = any(bench.concept(c).kind == "human" for c in work)
            for task in gen_tasks:
                all_rows: list[dict] = []
                task_works = {name: [w for w in ws if w.request.task == task] for name, ws in work.items()}
                task_works = {name: ws for name, ws in task_works.items() if ws}
                if task == "gen":
                    # Every concept's images in one stream through the pipeline (scoring/pipeline.py).
                    rows_of = _score_generation(scorer, bench, task_works, store)
                    faces = _score_faces(bench, task_works, store, backbones, spec, console)
                    if faces.get("_backend"):
                        backbone_info["face"] = faces.pop("_backend")
                else:
                    rows_of = {name: _list_images(ws, store) for name, ws in task_works.items()}
                    faces = {}
                face_reasons = set()
                for name, task_work in task_works.items():
                    rows = rows_of[name]
                    face_rows, face_counts, face_note = faces.get(name, ([], {}, "not scored: not a human concept"))
                    if bench.concept(name).kind == "human":
                        face_reasons.add(face_note)
                    per_concept[name][task] = aggregate_generation(rows + face_rows, task, face_note)
                    per_concept[name][task].update(face_counts)
                    score_rows.extend({"task": task, "concept": name, **r} for r in rows + face_rows)
                    all_rows.extend(rows + face_rows)
                    progress.advance(bar, len(task_work))
                face_note = (("; ".join(sorted(r for r in face_reasons if r)) or "not scored: no face found")
                             if has_humans else "not scored: no human concepts")
                overall[task] = (aggregate_generation(all_rows, task, face_note) if all_rows
                                 else {m: "not scored: no prompts" for m in TASK_METRICS[task]})
                counted = [per_concept[n][task] for n in task_works if "face_missing" in per_concept[n][task]]
                if counted and all_rows:
                    for key in ("face_missing", "face_missing_refs"):
                        overall[task][key] = sum(m[key] for m in counted)

    judge_info = None
    if spec.judge is not None:
        from .scoring.judges import judge_run

        judge_info = judge_run(bench, work, store, spec, tasks_run, per_concept, overall, score_rows, console)
    for task, reason in skipped.items():
        overall[task] = {m: reason for m in TASK_METRICS[task]}
    results = {
        "run": store.run_dir.name,
        "method": spec.method,
        "method_args": spec.method_args,
        "bench": {"name": bench.name, "format": bench.format},
        "protocol": spec.protocol,
        "backbones": {"kind": backbones, **_backbone_names(backbones, spec.clip_model)},
        "generation_scoring": backbone_info or "not used",
        "label": RANDOM_INIT_LABEL if backbones in ("random", "tiny") and gen_tasks_scored(overall) else None,
        "seed": spec.seed,
        "judge": judge_info,
        "tasks": {t: overall[t] for t in spec.tasks if t in overall},
        "concepts": {c: {t: m for t, m in tasks.items()} for c, tasks in per_concept.items()},
    }
    write_jsonl_atomic(store.run_dir / "scores.jsonl", score_rows)
    write_json_atomic(store.run_dir / "results.json", results)
    _print_summary(results, console)
    return results


def gen_tasks_scored(overall: dict) -> bool:
    return any(isinstance(v, float) for t in GEN_KINDS for v in overall.get(t, {}).values())


def _list_images(task_work: list[Work], store: RunStore) -> list[dict]:
    rows = []
    for w in task_work:
        for rel in store.predictions[w.request.key]["images"]:
            rows.append({"key": w.request.key, "index": w.request.index, "image": rel})
    return rows


def _score_generation(scorer, bench: Benchmark, task_works: dict[str, list[Work]],
                      store: RunStore) -> dict[str, list[dict]]:
    """Per concept, one row per generated image of its plain prompts: CLIP-I and DINO against the
    concept's references, CLIP-T against the class prompt (identity-prompt images are for faces)."""
    groups, rows_of = [], {}
    for name, ws in task_works.items():
        ws = [w for w in ws if w.purpose != "identity"]
        rows = _list_images(ws, store)
        refs = bench.concept(name).reference_images
        if rows and not refs:
            raise BenchError("concept has no reference photos to compare against", where=f"concept {name}")
        texts = []
        for w in ws:
            texts.extend([w.record.class_prompt] * len(store.predictions[w.request.key]["images"]))
        groups.append((list(refs), [store.run_dir / r["image"] for r in rows], texts))
        rows_of[name] = rows
    for (name, rows), scores in zip(rows_of.items(), scorer.score_many(groups)):
        for i, row in enumerate(rows):
            for metric, values in scores.items():
                row[metric] = values[i]
    return rows_of


def _score_faces(bench: Benchmark, task_works: dict[str, list[Work]], store: RunStore, backbones: str,
                 spec: RunSpec, console) -> dict:
    """Face identity of the human concepts: {concept: (rows, counts, note)} (scoring/face.py).

    A concept's identity-prompt images are compared with its reference photos. When the face
    backend cannot be loaded (the optional extra is not installed) face_sim says why."""
    humans = [n for n in task_works if bench.concept(n).kind == "human"]
    if not humans:
        return {}
    from .scoring.face import FaceScorer, load_face_backend

    out: dict = {}
    try:
        face = FaceScorer(load_face_backend(backbones, device=spec.device, seed=spec.seed),
                          batch_size=max(spec.batch_size, 32))
    except BenchError as exc:
        console.print(f"[yellow]face identity not scored: {exc.message}[/yellow]")
        return {n: ([], {}, f"not scored: {exc.message}") for n in humans}
    out["_backend"] = face.describe()
    for name in humans:
        concept = bench.concept(name)
        identity = [w for w in task_works[name] if w.purpose == "identity"]
        done = [w for w in identity if w.request.key in store.predictions]
        if not done:
            why = (f"no images for the identity prompt {concept.identity_prompt!r}" if concept.identity_prompt
                   else "the concept has no identity prompt")
            out[name] = ([], {}, f"not scored: {why}")
            continue
        rows = _list_images(done, store)
        scores = face.score(list(concept.reference_images), [store.run_dir / r["image"] for r in rows])
        for row, sim, found in zip(rows, scores["face_sim"], scores["face_found"]):
            row.update({"purpose": "identity", "face_sim": sim, "face_found": found})
        found = [s for s in scores["face_sim"] if s is not None]
        note = ("not scored: no face found in any reference photo" if scores["face_missing_refs"] == scores["n_refs"]
                else "not scored: no face found in any generated image")
        out[name] = (rows, {"face_missing": scores["face_missing"],
                            "face_missing_refs": scores["face_missing_refs"]}, note if not found else "")
    return out


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return str(value)
    return str(value)


def _print_summary(results: dict, console) -> None:
    from rich.table import Table

    table = Table(title=f"{results['method']} on {results['bench']['name']} (protocol {results['protocol']})")
    table.add_column("task")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for task, metrics in results["tasks"].items():
        for metric, value in metrics.items():
            table.add_row(task, metric, _format_value(value))
    console.print(table)
    if results.get("label"):
        console.print(f"[yellow]generation scores: {results['label']}[/yellow]")
