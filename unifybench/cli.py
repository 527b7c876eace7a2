"""The command line: parse arguments, call the library, render with rich.

Bad input anywhere surfaces as :class:`BenchError`, printed as one line with exit code 2.
"""
from __future__ import annotations

import argparse
import errno
import io
import json
import os
import sys
import textwrap
from pathlib import Path

from .errors import BenchError, error_line
from .kit.args import parse_method_args
from .output import encodable, write_output  # noqa: F401 - write_output, importable here as before
from .records import DEFAULT_TASKS, TASKS
from .seeding import MAX_SEED

# scoring.encoders.CLIP_MODELS (tested equal), repeated so that --help does not import torch.
CLIP_CHOICES = ("ViT-B-32", "ViT-L-14")
# unifybench.data.FORMATS (tested equal), repeated so that --help does not import the readers.
FORMAT_CHOICES = ("auto", "unifybench", "dreambench", "yollava", "myvlm", "dreambench_plus")  # data.FORMATS, without importing it

EXIT_BAD_INPUT = 2


def _console(stderr: bool = False, quiet: bool = False):
    from rich.console import Console

    class Quiet(Console):
        def on_broken_pipe(self) -> None:
            # The reader went away (`unifybench run ... | head`): the work goes on without output
            # and ends with its own exit status (rich's default exits 1 at once, silently).
            self.quiet = True
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

    return Quiet(stderr=stderr, highlight=False, soft_wrap=True, quiet=quiet)


def _path(text: str) -> Path:
    """A path option: an empty one would mean the current folder without anyone choosing it."""
    if not text.strip():
        raise BenchError("expected a path, got an empty value", where="--out")
    return Path(text)


def _count(low: int, high: int):
    """An integer option between ``low`` and ``high``: 0 or -1 would otherwise mean something
    nobody asked for (the default, or nothing at all)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, <= {high}, got {value}")
        return value
    return parse


def _seed_list(text: str) -> list[int]:
    seed = _count(0, MAX_SEED)
    seeds = [seed(s) for s in text.split(",") if s.strip()]  # all checked before the first run starts
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct seeds, got {text!r}")
    return seeds


def _parse_tasks(text: str) -> list[str]:
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        from .errors import did_you_mean

        raise BenchError(f"unknown task(s) {', '.join(unknown)}; {did_you_mean(unknown[0], TASKS)}known: "
                         f"{', '.join(TASKS)}", where="--tasks")
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
                         cache=args.judge_cache, mode=args.judge_mode)
    config.validate()
    return config


DESCRIPTION = """\
Evaluate personalized vision-language models: a method learns a user's concept (a dog called <bo>,
a mug, a person) from a few photos, answers questions about it and draws it in new scenes.
UnifyBench personalizes, predicts, scores and writes leaderboard tables.

  unifybench run --method real-images          evaluate a method on the bundled mini bench
  unifybench leaderboard runs/ --format html   compare runs, beside published results
  unifybench gallery runs/<run_dir>            look at samples beside their scores
  unifybench tasks | methods                   what is measured, and what can be evaluated

Bad input ends with one line naming the file and item, and exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistake in the command line as one line (not the usage block) and exit 2."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"unifybench: error: [{self.prog}]: {terminal_safe(message)} (see {self.prog} --help)\n")


def terminal_safe(text: str) -> str:
    """Text from a benchmark, a file name or a reply, safe to print: control characters (an ANSI escape
    in a concept name) shown as escapes, never interpreted by the terminal."""
    return "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in str(text))


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions kept as written; an option's default after its help, unless the help already
    says it or there is none to show (a flag, a required option)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default:" in text or action.required or default is None or default is False
                or default is argparse.SUPPRESS or default == []):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)"
        return text


def _version() -> str:
    from .version import __version__

    return f"unifybench {__version__}"


