"""The leaderboard as one self-contained HTML page: marks, notes, per-concept details and plots."""
from __future__ import annotations

import re
import time

from ..metrics import DIRECTIONS, is_reason
from ..pages import esc, page
from ..run_record import RANDOM_INIT_LABEL
from .cells import CHOICE_NOTE, INTERVAL_NOTE, is_count, value_parts, wants_choice_note
from .marks import SIGNIFICANCE, column_marks
from .plots import dot_plot, plots_of
from .rows import LeaderboardRow
from .tables import TRAILING, Table


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
                  notes: dict[str, int], row: LeaderboardRow | None = None) -> str:
    cells, previous = [], None
    for m, value in zip(metrics, values):
        task = m.split(".")[0]
        classes = ["first-of-task"] if task != previous else []
        previous = task
        text, extra = value_parts(row, m, notes, value)
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


def _per_concept(row: LeaderboardRow, metrics: list[str]) -> str:
    concepts = row.concepts
    if not concepts:
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
    own = row.concept_intervals
    charts = "".join(dot_plot(f"{m} per concept", names, [values[c][j] for c in names],
                              [(lambda ci: (ci["lo"], ci["hi"]) if ci else None)(
                                  ((own.get(c) or {}).get(m.split(".")[0]) or {}).get(m.split(".", 1)[1]))
                               for c in names], DIRECTIONS.get(m, "higher"))
                     for j, m in enumerate(shown) if not is_count(m))
    return (f"<details><summary>per concept: {esc(row.method)} ({len(names)} concepts)</summary>"
            f"<div class='scroll'><table>{head}<tbody>{body}</tbody></table></div>"
            f"{notes_list(notes)}{charts}</details>")


def _text_cell(text: str) -> str:
    """A source or confidence cell: a run directory's long name shortened to its hash, the whole name
    on hover, so the column keeps a readable width at laptop sizes."""
    if text.startswith("run ") and "__" in text:
        return f"<td class='text nowrap' title='{esc(text)}'>run …{esc(text.rsplit('__', 1)[1])}</td>"
    return f"<td class='text'>{esc(text)}</td>"


def notes_list(notes: dict[str, int]) -> str:
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
        records = table.rows
        best = {m: column_marks(records, m) for m in table.metrics}
        body = []
        for position, row in enumerate(records):
            cells = _metric_cells([row.value(m) for m in table.metrics], table.metrics, best, position, notes, row)
            trailing = "".join(_text_cell(getattr(row, c)) for c in TRAILING)
            body.append(f"<tr class='{'published' if row.published else 'run'}'>"
                        f"<td class='method'>{esc(row.method)}</td>{cells}{trailing}</tr>")
        banner = (f"<div class='banner'>{esc(RANDOM_INIT_LABEL)}: {'the method model' if table.key.random_method else 'these scorer backbones'} "
                  f"{'has' if table.key.random_method else 'have'} random weights; "
                  f"the numbers test the plumbing and nothing else.</div>" if table.random_init else "")
        unscored = (f"<p class='notes'>No row of this table has: {esc(table.unscored_line())}</p>"
                    if table.unscored else "")
        details = "".join(_per_concept(r, table.metrics) for r in records if not r.published)
        sections.append(f"<section class='{'random' if table.random_init else 'real'}'>"
                        f"<h2>{esc(table.title)}</h2>{banner}"
                        f"<div class='scroll'><table>{_header(table.metrics)}<tbody>{''.join(body)}</tbody>"
                        f"</table></div>{notes_list(notes)}{unscored}"
                        f"{'<p class=muted>' + esc(CHOICE_NOTE) + '</p>' if wants_choice_note(table) else ''}"
                        f"{plots_of(records, table.metrics)}{details}"
                        f"</section>")
    intro = ("<h1>UnifyBench leaderboard</h1><p class='muted small'>"
             f"Generated {esc(time.strftime('%Y-%m-%d %H:%M'))}. ↑ higher is better, ↓ lower is better, "
             f"★ best in its column (a run flagged as copying its reference photos is never marked); ≈ not "
             f"significantly different from the best: compare's paired tests over the concepts both runs "
             f"scored, permutation and t (its interval holds 0), both p ≥ {SIGNIFICANCE} (only single runs on the best row's concepts are tested: groups of "
             f"seeds and published rows are not marked). {esc(INTERVAL_NOTE)} A table holds only rows made on the same benchmark, "
             "protocol, scorer backbones, judge and limit. n/s: not scored (hover for why).</p>")
    return page("UnifyBench leaderboard", intro + "\n".join(sections))
