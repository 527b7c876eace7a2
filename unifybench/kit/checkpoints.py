"""Where a concept's files trained elsewhere are found: one rule for every adapter.

Given ``DIR`` (``checkpoint=``, ``embeds=``, ``lora=``): ``DIR/<concept name>/``, then
``DIR/<concept token>/``; ``DIR`` itself only when it holds the files and has no subfolders other
than the layout's own (UniCTokens' ``stage1/`` ... ``stage3/``). So a folder of several concepts
never lends one concept's files to another concept that has none: that concept is refused.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import BenchError


def concept_folder(root: Path, concept, holds: Callable[[Path], bool], what: str,
                   layout_subfolders: tuple[str, ...] = ()) -> Path:
    """The folder of ``concept``'s files under ``root``; ``holds(folder)`` says whether a folder has
    them, ``what`` names them in the error."""
    root = Path(root)
    for base in (root / concept.name, root / concept.token):
        if base.is_dir() and holds(base):
            return base
    if holds(root):
        others = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in layout_subfolders)
        if not others:
            return root
        detail = (f"DIR holds {what} but also the subfolder(s) {', '.join(others[:3])}"
                  f"{' ...' if len(others) > 3 else ''}, so it is taken for a folder of several concepts")
    else:
        detail = f"DIR/{what} is used only when DIR has no subfolders"
    raise BenchError(f"no {what} for concept {concept.name!r} (looked in DIR/{concept.name}/ and "
                     f"DIR/{concept.token}/; {detail})", root)


def has_file(filename: str) -> Callable[[Path], bool]:
    return lambda folder: (folder / filename).is_file()
