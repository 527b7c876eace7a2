"""``unifybench data check``, ``tasks`` and ``methods``: what can be evaluated and how."""
from __future__ import annotations

import json

from ..errors import BenchError
from ..records import TASKS
from .render import argument_table, console


def cmd_data_check(args) -> int:
    from ..data import check_benchmark

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
    from ..scoring.judges import judge_calls

    calls = judge_calls(summary["items"], summary["attr_prompts"])
    table.add_row("judge calls (QA + 4 per attr prompt)",
                  f"{calls['open_questions']} + {calls['attr_images']} = {calls['total']}")
    truths = summary["rec_truths"]
    table.add_row("recognition truths: yes / no / neither", f"{truths['yes']} / {truths['no']} / {truths['neither']}")
    letters = summary.get("choice_letters") or {"items": 0}
    if letters["items"]:
        table.add_row("multiple-choice answer letters",
                      " / ".join(f"{k} {n}" for k, n in letters["by_letter"].items()))
    console().print(table)
    if letters["items"] and letters["first_option"] * 2 > letters["items"]:
        console(stderr=True).print(
            f"note: the first option is the answer of {letters['first_option']} of {letters['items']} multiple-choice "
            f"items: always answering it (method always-first) scores "
            f"{letters['first_option'] / letters['items']:.3f}; --choice-eval circular measures past that", markup=False)
    if truths["reference_reads_otherwise"]:
        console(stderr=True).print(
            f"warning: {truths['reference_reads_otherwise']} recognition truth(s) are read differently by "
            f"--protocol reference (negative only when written exactly 'No.'), e.g. "
            f"{'; '.join(truths['examples'])}", markup=False)
    if truths["neither"]:
        console(stderr=True).print(f"warning: {truths['neither']} recognition truth(s) say neither yes nor no "
                                    f"(their first word): they are scored as positives", markup=False)
    if summary.get("prompts_without_subject"):
        console(stderr=True).print(f"warning: {summary['prompts_without_subject']} prompt(s) do not contain their "
                                    f"subject phrase: methods see them without the concept's token", markup=False)
    if summary.get("source"):
        src = summary["source"]
        console().print(f"from the hub: {src['hub']} at revision {src['revision']} ({src['path']})", markup=False)
    console().print("[green]valid[/green]")
    return 0


def cmd_methods(args) -> int:
    from rich.table import Table

    from ..methods import providers, resolve_method

    screen = console()
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
    screen.print(overview)
    for name, cls in described:
        screen.print(argument_table(name, cls))
    return 0


def cmd_tasks(args) -> int:
    from ..metrics import METRICS
    from ..tasks import TASK_DESCRIPTIONS

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
    console().print(table)
    return 0
