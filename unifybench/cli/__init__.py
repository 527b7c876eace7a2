"""The command line: parse arguments, call the library, render with rich.

One module per job: :mod:`.options` (the parser, ``run``'s options generated from RunSpec and
JudgeConfig), :mod:`.config` (``--config`` files), :mod:`.render` (rich and plain output), and one
module per command group: :mod:`.run`, :mod:`.boards` (leaderboard, compare, gallery), :mod:`.catalog`
(data, tasks, methods), :mod:`.score_images`. Bad input anywhere surfaces as :class:`BenchError`,
printed as one line with exit code 2.
"""
from __future__ import annotations

import errno
import io
import os
import sys

from ..errors import BenchError, error_line
from ..output import write_output  # noqa: F401 - importable here as before
from .boards import cmd_compare, cmd_gallery, cmd_leaderboard
from .catalog import cmd_data_check, cmd_methods, cmd_tasks
from .options import CLIP_CHOICES, EXIT_BAD_INPUT, FORMAT_CHOICES, build_parser  # noqa: F401 - importable here
from .render import argument_table, terminal_safe
from .run import cmd_run
from .score_images import cmd_score_images

__all__ = ["CLIP_CHOICES", "COMMANDS", "EXIT_BAD_INPUT", "FORMAT_CHOICES", "argument_table", "build_parser", "main",
           "terminal_safe", "write_output"]


def _method_help(argv: list[str]) -> str | None:
    """``unifybench run --method M --help``: M's arguments after the options, or None."""
    if not argv or argv[0] != "run" or not ({"-h", "--help"} & set(argv)):
        return None
    name = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--method"), None)
    name = name or next((a.split("=", 1)[1] for a in argv if a.startswith("--method=")), None)
    if name is None:
        return None
    from ..methods import resolve_method

    try:
        cls, _ = resolve_method(name)
    except BenchError as exc:
        return exc.one_line()
    out = io.StringIO()
    from rich.console import Console

    Console(file=out, width=120, highlight=False).print(argument_table(name, cls))
    return out.getvalue()


COMMANDS = {"run": cmd_run, "compare": cmd_compare, "methods": cmd_methods, "data": cmd_data_check, "leaderboard": cmd_leaderboard,
            "score-images": cmd_score_images, "tasks": cmd_tasks, "gallery": cmd_gallery}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(run_epilog=_method_help(sys.argv[1:] if argv is None else list(argv)))
    try:
        args = parser.parse_args(argv)
    except BenchError as exc:  # raised by argument type converters
        print(terminal_safe(error_line(exc)), file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe is reported here, not by the interpreter at exit
        return code
    except BenchError as exc:
        if not exc.quiet:
            print(terminal_safe(error_line(exc)), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("unifybench: interrupted; finished work is kept and a rerun resumes", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`unifybench leaderboard | head`): say so once, and keep Python from
        # printing a second error when it flushes stdout at exit.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            pass  # stdout is not a file descriptor (captured): nothing will flush it at exit
        print("unifybench: error: [stdout]: the reader closed the pipe before all output was written",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        # The machine refused (no permission, a full disk, a name too long): one line naming the file.
        # What finished is kept: predictions are written one by one, and every other file atomically.
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG, errno.EROFS):
            raise
        where = exc.filename or "unifybench"
        print(terminal_safe(f"unifybench: error: {where}: {exc.strerror}; finished work is kept and a rerun "
                            f"resumes"), file=sys.stderr)
        return EXIT_BAD_INPUT