def _verbosity(parser: argparse.ArgumentParser, run_log: bool = True) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", help="no progress bars or tables; errors still print")
    group.add_argument("-v", "--verbose", action="store_true",
                       help="also print the log lines (always written to <run_dir>/log.txt)" if run_log
                       else "also print the log lines")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="unifybench", description=DESCRIPTION, formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=textwrap.fill(description or help_text, 95),
                              formatter_class=_HelpFormatter)

    run = command("run", "personalize, predict, score and write results for one method",
                  "Personalize a method on each concept, predict every task, score, and write the run "
                  "directory <out>/<method>__<bench>__<hash>/ (rerunning resumes; see README 'unifybench run').")
    run.add_argument("--config", type=Path, default=None, metavar="FILE",
                     help="a run's specification, JSON or YAML, with the keys of run.json's 'spec' (a run.json "
                          "itself reproduces its run); flags given beside it override its values")
    run.add_argument("--method", help="a name from `unifybench methods` (required, here or in --config)")
    run.add_argument("--bench", default="mini", help="'mini' (bundled), a benchmark folder, or a Hugging Face "
                                                    "dataset name (owner/name[@revision]) fetched into its cache")
    run.add_argument("--format", default="auto", choices=list(FORMAT_CHOICES),
                     help="the benchmark folder's layout (auto: detected)")
    run.add_argument("--split", default=0, type=int, help="MyVLM's layout: which of its five seeded training "
                     "splits (0-4; 4 photos a concept to learn from, the rest captioned)")
    run.add_argument("--tasks", default=",".join(DEFAULT_TASKS), type=_parse_tasks,
                     help="comma-separated tasks (`unifybench tasks`; default: all but caption)")
    run.add_argument("--concepts", default=None, help="comma-separated concept names (default: all)")
    run.add_argument("--out", default="runs", type=_path, help="folder that holds run directories")
    seeds = run.add_mutually_exclusive_group()
    seeds.add_argument("--seed", default=0, type=_count(0, MAX_SEED),
                       help="seed of every random draw (training, sampling, judging)")
    seeds.add_argument("--seeds", default=None, type=_seed_list, metavar="S,S,...",
                       help="run once per seed, each in its own run directory (the leaderboard shows their mean and "
                            "spread as one row)")
    run.add_argument("--batch-size", default=16, type=_count(1, 4096),
                     help="requests per method call; images per scorer batch")
    run.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    run.add_argument("--backbones", default="default", choices=["default", "auto", "random", "tiny"],
                     help="scorer weights: default (real checkpoints), auto (default, else random), "
                          "random (real architectures, seeded random weights), tiny (tests)")
    run.add_argument("--clip", dest="clip_model", default=CLIP_CHOICES[0], choices=CLIP_CHOICES,
                     help="CLIP for CLIP-I and CLIP-T (OpenAI weights)")
    run.add_argument("--protocol", default="default", choices=["default", "reference"],
                     help="'default' (our corrected rules) or 'reference' (the UniCTokens evaluation's, bugs included)")
    run.add_argument("--choice-eval", default="plain", choices=["plain", "circular"],
                     help="multiple choice: 'plain' (each item once; metric choice.accuracy) or 'circular' (once per "
                          "rotation of its options, right only if every rotation is: choice.circular_accuracy)")
    run.add_argument("--images-per-prompt", default=4, type=_count(1, 256), help="images drawn per generation prompt")
    run.add_argument("--limit", default=None, type=_count(1, 10**9),
                     help="at most N items and prompts per concept and task (a partial run; default: all)")
    run.add_argument("--method-arg", action="append", default=[], metavar="KEY=VALUE",
                     help="an argument of the method (repeatable; `unifybench methods` lists them)")
    run.add_argument("--bootstrap", default=1000, type=_count(0, 100000),
                     help="0: no intervals; otherwise every mean gets its 95%% interval over the concepts (a "
                          "concept jackknife, which draws no resamples: README 'Uncertainty')")
    run.add_argument("--threads", default=None, type=_count(1, 1024),
                     help="torch's threads (default: the free cores: this process's cores minus the load already on "
                          "them; OMP_NUM_THREADS also sets it); recorded in run.json")
    run.add_argument("--resume-changed-code", action="store_true",
                     help="add predictions to a run directory although the method's code changed since its "
                          "predictions were made (refused otherwise; recorded in run.json)")
    run.add_argument("--json", action="store_true", help="print results.json instead of a table")
    _verbosity(run)
    judge = run.add_argument_group("judge (open answers and attribute-reasoning images; see README 'Judges')")
    judge.add_argument("--judge", default=None, type=_parse_judge, metavar="openai:MODEL|hf:NAME_OR_PATH",
                       help="the judge model (default: none, and judged metrics read 'not scored')")
    judge.add_argument("--judge-base-url", default=None,
                       help="OpenAI-compatible endpoint (default: https://api.openai.com/v1)")
    judge.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
    judge.add_argument("--judge-concurrency", default=8, type=int, help="requests in flight at once")
    judge.add_argument("--judge-timeout", default=60.0, type=float, help="seconds a request may take before a retry")
    judge.add_argument("--judge-retries", default=5, type=int, help="retries per call (timeouts, 429, 5xx)")
    judge.add_argument("--judge-backoff", default=1.0, type=float, help="first retry delay in seconds, doubled")
    judge.add_argument("--judge-max-tokens", default=64, type=int, help="longest judge reply asked for")
    judge.add_argument("--judge-samples", default=4, type=int,
                       help="attr_gen images judged per prompt (--protocol reference: always 4)")
    judge.add_argument("--judge-seed", default=None, type=_count(0, MAX_SEED),
                       help="the judge's seed (default: --seed)")
    judge.add_argument("--judge-mode", default="deterministic", choices=["deterministic", "reference"],
                       help="DreamBench++ benches: deterministic (temperature 0, fixed seed, one run, cached) or "
                            "reference (theirs: temperature 1, three runs, mean and std; judge gpt-4o-2024-05-13)")
    judge.add_argument("--judge-cache", default=None,
                       help="SQLite file of judge replies (default: judge_cache.sqlite in the run directory)")

    comp = command("compare", "the paired difference of runs on the same benchmark, with its interval and p-value",
                   "Compare the first run directory with each of the others: per metric, A - B over the concepts "
                   "and items both scored, a 95% interval over the concepts (jackknife, t) and a paired permutation p-value. "
                   "Refused when the runs differ in benchmark content, protocol, scorer backbones, judge or --limit.")
    comp.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories; the first is A")
    comp.add_argument("--format", default="md", choices=["md", "csv", "json"], help="the table's format")
    comp.add_argument("--bootstrap", default=1000, type=_count(100, 100000),
                      help="accepted for older scripts and ignored: the interval is a jackknife, it draws nothing")
    comp.add_argument("--seed", default=0, type=_count(0, MAX_SEED), help="seed of the permutations")
    comp.add_argument("--out", type=_path, default=None, help="write to this file (default: stdout)")

    methods = command("methods", "list the registered methods, their tasks and their --method-arg arguments "
                                 "(type, default, range, help)")
    methods.add_argument("name", nargs="?", default=None, help="one method (default: every one)")

    score = command("score-images", "score a folder of generated images against reference photos "
                                    "(CLIP-I, CLIP-T, DINO; no method or benchmark)")
    score.add_argument("--refs", required=True, type=Path, help="folder of reference photos (searched recursively)")
    score.add_argument("--gens", required=True, type=Path, help="folder of generated images (searched recursively)")
    score.add_argument("--prompt", default=None, help="the prompt of every generated image (enables CLIP-T)")
    score.add_argument("--prompts", default=None, type=Path,
                       help='JSON {"relative/path/or/folder": "prompt"} under --gens (enables CLIP-T)')
    score.add_argument("--class", dest="class_noun", default=None, metavar="NOUN",
                       help="replace concept tokens <...> in the prompts by this class noun")
    score.add_argument("--backbones", default="default", choices=["default", "random", "tiny"],
                       help="scorer weights: default (real checkpoints), random, tiny (tests)")
    score.add_argument("--clip", dest="clip_model", default=None, choices=CLIP_CHOICES,
                       help="CLIP for CLIP-I and CLIP-T (OpenAI weights; default ViT-B-32, for mean-reference "
                            "ViT-L-14: Yo'Chameleon's)")
    score.add_argument("--protocol", default="dreambooth", choices=["dreambooth", "reference", "mean-reference"],
                       help="preprocessing and pairing (README 'Generation scoring')")
    score.add_argument("--batch-size", default=None, type=_count(1, 65536), help="images per encoder batch (default: 32 on CPU, "
                                                                     "256 on CUDA)")
    score.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    score.add_argument("--workers", default=None, type=_count(1, 256), help="decode processes (default: one per core)")
    score.add_argument("--seed", default=0, type=_count(0, MAX_SEED), help="seed of random/tiny backbones")
    score.add_argument("--json", action="store_true", help="print one JSON object")
    _verbosity(score, run_log=False)

    data = command("data", "dataset tools")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    check = data_sub.add_parser("check", help="validate a benchmark folder and print its counts",
                                description="Read a benchmark with every image decoded; print its counts, or one "
                                            "line naming the first problem.", formatter_class=_HelpFormatter)
    check.add_argument("path", help="'mini', a benchmark folder or a Hugging Face dataset name (owner/name)")
    check.add_argument("--format", default="auto", choices=list(FORMAT_CHOICES),
                       help="the folder's layout (auto: detected)")
    check.add_argument("--json", action="store_true", help="print one JSON object")

    board = command("leaderboard", "a table of methods x metrics from run directories, beside published results")
    board.add_argument("runs", nargs="*", type=Path, help="run directories or folders of them (default: runs)")
    board.add_argument("--format", default="md", choices=["md", "csv", "html"], help="output format")
    board.add_argument("--out", type=_path, default=None, help="write to this file (default: stdout)")
    board.add_argument("--no-published", action="store_true", help="leave out the published rows")

    tasks = command("tasks", "list the tasks, their metrics and which direction is better")
    tasks.add_argument("--json", action="store_true", help="print one JSON list")

    gallery = command("gallery", "one self-contained HTML page of a run's samples beside their scores")
    gallery.add_argument("run_dir", type=Path, help="a scored run directory")
    gallery.add_argument("--out", type=_path, default=None, help="the page to write (default: RUN_DIR/gallery.html)")
    gallery.add_argument("--concepts", default=None, help="comma-separated concept names (default: all)")
    gallery.add_argument("--images-per-prompt", default=None, type=_count(1, 1000),
                         help="at most N images shown per prompt (default: all)")
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
    for category, n in summary.get("categories", {}).items():  # DreamBench++
        table.add_row(f"subjects: {category}", str(n))
    for kind, n in summary.get("prompt_kinds", {}).items():
        table.add_row(f"prompts: {kind}", str(n))
    if "prompt_kinds" in summary:
        n = 2 * summary["gen_prompts"]
        table.add_row("DreamBench++ judge calls (CP + PF per prompt; x3 with --judge-mode reference)",
                      f"{n} (reference: {3 * n}), each asked again at most twice")
    from .scoring.judges import judge_calls

    calls = judge_calls(summary["items"], summary["attr_prompts"])
    table.add_row("judge calls (QA + 4 per attr prompt)",
                  f"{calls['open_questions']} + {calls['attr_images']} = {calls['total']}")
    truths = summary["rec_truths"]
    table.add_row("recognition truths: yes / no / neither", f"{truths['yes']} / {truths['no']} / {truths['neither']}")
    letters = summary.get("choice_letters") or {"items": 0}
    if letters["items"]:
        table.add_row("multiple-choice answer letters",
                      " / ".join(f"{k} {n}" for k, n in letters["by_letter"].items()))
    _console().print(table)
    if letters["items"] and letters["first_option"] * 2 > letters["items"]:
        _console(stderr=True).print(
            f"note: the first option is the answer of {letters['first_option']} of {letters['items']} multiple-choice "
            f"items: always answering it (method always-first) scores "
            f"{letters['first_option'] / letters['items']:.3f}; --choice-eval circular measures past that", markup=False)
    if truths["reference_reads_otherwise"]:
        _console(stderr=True).print(
            f"warning: {truths['reference_reads_otherwise']} recognition truth(s) are read differently by "
            f"--protocol reference (negative only when written exactly 'No.'), e.g. "
            f"{'; '.join(truths['examples'])}", markup=False)
    if truths["neither"]:
        _console(stderr=True).print(f"warning: {truths['neither']} recognition truth(s) say neither yes nor no "
                                    f"(their first word): they are scored as positives", markup=False)
    if summary.get("prompts_without_subject"):
        _console(stderr=True).print(f"warning: {summary['prompts_without_subject']} prompt(s) do not contain their "
                                    f"subject phrase: methods see them without the concept's token", markup=False)
    if summary.get("source"):
        src = summary["source"]
        _console().print(f"from the hub: {src['hub']} at revision {src['revision']} ({src['path']})", markup=False)
    _console().print("[green]valid[/green]")
    return 0


