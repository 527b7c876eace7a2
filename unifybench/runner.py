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

from .errors import BenchError
from .methods import GenRequest, Method, load_method_class
from .records import GEN_KINDS, QA_KINDS, Benchmark
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
    protocol: str = "default"  # default | reference
    images_per_prompt: int = 4
    limit: int | None = None
    method_args: dict[str, str] = field(default_factory=dict)


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


def resolve_backbones(kind: str, console) -> str:
    """``auto`` becomes ``default`` when the real checkpoints load, else ``random`` with one line saying so."""
    if kind != "auto":
        return kind
    from .scoring.encoders import load_backbones

    if not _hub_reachable():
        # Without a network the hub client retries for ~20 s per file; look in the cache only.
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        load_backbones("default")
        return "default"
    except BenchError as exc:
        console.print(f"[yellow]real scorer checkpoints unavailable ({exc.message}); "
                      f"continuing with --backbones random: every generation score is {RANDOM_INIT_LABEL}[/yellow]")
        return "random"


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
    method_cls = load_method_class(spec.method)
    bench = load_benchmark(spec.bench, spec.format)
    concepts = _select_concepts(bench, spec.concepts)
    if spec.images_per_prompt < 1 or spec.batch_size < 1:
        raise BenchError("must be at least 1", where="--images-per-prompt/--batch-size")

    supported = [t for t in spec.tasks if t in method_cls.tasks]
    skipped = {t: f"not scored: method {spec.method} does not support {t}"
               for t in spec.tasks if t not in method_cls.tasks}
    if skipped:
        console.print(f"skipping {', '.join(skipped)}: method {spec.method} does not support them")

    # Scorer backbones matter only to generation scores; a run without them is comparable to any.
    backbones = BACKBONES_UNUSED
    if any(t in GEN_KINDS for t in supported):
        backbones = resolve_backbones(spec.backbones, console)

    identity = {
        "method": spec.method, "method_args": dict(sorted(spec.method_args.items())),
        "bench": {"name": bench.name, "format": bench.format, "fingerprint": bench.fingerprint()},
        "tasks": spec.tasks, "concepts": concepts, "seed": spec.seed, "protocol": spec.protocol,
        "backbones": backbones, "images_per_prompt": spec.images_per_prompt, "limit": spec.limit,
    }
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

    results = score_run(bench, work, store, spec, backbones, skipped, console)
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
        "backbones": {"kind": backbones, **_backbone_names(backbones)},
        "versions": _versions(),
        "git_commit": _git_commit(),
        "created": previous.get("created", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
        "method_details": previous.get("method_details", {}),
    }
    write_json_atomic(path, run_json)
    return run_json


def _backbone_names(kind: str) -> dict[str, str]:
    """The checkpoints a backbone kind stands for, written into run.json before any is loaded."""
    clip = "OpenAI CLIP ViT-B/32 (open_clip ViT-B-32, pretrained=openai)"
    dino = "facebook/dino-vits16 ([CLS] of the last layer)"
    if kind == "random":
        return {"clip": f"{clip} architecture, random init (seeded)",
                "dino": f"{dino} architecture, random init (seeded)"}
    if kind == BACKBONES_UNUSED:
        return {}
    if kind == "tiny":
        return {"clip": "tiny CLIP config, random init (tests)", "dino": "tiny ViT config, random init (tests)"}
    return {"clip": clip, "dino": dino}


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
            if record is None:
                missing.append(f"{w.request.key}: no prediction")
            elif w.request.task in GEN_KINDS:
                for rel in record.get("images", []):
                    if not (store.run_dir / rel).is_file():
                        missing.append(f"{w.request.key}: image {rel} not found")
    return missing


def score_run(bench: Benchmark, work: dict[str, list[Work]], store: RunStore, spec: RunSpec,
              backbones: str, skipped: dict[str, str], console) -> dict:
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
            scorer = FidelityScorer(load_backbones(backbones, device=spec.device, seed=spec.seed),
                                    protocol=fidelity_protocol, batch_size=max(spec.batch_size, 32),
                                    device=spec.device)
            backbone_info = scorer.describe()
            has_humans = any(bench.concept(c).kind == "human" for c in work)
            for task in gen_tasks:
                all_rows: list[dict] = []
                for name, ws in work.items():
                    task_work = [w for w in ws if w.request.task == task]
                    if not task_work:
                        continue
                    concept = bench.concept(name)
                    rows = _score_generation(scorer, concept.reference_images, task_work, store) \
                        if task == "gen" else _list_images(task_work, store)
                    face_note = ("not scored: face identity is not implemented yet" if concept.kind == "human"
                                 else "not scored: not a human concept")
                    per_concept[name][task] = aggregate_generation(rows, task, face_note)
                    score_rows.extend({"task": task, "concept": name, **r} for r in rows)
                    all_rows.extend(rows)
                    progress.advance(bar, len(task_work))
                face_note = ("not scored: face identity is not implemented yet" if has_humans
                             else "not scored: no human concepts")
                overall[task] = (aggregate_generation(all_rows, task, face_note) if all_rows
                                 else {m: "not scored: no prompts" for m in TASK_METRICS[task]})

    for task, reason in skipped.items():
        overall[task] = {m: reason for m in TASK_METRICS[task]}
    results = {
        "run": store.run_dir.name,
        "method": spec.method,
        "method_args": spec.method_args,
        "bench": {"name": bench.name, "format": bench.format},
        "protocol": spec.protocol,
        "backbones": {"kind": backbones, **(backbone_info or {})},
        "label": RANDOM_INIT_LABEL if backbones in ("random", "tiny") and gen_tasks_scored(overall) else None,
        "seed": spec.seed,
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


def _score_generation(scorer, refs: list[Path], task_work: list[Work], store: RunStore) -> list[dict]:
    """One row per generated image: CLIP-I and DINO against the references, CLIP-T against the class prompt."""
    rows = _list_images(task_work, store)
    gens = [store.run_dir / r["image"] for r in rows]
    texts = []
    for w in task_work:
        texts.extend([w.record.class_prompt] * len(store.predictions[w.request.key]["images"]))
    if not refs:
        raise BenchError("concept has no reference photos to compare against", where=f"concept {task_work[0].request.concept}")
    scores = scorer.score(list(refs), gens, texts)
    for i, row in enumerate(rows):
        for metric, values in scores.items():
            row[metric] = values[i]
    return rows


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
