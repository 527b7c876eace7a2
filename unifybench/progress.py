"""The terminal's progress bars."""
from __future__ import annotations


def null_console():
    from rich.console import Console

    return Console(quiet=True)


def progress_bars(console):
    """Bars that move on a terminal; elsewhere (a log file, a pipe, CI) nothing: a bar drawn once at
    the end says nothing that the results do not."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False, disable=not console.is_terminal)