def argument_table(name: str, cls):
    """A method's ``--method-arg`` arguments as one rich table: key, type, default, help (with the
    accepted range), all read from its one declaration (kit.args.Arg)."""
    from rich.table import Table

    from .kit.args import declared

    table = Table(title=f"{name}: --method-arg KEY=VALUE", title_justify="left", box=None, padding=(0, 2))
    for column in ("key", "type", "default", "what"):
        table.add_column(column, no_wrap=column == "key", style="bold" if column == "key" else None)
    for key, arg in declared(cls.arguments).items():
        accepted = arg.range_text()
        table.add_row(key, arg.type_name, arg.default_text(), arg.help + (f" ({accepted})" if accepted else ""))
    return table


def cmd_methods(args) -> int:
    from rich.table import Table

    from .methods import providers, resolve_method

    console = _console()
    found = providers()
    if args.name is not None and args.name not in found:
        resolve_method(args.name)  # the unknown-method line, with every known name
    overview = Table(title="methods")
    for column in ("name", "tasks", "provided by"):
        overview.add_column(column)
    described = []
    for name in ([args.name] if args.name else found):
        try:
            cls, provider = resolve_method(name)
        except BenchError as exc:
            overview.add_row(name, f"cannot load: {exc.message}", found[name][0].target, style="red")
            continue
        overview.add_row(name, ", ".join(t for t in TASKS if t in cls.tasks),
                         f"{provider.distribution or '?'} {provider.version or ''} ({provider.target})")
        if cls.arguments:
            described.append((name, cls))
    console.print(overview)
    for name, cls in described:
        console.print(argument_table(name, cls))
    return 0


