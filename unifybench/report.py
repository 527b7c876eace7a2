"""Results to tables: methods x metrics, one table per :class:`~unifybench.groups.GroupKey` (benchmark
name and content, protocol, backbones, judge, limit), the key ``compare`` uses too.

Rows made on different benchmarks, protocols, scorer backbones, judges or ``--limit`` never share a
table, so no column mixes them; a table's title says what its rows share (two benchmarks with one
name: each title gives its content hash). Published rows (with
source and confidence) join the table of their benchmark and protocol. Random-init scores get
their own tables, titled as plumbing-only. pandas holds the rows; md, csv and html render them.
"""
from __future__ import annotations


import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .errors import BenchError
from .groups import RANDOM_METHOD, GroupKey, random_backbones as _random_backbones
from .metrics import DIRECTIONS, column_order, is_reason
from .pages import esc, page
from .record import BACKBONES_UNUSED, RANDOM_INIT_LABEL, is_random_init
from .store import check_results

PUBLISHED_CSV = Path(__file__).resolve().parent / "data" / "published.csv"
INTERVAL_NOTE = ("95% interval: value ± h where symmetric, else value [lo, hi]; the concepts are the unit (concept "
                 "jackknife, t on concepts − 1 df; README 'Uncertainty'); decimals as many as the interval "
                 "supports. A group of seeds: each concept averaged over the seeds, then the same interval, plus "
                 "the variance of the seeds' mean; sd: the spread between its seeds. Published rows report no interval.")
# The level of the paired test that marks a row "not significantly different from the best".
SIGNIFICANCE = 0.05
GROUP_FIELDS = GroupKey._fields
TRAILING = ("source", "confidence")


@dataclass
class Found:
    results: list[Path]  # results.json of finished runs
    unfinished: list[Path]  # run directories with a run.json but no results.json


def find_runs(paths: list[Path]) -> Found:
    """Each path is a run directory or a folder searched recursively for them (default: ./runs).
    A run directory is not searched inside (its images/ can hold thousands of files)."""
    found = Found([], [])
    for path in list(paths) or [Path("runs")]:
        path = Path(path)
        if (path / "results.json").is_file():
            found.results.append(path / "results.json")
        elif (path / "run.json").is_file():
            found.unfinished.append(path)
        elif path.is_dir():
            for top, dirs, files in os.walk(path):
                dirs.sort()
                if "run.json" in files or "results.json" in files:
                    dirs[:] = []
                    target = found.results if "results.json" in files else found.unfinished
                    target.append(Path(top) / "results.json" if "results.json" in files else Path(top))
        else:
            raise BenchError("not a run directory (no results.json) nor a folder of them", path)
    return found


def _limit_label(limit) -> str:
    return "" if limit in (None, "") else f"--limit {int(limit)}"


