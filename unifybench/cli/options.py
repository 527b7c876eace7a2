"""The command line's parser. ``run``'s options are generated from the declarations on RunSpec's and
JudgeConfig's fields (:mod:`unifybench.options`) with default ``None``, so an option the user typed is
one that is not None, and ``--config`` < typed flags needs no second parse."""
from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from ..errors import BenchError
from ..options import declared, field_default
from ..records import TASKS
from ..scoring.judges.config import JudgeConfig, parse_judge_spec
from ..seeding import MAX_SEED
from ..spec import CLIP_CHOICES, FORMAT_CHOICES, RunSpec
from .render import terminal_safe

EXIT_BAD_INPUT = 2


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
        from ..errors import did_you_mean

        raise BenchError(f"unknown task(s) {', '.join(unknown)}; {did_you_mean(unknown[0], TASKS)}known: "
                         f"{', '.join(TASKS)}", where="--tasks")
    return tasks


def _parse_judge(text: str) -> str:
    parse_judge_spec(text)
    return text


def _concept_list(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


# The command line's spelling of these fields: comma-separated lists, and the judge spec checked at once.
CONVERTERS = {"tasks": _parse_tasks, "concepts": _concept_list, "spec": _parse_judge}


def _shown_default(cls, name: str, opt) -> str:
    if opt.default_text is not None:
        return opt.default_text
    value = field_default(cls, name)
    return "" if value is None or value is False or value in ([], {}) else str(value)


def add_declared(container, cls, names, dest=lambda name: name) -> None:
    """One argparse option for each field in ``names`` of ``cls``, from its declaration: default
    ``None`` (not typed), the field's default shown in the help."""
    for name in names:
        opt = declared(cls)[name]
        shown = _shown_default(cls, name, opt)
        text = opt.help if not shown or "default:" in opt.help else f"{opt.help} (default: {shown})"
        kwargs = {"help": text, "default": None, "dest": dest(name)}
        if opt.action == "store_true":
            kwargs["action"] = "store_true"
        elif opt.action == "append":
            kwargs.update(action="append", metavar=opt.metavar)
        elif opt.choices is not None:
            kwargs["choices"] = list(opt.choices)
        else:
            kwargs.update(type=CONVERTERS.get(name, opt.from_text), metavar=opt.metavar)
        container.add_argument(opt.flag, **kwargs)


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
    from ..version import __version__

    return f"unifybench {__version__}"


def _verbosity(parser: argparse.ArgumentParser, run_log: bool = True) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", help="no progress bars or tables; errors still print")
    group.add_argument("-v", "--verbose", action="store_true",
                       help="also print the log lines (always written to <run_dir>/log.txt)" if run_log
                       else "also print the log lines")


# run's options in --help order; the judge's in their own group.
RUN_FIELDS = ("method", "bench", "format", "split", "tasks", "concepts")
RUN_FIELDS_AFTER_SEED = ("batch_size", "device", "backbones", "clip_model", "protocol", "choice_eval",
                        "images_per_prompt", "limit", "method_args", "bootstrap", "threads", "resume_changed_code")

JUDGE_FIELDS = ("spec", "base_url", "api_key_env", "concurrency", "timeout", "retries", "backoff", "max_tokens",
                "samples", "seed", "mode", "cache")


def judge_dest(name: str) -> str:
    """The argparse destination of JudgeConfig field ``name``: ``judge`` for its spec, else ``judge_<name>``."""
    return "judge" if name == "spec" else f"judge_{name}"


def build_parser(run_epilog: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; ``run_epilog``: text after ``run --help`` (a method's arguments)."""
    parser = _Parser(prog="unifybench", description=DESCRIPTION, formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=textwrap.fill(description or help_text, 95),
                              formatter_class=_HelpFormatter)

    run = command("run", "personalize, predict, score and write results for one method",
                  "Personalize a method on each concept, predict every task, score, and write the run "
                  "directory <out>/<method>__<bench>__<hash>/ (rerunning resumes; see README 'unifybench run').")
    run.epilog = run_epilog
    run.add_argument("--config", type=Path, default=None, metavar="FILE",
                     help="a run's specification, JSON or YAML, with the keys of run.json's 'spec' (a run.json "
                          "itself reproduces its run); flags given beside it override its values")
    add_declared(run, RunSpec, RUN_FIELDS)
    run.add_argument("--out", default="runs", type=_path, help="folder that holds run directories")
    seeds = run.add_mutually_exclusive_group()
    add_declared(seeds, RunSpec, ("seed",))
    seeds.add_argument("--seeds", default=None, type=_seed_list, metavar="S,S,...",
                       help="run once per seed, each in its own run directory (the leaderboard shows their mean and "
                            "spread as one row)")
    add_declared(run, RunSpec, RUN_FIELDS_AFTER_SEED)
    run.add_argument("--json", action="store_true", help="print results.json instead of a table")
    _verbosity(run)
    judge = run.add_argument_group("judge (open answers and attribute-reasoning images; see README 'Judges')")
    add_declared(judge, JudgeConfig, JUDGE_FIELDS, dest=judge_dest)

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
