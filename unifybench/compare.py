"""``unifybench compare RUN_A RUN_B [...]``: how much, and how surely, one run differs from another.

For every metric both runs scored, the paired difference A − B over the concepts and items both
runs have (an item is a request, and for generation each image file), its 95% interval (the concept
jackknife of :mod:`unifybench.uncertainty` on the difference, t on concepts - 1 df) with the t test
it inverts (``p_t``), and a permutation p-value that swaps A and B concept by concept (one concept:
prompt by prompt) (``p``). A
metric is compared only where the leaderboard's rule would put the two values side by side: the same
:class:`~unifybench.groups.GroupKey` (benchmark name and content, protocol, judge, ``--limit``, and
scorer backbones only for the metrics computed with them: UniCTokens and Yo'LLaVA compare on
recognition, VQA and choice). Where no metric compares, one line says what differs; random-init
numbers are labelled as such.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .errors import BenchError
from .metrics import paired_metric
from .run_record import RANDOM_INIT_LABEL
from .leaderboard.cells import decimals, interval_text, md_text
from .leaderboard.render_csv import csv_text
from .leaderboard.rows import run_row
from .scored_run import load_scored_run
from .uncertainty import DEFAULT_RESAMPLES


def _load(run_dir: Path) -> dict:
    scored = load_scored_run(run_dir)
    key = run_row(scored).key  # the leaderboard's reading of the run
    return {"dir": scored.run_dir, "results": scored.results, "key": key, "rows": scored.score_rows}


def _label(run: dict) -> str:
    results = run["results"]
    args = ", ".join(f"{k}={v}" for k, v in sorted((results.get("method_args") or {}).items()))
    return str(results.get("method", "?")) + (f" ({args})" if args else "") + f" [{run['dir'].name}]"


def compare(run_dirs: list[Path], resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
            not_compared: list[dict] | None = None) -> list[dict]:
    """One row per (other run, metric): the first run against each of the others. ``not_compared``,
    when given, receives ``{a, b, metric, why}`` for each metric both runs scored that the
    leaderboard keeps apart (where other metrics of the pair compare: otherwise it is refused)."""
    if len(run_dirs) < 2:
        raise BenchError("give at least two run directories", where="compare")
    runs = [_load(d) for d in run_dirs]
    base = runs[0]
    out = []
    for other in runs[1:]:
        apart: set[str] = set()  # why metrics both runs scored were left out
        skipped: list[dict] = []
        compared = 0
        for task, metrics in base["results"]["tasks"].items():
            for metric, value in metrics.items():
                theirs = other["results"]["tasks"].get(task, {}).get(metric)
                if not isinstance(value, float) or not isinstance(theirs, float):
                    continue
                key = base["key"].for_metric(f"{task}.{metric}")
                if key != other["key"].for_metric(f"{task}.{metric}"):
                    why = key.differences(other["key"].for_metric(f"{task}.{metric}"))
                    apart.update(why)
                    skipped.append({"a": _label(base), "b": _label(other), "metric": f"{task}.{metric}",
                                    "why": "; ".join(sorted(why))})
                    continue
                compared += 1
                found = paired_metric(base["rows"], other["rows"], task, metric, seed)
                if found is None:
                    continue
                out.append({"a": _label(base), "b": _label(other), "metric": f"{task}.{metric}", **found,
                            "random_init": key.random_init})
        if apart and not compared:
            raise BenchError(f"{base['dir'].name} and {other['dir'].name} differ ({'; '.join(sorted(apart))}): the "
                             f"leaderboard keeps them in separate tables and no metric of theirs compares; rerun one "
                             f"with the other's settings", where="compare")
        if not_compared is not None:
            not_compared.extend(skipped)
    return out


def as_table(rows: list[dict], fmt: str, not_compared: list[dict] | None = None) -> str:
    """The comparison as md, csv or json; metrics left out (``not_compared``) are named in md and
    stderr is the place for them in csv and json (see the command)."""
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    frame = pd.DataFrame(rows, columns=["a", "b", "metric", "mean_a", "mean_b", "diff", "lo", "hi", "p", "p_t",
                                        "concepts", "items", "method", "note", "random_init"])
    if fmt == "csv":
        for column in ("a", "b", "metric"):  # labels carry --method-arg values: no formula, ever
            frame[column] = frame[column].map(csv_text)
        return frame.to_csv(index=False, lineterminator="\n")
    lines = []
    random_metrics = {r["metric"] for r in rows if r.get("random_init")}
    for (a, b), part in frame.groupby(["a", "b"], sort=False):
        lines += [f"### A = {md_text(a)}; B = {md_text(b)}", ""]
        shown = [m for m in part["metric"] if m in random_metrics]
        if shown:
            lines += [f"{RANDOM_INIT_LABEL} ({', '.join(shown)}): a model or scorer had random weights.", ""]
        left = [n for n in not_compared or () if (n["a"], n["b"]) == (a, b)]
        if left:
            lines += ["Not compared (the leaderboard keeps these apart): " +
                      "; ".join(f"{md_text(n['metric'])} ({md_text(n['why'])})" for n in left) + ".", ""]
        lines += ["| metric | A | B | A − B, 95% interval | p (permutation) | p (t) | concepts | items |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in part.to_dict("records"):
            note = f" ({r['note']})" if isinstance(r.get("note"), str) else ""
            places = decimals(r["lo"], r["hi"])
            lines.append(f"| {md_text(r['metric'])} | {r['mean_a']:.{places}f} | {r['mean_b']:.{places}f} | "
                         f"{interval_text(r['diff'], r['lo'], r['hi'], signed=True)} | {r['p']:.3f} | {r['p_t']:.3f} | "
                         f"{r['concepts']}{note} | {r['items']} |")
        lines.append("")
    lines.append("A − B over the concepts and items both runs scored. Interval: the concept jackknife of the "
                 "difference, t on concepts − 1 df (one concept: over its prompts); p (t): the t test it inverts "
                 "(0 is outside the interval exactly when p (t) < 0.05); p (permutation): two-sided test swapping "
                 "A and B concept by concept (one concept: prompt by prompt), exact whatever the shape of the "
                 "differences. Both paired over the same units: with few of them or skewed differences they can "
                 "disagree near 0.05.")
    return "\n".join(lines) + "\n"
