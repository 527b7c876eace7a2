"""The command line: parse arguments, call the library, render with rich.

Bad input anywhere surfaces as :class:`BenchError`, printed as one line with exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import BenchError
from .records import TASKS

EXIT_BAD_INPUT = 2


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _parse_method_args(pairs: list[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BenchError(f"expected KEY=VALUE, got {pair!r}", where="--method-arg")
        args[key.strip()] = value
    return args


def _parse_tasks(text: str) -> list[str]:
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise BenchError(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}", where="--tasks")
    return tasks


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unifybench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="personalize, predict, score and write results for one method")
    run.add_argument("--method", required=True)
    run.add_argument("--bench", default="mini", help="'mini' (bundled) or a benchmark folder")
    run.add_argument("--format", default="auto", choices=["auto", "unifybench", "dreambench", "yollava"])
    run.add_argument("--tasks", default=",".join(TASKS), type=_parse_tasks)
    run.add_argument("--concepts", default=None, help="comma-separated concept names (default: all)")
    run.add_argument("--out", default="runs", type=Path, help="folder that holds run directories")
    run.add_argument("--seed", default=0, type=int)
    run.add_argument("--batch-size", default=16, type=int)
    run.add_argument("--device", default="cpu")
    run.add_argument("--backbones", default="default", choices=["default", "auto", "random", "tiny"],
                     help="scorer weights: default (real checkpoints), auto (default, else random), "
                          "random (real architectures, seeded random weights), tiny (tests)")
    run.add_argument("--protocol", default="default", choices=["default", "reference"])
    run.add_argument("--images-per-prompt", default=4, type=int)
    run.add_argument("--limit", default=None, type=int, help="at most N items and prompts per concept and task")
    run.add_argument("--method-arg", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--json", action="store_true", help="print results.json instead of a table")

    sub.add_parser("methods", help="list the registered methods and the tasks each supports")

    data = sub.add_parser("data", help="dataset tools")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    check = data_sub.add_parser("check", help="validate a benchmark folder and print its counts")
    check.add_argument("path")
    check.add_argument("--format", default="auto", choices=["auto", "unifybench", "dreambench", "yollava"])
    check.add_argument("--json", action="store_true")

    board = sub.add_parser("leaderboard", help="a table of methods x metrics from run directories")
    board.add_argument("runs", nargs="*", type=Path)
    board.add_argument("--format", default="md", choices=["md", "csv", "html"])
    board.add_argument("--out", type=Path, default=None)
    board.add_argument("--no-published", action="store_true", help="leave out the published rows")
    return parser


def cmd_data_check(args) -> int:
    from .data import check_benchmark

    summary = check_benchmark(args.path, args.format)
    if args.json:
        print(json.dumps(summary))
        return 0
    from rich.table import Table

    table = Table(title=f"{args.path} ({summary['format']})")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("concepts", str(summary["concepts"]))
    table.add_row("images", str(summary["images"]))
    for kind, n in summary["items"].items():
        table.add_row(f"items: {kind}", str(n))
    table.add_row("generation prompts", str(summary["gen_prompts"]))
    table.add_row("attribute-reasoning prompts", str(summary["attr_prompts"]))
    _console().print(table)
    _console().print("[green]valid[/green]")
    return 0


def cmd_methods(args) -> int:
    from rich.table import Table

    from .methods import load_method_class, registered_methods

    table = Table(title="methods")
    table.add_column("name")
    table.add_column("tasks")
    table.add_column("source")
    for name, target in registered_methods().items():
        try:
            cls = load_method_class(name)
            tasks = ", ".join(t for t in TASKS if t in cls.tasks)
        except BenchError as exc:
            tasks = f"[red]cannot load: {exc.message}[/red]"
        table.add_row(name, tasks, target)
    _console().print(table)
    return 0


def cmd_run(args) -> int:
    from .runner import RunSpec, run

    spec = RunSpec(
        method=args.method,
        bench=args.bench,
        format=args.format,
        tasks=args.tasks,
        concepts=[c.strip() for c in args.concepts.split(",")] if args.concepts else None,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        backbones=args.backbones,
        protocol=args.protocol,
        images_per_prompt=args.images_per_prompt,
        limit=args.limit,
        method_args=_parse_method_args(args.method_arg),
    )
    outcome = run(spec, args.out, console=_console(stderr=args.json))
    if args.json:
        print(json.dumps(outcome.results, indent=2))
    return 0


def cmd_leaderboard(args) -> int:
    from .report import build_leaderboard

    text = build_leaderboard(args.runs, fmt=args.format, include_published=not args.no_published)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        _console(stderr=True).print(f"wrote {args.out}")
    else:
        print(text)
    return 0


COMMANDS = {"run": cmd_run, "methods": cmd_methods, "data": cmd_data_check, "leaderboard": cmd_leaderboard}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except BenchError as exc:  # raised by argument type converters
        print(f"unifybench: error: {exc.one_line()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return COMMANDS[args.command](args)
    except BenchError as exc:
        print(f"unifybench: error: {exc.one_line()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("unifybench: interrupted; finished work is kept and a rerun resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
