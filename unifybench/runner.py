"""Predict into a resumable run directory, then score from it.

The two phases meet only in the run directory (``store.py``): scoring (``scoring/phase.py``)
reads what prediction wrote, so scores can be recomputed without the model, and a rerun of the
same command redoes nothing that finished. When every prediction already exists the method is not
even constructed.

The runner owns a method's lifecycle: for each concept it personalizes once (one marker,
``state/<concept>/.done``, says it finished; otherwise ``personalize`` is called again on the same
folder and may continue from what it saved), reloads a finished concept with ``load_state``,
enters ``activate``, and asks ``answer`` and ``generate`` in batches cut from the concept's whole
request list. A plain run is the one-rank case of a ``torchrun`` launch (:mod:`.distributed`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from . import distributed, run_record
from .devices import check_device
from .errors import BenchError, did_you_mean
from .kit.files import write_json_atomic
from .logs import get_logger, run_log
from .methods import GenRequest, Method, Provider, method_code, resolve_method
from .metrics import Why
from .options import check_declared
from .prediction import Prediction
from .progress import choose_threads, null_console, progress_bars, set_threads
from .run_record import BACKBONES_UNUSED, RANDOM_INIT_LABEL, MethodDetails
from .records import ANSWER_TASKS, GEN_KINDS, TASKS, Benchmark
from .scoring.judges import JudgeConfig
from .scoring.phase import score_run
from .seeding import seeded
from .spec import RunSpec
from .store import RESULTS_JSON, RunStore, check_no_links, check_run_files, prepare_out_dir, run_dir_lock, safe_filename
from .tasks import Work, build_requests

_LOG = get_logger("runner")
__all__ = ["RunSpec", "RunOutcome", "run", "check_spec"]


@dataclass
class RunOutcome:
    run_dir: Path
    results: dict


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
        hint = did_you_mean(unknown[0], names)
        raise BenchError(f"unknown concept(s) {', '.join(unknown)}; {hint}known: {', '.join(names)}", where="--concepts")
    return list(dict.fromkeys(wanted))  # each once, in the order given (the run directory hashes the set)


def _check_fields(spec: RunSpec) -> None:
    # Types, ranges and choices as declared on RunSpec's fields (spec.py): the flags are generated from
    # the same declarations, so a --config file and unifybench.evaluate() meet the flags' rule.
    check_declared(spec)
    if not isinstance(spec.tasks, (list, tuple)) or not all(isinstance(t, str) for t in spec.tasks):
        raise BenchError(f"expected a list of task names, got {spec.tasks!r}", where="--tasks")
    if spec.concepts is not None and (not isinstance(spec.concepts, (list, tuple))
                                      or not all(isinstance(c, str) for c in spec.concepts)):
        raise BenchError(f"expected a list of concept names, got {spec.concepts!r}", where="--concepts")
    if not isinstance(spec.method_args, dict):
        raise BenchError(f"expected KEY=VALUE pairs (a mapping), got {spec.method_args!r}", where="--method-arg")
    if spec.judge is not None and not isinstance(spec.judge, JudgeConfig):
        raise BenchError(f"expected a judge spec such as openai:MODEL, got {spec.judge!r}", where="--judge")
    if not isinstance(spec.resume_changed_code, bool):
        raise BenchError(f"expected true or false, got {spec.resume_changed_code!r}", where="--resume-changed-code")


def check_spec(spec: RunSpec) -> None:
    """Types, ranges, numbers and lists a run cannot start with: one line each, before anything is
    read or made. Tasks are kept once each, in the canonical order: the order given changes nothing."""
    _check_fields(spec)
    if not spec.tasks:
        raise BenchError("no tasks given; choose from " + ", ".join(TASKS), where="--tasks")
    unknown = [t for t in spec.tasks if t not in TASKS]
    if unknown:
        raise BenchError(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}", where="--tasks")
    spec.tasks = [t for t in TASKS if t in spec.tasks]
    for value, flag in ((spec.batch_size, "--batch-size"), (spec.images_per_prompt, "--images-per-prompt")):
        if value < 1:
            raise BenchError(f"must be at least 1, got {value}", where=flag)
    if spec.limit is not None and spec.limit < 1:
        raise BenchError(f"must be at least 1 (leave it out for every item), got {spec.limit}", where="--limit")
    if spec.concepts is not None and not spec.concepts:
        raise BenchError("no concepts given", where="--concepts")


@dataclass
class _Prepared:
    """What a run is, checked and derived before its run directory is touched."""
    run_dir: Path
    bench: Benchmark
    work: dict[str, list[Work]]
    method_cls: type[Method]
    method_args: object  # kit.args.Arguments
    provider: Provider
    code: dict
    identity: dict
    backbones: str
    loaded_backbones: object
    skipped: dict[str, str]
    device: str


def _prepare(spec: RunSpec, out_root: Path, rank: distributed.Rank, console, device: str,
             method_class: type[Method] | None) -> _Prepared:
    """Everything that can be refused, refused before the run directory exists. ``device``: this
    process's (under torchrun, cuda:LOCAL_RANK for --device cuda)."""
    from .data import load_benchmark
    from .data.common import validate_images

    check_spec(spec)
    if spec.judge is not None:
        spec.judge.validate()
    check_device(spec.device)
    method_cls, provider = resolve_method(method_class or spec.method)
    spec.method = method_cls.name
    method_args = method_cls.parse_arguments(spec.method_args)
    prepare_out_dir(out_root, "--out", create=False)  # made with the run directory, once all is checked
    bench = load_benchmark(spec.bench, spec.format, split=spec.split)
    if bench.format == "dreambench_plus" and spec.judge is not None and "gen" in spec.tasks:
        from .scoring.judges.dreambench_plus import check_judge

        check_judge(spec.judge)
    concepts = _select_concepts(bench, spec.concepts)

    supported = [t for t in spec.tasks if t in method_cls.tasks]
    method_cls.check_run(method_args, [bench.concept(name) for name in concepts], supported)
    try:
        method_cls.check_available(method_args)
        unavailable = None
    except BenchError as exc:  # said with the scorer checkpoints, when they are missing too: one download list
        unavailable = exc
    skipped = {t: Why.unsupported(spec.method, t) for t in spec.tasks if t not in method_cls.tasks}
    if skipped:
        console.print(f"skipping {', '.join(skipped)}: method {spec.method} does not support them")
    work = build_requests(bench, supported, concepts, seed=spec.seed,
                          images_per_prompt=spec.images_per_prompt, limit=spec.limit, choice_eval=spec.choice_eval)
    validate_images(_images_used(bench, work, method_cls))

    # Scorer backbones matter only to generation scores and to captions' CLIPScore (benchmarks with
    # reference captions); a run without them is comparable to any. Real checkpoints are loaded now,
    # so that a run that cannot be scored stops before predicting. Under torchrun only rank 0 scores.
    backbones, loaded_backbones = BACKBONES_UNUSED, None
    clip_scored = "caption" in supported and any(bench.concept(c).captions for c in concepts)
    if any(t in GEN_KINDS for t in supported) or clip_scored:
        if rank.is_main and unavailable is None:
            backbones, loaded_backbones = resolve_backbones(spec.backbones, console, device=device,
                                                            seed=spec.seed, clip_model=spec.clip_model)
        elif rank.is_main:
            try:
                resolve_backbones(spec.backbones, console, device=device, seed=spec.seed, clip_model=spec.clip_model)
            except BenchError as exc:
                raise BenchError("models cannot be loaded: " + "; ".join(e.one_line() for e in (unavailable, exc))) \
                    from None
        else:
            backbones = spec.backbones
    if unavailable is not None:
        raise unavailable

    # What the predictions depend on names the run directory: the method and its parsed arguments
    # (every default filled), the benchmark's content and the request set. Scoring settings
    # (backbones, the judge) do not, so changing them rescores the same predictions. The method's
    # code is recorded in run.json and checked on resume instead (run_record.check_same_code).
    identity = {
        "method": spec.method, "method_args": method_args.to_json(),
        "bench": {"name": bench.name, "format": bench.format, "fingerprint": bench.fingerprint()},
        "tasks": spec.tasks, "concepts": sorted(concepts), "seed": spec.seed, "protocol": spec.protocol,
        "images_per_prompt": spec.images_per_prompt, "limit": spec.limit,
    }
    if spec.choice_eval != "plain":  # other requests and another metric; plain runs keep their directories
        identity["choice_eval"] = spec.choice_eval
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    # The readable part is cut short (a 240-character benchmark folder name would make the name too
    # long for the file system); the hash keeps it unique.
    run_dir = Path(out_root) / f"{safe_filename(spec.method, 60)}__{safe_filename(bench.name, 60)}__{digest}"
    return _Prepared(run_dir, bench, work, method_cls, method_args, provider, method_code(method_cls), identity,
                     backbones, loaded_backbones, skipped, device)