def _run_row(results_path: Path) -> dict:
    try:
        results = check_results(json.loads(results_path.read_text(encoding="utf-8")), results_path)
        backbones = results["backbones"]["kind"]
        clip_model = results["backbones"].get("clip_model")
        if clip_model not in (None, "ViT-B-32", "tiny"):  # CLIP-I/CLIP-T from another CLIP: another table
            backbones += f" (CLIP {clip_model})"
        limit = results["limit"] if "limit" in results else _limit_from_run_json(results_path.parent)
        record = _run_record(results_path.parent)
        row = {"benchmark": results["bench"]["name"], "fingerprint": _fingerprint(record, results_path.parent),
               "protocol": results["protocol"], "backbones": backbones,
               "judge": (results.get("judge") or {}).get("judge") or "", "limit": _limit_label(limit),
               "method": results["method"]}
        dreambench_plus = results.get("dreambench_plus_judge")
        if results["bench"].get("format") == "dreambench_plus":  # its own tables, its judge mode in the title
            row["benchmark"] += " (DreamBench++)"
            if dreambench_plus:
                row["judge"] = (f"{row['judge']}; " if row["judge"] else "") + \
                    f"{dreambench_plus['judge']} (DreamBench++ judge, {dreambench_plus['mode']} mode)"
        if is_random_init(results.get("method_details")):
            # A random-init method model (model=tiny) makes random-init numbers whatever scored them:
            # never in a table of real results, and never joined to one as an understanding-only run.
            row["backbones"] = RANDOM_METHOD if backbones == BACKBONES_UNUSED else f"{RANDOM_METHOD}; {backbones}"
        copies = (results["tasks"].get("gen") or {}).get("copies")
        if isinstance(copies, int) and copies:  # it scores against its own reference photos: say so
            row["method"] += f" [copies reference photos: {copies} images]"
        if results.get("choice_eval", "plain") != "plain":  # other requests: never the same row as a plain run's
            row["method"] += f" [choice: {results['choice_eval']}]"
        if results.get("resumed_with_changed_code"):  # predictions of two versions of the method's code
            row["method"] += " [resumed with changed code]"
        if results.get("method_code_changed"):  # rescored after the code changed: the old code's numbers
            row["method"] += " [code changed since]"
        backend = (results.get("method_details") or {}).get("backend_name")
        if backend:  # a method that runs on several unified models: which one made these numbers
            row["method"] += f" [{backend}]"
        if results.get("method_args"):
            row["method"] += " (" + ", ".join(f"{k}={v}" for k, v in sorted(results["method_args"].items())) + ")"
        for task, metrics in results["tasks"].items():
            for metric, value in metrics.items():
                row[f"{task}.{metric}"] = value
        concepts = results.get("concepts") or {}
        counts = results.get("counts") or {}
        row["_concept_set"] = tuple(sorted(concepts))
        row["_counts"] = {"concepts": counts.get("concepts", len(row["_concept_set"])),
                          "items": counts.get("items", 0) + counts.get("images", 0)}
        row["_random_method"] = is_random_init(results.get("method_details"))
        row["_intervals"] = {f"{t}.{m}": (ci["lo"], ci["hi"]) for t, ms in (results.get("intervals") or {}).items()
                             for m, ci in ms.items()}
        # "only 3 concepts", "one concept: over its own items": shown wherever the number is
        row["_interval_notes"] = {f"{t}.{m}": ci["note"] for t, ms in (results.get("intervals") or {}).items()
                                  for m, ci in ms.items() if ci.get("note")}
        row["_copies"] = isinstance(copies, int) and copies > 0
        row["_dir"] = str(results_path.parent)  # its scores.jsonl: seed groups' intervals, paired marks
        row["_concept_intervals"] = results.get("concept_intervals") or {}
        row["_seed"] = results.get("seed")
        # What made the predictions (the run directory's hash input) and what scored them: two
        # directories that agree on both are one run found twice (a copy, or runs/demo inside runs/).
        row["_run_identity"] = json.dumps([record["identity"], *GroupKey.of(row)], sort_keys=True, default=str)
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise BenchError(f"unreadable results ({exc.__class__.__name__}: {exc})", results_path) from exc
    row["source"] = f"run {results_path.parent.name}"
    row["confidence"] = "this harness"
    row["_concepts"] = concepts
    return row


def _run_record(run_dir: Path) -> dict:
    try:
        record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchError(f"unreadable run record ({exc.__class__.__name__})", run_dir / "run.json") from None
    if not isinstance(record, dict) or not isinstance(record.get("identity"), dict):
        raise BenchError("not a run record (no 'identity' object)", run_dir / "run.json")
    return record


def _fingerprint(record: dict, run_dir: Path) -> str:
    """The benchmark's content hash: run.json's identity (results.json names the benchmark only)."""
    try:
        return str(record["identity"]["bench"]["fingerprint"])
    except (KeyError, TypeError):
        raise BenchError("no benchmark fingerprint in run.json (identity.bench.fingerprint): cannot tell which "
                         "runs compare", run_dir / "run.json") from None


def _limit_from_run_json(run_dir: Path):
    """Results written before results.json named its limit: read it from run.json."""
    try:
        return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))["spec"].get("limit")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def published_rows() -> list[dict]:
    if not PUBLISHED_CSV.is_file():
        return []
    frame = pd.read_csv(PUBLISHED_CSV, dtype=str, keep_default_na=False)
    rows = []
    for raw in frame.to_dict("records"):
        row = {k: v for k, v in raw.items() if v != ""}
        for key in [k for k in row if "." in k]:
            row[key] = float(row[key])
        row["method"] += " [published]"
        row["limit"] = ""
        rows.append(row)
    return rows


@dataclass
class Table:
    title: str
    key: GroupKey
    rows: pd.DataFrame  # one row per run or published result; metric columns hold floats or reasons
    metrics: list[str]  # the columns shown: at least one row has a value
    unscored: dict[str, list[str]]  # columns no row has a value in -> the reasons given

    def unscored_line(self) -> str:
        """The columns left out because no row has a value, grouped by why."""
        by_reason: dict[str, list[str]] = {}
        for metric, reasons in self.unscored.items():
            why = "; ".join(r.removeprefix("not scored: ") for r in reasons)
            by_reason.setdefault(why, []).append(metric)
        return " / ".join(f"{', '.join(ms)}: {why}" for why, ms in by_reason.items())

    @property
    def random_init(self) -> bool:
        return self.key.random_init


def _group_title(key: GroupKey, same_name: bool) -> str:
    bench, protocol, backbones, judge, limit, fingerprint = key
    if same_name and fingerprint:  # another table holds a benchmark of this name with other content
        bench += f" (content {fingerprint[:10]})"
    judged = f", judge {judge}" if judge else ""
    limited = f", {limit} (partial: first items and prompts only)" if limit else ""
    if backbones == BACKBONES_UNUSED:
        return f"{bench}: protocol {protocol}{judged}{limited} (understanding only)"
    if backbones.startswith(RANDOM_METHOD):
        scorers = backbones.removeprefix(RANDOM_METHOD).lstrip("; ")
        title = (f"{bench}: protocol {protocol}, {RANDOM_METHOD}"
                 f"{', scorer backbones ' + scorers if scorers else ''}{judged}{limited}")
    else:
        title = f"{bench}: protocol {protocol}, scorer backbones {backbones}{judged}{limited}"
    if _random_backbones(backbones):
        title += " (random-init weights: plumbing and speed only, not results)"
    return title


