"""Predict into a resumable run directory, then score from it.

The two phases meet only in the run directory (``store.py``): scoring reads what prediction
wrote, so scores can be recomputed without the model, and a rerun of the same command redoes
nothing that finished. When every prediction already exists the method is not even constructed.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .devices import check_device
from .errors import BenchError
from .logs import run_log
from .methods import GenRequest, Method, load_method_class
from .records import GEN_KINDS, QA_KINDS, Benchmark
from .metrics import OPTIONAL_METRICS, TASK_METRICS, ScoringContext, Why, aggregate
from .scoring.judges import JudgeConfig
from .seeding import seeded
from . import distributed
from .store import RunStore, prepare_out_dir, read_jsonl, run_dir_lock, write_json_atomic, write_jsonl_atomic
from .tasks import Work, build_requests

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
    for package in ("unifybench", "torch", "torchvision", "transformers", "open_clip_torch", "pillow", "openai",
                    "pandas"):
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
    """``(kind, backbones)``. ``default`` loads the real checkpoints now (a run that cannot be scored
    stops before it predicts); ``auto`` becomes ``default`` when they load, else ``random`` with one
    line saying so. Either way they are returned loaded, so scoring does not load them again.
    When the hub cannot be reached, only the local Hugging Face cache is looked in
    (``scoring.encoders.load_backbones``)."""
    if kind not in ("default", "auto"):
        return kind, None
    from .scoring.encoders import load_backbones

    try:
        return "default", load_backbones("default", device=device, seed=seed, clip_name=clip_model)
    except BenchError as exc:
        if kind == "default":
            raise
        console.print(f"[yellow]real scorer checkpoints unavailable ({exc.message}); "
                      f"continuing with --backbones random: every generation score is {RANDOM_INIT_LABEL}[/yellow]")
        return "random", None


def _select_concepts(bench: Benchmark, wanted: list[str] | None) -> list[str]:
    names = [c.name for c in bench.concepts]
    if not wanted:
        return names
    unknown = [c for c in wanted if c not in names]
    if unknown:
        raise BenchError(f"unknown concept(s) {', '.join(unknown)}; known: {', '.join(names)}", where="--concepts")
    return wanted


def check_spec(spec: RunSpec) -> None:
    """Numbers and lists a run cannot start with: one line each, before anything is read or made."""
    if not spec.tasks:
        raise BenchError("no tasks given; choose from " + ", ".join(QA_KINDS + GEN_KINDS), where="--tasks")
    unknown = [t for t in spec.tasks if t not in QA_KINDS + GEN_KINDS]
    if unknown:
        raise BenchError(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(QA_KINDS + GEN_KINDS)}",
                         where="--tasks")
    for value, flag in ((spec.batch_size, "--batch-size"), (spec.images_per_prompt, "--images-per-prompt")):
        if value < 1:
            raise BenchError(f"must be at least 1, got {value}", where=flag)
    if spec.limit is not None and spec.limit < 1:
        raise BenchError(f"must be at least 1 (leave it out for every item), got {spec.limit}", where="--limit")
    if spec.concepts is not None and not spec.concepts:
        raise BenchError("no concepts given", where="--concepts")


def run(spec: RunSpec, out_root: Path, console=None, verbose: bool = False) -> RunOutcome:
    """Personalize, predict and score one specification; everything that can be refused is refused
    before the run directory is made or the method constructed. Log lines go to
    ``<run_dir>/log.txt`` (and to stderr too when ``verbose``)."""
    console = console or _null_console()
    rank = distributed.from_env()
    if rank.active:
        return _run_ranked(rank, spec, out_root, console, verbose)
    p = _prepare(spec, out_root, rank, console, spec.device)
    # Every rank's lock too: no plain run while a rank of a torchrun launch still works here.
    with run_dir_lock(p.run_dir, also_existing=".lock.rank*"), run_log(p.run_dir, verbose):
        store = RunStore(p.run_dir)
        run_json = _write_run_json(p.run_dir, spec, p.identity, p.bench, p.backbones)
        console.print(f"run directory: {p.run_dir}")

        def described(details: dict) -> None:  # recorded before predicting: an interrupted run has it too
            run_json["method_details"] = details
            write_json_atomic(p.run_dir / "run.json", run_json)

        _predict_pending(p, spec, store, console, described)
        store.merge_rank_files()  # what an interrupted torchrun run left, now one file
        results = score_run(p.bench, p.work, store, spec, p.backbones, p.skipped, console, p.loaded_backbones)
    return RunOutcome(p.run_dir, results)


@dataclass
class _Prepared:
    """What a run is, checked and derived before its run directory is touched."""
    run_dir: Path
    bench: Benchmark
    work: dict[str, list[Work]]
    method_cls: type
    identity: dict
    backbones: str
    loaded_backbones: object
    skipped: dict[str, str]
    device: str


def _prepare(spec: RunSpec, out_root: Path, rank: distributed.Rank, console, device: str) -> _Prepared:
    """``device``: this process's (under torchrun, cuda:LOCAL_RANK for --device cuda)."""
    from .data import load_benchmark
    from .data.common import validate_images

    check_spec(spec)
    check_device(spec.device)
    method_cls = load_method_class(spec.method)
    method_cls.validate_arguments(spec.method_args)
    if spec.judge is not None:
        spec.judge.validate()
    prepare_out_dir(out_root, "--out", create=False)  # made with the run directory, once all is checked
    bench = load_benchmark(spec.bench, spec.format)
    concepts = _select_concepts(bench, spec.concepts)
    method_cls.check_concepts(spec.method_args, [bench.concept(name) for name in concepts])

    supported = [t for t in spec.tasks if t in method_cls.tasks]
    skipped = {t: Why.unsupported(spec.method, t) for t in spec.tasks if t not in method_cls.tasks}
    if skipped:
        console.print(f"skipping {', '.join(skipped)}: method {spec.method} does not support them")
    work = build_requests(bench, supported, concepts, seed=spec.seed,
                          images_per_prompt=spec.images_per_prompt, limit=spec.limit)
    validate_images(_images_used(bench, work, method_cls))

    # Scorer backbones matter only to generation scores; a run without them is comparable to any.
    # Real checkpoints are loaded now, so that a run that cannot be scored stops before predicting.
    # Under torchrun only rank 0 scores, so only it loads them.
    backbones, loaded_backbones = BACKBONES_UNUSED, None
    if any(t in GEN_KINDS for t in supported):
        if rank.is_main:
            backbones, loaded_backbones = resolve_backbones(spec.backbones, console, device=device,
                                                            seed=spec.seed, clip_model=spec.clip_model)
        else:
            backbones = spec.backbones

    # What the predictions depend on names the run directory; scoring settings (backbones, the
    # judge) do not, so changing them rescores the same predictions.
    identity = {
        "method": spec.method, "method_args": dict(sorted(spec.method_args.items())),
        "bench": {"name": bench.name, "format": bench.format, "fingerprint": bench.fingerprint()},
        "tasks": spec.tasks, "concepts": concepts, "seed": spec.seed, "protocol": spec.protocol,
        "images_per_prompt": spec.images_per_prompt, "limit": spec.limit,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    run_dir = Path(out_root) / f"{spec.method}__{bench.name}__{digest}"
    return _Prepared(run_dir, bench, work, method_cls, identity, backbones, loaded_backbones, skipped, device)


def _predict_pending(p: _Prepared, spec: RunSpec, store: RunStore, console, described,
                     work: dict[str, list[Work]] | None = None, before_concept=None) -> None:
    """Construct the method and predict what ``store`` lacks of ``work`` (default: the whole run's),
    after handing the method's description to ``described``; when nothing is pending the method is
    never loaded."""
    work = p.work if work is None else work
    n_pending = sum(1 for ws in work.values() for w in ws if w.request.key not in store)
    if not n_pending:
        console.print("every prediction exists: the method is not loaded")
        return
    method = p.method_cls(spec.method_args, seed=spec.seed, device=p.device, batch_size=spec.batch_size)
    described(method.describe())
    _predict(method, p.bench, work, store, spec, console, before_concept)


def concept_weights(bench: Benchmark, work: dict[str, list[Work]], trains: bool) -> dict[str, float]:
    """How much work a concept is, for sharding: its requests (a generation request counts its
    images) and, for a method that trains, its training photos (each worth ten requests). The
    whole work, not what is left: every rank must compute the same split whenever it starts."""
    weights = {}
    for name, ws in work.items():
        requests = sum(getattr(w.request, "n_images", 1) for w in ws)
        weights[name] = requests + (10 * len(bench.concept(name).train_images) if trains else 0)
    return weights


def _run_ranked(rank: distributed.Rank, spec: RunSpec, out_root: Path, console, verbose: bool) -> RunOutcome:
    """One rank of a torchrun launch (see :mod:`.distributed`): its checks and lock, the meeting of
    the ranks, its concepts, then, on rank 0, the wait for the others and the scoring of everything."""
    with contextlib.ExitStack() as held:
        problem = None
        try:
            device = distributed.check_rank_device(rank, spec.device)
            p = _prepare(spec, out_root, rank, console, device)
            held.enter_context(run_dir_lock(p.run_dir, rank.lock_name()))
        except Exception as exc:  # every rank learns of it at the rendezvous, and stops there
            problem = exc
        attempt_id = distributed.rendezvous(rank, problem)
        shares = distributed.shard(concept_weights(p.bench, p.work, p.method_cls.needs_personalization), rank.world)
        mine = {name: ws for name, ws in p.work.items() if name in set(shares[rank.rank])}
        held.enter_context(run_log(p.run_dir, verbose, rank.log_name()))
        attempt = distributed.Attempt(p.run_dir, attempt_id, rank)
        held.callback(attempt.close)
        console.print(f"run directory: {p.run_dir} ({rank.label()}: {', '.join(mine) or 'no concepts'})")
        try:
            run_json = _write_run_json(p.run_dir, spec, p.identity, p.bench, p.backbones) if rank.is_main else None
            store = RunStore(p.run_dir, rank=rank.rank)
            _predict_pending(p, spec, store, console,
                             lambda details: write_json_atomic(attempt.folder / f"method.{rank.rank}.json", details),
                             work=mine, before_concept=lambda name: attempt.stop_if_another_failed())
            attempt.done(list(mine))
            if not rank.is_main:
                console.print(f"{rank.label()} done; rank 0 scores the run")
                return RunOutcome(p.run_dir, {})
            said = set()

            def say_who_is_missing(missing: list[int]) -> None:  # once per set of ranks still working
                if tuple(missing) not in said:
                    said.add(tuple(missing))
                    console.print(f"waiting for rank(s) {', '.join(map(str, missing))} to finish their concepts")

            attempt.wait_for_all(on_wait=say_who_is_missing)
        except distributed.OtherRankFailed:
            raise  # that rank wrote its failure and printed it
        except BenchError as exc:
            attempt.failed(distributed.one_line(exc))
            raise BenchError(exc.one_line(), where=rank.label()) from exc
        except Exception as exc:
            attempt.failed(distributed.one_line(exc))
            raise
        # Rank 0, everyone done: the method's description from whichever rank loaded it, in this
        # launch or (when everything was predicted before it) an earlier one.
        this_launch = sorted(attempt.folder.glob("method.*.json"), key=lambda path: int(path.name.split(".")[1]))
        earlier = sorted((p.run_dir / "ranks").glob("*/method.*.json"), key=lambda path: path.stat().st_mtime)
        source = this_launch[0] if this_launch else (earlier[-1] if earlier and not run_json["method_details"] else None)
        if source is not None:
            run_json["method_details"] = json.loads(source.read_text(encoding="utf-8"))
            write_json_atomic(p.run_dir / "run.json", run_json)
        store = RunStore(p.run_dir)
        store.merge_rank_files()
        results = score_run(p.bench, p.work, store, spec, p.backbones, p.skipped, console, p.loaded_backbones)
    return RunOutcome(p.run_dir, results)


def _images_used(bench: Benchmark, work: dict[str, list[Work]], method_cls) -> list[Path]:
    """Every benchmark image the run will open: its items' images, and each concept's photos
    (training photos for personalization, references for scoring, held-out photos a method may draw)."""
    paths: list[Path] = []
    for name, ws in work.items():
        concept = bench.concept(name)
        paths += [w.record.image for w in ws if w.request.task in QA_KINDS and w.record.image is not None]
        if method_cls.needs_personalization:
            paths += list(concept.train_images) + list(concept.cropped_train_images)
        if any(w.request.task in GEN_KINDS for w in ws):
            paths += list(concept.reference_images) + list(concept.test_images)
    return paths


def _write_run_json(run_dir: Path, spec: RunSpec, identity: dict, bench: Benchmark, backbones: str) -> dict:
    path = run_dir / "run.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    run_json = {
        "spec": asdict(spec),
        "identity": identity,
        "benchmark": {"name": bench.name, "format": bench.format, "root": str(bench.root),
                      "fingerprint": identity["bench"]["fingerprint"],
                      **({"source": bench.source} if bench.source else {})},
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


def progress_bars(console):
    """Bars that move on a terminal; elsewhere (a log file, a pipe, CI) nothing: a bar drawn once at
    the end says nothing that the results do not."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False, disable=not console.is_terminal)


def _predict(method: Method, bench: Benchmark, work: dict[str, list[Work]], store: RunStore,
             spec: RunSpec, console, before_concept=None) -> None:
    """Personalize and predict one concept at a time, each inside its own :meth:`Method.activate`.

    What a concept's predictions may depend on is fixed here: random draws are seeded by (seed,
    concept, phase) (:mod:`.seeding`), batches are cut from the concept's whole request list (a
    resumed run cuts the same batches and re-asks a partly finished one, keeping what was stored),
    and the method's isolation fingerprint must be the same after the concept as before it."""
    concepts = [c for c, ws in work.items() if any(w.request.key not in store for w in ws)]
    with progress_bars(console) as progress:
        bar_p = progress.add_task("personalizing", total=len(concepts)) if method.needs_personalization else None
        steps = progress.add_task("", total=1, visible=False)  # the concept being personalized, step by step
        bar = progress.add_task("predicting", total=sum(1 for c in concepts for w in work[c]
                                                        if w.request.key not in store))
        for name in concepts:
            if before_concept is not None:
                before_concept(name)
            concept = bench.concept(name)
            before = method.isolation_fingerprint()
            method.progress = lambda what, done, total, name=name: progress.update(
                steps, description=f"  {name}: {what}", completed=done, total=max(total, 1), visible=True)
            with seeded(spec.seed, name, "personalize"):
                state = _personalized(method, concept, store)
            progress.update(steps, visible=False)
            if bar_p is not None:
                progress.advance(bar_p)
            with method.activate(concept, state):
                answer_work = [w for w in work[name] if w.request.task in QA_KINDS]
                gen_work = [w for w in work[name] if w.request.task in GEN_KINDS]
                for batch, todo, replies in _predicted(method, method.answer, concept, state, answer_work,
                                                       spec.batch_size, store, spec.seed):
                    for w, reply in zip(batch, replies):
                        req = w.request
                        if reply is not None and req.key not in store:
                            store.append({"key": req.key, "task": req.task, "concept": req.concept,
                                          "index": req.index, "answer": str(reply)})
                    progress.advance(bar, len(todo))
                gen_batch = max(1, spec.batch_size // spec.images_per_prompt)
                for batch, todo, outputs in _predicted(method, method.generate, concept, state, gen_work, gen_batch,
                                                       store, spec.seed):
                    for w, images in zip(batch, outputs):
                        req: GenRequest = w.request  # type: ignore[assignment]
                        if req.key in store or images is None or len(images) != req.n_images:
                            continue  # already stored, or recorded as missing (scoring names it)
                        folder = store.image_folder(req.concept, req.task, req.index, req.prompt)
                        paths = store.save_images(folder, list(images))
                        store.append({"key": req.key, "task": req.task, "concept": req.concept,
                                      "index": req.index, "prompt": req.prompt, "seed": req.seed,
                                      "images": paths})
                    progress.advance(bar, len(todo))
            after = method.isolation_fingerprint()
            if before != after:
                raise BenchError(f"the method's base model changed while concept {name} was personalized or "
                                 f"predicted (fingerprint {before} -> {after}): later concepts would depend on "
                                 f"this one; the predictions made so far are kept", where=f"method {method.name}")


def _predicted(method: Method, call, concept, state, works: list[Work], size: int, store: RunStore, seed: int):
    """``(batch, todo, outputs)`` for each batch of ``works`` with something left to predict: the
    whole batch is asked (so its composition never depends on what a previous run finished),
    under a global random state seeded by the concept and the batch."""
    for batch in _batches(works, size):
        todo = [w for w in batch if w.request.key not in store]
        if not todo:
            continue
        with seeded(seed, concept.name, batch[0].request.key, len(batch)):
            outputs = call(concept, state, [w.request for w in batch])
        _check_count(method, outputs, batch)
        yield batch, todo, outputs


def _personalized(method: Method, concept, store: RunStore):
    """The concept's state: personalized now, or reloaded from what a previous run saved."""
    if not method.needs_personalization:
        return None
    state_dir = store.state_dir(concept.name)
    done_marker = state_dir / ".done"
    if done_marker.exists():
        return method.load_state(concept, state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    state = method.personalize(concept, state_dir)
    done_marker.touch()
    return state


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
    """Every scorer writes its per-sample rows into ``scores.jsonl``; ``results.json`` is then
    aggregated from that file alone (:func:`unifybench.metrics.aggregate`)."""
    missing = _find_missing(work, store)
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
        judge=spec.judge is not None)
    rows = _answer_rows(work, store, tasks_run, spec.protocol)
    backbone_info: dict | None = None
    gen_tasks = [t for t in tasks_run if t in GEN_KINDS]
    if "gen" in gen_tasks:
        from .scoring.encoders import load_backbones
        from .scoring.fidelity import FidelityScorer

        fidelity_protocol = "reference" if spec.protocol == "reference" else "dreambooth"
        if loaded_backbones is None:
            loaded_backbones = load_backbones(backbones, device=spec.device, seed=spec.seed,
                                              clip_name=spec.clip_model)
        scorer = FidelityScorer(loaded_backbones, protocol=fidelity_protocol, batch_size=max(spec.batch_size, 32),
                                device=spec.device)
        backbone_info = scorer.describe()
        gen_works = {name: [w for w in ws if w.request.task == "gen"] for name, ws in work.items()}
        gen_works = {name: ws for name, ws in gen_works.items() if ws}
        n_images = sum(len(store.predictions[w.request.key]["images"]) for ws in gen_works.values() for w in ws
                       if w.purpose != "identity")
        with progress_bars(console) as progress:
            bar = progress.add_task("scoring images", total=n_images)
            # Every concept's images in one stream through the pipeline (scoring/pipeline.py).
            rows += _fidelity_rows(scorer, bench, gen_works, store, lambda n: progress.advance(bar, n))
        face_rows, face_backend, context.face_unavailable = _face_rows(bench, gen_works, store, backbones, spec,
                                                                       console)
        rows += face_rows
        if face_backend:
            backbone_info["face"] = face_backend

    judge_info = None
    if spec.judge is not None:
        from .scoring.judges import judge_rows

        judge_tasks = [t for t in tasks_run if t in ("vqa", "text_only", "attr_gen")]
        judged, judge_info = judge_rows(bench, work, store, config=spec.judge, protocol=spec.protocol,
                                        tasks=judge_tasks, device=spec.device, batch_size=spec.batch_size,
                                        console=console)
        rows += judged

    scores_path = store.run_dir / "scores.jsonl"
    write_jsonl_atomic(scores_path, rows)
    overall, per_concept = aggregate(read_jsonl(scores_path), context, tasks_run)
    for task, reason in skipped.items():
        overall[task] = {m: reason for m in TASK_METRICS[task] if (task, m) not in OPTIONAL_METRICS}
    method_details = _method_details(store.run_dir)
    random_scores = ("every score" if method_details.get("random_init") else
                     "generation scores" if backbones in ("random", "tiny") and gen_tasks_scored(overall) else None)
    results = {
        "run": store.run_dir.name,
        "method": spec.method,
        "method_args": spec.method_args,
        "method_details": method_details,
        "bench": {"name": bench.name, "format": bench.format},
        "protocol": spec.protocol,
        "limit": spec.limit,
        "backbones": {"kind": backbones, **_backbone_names(backbones, spec.clip_model)},
        "generation_scoring": backbone_info or "not used",
        # Which numbers come from random weights: all of them (the method's model), or generation's.
        "label": f"{random_scores}: {RANDOM_INIT_LABEL}" if random_scores else None,
        "seed": spec.seed,
        "judge": judge_info,
        "tasks": {t: overall[t] for t in spec.tasks if t in overall},
        "concepts": per_concept,
    }
    write_json_atomic(store.run_dir / "results.json", results)
    _print_summary(results, console)
    return results


def _method_details(run_dir: Path) -> dict:
    """What the method said made its predictions (run.json's ``method_details``: base model, backend)."""
    try:
        return json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("method_details") or {}
    except (OSError, ValueError):
        return {}


def gen_tasks_scored(overall: dict) -> bool:
    return any(isinstance(v, float) for t in GEN_KINDS for v in overall.get(t, {}).values())


def _answer_rows(work: dict[str, list[Work]], store: RunStore, tasks: list[str], protocol: str) -> list[dict]:
    """One row per understanding item: the reply as the method gave it, and the protocol's scores."""
    from .scoring.answers import answer_sample

    answer_protocol = "reference" if protocol == "reference" else "default"
    rows = []
    for name, ws in work.items():
        for w in ws:
            if w.request.task not in QA_KINDS or w.request.task not in tasks:
                continue
            item, reply = w.record, store.predictions[w.request.key]["answer"]
            truth = item.answer_as_written if answer_protocol == "reference" else item.answer
            rows.append({"scorer": "answer", "task": item.kind, "concept": name, "key": w.request.key,
                         "index": item.index, "question": item.question, "truth": truth, "reply": reply,
                         **answer_sample(item, reply, answer_protocol)})
    return rows


def _image_rows(task_work: list[Work], store: RunStore) -> list[dict]:
    rows = []
    for w in task_work:
        for rel in store.predictions[w.request.key]["images"]:
            rows.append({"task": w.request.task, "concept": w.request.concept, "key": w.request.key,
                         "index": w.request.index, "image": rel})
    return rows


def _fidelity_rows(scorer, bench: Benchmark, task_works: dict[str, list[Work]], store: RunStore,
                   progress=None) -> list[dict]:
    """One row per generated image of the plain prompts: CLIP-I and DINO against the concept's
    references, CLIP-T against the class prompt (identity-prompt images are for faces only)."""
    groups, rows_of = [], []
    for name, ws in task_works.items():
        ws = [w for w in ws if w.purpose != "identity"]
        rows = []
        for w in ws:
            rows.extend({"scorer": "fidelity", **r, "prompt": w.record.prompt} for r in _image_rows([w], store))
        refs = bench.concept(name).reference_images
        if rows and not refs:
            raise BenchError("concept has no reference photos to compare against", where=f"concept {name}")
        texts = []
        for w in ws:
            texts.extend([w.record.class_prompt] * len(store.predictions[w.request.key]["images"]))
        groups.append((list(refs), [store.run_dir / r["image"] for r in rows], texts))
        rows_of.append(rows)
    out = []
    for rows, scores in zip(rows_of, scorer.score_many(groups, progress=progress)):
        for i, row in enumerate(rows):
            for metric in ("clip_i", "clip_t", "dino"):
                row[metric] = scores[metric][i]
        out.extend(rows)
    return out


def _face_rows(bench: Benchmark, task_works: dict[str, list[Work]], store: RunStore, backbones: str,
               spec: RunSpec, console) -> tuple[list[dict], dict | None, str | None]:
    """Face identity of the human concepts (scoring/face.py): ``(rows, backend description, why the
    backend is unavailable)``. Rows: one per identity-prompt image (``face_sim``, ``face_found``)
    and one per reference photo (``face_found``), so every count is computed from rows."""
    humans = [n for n in task_works if bench.concept(n).kind == "human"]
    if not humans:
        return [], None, None
    from .scoring.face import FaceScorer, load_face_backend

    try:
        face = FaceScorer(load_face_backend(backbones, device=spec.device, seed=spec.seed),
                          batch_size=max(spec.batch_size, 32))
    except BenchError as exc:
        console.print(f"[yellow]face identity not scored: {exc.message}[/yellow]")
        return [], None, exc.message
    rows: list[dict] = []
    for name in humans:
        concept = bench.concept(name)
        done = [w for w in task_works[name] if w.purpose == "identity" and w.request.key in store.predictions]
        if not done:
            continue
        images = _image_rows(done, store)
        refs = list(concept.reference_images)
        scores = face.score(refs, [store.run_dir / r["image"] for r in images])
        for row, sim, found in zip(images, scores["face_sim"], scores["face_found"]):
            rows.append({"scorer": "face", **row, "purpose": "identity", "face_sim": sim, "face_found": found})
        for ref, found in zip(refs, scores["ref_face_found"]):
            rows.append({"scorer": "face", "task": "gen", "concept": name, "key": f"gen/{name}/reference",
                         "purpose": "reference", "image": str(ref), "face_found": found})
    return rows, face.describe(), None


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
        console.print(f"[yellow]{results['label']}[/yellow]")