def _method_help(argv: list[str]) -> str | None:
    """``unifybench run --method M --help``: M's arguments after the options, or None."""
    if not argv or argv[0] != "run" or not ({"-h", "--help"} & set(argv)):
        return None
    name = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--method"), None)
    name = name or next((a.split("=", 1)[1] for a in argv if a.startswith("--method=")), None)
    if name is None:
        return None
    from .methods import resolve_method

    try:
        cls, _ = resolve_method(name)
    except BenchError as exc:
        return exc.one_line()
    out = io.StringIO()
    from rich.console import Console

    Console(file=out, width=120, highlight=False).print(argument_table(name, cls))
    return out.getvalue()


def _yaml_without_aliases(text: str, path: Path):
    """YAML with no anchors or aliases: a run specification needs none, and nested aliases make a
    700-byte file expand to gigabytes (a "billion laughs")."""
    import yaml

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise BenchError(f"YAML aliases (*name) are not accepted in a run specification (line {mark.line + 1})",
                                 path, "--config")
            return super().compose_node(parent, index)

    return yaml.load(text, Loader=NoAliases)  # noqa: S506 - a SafeLoader subclass


def _config(path: Path) -> dict:
    """A run specification from a JSON or YAML file: a run.json (its 'spec') or the spec itself."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BenchError(f"cannot read ({exc.strerror or exc.__class__.__name__})", path, "--config") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            data = _yaml_without_aliases(text, path)
        else:
            data = json.loads(text)
    except BenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - json's and yaml's errors: a file that does not parse
        raise BenchError(f"not a readable {path.suffix.lstrip('.') or 'JSON'} file ({exc.__class__.__name__})",
                         path, "--config") from None
    if isinstance(data, dict) and isinstance(data.get("spec"), dict):
        spec = dict(data["spec"])
        if isinstance(spec.get("method_args_given"), dict):  # as typed: parsing refills the defaults
            spec["method_args"] = spec["method_args_given"]
        spec.pop("method_args_given", None)
        data = spec
    if not isinstance(data, dict):
        raise BenchError("expected a run specification (a JSON or YAML object)", path, "--config")
    return data


def _spec_from(args, config: dict):
    """RunSpec from a --config file, then the flags given on the command line over it."""
    from dataclasses import fields

    from .errors import did_you_mean
    from .runner import RunSpec
    from .scoring.judges import JudgeConfig

    known = {f.name for f in fields(RunSpec)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise BenchError(f"unknown key(s) {', '.join(unknown)}; {did_you_mean(unknown[0], known)}known: "
                         f"{', '.join(sorted(known))}", args.config, "--config")
    values = dict(config)
    judge_keys = {f.name for f in fields(JudgeConfig)}
    if isinstance(values.get("judge"), str):  # as the flag and evaluate() take it
        values["judge"] = {"spec": values["judge"]}
    if isinstance(values.get("judge"), dict):
        wrong = sorted(map(str, set(values["judge"]) - judge_keys))
        if wrong:
            raise BenchError(f"judge: unknown key(s) {', '.join(wrong)}; {did_you_mean(wrong[0], judge_keys)}"
                             f"known: {', '.join(sorted(judge_keys))}", args.config, "--config")
        if "spec" not in values["judge"]:
            raise BenchError("judge: 'spec' (such as openai:MODEL) is required", args.config, "--config")
        values["judge"] = JudgeConfig(**values["judge"])
    if isinstance(values.get("method_args"), dict):
        values["method_args"] = {str(k): str(v) for k, v in values["method_args"].items() if v is not None}
    return values


def cmd_run(args) -> int:
    from .runner import RunSpec, run

    config = _spec_from(args, _config(args.config)) if args.config else {}
    given = getattr(args, "_given", set())
    flags = dict(
        method=args.method, bench=args.bench, format=args.format, tasks=args.tasks,
        concepts=[c.strip() for c in args.concepts.split(",") if c.strip()] if args.concepts is not None else None,
        seed=args.seed, batch_size=args.batch_size, device=args.device, backbones=args.backbones,
        clip_model=args.clip_model, protocol=args.protocol, choice_eval=args.choice_eval,
        images_per_prompt=args.images_per_prompt,
        limit=args.limit, split=args.split, method_args=parse_method_args(args.method_arg), judge=_judge_config(args),
        resume_changed_code=args.resume_changed_code, bootstrap=args.bootstrap, threads=args.threads)
    # A flag given on the command line wins over --config; the file wins over a flag's default.
    dest = {"method_args": "method_arg", "judge": "judge*"}  # spec field -> its flag's destination
    values = {}
    for name, value in flags.items():
        flag = dest.get(name, name)
        typed = any(g.startswith("judge") for g in given) if flag == "judge*" else flag in given
        values[name] = value if typed or name not in config else config[name]
    if "method_args" in config and "method_arg" in given:
        values["method_args"] = {**config["method_args"], **flags["method_args"]}
    if not values["method"]:
        raise BenchError("no method: give --method NAME (or a --config that names one)", where="--method")
    spec = RunSpec(**values)
    outcomes = []
    for seed in args.seeds or [spec.seed]:  # each seed a run of its own: each resumes on its own
        spec.seed = seed
        if spec.judge is not None and args.judge_seed is None and args.seeds:
            spec.judge.seed = seed
        outcomes.append(run(spec, args.out, console=_console(stderr=args.json, quiet=args.quiet), verbose=args.verbose))
    if args.json:
        print(json.dumps(outcomes[0].results if len(outcomes) == 1 else [o.results for o in outcomes], indent=2))
    return 0


def _given(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The option destinations typed on a ``run`` command line (not filled by their defaults)."""
    run_parser = parser._subparsers._group_actions[0].choices["run"]
    saved = {a.dest: a.default for a in run_parser._actions}
    try:
        for action in run_parser._actions:
            action.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(argv))) - {"command"}
    finally:
        for action in run_parser._actions:
            action.default = saved[action.dest]