def build_tables(rows: list[dict]) -> list[Table]:
    frame = pd.DataFrame(rows, dtype=object)  # object: counts stay ints, reasons stay strings
    for field in GROUP_FIELDS:
        frame[field] = frame[field].fillna("") if field in frame else ""
    published = frame["method"].str.endswith("[published]")
    uses_backbones = ~frame["backbones"].isin([BACKBONES_UNUSED, RANDOM_METHOD])
    keys: dict[GroupKey, list[int]] = {}
    for i in frame.index[uses_backbones & ~published]:
        keys.setdefault(GroupKey.of(frame.loc[i]), []).append(i)
    # A published row names no benchmark content: it joins every table of its benchmark's name.
    for i in frame.index[published]:
        own = GroupKey.of(frame.loc[i])
        homes = [k for k in list(keys) if k._replace(fingerprint="") == own]
        for key in homes or [own]:
            keys.setdefault(key, []).append(i)
    # A run with no generation scores used no scorer backbone: it joins every table whose key is its
    # own once backbones drop out (GroupKey.without_backbones: the rule compare applies per metric),
    # or a table of its own.
    for i in frame.index[~uses_backbones]:
        own = GroupKey.of(frame.loc[i])
        homes = [k for k, members in keys.items() if k.without_backbones() == own and not published[members].all()]
        for key in homes or [own]:
            keys.setdefault(key, []).insert(0, i)
    # Runs first, then published-only groups; inside a group, rows in the order given.
    ordered = sorted(keys.items(), key=lambda kv: bool(published[kv[1]].all()))
    columns = [c for c in column_order() if c in frame]
    fingerprints: dict[str, set[str]] = {}
    for key in keys:
        fingerprints.setdefault(key.benchmark, set()).add(key.fingerprint)
    tables = []
    for key, members in ordered:
        part = frame.loc[members].reset_index(drop=True)
        present = [c for c in _judge_first(columns) if part[c].notna().any()] if key.judge else \
            [c for c in columns if part[c].notna().any()]
        metrics = [c for c in present if not part[c].dropna().map(is_reason).all()]
        unscored = {c: sorted(set(part[c].dropna())) for c in present if c not in metrics}
        title = _group_title(key, len(fingerprints[key.benchmark] - {""}) > 1)
        sets = {s for s in part.get("_concept_set", pd.Series(dtype=object)).dropna() if s}
        if len(sets) > 1:  # rows on different concepts: each says how many, and the title says they differ
            title += " — rows on different concept sets (each row says how many)"
            part["method"] = [m if not isinstance(s, tuple) else f"{m} [{len(s)} concepts]"
                              for m, s in zip(part["method"], part.get("_concept_set"))]
        tables.append(Table(title, key, part, metrics, unscored))
    return tables


def _judge_first(columns: list[str]) -> list[str]:
    """Where a judge scored the open answers, its score leads each task's columns: char-BLEU rewards
    echoing the question (random-answer's shuffled question words beat every model on it)."""
    tasks: dict[str, list[str]] = {}
    for c in columns:
        tasks.setdefault(c.split(".")[0], []).append(c)
    return [c for cols in tasks.values() for c in sorted(cols, key=lambda c: ".judge_" not in c)]


