"""The one error type for bad input.

Raised with the file (and item index or field) it concerns; the command line turns it into a
one-line message and exit code 2, so no traceback reaches a user for bad data.
"""
from __future__ import annotations

from pathlib import Path


class BenchError(Exception):
    """Bad input: a missing or malformed file, an unknown name, an unusable argument."""

    def __init__(self, message: str, path: str | Path | None = None, where: str | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.where = where
        # Set where another process already printed this line (the other ranks of a torchrun launch):
        # the command line then exits with the same code and prints nothing.
        self.quiet = False
        super().__init__(self.one_line())

    def one_line(self) -> str:
        location = ""
        if self.path:
            location = self.path + (f" [{self.where}]" if self.where else "") + ": "
        elif self.where:
            location = f"[{self.where}]: "
        return (location + self.message).replace("\n", " ")


def did_you_mean(name: str, known) -> str:
    """``"did you mean unictokens? "`` for a near miss among ``known`` (difflib's ratio), else ``""``."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f"did you mean {close[0]}? " if close else ""


def error_line(exc: BenchError) -> str:
    """The line the command line prints for ``exc``."""
    return f"unifybench: error: {exc.one_line()}"