def cmd_compare(args) -> int:
    from .compare import as_table, compare

    text = as_table(compare(args.runs, args.bootstrap, args.seed), args.format)
    if args.out:
        write_output(args.out, text)
        _console(stderr=True).print(f"wrote {args.out}", markup=False)
    else:
        _print_text(text, end="")
    return 0


def cmd_leaderboard(args) -> int:
    from .report import as_csv, as_html, as_markdown, build_tables, collect

    rows, unfinished = collect(args.runs, include_published=not args.no_published)
    only_published = not any(not str(r["method"]).endswith("[published]") for r in rows)
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
        _print_text(text)
    if only_published:
        where = ", ".join(str(p) for p in args.runs) or "runs/"
        _console(stderr=True).print(f"no finished runs under {where}: only the published rows are shown", markup=False)
    return 0


def _print_text(text: str, end: str = "\n") -> None:
    stream = sys.stdout
    data = (encodable(text) + end).encode(stream.encoding or "utf-8", "backslashreplace")
    if hasattr(stream, "buffer"):
        stream.flush()
        stream.buffer.write(data)
        stream.buffer.flush()
    else:  # a StringIO (tests, unifybench.testing.cli)
        stream.write(data.decode(stream.encoding or "utf-8"))


def cmd_score_images(args) -> int:
    from .scoring.fidelity import score_folders

    from .progress import progress_bars

    with progress_bars(_console(stderr=True, quiet=args.quiet)) as progress:
        from .devices import check_device
        from .scoring.fidelity import list_image_files

        check_device(args.device)  # a device this machine lacks is the first thing said
        # The total from the start (a bar reading 0/? while references are encoded says nothing).
        bar = progress.add_task("scoring images", total=len(list_image_files(args.gens, "--gens")))
        out = score_folders(args.refs, args.gens, backbones=args.backbones, protocol=args.protocol,
                            prompt=args.prompt, prompts_file=args.prompts, class_noun=args.class_noun,
                            batch_size=args.batch_size or (256 if args.device.startswith("cuda") else 32),
                            device=args.device, num_workers=args.workers, seed=args.seed, clip_name=args.clip_model,
                            progress=lambda n, total: progress.update(bar, advance=n, total=total))
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


COMMANDS = {"run": cmd_run, "compare": cmd_compare, "methods": cmd_methods, "data": cmd_data_check, "leaderboard": cmd_leaderboard,
            "score-images": cmd_score_images, "tasks": cmd_tasks, "gallery": cmd_gallery}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    method_help = _method_help(sys.argv[1:] if argv is None else list(argv))
    if method_help:
        parser._subparsers._group_actions[0].choices["run"].epilog = method_help
    try:
        args = parser.parse_args(argv)
    except BenchError as exc:  # raised by argument type converters
        print(terminal_safe(error_line(exc)), file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.command == "run":
        args._given = _given(parser, sys.argv[1:] if argv is None else list(argv))
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


if __name__ == "__main__":
    sys.exit(main())