def seed_groups(rows: list[dict]) -> list[dict]:
    """Runs that differ only in ``--seed`` as one row: each metric's mean over the seeds, the spread
    between seeds (``_sd``, the sample standard deviation) and their number (``_seeds``). A seed moves
    a trained method's numbers as much as a method change can, so one seed's row says too little."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        # Only seeds may differ: the same table, method, concepts and scored metrics.
        scored = tuple(sorted(k for k, v in row.items() if "." in k and v is not None))
        key = (*(row.get(f, "") for f in GROUP_FIELDS), row["method"], row.get("_concept_set"), scored)
        groups.setdefault(key, []).append(row)
    out = []
    for members in groups.values():
        seeds = {m.get("_seed") for m in members}
        if len(members) < 2 or len(seeds) != len(members) or str(members[0]["method"]).endswith("[published]"):
            out += members
            continue
        row = {k: v for k, v in members[0].items() if not k.startswith("_") and "." not in k}
        row["_seeds"], row["_sd"], row["_intervals"], row["_concepts"] = len(members), {}, {}, {}
        row["_interval_notes"] = {}
        row["_concept_set"], row["_counts"] = members[0].get("_concept_set"), members[0].get("_counts")
        row["_random_method"] = members[0].get("_random_method")
        row["source"] = f"{len(members)} runs, seeds {', '.join(str(m['_seed']) for m in sorted(members, key=lambda m: m['_seed']))}"
        for metric in {k for m in members for k in m if "." in k}:
            values = [m.get(metric) for m in members]
            if all(isinstance(v, float) for v in values):
                row[metric] = float(pd.Series(values).mean())
                row["_sd"][metric] = float(pd.Series(values).std(ddof=1))
                found = _seeds_interval(members, metric)
                if found:
                    row["_intervals"][metric] = (found["lo"], found["hi"])
                    if found.get("note"):
                        row["_interval_notes"][metric] = found["note"]
            elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                mean = sum(values) / len(values)  # a count per run, as the single-seed rows beside it
                row[metric] = int(mean) if mean == int(mean) else mean
            else:
                row[metric] = next((v for v in values if isinstance(v, str)), values[0])
        out.append(row)
    return out


def _scores(run_dir) -> list[dict] | None:
    """A run's ``scores.jsonl`` rows (read once per leaderboard), or None where there is none to
    read: no run directory (a published row), a link (never followed out of a run), not a file."""
    if not isinstance(run_dir, str):
        return None
    path = Path(run_dir) / "scores.jsonl"
    if path.is_symlink() or not path.is_file():
        return None
    key = (str(path), path.stat().st_mtime_ns, path.stat().st_size)
    if key not in _SCORES:
        from .store import read_jsonl
        try:
            _SCORES[key] = read_jsonl(path)
        except (BenchError, OSError, UnicodeDecodeError):
            _SCORES[key] = None
    return _SCORES[key]


_SCORES: dict[tuple, list[dict] | None] = {}


def _seeds_interval(members: list[dict], metric: str) -> dict | None:
    """The interval of a group of seeds' mean (:func:`unifybench.uncertainty.interval_over_runs`):
    the concept sampling and the seed-to-seed spread both inside it."""
    from .metrics import samples
    from .uncertainty import interval_over_runs

    task, name = metric.split(".", 1)
    runs = []
    for member in members:
        rows = _scores(member.get("_dir"))
        parts = samples(task, name, rows) if rows else None
        if not parts:
            return None
        runs.append(parts)
    try:
        return interval_over_runs(runs)
    except (KeyError, TypeError, ValueError):  # scores.jsonl rows of the wrong shape: no interval
        return None


def _one_per_run(rows: list[dict]) -> list[dict]:
    """One row per run identity: the first directory found stands for the others, and its source
    says how many more were found."""
    first: dict[str, dict] = {}
    out = []
    for row in rows:
        seen = first.get(row["_run_identity"])
        if seen is None:
            first[row["_run_identity"]] = row
            out.append(row)
        else:
            seen["_found_in"] = seen.get("_found_in", 1) + 1
            seen["source"] = f"{seen['source'].split(' (')[0]} (the same run found in {seen['_found_in']} directories)"
    return out


def collect(run_dirs: list[Path], include_published: bool = True) -> tuple[list[dict], list[Path]]:
    found = find_runs(run_dirs)
    rows = seed_groups(_one_per_run([_run_row(p) for p in found.results]))
    if include_published:
        rows += published_rows()
    if not rows:
        raise BenchError("no results to show: pass run directories or run `unifybench run` first",
                         where="leaderboard")
    return rows, found.unfinished


def build_leaderboard(run_dirs: list[Path], fmt: str = "md", include_published: bool = True) -> str:
    rows, _ = collect(run_dirs, include_published)
    if fmt == "csv":
        return as_csv(rows)
    tables = build_tables(rows)
    return as_html(tables) if fmt == "html" else as_markdown(tables)


# ----------------------------------------------------------------------------- markdown

def _dict(value) -> dict:
    """A row's dict field; pandas fills a row without one (a published row) with NaN."""
    return value if isinstance(value, dict) else {}


def decimals(lo: float, hi: float) -> int:
    """The decimals an interval supports: two significant digits of its half-width (1 to 4). A
    bound moves by about 5% of the half-width with the data's noise; more digits would be noise."""
    half = (hi - lo) / 2
    if not math.isfinite(half) or half <= 0:
        return 3
    return min(4, max(1, 1 - math.floor(math.log10(half))))


def interval_parts(value: float, lo: float, hi: float, signed: bool = False) -> tuple[str, str]:
    """``(value, "± h")`` where the interval is symmetric at the shown decimals, else ``(value,
    "[lo, hi]")`` (an interval clipped at a bound of the metric is not symmetric)."""
    places, sign = decimals(lo, hi), "+" if signed else ""
    if abs((value - lo) - (hi - value)) < 0.5 * 10 ** -places:
        return f"{value:{sign}.{places}f}", f"± {(hi - lo) / 2:.{places}f}"
    return f"{value:{sign}.{places}f}", f"[{lo:{sign}.{places}f}, {hi:{sign}.{places}f}]"


