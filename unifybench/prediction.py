"""One line of ``predictions.jsonl``, typed: what the runner stores and every scorer reads.

A text request's line is ``{"key", "task", "concept", "index", "answer"}``; a generation request's
``{"key", "task", "concept", "index", "prompt", "seed", "images"}`` (paths relative to the run
directory). :meth:`Prediction.from_json` checks a line and :meth:`Prediction.to_json` writes it back
byte for byte: the fields in the line's own order, and any field the harness does not read kept, so
an old run directory loads, merges and hashes as it did.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import BenchError
from .records import TASKS

# The runner's order of a line's fields (a text line has no prompt, seed or images; a generation
# line no answer): a Prediction built in code writes them in this order.
FIELDS = ("key", "task", "concept", "index", "answer", "prompt", "seed", "images")


def inside_run_dir(run_dir: Path, rel: str, path: Path | None = None, where: str | None = None) -> Path:
    """``run_dir / rel`` when ``rel`` is a relative path that stays inside the run directory,
    following no link; else a BenchError (a record from elsewhere naming /etc/passwd or ../x is
    refused, never read or shown)."""
    run_dir = Path(run_dir)
    target = run_dir / rel
    parts = Path(rel).parts
    if Path(rel).is_absolute() or ".." in parts or not parts:
        raise BenchError(f"image path {rel!r} points outside the run directory", path or run_dir, where)
    probe = run_dir
    for part in parts:
        probe = probe / part
        if probe.is_symlink():
            raise BenchError(f"image path {rel!r} passes through a symbolic link", path or run_dir, where)
    return target


@dataclass(frozen=True, eq=False)
class Prediction:
    """A finished request: a text ``answer``, or the run-relative paths of its ``images``.

    ``index``, ``prompt`` and ``seed`` are kept as the line gave them (the runner writes an int, a
    text and an int). Equality is the line's content, as when lines were compared as dicts: two
    lines for one key that differ in any field are two different predictions."""
    key: str
    task: str
    concept: str
    index: int | None = None
    answer: str | None = None
    prompt: str | None = None
    seed: int | None = None
    images: tuple[str, ...] | None = None
    # Fields of a stored line the harness does not read: kept so the line is written back unchanged.
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)
    # The line's fields in their order (None: the fields set, in FIELDS's order); a field listed
    # here is written even when None (a stored "index": null stays).
    order: tuple[str, ...] | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.images is not None and not isinstance(self.images, tuple):
            object.__setattr__(self, "images", tuple(self.images))

    # ------------------------------------------------------------------ reading a line

    @classmethod
    def from_json(cls, line: str | bytes, path: Path, where: str, run_dir: Path) -> Prediction:
        """A line of ``path`` (``where``: "line N"), checked; else one line naming file and line."""
        try:
            record = json.loads(line.decode("utf-8") if isinstance(line, bytes) else line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BenchError(f"corrupt line ({exc.__class__.__name__}); move the file aside to start this run "
                             f"again", path, where) from None
        return cls.from_record(record, path, where, run_dir)

    @classmethod
    def from_record(cls, record: Any, path: Path, where: str, run_dir: Path) -> Prediction:
        """A parsed line as the runner writes it: a text key, a text answer or a list of image files
        inside ``run_dir``, a known task and a text concept."""
        if not isinstance(record, dict) or not isinstance(record.get("key"), str):
            raise BenchError("not a prediction record (a JSON object with a text 'key')", path, where)
        if "answer" in record:
            if not isinstance(record["answer"], str):
                raise BenchError(f"'answer' must be text, got {type(record['answer']).__name__}", path, where)
        elif "images" not in record:
            raise BenchError("a prediction record has an 'answer' or 'images'", path, where)
        if "images" in record:  # also beside an answer: scoring reads a generation request's images
            images = record["images"]
            if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
                raise BenchError("'images' must be a list of file names", path, where)
            for rel in images:
                inside_run_dir(run_dir, rel, path, where)
        if record.get("task") not in TASKS or not isinstance(record.get("concept"), str):
            raise BenchError("not a prediction record (a known 'task' and a text 'concept' are required)", path, where)
        known = {name: record[name] for name in FIELDS if name in record}
        return cls(**known, extra={k: v for k, v in record.items() if k not in FIELDS}, order=tuple(record))

    # ------------------------------------------------------------------ writing it back

    def to_dict(self) -> dict[str, Any]:
        """The line's JSON object, its fields in the line's order (or the runner's)."""
        names = self.order or [name for name in FIELDS if getattr(self, name) is not None] + list(self.extra)
        out = {}
        for name in names:
            value = self.extra[name] if name in self.extra else getattr(self, name)
            out[name] = list(value) if name == "images" and value is not None else value
        return out

    def to_json(self) -> str:
        """The line as ``predictions.jsonl`` holds it (no newline)."""
        return json.dumps(self.to_dict())

    def __eq__(self, other) -> bool:
        return self.to_dict() == other.to_dict() if isinstance(other, Prediction) else NotImplemented

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))
