"""Writing a page or a table the user named with ``--out``: refused in one line where the write
would replace a folder, a symbolic link or a file of a run directory. Below the command line, so
that library code (the gallery) writes through it without importing :mod:`unifybench.cli`."""
from __future__ import annotations

from pathlib import Path

from .errors import BenchError


def encodable(text: str) -> str:
    """``text`` with what UTF-8 cannot hold (a lone surrogate: a question read with one, a folder named
    in Latin-1 as Python decodes it) written as a visible ``\\udcXX`` escape instead of crashing the page."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def write_output(path: Path, text: str) -> None:
    """Write a page or table to ``path``; one line saying why when it cannot be (never over a file of
    a run directory: that would destroy the run)."""
    # here, not above: the store brings PIL, and `--help` needs neither
    from .store import RUN_FILES, RUN_JSON, prepare_out_dir

    if path.is_dir():
        raise BenchError("is a folder; give a file name", path, "--out")
    if (path.name in RUN_FILES or path.name.startswith("predictions.")) and (path.parent / RUN_JSON).exists():
        raise BenchError("is a file of the run directory it lies in; write the page elsewhere", path, "--out")
    if path.is_symlink():
        raise BenchError("is a symbolic link; give a file name", path, "--out")
    for ancestor in path.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise BenchError(f"lies under a file ({ancestor})", path, "--out")
            break
    prepare_out_dir(path.parent, "--out")
    try:
        path.write_text(encodable(text), encoding="utf-8")
    except OSError as exc:
        raise BenchError(f"cannot write ({exc.strerror or exc.__class__.__name__})", path, "--out") from None