def interval_text(value: float, lo: float, hi: float, signed: bool = False) -> str:
    return " ".join(interval_parts(value, lo, hi, signed))


def _value_parts(row: dict, metric: str, notes: dict[str, int]) -> tuple[str, str]:
    """A metric's cell as ``(value, what follows it)``: its interval, the interval's note (fewer
    than 5 concepts, one concept) as a numbered note, and for a group of seeds their spread."""
    value = row.get(metric)
    if not isinstance(value, float) or math.isnan(value):
        return _cell(value, notes), ""
    ci = _dict(row.get("_intervals")).get(metric)
    shown, after = interval_parts(value, *ci) if ci else (_cell(value, notes), "")
    note = _dict(row.get("_interval_notes")).get(metric)
    if note:
        after += f" [note {notes.setdefault(note, len(notes) + 1)}]"
    if metric in _dict(row.get("_sd")):
        after += f" (sd {row['_sd'][metric]:.3f}, {int(row['_seeds'])} seeds)"
    return shown, after.strip()


def _cell(value, notes: dict[str, int]) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    if is_reason(text):
        number = notes.setdefault(text, len(notes) + 1)
        return f"n/s [{number}]"
    return _md_text(text)


def _md_text(text: str) -> str:
    """Text in a Markdown table or heading: markup from a name (``<script>``) shown, never rendered;
    a line break cannot end the row. Quotes stay (outside a tag they are plain text; "Yo'Chameleon"
    reads as written in a terminal)."""
    return esc(text, quote=False).replace("|", "/").replace("\r", " ").replace("\n", " ")


CHOICE_NOTE = ("choice.accuracy asks each multiple-choice item once: the always-first row is what answering the "
               "first option scores, a floor a row must clear to show it reads the question. "
               "choice.circular_accuracy (--choice-eval circular, MMBench's CircularEval) asks every rotation of "
               "the options and counts an item only if all are right: another metric, not comparable with "
               "choice.accuracy.")


def _choice_note(table: Table) -> bool:
    """A table with the floor row or a circular row says what they show."""
    return "choice.circular_accuracy" in table.metrics or any(
        str(m).startswith("always-first") for m in table.rows["method"])


def as_markdown(tables: list[Table]) -> str:
    out = []
    for table in tables:
        notes: dict[str, int] = {}
        header = ["method", *table.metrics, *TRAILING]
        lines = [f"### {_md_text(table.title)}", "", "| " + " | ".join(header) + " |",
                 "|" + "|".join("---" for _ in header) + "|"]
        for row in table.rows.to_dict("records"):
            cells = [_md_text(row["method"]),
                     *(" ".join(p for p in _value_parts(row, m, notes) if p) for m in table.metrics),
                     *(_md_text(str(row.get(c) or "")) for c in TRAILING)]
            lines.append("| " + " | ".join(cells) + " |")
        if notes:
            lines.append("")
            lines.extend(f"[{n}] {_md_text(text)}" for text, n in notes.items())
        if table.unscored:
            lines += ["", f"No row of this table has: {table.unscored_line()}"]
        if any(_dict(r.get("_intervals")) or _dict(r.get("_sd")) for r in table.rows.to_dict("records")):
            lines += ["", INTERVAL_NOTE]
        if _choice_note(table):
            lines += ["", CHOICE_NOTE]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


# ----------------------------------------------------------------------------- csv

def as_csv(rows: list[dict]) -> str:
    """One line per run or published result. Metric columns are numbers (empty where not scored), so
    ``pandas.read_csv`` reads them as floats; ``not_scored`` says why, as ``task.metric: reason; ...``."""
    frame = pd.DataFrame(rows, dtype=object)
    metrics = [c for c in column_order() if c in frame]
    reasons = []
    for row in frame[metrics].to_dict("records"):
        reasons.append("; ".join(f"{m}: {v}" for m, v in row.items() if is_reason(v)))
    numeric = frame[metrics].apply(lambda col: pd.to_numeric(col.where(~col.map(is_reason)), errors="coerce"))
    for field in GROUP_FIELDS:
        if field not in frame:
            frame[field] = ""
    bounds = {}
    for m in metrics:
        bounds[m] = numeric[m]
        for suffix, pick in (("lo", 0), ("hi", 1)):
            bounds[f"{m}_{suffix}"] = [_dict(r.get("_intervals")).get(m, (None, None))[pick] for r in rows]
        bounds[f"{m}_sd"] = [_dict(r.get("_sd")).get(m) for r in rows]
    numeric = pd.DataFrame(bounds).apply(pd.to_numeric, errors="coerce")
    numeric = numeric.loc[:, [c for c in numeric if not c.endswith("_sd") or numeric[c].notna().any()]]
    out = pd.concat([frame[list(GROUP_FIELDS) + ["method"]], numeric, frame[list(TRAILING)]], axis=1)
    out["seeds"] = [r.get("_seeds", 1) if not str(r["method"]).endswith("[published]") else "" for r in rows]
    out["concepts"] = [_dict(r.get("_counts")).get("concepts", "") for r in rows]
    out["items"] = [_dict(r.get("_counts")).get("items", "") for r in rows]
    out["random_init_method"] = ["" if str(r["method"]).endswith("[published]") else bool(r.get("_random_method"))
                                 for r in rows]
    out["not_scored"] = reasons
    out["interval_notes"] = ["; ".join(f"{m}: {n}" for m, n in sorted(_dict(r.get("_interval_notes")).items()))
                             for r in rows]
    # --limit N as the number N (empty: every item), so pandas reads it as a number.
    out["limit"] = out["limit"].map(lambda v: int(str(v).split()[-1]) if str(v).strip() else "")
    for column in [*GROUP_FIELDS, "method", *TRAILING, "not_scored", "interval_notes"]:
        if column != "limit":
            out[column] = out[column].map(_csv_text)
    return out.to_csv(index=False, lineterminator="\n")


