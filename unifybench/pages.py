"""What the two HTML pages (leaderboard, gallery) share: one self-contained page shell, escaping, thumbnails.

Every text that comes from a benchmark, a method's reply, a judge or a file name is data: it goes
through :func:`esc` (attributes included), never into markup or script as it is.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

CSS = """
:root { --ink:#1d2433; --muted:#5b6475; --line:#d8dde6; --head:#eef1f6; --best:#0b7a3b; --warn:#fff3cd;
        --warnline:#e0a800; --ns:#8a93a3; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       margin: 24px; max-width: 1800px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 6px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.muted { color: var(--muted); } .small { font-size: 12px; }
.scroll { overflow-x: auto; border: 1px solid var(--line); border-radius: 6px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 13px; }
th, td { padding: 4px 5px; border-bottom: 1px solid var(--line); white-space: nowrap; text-align: right; }
th { background: var(--head); font-weight: 600; position: sticky; top: 0; }
th.task { text-align: center; border-left: 2px solid #fff; }
td.first-of-task, th.first-of-task { border-left: 2px solid var(--line); }
td.text, th.text { text-align: left; white-space: normal; min-width: 6em; max-width: 22em; overflow-wrap: break-word; }
th.text { white-space: nowrap; } td.nowrap { min-width: 0; }
.ci { color: var(--muted); font-size: 11px; font-weight: 400; margin-left: 4px; }
/* A table of every task must fit a laptop's width: an interval goes under its value, and a metric's
   arrow under its name, so a column is as wide as its widest word. */
td > .ci { display: block; margin-left: 0; white-space: normal; } .ci .nw { white-space: nowrap; }
th.metric { white-space: normal; }
.clamp { display: -webkit-box; -webkit-line-clamp: 4; -webkit-box-orient: vertical; overflow: hidden; }
details.reply > summary { list-style: none; color: inherit; display: block; }
details.reply > summary::-webkit-details-marker { display: none; }
details.reply[open] .clamp { display: block; -webkit-line-clamp: unset; }
svg.plot { display: block; margin: 4px 0 10px; } svg.plot text { font: 11px system-ui, sans-serif; fill: var(--ink); }
td.method, th.method { text-align: left; position: sticky; left: 0; background: #fff; z-index: 1;
                       min-width: 8em; max-width: 16em; white-space: normal; overflow-wrap: anywhere; }
th.method { background: var(--head); z-index: 2; }
tr.published td { color: var(--muted); } tr.published td.method { font-style: italic; }
td.best, tr.published td.best { color: var(--best); font-weight: 700; }
td.ns { color: var(--ns); }
.banner { background: var(--warn); border-left: 4px solid var(--warnline); padding: 6px 10px; margin: 6px 0;
          border-radius: 4px; }
section.random .scroll { border-color: var(--warnline); background: #fffdf4; }
section.random td.method { background: #fffdf4; }
details { margin: 6px 0 0; } summary { cursor: pointer; color: #1f4fb5; }
.notes { font-size: 12px; color: var(--muted); margin: 4px 0 0 0; padding-left: 20px; }
.grid { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; width: 172px; font-size: 12px; }
figure img { width: 172px; height: 172px; object-fit: cover; border-radius: 4px; border: 1px solid var(--line); }
figcaption { color: var(--muted); line-height: 1.3; }
.prompt { margin: 14px 0 4px; font-weight: 600; }
.ok { color: var(--best); font-weight: 600; } .bad { color: #b42318; font-weight: 600; }
.verdict[title] { text-decoration: underline dotted; cursor: help; }
"""


def esc(value, quote: bool = True) -> str:
    """Text for HTML, attributes included (``quote=False``: text outside a tag, quotes kept)."""
    return html.escape("" if value is None else str(value), quote=quote)


def page(title: str, body: str) -> str:
    """One self-contained page: inline CSS, no script, nothing fetched from the network."""
    return (f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


def thumbnail_uri(path: Path, side: int = 172) -> str | None:
    """A JPEG thumbnail as a data: URI (so the page needs no other file), or None if unreadable."""
    from .errors import BenchError
    from .images import open_rgb

    try:
        im = open_rgb(path, exif_transpose=True)
    except BenchError:
        return None
    im.thumbnail((side * 2, side * 2))  # twice the shown size: sharp on high-density screens
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
