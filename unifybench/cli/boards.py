"""``unifybench compare``, ``leaderboard`` and ``gallery``: reading finished runs."""
from __future__ import annotations

from ..output import write_output
from .render import console, print_text


def cmd_compare(args) -> int:
    from ..compare import as_table, compare

    left_out: list[dict] = []
    text = as_table(compare(args.runs, args.bootstrap, args.seed, not_compared=left_out), args.format, left_out)
    _write_or_print(text, args.out, end="")
    if left_out and args.format != "md":  # md names them above its table; csv and json stay data
        console(stderr=True).print("not compared (the leaderboard keeps these apart): " +
                                   "; ".join(f"{n['metric']} ({n['why']})" for n in left_out), markup=False)
    return 0


def _write_or_print(text: str, out, end: str = "\n") -> None:
    if out:
        write_output(out, text)
        console(stderr=True).print(f"wrote {out}", markup=False)
    else:
        print_text(text, end=end)


def cmd_leaderboard(args) -> int:
    from ..leaderboard import collect, render

    rows, found = collect(args.runs, include_published=not args.no_published)
    text = render(rows, args.format)
    if found.unfinished:
        console(stderr=True).print(f"skipped {len(found.unfinished)} unfinished run(s) (no results.json): "
                                   + ", ".join(str(p) for p in found.unfinished), markup=False)
    _write_or_print(text, args.out)
    if not found.results:
        where = ", ".join(str(p) for p in args.runs) or "runs/"
        console(stderr=True).print(f"no finished runs under {where}: only the published rows are shown", markup=False)
    return 0


def cmd_gallery(args) -> int:
    from ..gallery import write_gallery

    concepts = [c.strip() for c in args.concepts.split(",") if c.strip()] if args.concepts else None
    out = write_gallery(args.run_dir, args.out, concepts=concepts, images_per_prompt=args.images_per_prompt)
    console(stderr=True).print(f"wrote {out}", markup=False)
    return 0