def _csv_text(value):
    """A text cell a spreadsheet will not run: one starting with = + - @ (or a tab or carriage
    return) gets a leading apostrophe, OWASP's advice against CSV formula injection."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


# ----------------------------------------------------------------------------- html

def _marks(records: list[dict], metric: str) -> dict[int, str]:
    """Row position -> ``best`` (the best value of the column) or ``tie`` (not significantly
    different from the best by ``compare``'s paired tests at ``SIGNIFICANCE``: its interval holds 0
    and its permutation p-value is not below). Overlapping
    intervals are not a test of a difference (Schenker & Gentleman 2001), so only rows that can be
    paired with the best (single runs on the same concepts) are ever marked ``tie``. A run that copies
    its reference photos is never marked."""
    values = [None if r.get("_copies") is True else r.get(metric) for r in records]
    best = _best(pd.Series(values, dtype=object), DIRECTIONS.get(metric, "higher"))
    marks = {i: "best" for i in best}
    if not best or _is_count(metric):
        return marks
    top = records[min(best)]
    for i, row in enumerate(records):
        if i not in marks and isinstance(values[i], float):
            found = _paired_with(top, row, metric)
            if found is not None and min(found["p"], found["p_t"]) >= SIGNIFICANCE:
                marks[i] = "tie"
    return marks


def _paired_with(a: dict, b: dict, metric: str) -> dict | None:
    """``compare``'s paired test of two rows on ``metric``, or None when they cannot be paired: a
    published row or a group of seeds, other concepts, no readable scores."""
    # A table's records carry NaN where a field is missing (pandas): a group of seeds has an int.
    if any(isinstance(r.get("_seeds"), int) or r.get("_concept_set") != a.get("_concept_set") for r in (a, b)):
        return None
    rows_a, rows_b = _scores(a.get("_dir")), _scores(b.get("_dir"))
    if not rows_a or not rows_b:
        return None
    from .metrics import paired_metric

    task, name = metric.split(".", 1)
    try:
        return paired_metric(rows_a, rows_b, task, name)
    except (KeyError, TypeError, ValueError):  # scores.jsonl rows of the wrong shape: not paired
        return None


def _best(values: pd.Series, direction: str) -> set[int]:
    """Row positions holding the best value of a column (ties all marked); none when fewer than two
    values, or when every value is the same (a column where no row is better marks no row best)."""
    numbers = {i: float(v) for i, v in enumerate(values) if isinstance(v, (int, float)) and not isinstance(v, bool)
               and not math.isnan(float(v))}
    if len(numbers) < 2 or max(numbers.values()) - min(numbers.values()) < 1e-12:
        return set()
    best = max(numbers.values()) if direction == "higher" else min(numbers.values())
    return {i for i, v in numbers.items() if abs(v - best) < 1e-12}


def _header(metrics: list[str]) -> str:
    tasks: list[tuple[str, int]] = []
    for m in metrics:
        task = m.split(".")[0]
        if tasks and tasks[-1][0] == task:
            tasks[-1] = (task, tasks[-1][1] + 1)
        else:
            tasks.append((task, 1))
    top = ["<th class='method' rowspan='2'>method</th>"]
    top += [f"<th class='task' colspan='{n}'>{esc(t)}</th>" for t, n in tasks]
    top += [f"<th class='text' rowspan='2'>{c}</th>" for c in TRAILING]
    second, previous = [], None
    for m in metrics:
        task, name = m.split(".", 1)
        arrow = {"higher": "↑", "lower": "↓"}.get(DIRECTIONS.get(m, ""), "")
        first = " first-of-task" if task != previous else ""
        tip = {"higher": "higher is better", "lower": "lower is better"}.get(DIRECTIONS.get(m, ""), "")
        second.append(f"<th class='metric{first}' title='{esc(tip)}'>{esc(name)} {arrow}</th>")
        previous = task
    return f"<thead><tr>{''.join(top)}</tr><tr>{''.join(second)}</tr></thead>"


TIE_TITLE = (f"not significantly different from the best (compare's paired tests over concepts: permutation "
             f"and t, both p ≥ {SIGNIFICANCE})")


def _metric_cells(values: list, metrics: list[str], marks: dict[str, dict[int, str]], position: int,
                  notes: dict[str, int], row: dict | None = None) -> str:
    cells, previous = [], None
    for m, value in zip(metrics, values):
        task = m.split(".")[0]
        classes = ["first-of-task"] if task != previous else []
        previous = task
        text, extra = _value_parts({**(row or {}), m: value}, m, notes)
        title = ""
        mark = marks.get(m, {}).get(position)
        if isinstance(value, str) and is_reason(value):
            classes.append("ns")
            title = f" title='{esc(value)}'"
        elif mark == "best":
            classes.append("best")
            text = f"★ {text}"
        elif mark == "tie":
            classes.append("tie")
            title = f" title='{esc(TIE_TITLE)}'"
            text = f"≈ {text}"
        # the interval, its note and a seed spread each kept whole, free to wrap between them: a
        # column is then as wide as its interval, not as the three side by side
        pieces = re.split(r" (?=\[note |\(sd )", extra) if extra else []
        extra = ("<span class='ci'>" + " ".join(f"<span class='nw'>{esc(p)}</span>" for p in pieces) + "</span>"
                 if pieces else "")
        cells.append(f"<td class='{' '.join(classes)}'{title}>{esc(text)}{extra}</td>")
    return "".join(cells)


def _per_concept(row: dict, metrics: list[str]) -> str:
    concepts: dict = row.get("_concepts") or {}
    if not isinstance(concepts, dict) or not concepts:
        return ""
    names = sorted(concepts)
    shown = [m for m in metrics
             if any(m.split(".", 1)[1] in (concepts[c].get(m.split(".")[0]) or {}) for c in names)]
    values = {c: [(concepts[c].get(m.split(".")[0]) or {}).get(m.split(".", 1)[1]) for m in shown] for c in names}
    notes: dict[str, int] = {}  # no best mark: concepts are not competitors
    body = "".join(f"<tr><td class='method'>{esc(c)}</td>{_metric_cells(values[c], shown, {}, k, notes)}</tr>"
                   for k, c in enumerate(names))
    head = _header(shown).replace(f"<th class='text' rowspan='2'>{TRAILING[0]}</th>"
                                  f"<th class='text' rowspan='2'>{TRAILING[1]}</th>", "")
    head = head.replace(">method<", ">concept<", 1)
    own = _dict(row.get("_concept_intervals"))
    charts = "".join(dot_plot(f"{m} per concept", names, [values[c][j] for c in names],
                              [(lambda ci: (ci["lo"], ci["hi"]) if ci else None)(
                                  (_dict(own.get(c)).get(m.split(".")[0]) or {}).get(m.split(".", 1)[1]))
                               for c in names], DIRECTIONS.get(m, "higher"))
                     for j, m in enumerate(shown) if not _is_count(m))
    return (f"<details><summary>per concept: {esc(row['method'])} ({len(names)} concepts)</summary>"
            f"<div class='scroll'><table>{head}<tbody>{body}</tbody></table></div>"
            f"{_notes_list(notes)}{charts}</details>")


def _text_cell(text: str) -> str:
    """A source or confidence cell: a run directory's long name shortened to its hash, the whole name
    on hover, so the column keeps a readable width at laptop sizes."""
    if text.startswith("run ") and "__" in text:
        return f"<td class='text nowrap' title='{esc(text)}'>run …{esc(text.rsplit('__', 1)[1])}</td>"
    return f"<td class='text'>{esc(text)}</td>"


def _is_count(metric: str) -> bool:
    """A count of items (unparsed replies, missing faces, copies), not a mean: no interval, no plot."""
    return metric.endswith(("unparsed", "missing", "missing_refs", "copies"))


def dot_plot(title: str, labels: list[str], values: list, intervals: list, direction: str = "higher") -> str:
    """One metric as an inline SVG: a dot per row at its value and a line over its 95% interval, on a
    shared axis; rows without a number are left out. Drawn here, nothing fetched when viewed."""
    shown = [(lab, float(v), ci) for lab, v, ci in zip(labels, values, intervals)
             if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(float(v))]
    if not shown:
        return ""
    ends = [x for _, v, ci in shown for x in ([v] + (list(ci) if ci else []))]
    low, high = min(ends), max(ends)
    pad = (high - low) * 0.05 or 0.05
    low, high = low - pad, high + pad
    left, plot, row = 230, 300, 18
    width, height = left + plot + 60, row * len(shown) + 30

    def x(v: float) -> float:
        return left + (v - low) / (high - low) * plot

    parts = [f"<svg class='plot' width='{width}' height='{height}' viewBox='0 0 {width} {height}' role='img' "
             f"aria-label='{esc(title)}'><text x='0' y='12' font-weight='600'>{esc(title)} "
             f"{'(higher is better)' if direction == 'higher' else '(lower is better)'}</text>"]
    for i, (label, value, ci) in enumerate(shown):
        y = 30 + i * row
        short = label if len(label) <= 34 else label[:33] + "…"
        parts.append(f"<text x='0' y='{y + 4}'><title>{esc(label)}</title>{esc(short)}</text>")
        if ci:
            parts.append(f"<line x1='{x(ci[0]):.1f}' x2='{x(ci[1]):.1f}' y1='{y}' y2='{y}' stroke='#5b6475' "
                         f"stroke-width='2'/>")
        parts.append(f"<circle cx='{x(value):.1f}' cy='{y}' r='4' fill='#1f4fb5'><title>{value:.3f}"
                     + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "") + "</title></circle>")
    parts.append(f"<text x='{left}' y='{height - 2}' fill='#5b6475'>{low:.2f}</text>"
                 f"<text x='{left + plot}' y='{height - 2}' text-anchor='end' fill='#5b6475'>{high:.2f}</text></svg>")
    return "".join(parts)


def _plots(records: list[dict], metrics: list[str]) -> str:
    """Per metric, the table's rows with their intervals."""
    labels = [str(r["method"]) for r in records]
    svgs = [dot_plot(m, labels, [r.get(m) for r in records], [_dict(r.get("_intervals")).get(m) for r in records],
                     DIRECTIONS.get(m, "higher")) for m in metrics if not _is_count(m)]
    svgs = [s for s in svgs if s]
    return f"<details><summary>plots: each metric with its 95% intervals</summary>{''.join(svgs)}</details>" \
        if svgs else ""


