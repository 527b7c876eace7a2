"""One way to write a file that a reader never sees half-written: a temporary name in the same
folder, then a rename. A failed write (a full disk, a kill) leaves the old file or none, and the
temporary file is removed when the failure is an exception."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` writes the content to ``tmp`` (any writer: ``torch.save``, ``image.save``,
    safetensors' ``save_file``); ``tmp`` then replaces ``path``. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fixed name, not a random one: some writers record the file's name inside it (torch.save
    # names its archive after the file), and the same content must give the same bytes. Two
    # writers of one path cannot meet: a run directory is locked while a run uses it.
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None:  # a write that fails mid-file (a full disk) names no file: name ours
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: Path, obj: Any, indent: int | None = 2) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=indent, default=str) + "\n")


def write_jsonl_atomic(path: Path, rows) -> Path:
    return write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))


def read_json(path: Path) -> Any | None:
    """A JSON file's content, or None when it is missing or not JSON (a state file an interrupted
    run may have left half-made is then simply not there)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
