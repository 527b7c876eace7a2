"""The command line: parse arguments, call the library, render with rich.

Bad input anywhere surfaces as :class:`BenchError`, printed as one line with exit code 2.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path

from .errors import BenchError
from .records import TASKS

# scoring.encoders.CLIP_MODELS (tested equal), repeated so that --help does not import torch.
CLIP_CHOICES = ("ViT-B-32", "ViT-L-14")

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


def _parse_judge(text: str) -> str:
    from .scoring.judges import parse_judge_spec

    parse_judge_spec(text)
    return text


def _judge_config(args):
    if not args.judge:
        return None
    from .scoring.judges import JudgeConfig

    config = JudgeConfig(spec=args.judge, base_url=args.judge_base_url, api_key_env=args.judge_api_key_env,
                         concurrency=args.judge_concurrency, timeout=args.judge_timeout,
                         retries=args.judge_retries, backoff=args.judge_backoff, max_tokens=args.judge_max_tokens,
                         samples=args.judge_samples, seed=args.seed if args.judge_seed is None else args.judge_seed,
                         cache=args.judge_cache)
    config.validate()
    return config


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
    run.add_argument("--clip", dest="clip_model", default=CLIP_CHOICES[0], choices=CLIP_CHOICES,
                     help="CLIP for CLIP-I and CLIP-T (OpenAI weights; default ViT-B-32)")
    run.add_argument("--protocol", default="default", choices=["default", "reference"])
    run.add_argument("--images-per-prompt", default=4, type=int)
    run.add_argument("--limit", default=None, type=int, help="at most N items and prompts per concept and task")
    run.add_argument("--method-arg", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--json", action="store_true", help="print results.json instead of a table")
    judge = run.add_argument_group("judge (open answers and attribute-reasoning images; see README 'Judges')")
    judge.add_argument("--judge", default=None, type=_parse_judge, metavar="openai:MODEL|hf:NAME_OR_PATH")
    judge.add_argument("--judge-base-url", default=None, help="OpenAI-compatible endpoint (default api.openai.com/v1)")
    judge.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
    judge.add_argument("--judge-concurrency", default=8, type=int, help="requests in flight at once")
    judge.add_argument("--judge-timeout", default=60.0, type=float, help="seconds per socket wait before a retry")
    judge.add_argument("--judge-retries", default=5, type=int, help="retries per call (timeouts, 429, 5xx)")
    judge.add_argument("--judge-backoff", default=1.0, type=float, help="first retry delay in seconds, doubled")
    judge.add_argument("--judge-max-tokens", default=64, type=int)
    judge.add_argument("--judge-samples", default=4, type=int, help="attr_gen images judged per prompt")
    judge.add_argument("--judge-seed", default=None, type=int, help="default: --seed")
    judge.add_argument("--judge-cache", default=None, help="SQLite file (default: judge_cache.sqlite in the run dir)")

    sub.add_parser("methods", help="list the registered methods and the tasks each supports")

    score = sub.add_parser("score-images", help="score a folder of generated images against reference photos "
                                                "(CLIP-I, CLIP-T, DINO; no method or benchmark)")
    score.add_argument("--refs", required=True, type=Path, help="folder of reference photos (searched recursively)")
    score.add_argument("--gens", required=True, type=Path, help="folder of generated images (searched recursively)")
    score.add_argument("--prompt", default=None, help="the prompt of every generated image (enables CLIP-T)")
    score.add_argument("--prompts", default=None, type=Path,
                       help='JSON {"relative/path/or/folder": "prompt"} under --gens (enables CLIP-T)')
    score.add_argument("--class", dest="class_noun", default=None, metavar="NOUN",
                       help="replace concept tokens <...> in the prompts by this class noun")
    score.add_argument("--backbones", default="default", choices=["default", "random", "tiny"])
    score.add_argument("--clip", dest="clip_model", default=CLIP_CHOICES[0], choices=CLIP_CHOICES,
                       help="CLIP for CLIP-I and CLIP-T (OpenAI weights; default ViT-B-32)")
    score.add_argument("--protocol", default="dreambooth", choices=["dreambooth", "reference", "mean-reference"])
    score.add_argument("--batch-size", default=None, type=int, help="default 32 on CPU, 256 on CUDA")
    score.add_argument("--device", default="cpu")
    score.add_argument("--workers", default=None, type=int, help="decode processes (default: one per core)")
    score.add_argument("--seed", default=0, type=int, help="seed of random/tiny backbones")
    score.add_argument("--json", action="store_true", help="print one JSON object")

    data = sub.add_parser("data", help="dataset tools")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    check = data_sub.add_parser("check", help="validate a benchmark folder and print its counts")
    check.add_argument("path")
    check.add_argument("--format", default="auto", choices=["auto", "unifybench", "dreambench", "yollava"])
    check.add_argument("--json", action="store_true")

    board = sub.add_parser("leaderboard", help="a table of methods x metrics from run directories")
    board.add_argument("runs", nargs="*", type=Path, help="run directories or folders of them (default: runs)")
    board.add_argument("--format", default="md", choices=["md", "csv", "html"])
    board.add_argument("--out", type=Path, default=None)
    board.add_argument("--no-published", action="store_true", help="leave out the published rows")

    tasks = sub.add_parser("tasks", help="list the tasks, their metrics and which direction is better")
    tasks.add_argument("--json", action="store_true")

    gallery = sub.add_parser("gallery", help="one self-contained HTML page of a run's samples beside their scores")
    gallery.add_argument("run_dir", type=Path)
    gallery.add_argument("--out", type=Path, default=None, help="default: RUN_DIR/gallery.html")
    gallery.add_argument("--concepts", default=None, help="comma-separated concept names (default: all)")
    gallery.add_argument("--images-per-prompt", default=None, type=int, help="at most N images shown per prompt")
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
    from .scoring.judges import judge_calls

    calls = judge_calls(summary["items"], summary["attr_prompts"])
    table.add_row("judge calls (QA + 4 per attr prompt)",
                  f"{calls['open_questions']} + {calls['attr_images']} = {calls['total']}")
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
        concepts=[c.strip() for c in args.concepts.split(",") if c.strip()] if args.concepts is not None else None,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        backbones=args.backbones,
        clip_model=args.clip_model,
        protocol=args.protocol,
        images_per_prompt=args.images_per_prompt,
        limit=args.limit,
        method_args=_parse_method_args(args.method_arg),
        judge=_judge_config(args),
    )
    outcome = run(spec, args.out, console=_console(stderr=args.json))
    if args.json:
        print(json.dumps(outcome.results, indent=2))
    return 0


def cmd_leaderboard(args) -> int:
    from .report import as_csv, as_html, as_markdown, build_tables, collect

    rows, unfinished = collect(args.runs, include_published=not args.no_published)
    if unfinished:
        _console(stderr=True).print(f"skipped {len(unfinished)} unfinished run(s) (no results.json): "
                                    + ", ".join(str(p) for p in unfinished), markup=False)
    if args.format == "csv":
        text = as_csv(rows)
    else:
        tables = build_tables(rows)
        text = as_html(tables) if args.format == "html" else as_markdown(tables)
    if args.out:
        write_output(args.out, text)
        _console(stderr=True).print(f"wrote {args.out}", markup=False)
    else:
        print(text)
    return 0


def write_output(path: Path, text: str) -> None:
    """Write a page or table to ``path``; one line saying why when it cannot be."""
    from .store import prepare_out_dir

    if path.is_dir():
        raise BenchError("is a folder; give a file name", path, "--out")
    for ancestor in path.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise BenchError(f"lies under a file ({ancestor})", path, "--out")
            break
    prepare_out_dir(path.parent, "--out")
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise BenchError(f"cannot write ({exc.strerror or exc.__class__.__name__})", path, "--out") from None


def cmd_score_images(args) -> int:
    from .scoring.fidelity import score_folders

    out = score_folders(args.refs, args.gens, backbones=args.backbones, protocol=args.protocol,
                        prompt=args.prompt, prompts_file=args.prompts, class_noun=args.class_noun,
                        batch_size=args.batch_size or (256 if args.device.startswith("cuda") else 32),
                        device=args.device, num_workers=args.workers, seed=args.seed, clip_name=args.clip_model)
    if args.json:
        print(json.dumps(out))
        return 0
    console = _console()
    for metric in ("clip_i", "clip_t", "dino"):
        if metric in out:
            console.print(f"{metric:7s} {out[metric]:.4f}")
    console.print(f"{out['n_gens']} generated vs {out['n_refs']} reference images, protocol {out['protocol']}, "
                  f"backbones {out['backbones']['kind']}")
    if out.get("label"):
        console.print(f"[yellow]{out['label']}[/yellow]")
    return 0


def cmd_tasks(args) -> int:
    from .metrics import METRICS
    from .tasks import TASK_DESCRIPTIONS

    if args.json:
        print(json.dumps([{"task": t, "description": d,
                           "metrics": [{"name": m.name, "direction": m.direction, "description": m.description}
                                       for m in METRICS if m.task == t]} for t, d in TASK_DESCRIPTIONS.items()],
                         indent=2))
        return 0
    from rich.table import Table

    table = Table(title="tasks and metrics (higher/lower: which is better)")
    for column in ("task", "metric", "better", "what it measures"):
        table.add_column(column)
    for task, description in TASK_DESCRIPTIONS.items():
        table.add_row(task, "", "", description, style="bold")
        for m in (m for m in METRICS if m.task == task):
            table.add_row("", m.name, m.direction, m.description)
    _console().print(table)
    return 0


def cmd_gallery(args) -> int:
    from .gallery import write_gallery

    concepts = [c.strip() for c in args.concepts.split(",") if c.strip()] if args.concepts else None
    out = write_gallery(args.run_dir, args.out, concepts=concepts, images_per_prompt=args.images_per_prompt)
    _console(stderr=True).print(f"wrote {out}", markup=False)
    return 0


COMMANDS = {"run": cmd_run, "methods": cmd_methods, "data": cmd_data_check, "leaderboard": cmd_leaderboard,
            "score-images": cmd_score_images, "tasks": cmd_tasks, "gallery": cmd_gallery}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except BenchError as exc:  # raised by argument type converters
        print(f"unifybench: error: {exc.one_line()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe is reported here, not by the interpreter at exit
        return code
    except BenchError as exc:
        print(f"unifybench: error: {exc.one_line()}", file=sys.stderr)
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


if __name__ == "__main__":
    sys.exit(main())
