"""Rendering for the command line: a rich console that survives a closed pipe, text made safe for a
terminal, plain text written as bytes, and a method's argument table."""
from __future__ import annotations

import os
import sys

from ..output import encodable


def console(stderr: bool = False, quiet: bool = False):
    from rich.console import Console

    class Quiet(Console):
        def on_broken_pipe(self) -> None:
            # The reader went away (`unifybench run ... | head`): the work goes on without output
            # and ends with its own exit status (rich's default exits 1 at once, silently).
            self.quiet = True
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

    return Quiet(stderr=stderr, highlight=False, soft_wrap=True, quiet=quiet)


def terminal_safe(text: str) -> str:
    """Text from a benchmark, a file name or a reply, safe to print: control characters (an ANSI escape
    in a concept name) shown as escapes, never interpreted by the terminal."""
    return "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in str(text))


def print_text(text: str, end: str = "\n") -> None:
    stream = sys.stdout
    data = (encodable(text) + end).encode(stream.encoding or "utf-8", "backslashreplace")
    if hasattr(stream, "buffer"):
        stream.flush()
        stream.buffer.write(data)
        stream.buffer.flush()
    else:  # a StringIO (tests, unifybench.testing.cli)
        stream.write(data.decode(stream.encoding or "utf-8"))


def argument_table(name: str, cls):
    """A method's ``--method-arg`` arguments as one rich table: key, type, default, help (with the
    accepted range), all read from its one declaration (kit.args.Arg)."""
    from rich.table import Table

    from ..kit.args import declared

    table = Table(title=f"{name}: --method-arg KEY=VALUE", title_justify="left", box=None, padding=(0, 2))
    for column in ("key", "type", "default", "what"):
        table.add_column(column, no_wrap=column == "key", style="bold" if column == "key" else None)
    for key, arg in declared(cls.arguments).items():
        accepted = arg.range_text()
        table.add_row(key, arg.type_name, arg.default_text(), arg.help + (f" ({accepted})" if accepted else ""))
    return table