def _resume_threads(chosen: dict, previous: dict, store, p) -> dict:
    """CPU kernels sum in another order with another thread count (13 of 672 tiny-model images
    differed between 1 and 2 threads), so a run directory's predictions are all made with one count:
    a resume keeps the recorded one, and refuses another one asked for explicitly."""
    recorded = (previous.get("threads") or {}).get("threads") if isinstance(previous.get("threads"), dict) else None
    pending = store is not None and any(w.request.key not in store for ws in p.work.values() for w in ws)
    if not isinstance(recorded, int) or store is None or not store.predictions or not pending \
            or recorded == chosen["threads"]:
        return chosen
    if chosen["why"] in ("--threads", "OMP_NUM_THREADS"):
        raise BenchError(f"the predictions here were made with {recorded} threads and {chosen['why']} asks for "
                         f"{chosen['threads']}: image bytes depend on the thread count, so one run directory keeps "
                         f"one; give --threads {recorded} (or leave it out) to resume, or another --out", p.run_dir)
    return {**chosen, "threads": recorded, "why": f"as recorded in run.json, for a resume ({chosen['why']})"}


def run(spec: RunSpec, out_root: Path, console=None, verbose: bool = False,
        method_class: type[Method] | None = None) -> RunOutcome:
    """Personalize, predict and score one specification. Everything that can be refused is refused
    before the run directory is made or the method constructed. Under torchrun each rank predicts
    its share of the concepts and rank 0 scores; a plain run is the one-rank case. Log lines go to
    ``<run_dir>/log.txt`` (and to stderr too when ``verbose``). ``method_class``: a Method subclass
    to run instead of looking ``spec.method`` up in the registry."""
    console = console or null_console()
    rank = distributed.from_env()
    with contextlib.ExitStack() as held:
        problem = p = store = previous = code_note = stale_code = None
        try:
            device = distributed.check_rank_device(rank, spec.device)
            p = _prepare(spec, out_root, rank, console, device, method_class)
            check_no_links(p.run_dir)
            check_run_files(p.run_dir)
            # A plain run also holds every rank's lock a launch left: none while a rank still works here.
            held.enter_context(run_dir_lock(p.run_dir, rank.lock_name(),
                                            also_existing=None if rank.active else ".lock.rank*"))
            store = RunStore(p.run_dir, rank=rank.rank if rank.active else None)
            previous = run_record.read_previous(p.run_dir)
            if not previous and store.predictions:
                # The record says what made the predictions (a random-init model's label among it):
                # scoring them without it would put them in a table of real results.
                raise BenchError("predictions without their run record (run.json is missing): what made them is "
                                 "unknown; restore run.json or move the run directory aside", p.run_dir)
            if any(w.request.key not in store for ws in p.work.values() for w in ws):
                code_note = run_record.check_same_code(previous, p.code, spec.resume_changed_code, p.run_dir)
            else:  # only rescoring: the numbers are the recorded code's, whatever the code is now
                stale_code = run_record.code_differs(previous, p.code)
        except Exception as exc:  # under torchrun every rank learns of it at the rendezvous, and stops there
            if not rank.active:
                raise
            problem = exc
        attempt = distributed.begin(rank, problem, p.run_dir if p else None)
        threads = _resume_threads(choose_threads(spec.threads), previous or {}, store, p)
        set_threads(threads["threads"])
        held.callback(attempt.close)
        shares = distributed.shard(concept_weights(p.bench, p.work, p.method_cls.personalizes()), rank.world)
        mine = {name: ws for name, ws in p.work.items() if name in set(shares[rank.rank])}
        held.enter_context(run_log(p.run_dir, verbose, rank.log_name()))
        console.print(f"run directory: {p.run_dir}" +
                      (f" ({rank.label()}: {', '.join(mine) or 'no concepts'})" if rank.active else ""))

        # Fixed once: every later write of run.json (the method's details, after loading) keeps it.
        previous = {**previous, "created": previous.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S%z")}

        def write_record(details: dict | None) -> dict:
            return run_record.write(p.run_dir, spec, p.identity, p.bench, p.backbones, previous=previous,
                                    provider=p.provider.as_dict(), method_code=p.code, method_details=details,
                                    resumed_with_changed_code=code_note, threads=threads)

        try:
            run_json = write_record(None) if rank.is_main else None
            # The method's description is recorded before it predicts: an interrupted run has it too.
            details = _predict_pending(p, spec, store, console, mine,
                                       described=write_record if rank.is_main else attempt.save_method_details,
                                       before_concept=lambda name: attempt.stop_if_another_failed())
            attempt.done(list(mine))
            if not rank.is_main:
                console.print(f"{rank.label()} done; rank 0 scores the run")
                return RunOutcome(p.run_dir, {})
            attempt.wait_for_all(on_wait=_once_per_set(console))
        except distributed.OtherRankFailed:
            raise  # that rank wrote its failure and printed it
        except BenchError as exc:
            attempt.failed(distributed.one_line(exc))
            if rank.active:
                raise BenchError(exc.one_line(), where=rank.label()) from exc
            raise
        except Exception as exc:
            attempt.failed(distributed.one_line(exc))
            raise
        if details is None:  # another rank loaded the method, in this launch or an earlier one
            details = attempt.method_details(earlier=not run_json["method_details"])
            if details is not None:
                write_record(details)
            else:
                details = run_json["method_details"]
        if rank.active:  # rank 0 of a launch reads what every rank wrote; a plain run's store has it all
            store = RunStore(p.run_dir)
        store.merge_rank_files()  # every rank's predictions (also what an interrupted launch left) in one file
        results = score_run(p.bench, p.work, store, spec, p.backbones, p.skipped, console, details,
                            p.identity["method_args"], p.loaded_backbones)
        resumed_notes = (run_json or {}).get("resumed_with_changed_code")
        if resumed_notes:  # its predictions come from two versions of the method: the tables say so
            results["resumed_with_changed_code"] = resumed_notes
        if stale_code:
            results["method_code_changed"] = {"changes": stale_code, "recorded": previous["method_code"].get("sha256"),
                                              "current": p.code.get("sha256")}
        if resumed_notes or stale_code:
            write_json_atomic(p.run_dir / RESULTS_JSON, results)
        if stale_code:
            console.print(f"note: the method's code changed since these predictions were made ({stale_code}): the "
                          f"numbers are the old code's; give another --out to predict with the current code")
    return RunOutcome(p.run_dir, results)


def _once_per_set(console):
    said = set()

    def say_who_is_missing(missing: list[int]) -> None:
        if tuple(missing) not in said:
            said.add(tuple(missing))
            console.print(f"waiting for rank(s) {', '.join(map(str, missing))} to finish their concepts")
    return say_who_is_missing


def _predict_pending(p: _Prepared, spec: RunSpec, store: RunStore, console, work: dict[str, list[Work]],
                     described, before_concept=None) -> dict | None:
    """Construct the method and predict what ``store`` lacks of ``work``, after handing the method's
    description to ``described``; returns that description, or None when nothing was pending (the
    method is then never loaded)."""
    n_pending = sum(1 for ws in work.values() for w in ws if w.request.key not in store)
    if not n_pending:
        console.print("every prediction exists: the method is not loaded")
        return None
    _LOG.info(f"{spec.method}: {n_pending} requests to predict on {len(work)} concept(s), device {p.device}")
    method = p.method_cls(p.method_args, seed=spec.seed, device=p.device, batch_size=spec.batch_size)
    details = MethodDetails.from_describe(method.describe(), spec.method).recorded
    described(details)
    _predict(method, p.bench, work, store, spec, console, before_concept)
    return details


def concept_weights(bench: Benchmark, work: dict[str, list[Work]], trains: bool) -> dict[str, float]:
    """How much work a concept is, for sharding: its requests (a generation request counts its
    images) and, for a method that trains, its training photos (each worth ten requests). The
    whole work, not what is left: every rank must compute the same split whenever it starts."""
    weights = {}
    for name, ws in work.items():
        requests = sum(getattr(w.request, "n_images", 1) for w in ws)
        weights[name] = requests + (10 * len(bench.concept(name).train_images) if trains else 0)
    return weights


def _images_used(bench: Benchmark, work: dict[str, list[Work]], method_cls) -> list[Path]:
    """Every benchmark image the run will open: its items' images, and each concept's photos
    (training photos for personalization, references for scoring, held-out photos a method may draw)."""
    paths: list[Path] = []
    for name, ws in work.items():
        concept = bench.concept(name)
        paths += [w.record.image for w in ws if w.request.task in ANSWER_TASKS and w.record.image is not None]
        if method_cls.personalizes():
            paths += list(concept.train_images) + list(concept.cropped_train_images)
        if any(w.request.task in GEN_KINDS for w in ws):
            paths += list(concept.reference_images) + list(concept.test_images)
    return paths


# ----------------------------------------------------------------------------- prediction phase


def _predict(method: Method, bench: Benchmark, work: dict[str, list[Work]], store: RunStore,
             spec: RunSpec, console, before_concept=None) -> None:
    """Personalize and predict one concept at a time, each inside its own :meth:`Method.activate`.

    What a concept's predictions may depend on is fixed here: random draws are seeded by (seed,
    concept, phase) (:mod:`.seeding`), batches are cut from the concept's whole request list (a
    resumed run cuts the same batches and re-asks a partly finished one, keeping what was stored),
    and the method's isolation fingerprint must be the same after the concept as before it."""
    concepts = [c for c, ws in work.items() if any(w.request.key not in store for w in ws)]
    personalizes = method.personalizes()
    with progress_bars(console) as progress:
        bar_p = progress.add_task("personalizing", total=len(concepts)) if personalizes else None
        steps = progress.add_task("", total=1, visible=False)  # the concept being personalized, step by step
        bar = progress.add_task("predicting", total=sum(1 for c in concepts for w in work[c]
                                                        if w.request.key not in store))
        for name in concepts:
            if before_concept is not None:
                before_concept(name)
            concept = bench.concept(name)
            before = method.isolation_fingerprint()
            progress.reset(steps, total=1, visible=False)  # each concept's clock starts at zero
            method.progress = lambda what, done, total, name=name: progress.update(
                steps, description=f"  {name}: {what}", completed=done, total=max(total, 1), visible=True)
            started = time.time()
            with seeded(spec.seed, name, "personalize"):
                state = _personalized(method, concept, store) if personalizes else None
            if personalizes:
                _LOG.info(f"{name}: personalized (or reloaded) in {time.time() - started:.1f} s")
            progress.update(steps, visible=False)
            if bar_p is not None:
                progress.advance(bar_p)
            with method.activate(concept, state):
                answer_work = [w for w in work[name] if w.request.task in ANSWER_TASKS]
                gen_work = [w for w in work[name] if w.request.task in GEN_KINDS]
                for batch, todo, replies in _predicted(method, method.answer, concept, state, answer_work,
                                                       spec.batch_size, store, spec.seed):
                    for w, reply in zip(batch, replies):
                        req = w.request
                        if reply is not None and req.key not in store:
                            store.append(Prediction(req.key, req.task, req.concept, req.index, answer=str(reply)))
                    progress.advance(bar, len(todo))
                gen_batch = max(1, spec.batch_size // spec.images_per_prompt)
                for batch, todo, outputs in _predicted(method, method.generate, concept, state, gen_work, gen_batch,
                                                       store, spec.seed):
                    for w, images in zip(batch, outputs):
                        req: GenRequest = w.request  # type: ignore[assignment]
                        if images is not None and len(images) != req.n_images and req.key not in store:
                            store.shortfalls[req.key] = f"returned {len(images)} of {req.n_images} images"
                        if req.key in store or images is None or len(images) != req.n_images:
                            continue  # already stored, or recorded as missing (scoring names it)
                        folder = store.image_folder(req.concept, req.task, req.index, req.prompt)
                        paths = store.save_images(folder, list(images))
                        store.append(Prediction(req.key, req.task, req.concept, req.index, prompt=req.prompt,
                                                seed=req.seed, images=tuple(paths)))
                    progress.advance(bar, len(todo))
            _LOG.info(f"{name}: {sum(w.request.key in store for w in work[name])} of {len(work[name])} requests predicted")
            after = method.isolation_fingerprint()
            if before != after:
                raise BenchError(f"the method's base model changed while concept {name} was personalized or "
                                 f"predicted (fingerprint {before} -> {after}): later concepts would depend on "
                                 f"this one; the predictions made so far are kept", where=f"method {method.name}")


def _predicted(method: Method, call, concept, state, works: list[Work], size: int, store: RunStore, seed: int):
    """``(batch, todo, outputs)`` for each batch of ``works`` with something left to predict: the
    whole batch is asked (so its composition never depends on what a previous run finished),
    under a global random state seeded by the concept and the batch."""
    for start in range(0, len(works), size):
        batch = works[start:start + size]
        todo = [w for w in batch if w.request.key not in store]
        if not todo:
            continue
        with seeded(seed, concept.name, batch[0].request.key, len(batch)):
            outputs = call(concept, state, [w.request for w in batch])
        _check_count(method, outputs, batch)
        yield batch, todo, outputs


DONE_MARKER = ".done"


def _personalized(method: Method, concept, store: RunStore):
    """The concept's state: reloaded when an earlier run finished personalizing it (its marker),
    else personalized now (again on the same folder, when an earlier run was interrupted inside)."""
    state_dir = store.state_dir(concept.name)
    if (state_dir / DONE_MARKER).exists():
        return method.load_state(concept, state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    state = method.personalize(concept, state_dir)
    (state_dir / DONE_MARKER).touch()
    return state


def _check_count(method: Method, outputs: list, batch: list) -> None:
    if not isinstance(outputs, list) or len(outputs) != len(batch):
        raise BenchError(f"returned {len(outputs) if isinstance(outputs, list) else type(outputs).__name__} "
                         f"results for {len(batch)} requests", where=f"method {method.name}")
