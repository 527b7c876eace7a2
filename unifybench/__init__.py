"""UnifyBench: an evaluation harness for personalized understanding-and-generation models.

From Python, :func:`evaluate` does what ``unifybench run`` does and returns the results::

    import unifybench
    results = unifybench.evaluate("always-yes", tasks=["rec", "choice"], out="runs")
    results["tasks"]["rec"]["weighted_acc"]
"""
from __future__ import annotations

from .version import __version__  # noqa: F401 - the package's version, read as unifybench.__version__


def evaluate(method, *, bench: str = "mini", tasks=None, concepts=None, out="runs", seed: int = 0,
             method_args: dict | None = None, judge=None, verbose: bool = False, progress: bool | None = None,
             **options) -> dict:
    """Personalize, predict and score ``method`` as ``unifybench run`` does, and return the run's
    ``results.json`` as a dict, with ``run_dir`` (the run directory's path) added. ``method`` is a
    registered name or a :class:`unifybench.methods.Method` subclass (no install needed: how a
    plugin is tested before it is packaged).

    ``tasks`` and ``concepts`` are lists (default: all); ``method_args`` the ``--method-arg`` pairs;
    ``judge`` a spec such as ``"openai:gpt-4o"`` or a :class:`unifybench.scoring.judges.JudgeConfig`;
    ``options`` any other field of :class:`unifybench.runner.RunSpec` (``backbones``, ``protocol``,
    ``limit``, ``batch_size``, ``device``, ``images_per_prompt``, ``clip_model``, ``format``,
    ``bootstrap``, ``threads``). ``progress``: the progress bars and the results table on stderr
    (default: when stderr is a terminal; a long personalization is otherwise silent).
    Bad input raises :class:`unifybench.errors.BenchError` (its ``one_line()`` is the CLI's message).
    """
    from dataclasses import fields
    from pathlib import Path

    from .errors import BenchError
    from .runner import RunSpec, run
    from .scoring.judges import JudgeConfig

    import sys

    known = {f.name for f in fields(RunSpec)} - {"method", "bench", "tasks", "concepts", "seed", "method_args",
                                                 "judge"}
    method_class = method if isinstance(method, type) else None
    if method_class is None and not isinstance(method, str):
        raise BenchError(f"expected a method name or a Method subclass, got {type(method).__name__}",
                         where="unifybench.evaluate")
    if not isinstance(out, (str, Path)) or not str(out).strip():  # "" would mean the current folder
        raise BenchError(f"expected a folder for run directories, got {out!r}", where="out")
    if method_args is not None and not isinstance(method_args, dict):
        raise BenchError(f"expected a mapping of method arguments, got {method_args!r}", where="method_args")
    if isinstance(tasks, str) or isinstance(concepts, str):  # a string is not a list of one name
        tasks = tasks.split(",") if isinstance(tasks, str) else tasks
        concepts = concepts.split(",") if isinstance(concepts, str) else concepts
    unknown = sorted(set(options) - known)
    if unknown:
        raise BenchError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
                         where="unifybench.evaluate")
    spec = RunSpec(method=getattr(method, "name", "") if method_class else method, bench=str(bench), seed=seed,
                   concepts=list(concepts) if isinstance(concepts, (list, tuple)) and concepts else None,
                   method_args={str(k): str(v) for k, v in (method_args or {}).items()},
                   judge=JudgeConfig(spec=judge, seed=seed) if isinstance(judge, str) else judge, **options)
    if tasks is not None:
        spec.tasks = list(tasks) if isinstance(tasks, (list, tuple, set, frozenset)) else tasks  # else: refused
    if concepts is not None and not isinstance(concepts, (list, tuple)):
        spec.concepts = concepts  # refused by check_spec, as the command line refuses it
    console = None
    if progress or (progress is None and sys.stderr.isatty()):
        from rich.console import Console

        console = Console(stderr=True)
    outcome = run(spec, out, console=console, verbose=verbose, method_class=method_class)
    return {**outcome.results, "run_dir": str(outcome.run_dir)}
