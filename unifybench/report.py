"""Results to tables: methods x metrics, one table per (benchmark, protocol, backbones).

Rows made on different benchmarks, protocols, scorer backbones or judges never share a table,
so no column mixes them; a table's title says what its rows share. Published rows (with source and
confidence) join the table of their benchmark and protocol. Random-init scores get their own
tables, titled as plumbing-only.
"""
from __future__ import annotations

import csv
import html
import io
import json
from collections import defaultdict
from pathlib import Path

from .errors import BenchError
from .runner import BACKBONES_UNUSED
from .metrics import TASK_METRICS

PUBLISHED_CSV = Path(__file__).resolve().parent.parent / "leaderboard" / "published.csv"
GROUP_FIELDS = ("benchmark", "protocol", "backbones", "judge")


def _find_result_files(paths: list[Path]) -> list[Path]:
    """Each path is a run directory, or a folder of run directories (default: ./runs)."""
    paths = list(paths) or [Path("runs")]
    found: list[Path] = []
    for path in paths:
        if (path / "results.json").is_file():
            found.append(path / "results.json")
        elif path.is_dir():
            found.extend(sorted(path.glob("*/results.json")))
        else:
            raise BenchError("not a run directory (no results.json)", path)
    return found


def _run_row(results_path: Path) -> dict:
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
        backbones = results["backbones"]["kind"]
        clip_model = results["backbones"].get("clip_model")
        if clip_model not in (None, "ViT-B-32", "tiny"):  # CLIP-I/CLIP-T from another CLIP: another table
            backbones += f" (CLIP {clip_model})"
        judge = (results.get("judge") or {}).get("judge") or ""
        row = {"benchmark": results["bench"]["name"], "protocol": results["protocol"],
               "backbones": backbones, "judge": judge, "method": results["method"]}
        if results.get("method_args"):
            row["method"] += " (" + ", ".join(f"{k}={v}" for k, v in sorted(results["method_args"].items())) + ")"
        for task, metrics in results["tasks"].items():
            for metric, value in metrics.items():
                row[f"{task}.{metric}"] = value
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise BenchError(f"unreadable results ({exc.__class__.__name__}: {exc})", results_path) from exc
    row["source"] = f"run {results_path.parent.name}"
    row["confidence"] = "this harness"
    return row


def _published_rows() -> list[dict]:
    if not PUBLISHED_CSV.is_file():
        return []
    with open(PUBLISHED_CSV, newline="", encoding="utf-8") as fh:
        rows = []
        for raw in csv.DictReader(fh):
            row = {k: v for k, v in raw.items() if v not in (None, "")}
            for key, value in list(row.items()):
                if "." in key:
                    row[key] = float(value)
            row["method"] = row["method"] + " [published]"
            rows.append(row)
        return rows


def _metric_order() -> list[str]:
    order = [f"{t}.{m}" for t, ms in TASK_METRICS.items() for m in ms]
    # Published-only columns (Yo'LLaVA reports visual and text multiple choice apart) follow "choice".
    at = order.index("choice.unparsed") + 1
    return order[:at] + ["choice.visual_mc", "choice.text_mc"] + order[at:]


def _group_title(key: tuple[str, str, str, str]) -> str:
    bench, protocol, backbones, judge = key
    judged = f", judge {judge}" if judge else ""
    if backbones == BACKBONES_UNUSED:
        return f"{bench}: protocol {protocol}{judged} (understanding only)"
    title = f"{bench}: protocol {protocol}, scorer backbones {backbones}{judged}"
    if backbones.split()[0] in ("random", "tiny"):
        title += " (random-init weights: plumbing and speed only, not results)"
    return title


def build_leaderboard(run_dirs: list[Path], fmt: str = "md", include_published: bool = True) -> str:
    rows = [_run_row(p) for p in _find_result_files(run_dirs)]
    if include_published:
        rows += _published_rows()
    if not rows:
        raise BenchError("no results to show: pass run directories or run `unifybench run` first",
                         where="leaderboard")
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        if row["backbones"] == BACKBONES_UNUSED:
            continue
        groups[tuple(row.get(f, "") for f in GROUP_FIELDS)].append(row)
    # A run with no generation scores used no scorer backbone: it joins every table of its
    # benchmark and protocol that holds runs, or a table of its own.
    for row in rows:
        if row["backbones"] != BACKBONES_UNUSED:
            continue
        homes = [k for k, g in groups.items()
                 if (k[0], k[1], k[3]) == (row["benchmark"], row["protocol"], row["judge"])
                 and any("[published]" not in r["method"] for r in g)]
        for key in homes or [(row["benchmark"], row["protocol"], BACKBONES_UNUSED, row["judge"])]:
            groups[key].insert(0, row)
    # Runs first, then published-only groups; inside a group, rows in the order given.
    ordered = sorted(groups.items(), key=lambda kv: all("[published]" in r["method"] for r in kv[1]))
    all_metrics = _metric_order()
    tables = []
    for key, group in ordered:
        metrics = [m for m in all_metrics if any(m in r for r in group)]
        tables.append((_group_title(key), group, metrics))
    if fmt == "csv":
        return _as_csv(rows, all_metrics)
    if fmt == "html":
        return _as_html(tables)
    return _as_markdown(tables)


def _cell(value, notes: dict[str, int]) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if text.startswith("not scored"):
        number = notes.setdefault(text, len(notes) + 1)
        return f"n/s [{number}]"
    return text


def _as_markdown(tables) -> str:
    out = []
    for title, group, metrics in tables:
        notes: dict[str, int] = {}
        header = ["method", *metrics, "source", "confidence"]
        lines = [f"### {title}", "", "| " + " | ".join(header) + " |",
                 "|" + "|".join("---" for _ in header) + "|"]
        for row in group:
            cells = [row["method"], *(_cell(row.get(m), notes) for m in metrics),
                     row.get("source", ""), row.get("confidence", "")]
            lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
        if notes:
            lines.append("")
            lines.extend(f"[{n}] {text}" for text, n in notes.items())
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def _as_csv(rows: list[dict], metrics: list[str]) -> str:
    used = [m for m in metrics if any(m in r for r in rows)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*GROUP_FIELDS, "method", *used, "source", "confidence"],
                            extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return buffer.getvalue()


def _as_html(tables) -> str:
    parts = ["<!doctype html><meta charset='utf-8'><title>UnifyBench leaderboard</title>"]
    for title, group, metrics in tables:
        notes: dict[str, int] = {}
        parts.append(f"<h3>{html.escape(title)}</h3><table border='1'><tr>")
        parts.extend(f"<th>{html.escape(h)}</th>" for h in ["method", *metrics, "source", "confidence"])
        parts.append("</tr>")
        for row in group:
            cells = [row["method"], *(_cell(row.get(m), notes) for m in metrics),
                     row.get("source", ""), row.get("confidence", "")]
            parts.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
        if notes:
            parts.append("<ol>" + "".join(f"<li>{html.escape(t)}</li>" for t in notes) + "</ol>")
    return "\n".join(parts) + "\n"