def _notes_list(notes: dict[str, int]) -> str:
    if not notes:
        return ""
    return "<ol class='notes'>" + "".join(f"<li>{esc(t)}</li>" for t in notes) + "</ol>"


def as_html(tables: list[Table]) -> str:
    """The page a researcher opens first: one self-contained file, a table per comparable group,
    columns grouped by task with each metric's direction, the best value per column marked,
    random-init tables flagged, and each run's per-concept numbers one click away."""
    sections = []
    for table in tables:
        notes: dict[str, int] = {}
        records = table.rows.to_dict("records")
        best = {m: _marks(records, m) for m in table.metrics}
        body = []
        for position, row in enumerate(records):
            published = str(row["method"]).endswith("[published]")
            cells = _metric_cells([row.get(m) for m in table.metrics], table.metrics, best, position, notes, row)
            trailing = "".join(_text_cell(str(row.get(c) or "")) for c in TRAILING)
            body.append(f"<tr class='{'published' if published else 'run'}'>"
                        f"<td class='method'>{esc(row['method'])}</td>{cells}{trailing}</tr>")
        banner = (f"<div class='banner'>{esc(RANDOM_INIT_LABEL)}: {'the method model' if table.key.backbones.startswith(RANDOM_METHOD) else 'these scorer backbones'} "
                  f"{'has' if table.key.backbones.startswith(RANDOM_METHOD) else 'have'} random weights; "
                  f"the numbers test the plumbing and nothing else.</div>" if table.random_init else "")
        unscored = (f"<p class='notes'>No row of this table has: {esc(table.unscored_line())}</p>"
                    if table.unscored else "")
        details = "".join(_per_concept(r, table.metrics) for r in records
                          if not str(r["method"]).endswith("[published]"))
        sections.append(f"<section class='{'random' if table.random_init else 'real'}'>"
                        f"<h2>{esc(table.title)}</h2>{banner}"
                        f"<div class='scroll'><table>{_header(table.metrics)}<tbody>{''.join(body)}</tbody>"
                        f"</table></div>{_notes_list(notes)}{unscored}"
                        f"{'<p class=muted>' + esc(CHOICE_NOTE) + '</p>' if _choice_note(table) else ''}"
                        f"{_plots(records, table.metrics)}{details}"
                        f"</section>")
    intro = ("<h1>UnifyBench leaderboard</h1><p class='muted small'>"
             f"Generated {esc(time.strftime('%Y-%m-%d %H:%M'))}. ↑ higher is better, ↓ lower is better, "
             f"★ best in its column (a run flagged as copying its reference photos is never marked); ≈ not "
             f"significantly different from the best: compare's paired tests over the concepts both runs "
             f"scored, permutation and t (its interval holds 0), both p ≥ {SIGNIFICANCE} (only single runs on the best row's concepts are tested: groups of "
             f"seeds and published rows are not marked). {esc(INTERVAL_NOTE)} A table holds only rows made on the same benchmark, "
             "protocol, scorer backbones, judge and limit. n/s: not scored (hover for why).</p>")
    return page("UnifyBench leaderboard", intro + "\n".join(sections))
