"""The terminal's progress bars."""
from __future__ import annotations


def null_console():
    from rich.console import Console

    return Console(quiet=True)


def progress_bars(console):
    """Bars that move on a terminal; elsewhere (a log file, a pipe, CI) nothing: a bar drawn once at
    the end says nothing that the results do not."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console, transient=False,
                    disable=not console.is_terminal)


def set_threads(n: int) -> None:
    """torch's intra-op threads, set before the method or the scorers run (torch is imported here
    if it is not yet: every method with a model, and every generation scorer, needs it anyway)."""
    import torch

    torch.set_num_threads(n)


def choose_threads(requested: int | None = None) -> dict:
    """torch's intra-op threads for this process, and why. torch takes every core by default; on a
    busy machine that oversubscribes the cores, and a tiny run took 47 minutes at load 20 instead of
    23 s idle (7 times slower than one thread). Default: the cores this process may use minus the
    load already on them (at least 1); ``requested`` (``--threads``) or OMP_NUM_THREADS win."""
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    if requested:
        return {"threads": requested, "why": "--threads", "cores": cores}
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1:  # 0 or junk: torch would refuse it; fall back to the free cores
        return {"threads": int(omp), "why": "OMP_NUM_THREADS", "cores": cores}
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    free = max(1, min(cores, round(cores - load)))
    return {"threads": free, "why": f"{cores} cores, load {load:.1f}", "cores": cores}
