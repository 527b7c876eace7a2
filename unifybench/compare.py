"""``unifybench compare RUN_A RUN_B [...]``: how much, and how surely, one run differs from another.

For every metric both runs scored, the paired difference A − B over the concepts and items both
runs have (an item is a request, and for generation each image file), its 95% interval from the
hierarchical bootstrap of :mod:`unifybench.uncertainty`, and a permutation p-value that swaps A and
B concept by concept. A metric is compared only where the leaderboard's rule would put the two
values side by side: the same :class:`~unifybench.groups.GroupKey` (benchmark name and content,
protocol, judge, ``--limit``, and scorer backbones only for the metrics computed with them: UniCTokens
and Yo'LLaVA compare on recognition, VQA and choice). Where no metric compares, one line says what
differs; random-init numbers are labelled as such.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .errors import BenchError
from .groups import GroupKey
from .metrics import samples
from .record import RANDOM_INIT_LABEL
from .report import _csv_text, _md_text, _run_row
from .store import read_score_rows
from .uncertainty import DEFAULT_RESAMPLES, paired

def _load(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    for name in ("run.json", "results.json", "scores.jsonl"):
        if not (run_dir / name).is_file():
            raise BenchError(f"not a scored run directory (no {name})", run_dir)
    key = GroupKey.of(_run_row(run_dir / "results.json"))  # the leaderboard's reading of the run
    try:
        results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    except ValueError as exc:
        raise BenchError(f"unreadable run record ({exc.__class__.__name__}: {exc})", run_dir) from None
    return {"dir": run_dir, "results": results, "key": key, "rows": read_score_rows(run_dir / "scores.jsonl")}


def _label(run: dict) -> str:
    results = run["results"]
    args = ", ".join(f"{k}={v}" for k, v in sorted((results.get("method_args") or {}).items()))
    return results["method"] + (f" ({args})" if args else "") + f" [{run['dir'].name}]"


def compare(run_dirs: list[Path], resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> list[dict]:
    """One row per (other run, metric): the first run against each of the others."""
    if len(run_dirs) < 2:
        raise BenchError("give at least two run directories", where="compare")
    runs = [_load(d) for d in run_dirs]
    base = runs[0]
    out = []
    for other in runs[1:]:
        apart: set[str] = set()  # why metrics both runs scored were left out
        compared = 0
        for task, metrics in base["results"]["tasks"].items():
            for metric, value in metrics.items():
                theirs = other["results"]["tasks"].get(task, {}).get(metric)
                if not isinstance(value, float) or not isinstance(theirs, float):
                    continue
                key = base["key"].for_metric(f"{task}.{metric}")
                if key != other["key"].for_metric(f"{task}.{metric}"):
                    apart.update(key.differences(other["key"].for_metric(f"{task}.{metric}")))
                    continue
                compared += 1
                parts_a, parts_b = samples(task, metric, base["rows"]), samples(task, metric, other["rows"])
                if not parts_a or not parts_b:
                    continue
                shared = {}
                for c in parts_a[0].ids:
                    theirs_ids = set(parts_b[0].ids.get(c, ()))
                    ids = [i for i in parts_a[0].ids[c] if i in theirs_ids]
                    if ids:
                        shared[c] = ids
                if not shared:
                    continue
                a = [p.aligned(shared) for p in parts_a]
                b = [p.aligned(shared) for p in parts_b]
                found = paired(a, b, seed, resamples)
                if found is None:
                    continue
                out.append({"a": _label(base), "b": _label(other), "metric": f"{task}.{metric}",
                            "mean_a": sum(p.estimate() for p in a) / len(a),
                            "mean_b": sum(p.estimate() for p in b) / len(b), **found,
                            "random_init": key.random_init})
        if apart and not compared:
            raise BenchError(f"{base['dir'].name} and {other['dir'].name} differ ({'; '.join(sorted(apart))}): the "
                             f"leaderboard keeps them in separate tables and no metric of theirs compares; rerun one "
                             f"with the other's settings", where="compare")
    return out


def as_table(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    frame = pd.DataFrame(rows, columns=["a", "b", "metric", "mean_a", "mean_b", "diff", "lo", "hi", "p", "concepts",
                                        "items", "note", "random_init"])
    if fmt == "csv":
        for column in ("a", "b", "metric"):  # labels carry --method-arg values: no formula, ever
            frame[column] = frame[column].map(_csv_text)
        return frame.to_csv(index=False, lineterminator="\n")
    lines = []
    random_metrics = {r["metric"] for r in rows if r.get("random_init")}
    for (a, b), part in frame.groupby(["a", "b"], sort=False):
        lines += [f"### A = {_md_text(a)}; B = {_md_text(b)}", ""]
        shown = [m for m in part["metric"] if m in random_metrics]
        if shown:
            lines += [f"{RANDOM_INIT_LABEL} ({', '.join(shown)}): a model or scorer had random weights.", ""]
        lines += ["| metric | A | B | A − B | 95% interval | p | concepts | items |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in part.to_dict("records"):
            note = f" ({r['note']})" if isinstance(r.get("note"), str) else ""
            lines.append(f"| {r['metric']} | {r['mean_a']:.3f} | {r['mean_b']:.3f} | {r['diff']:+.3f} | "
                         f"[{r['lo']:+.3f}, {r['hi']:+.3f}] | {r['p']:.3f} | {r['concepts']}{note} | {r['items']} |")
        lines.append("")
    lines.append("A − B over the concepts and items both runs scored; interval: hierarchical percentile bootstrap "
                 "(concepts, then items); p: permutation test swapping A and B concept by concept.")
    return "\n".join(lines) + "\n"
