"""The leaderboard as Markdown: a heading and a table per group, its notes under it."""
from __future__ import annotations

from .cells import CHOICE_NOTE, INTERVAL_NOTE, md_text, value_parts, wants_choice_note
from .tables import TRAILING, Table


def as_markdown(tables: list[Table]) -> str:
    out = []
    for table in tables:
        notes: dict[str, int] = {}
        header = ["method", *table.metrics, *TRAILING]
        lines = [f"### {md_text(table.title)}", "", "| " + " | ".join(header) + " |",
                 "|" + "|".join("---" for _ in header) + "|"]
        for row in table.rows:
            cells = [md_text(row.method),
                     *(" ".join(p for p in value_parts(row, m, notes) if p) for m in table.metrics),
                     *(md_text(getattr(row, c)) for c in TRAILING)]
            lines.append("| " + " | ".join(cells) + " |")
        if notes:
            lines.append("")
            lines.extend(f"[{n}] {md_text(text)}" for text, n in notes.items())
        if table.unscored:
            lines += ["", f"No row of this table has: {table.unscored_line()}"]
        if any(r.intervals or r.sd for r in table.rows):
            lines += ["", INTERVAL_NOTE]
        if wants_choice_note(table):
            lines += ["", CHOICE_NOTE]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"
