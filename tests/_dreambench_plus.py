"""A DreamBench++-layout bench written in a test (the real one is the hub's data.zip): the same
folders and caption-file shape, a few subjects per category, small real photos."""
from __future__ import annotations

from pathlib import Path

from unifybench.testing.benches import photo

# (category, index, subject phrase): the prompts below contain the phrase, as theirs do.
SUBJECTS = (("animal", "00", "kitten"), ("human", "00", "young woman"), ("object", "00", "red backpack"),
            ("style", "00", "ukiyo-e painting"))
PROMPT_SHAPES = ("a {s} on a beach", "a {s} in a snowy forest", "a {s} next to a wooden table",
                 "a close-up photo of a {s}", "a watercolor painting of a {s}", "a {s} in pixel art style",
                 "a pencil sketch of a {s}", "a {s} floating in outer space", "a {s} made of glass on the moon")


def make_dreambench_plus(root: Path, subjects=SUBJECTS, zipped_under: str | None = "data") -> Path:
    """The bench at ``root/zipped_under`` (what unzipping data.zip gives), or at ``root``; returns it."""
    base = root / zipped_under if zipped_under else root
    for category, index, subject in subjects:
        photo(base / "images" / category / f"{index}.jpg", size=64)
        caption = base / "captions" / category / f"{index}.txt"
        caption.parent.mkdir(parents=True, exist_ok=True)
        caption.write_text("\n".join([subject] + [s.format(s=subject) for s in PROMPT_SHAPES]) + "\n",
                           encoding="utf-8")
    return base
