"""The run directory: the only thing that joins prediction and scoring.

```
<run_dir>/run.json            the full specification that produced the run
<run_dir>/predictions.jsonl   one line per finished request, appended and flushed as each completes
                              (under torchrun each rank appends to predictions.rank<R>.jsonl, merged at the end)
<run_dir>/images/<concept>/<task>/<NNN>_<prompt>/<i>.png
<run_dir>/state/<concept>/    what a method saved when personalizing
<run_dir>/scores.jsonl        one line per scored sample
<run_dir>/results.json        aggregates
```

``predictions.jsonl`` is a write-ahead log: a line is written only once its request is complete
(images on disk first), so a run killed at any instant loses at most the request in flight. A
torn last line from a kill mid-write is cut off when the store is reopened.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

from PIL import Image

from .errors import BenchError
from .records import TASKS
from .kit.files import atomic_write, write_text_atomic
from .prediction import Prediction, inside_run_dir

# The run directory's files, named once: every module that reads or writes one uses these.
RUN_JSON = "run.json"
PREDICTIONS_JSONL = "predictions.jsonl"
SCORES_JSONL = "scores.jsonl"
RESULTS_JSON = "results.json"


def safe_filename(text: str, max_len: int = 80) -> str:
    """A file-name-safe form of a prompt: letters, digits, '-', '_' and '.', at most max_len long."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return name[:max_len] or "_"


def prepare_out_dir(path: Path, what: str, *, create: bool = True) -> Path:
    """Make ``path`` a folder this process can write in, or raise one line saying why not: it is a
    file, it lies under a file, or it cannot be created or written. ``create=False`` checks the same
    without making anything (the nearest existing folder must take a new file)."""
    path = Path(path)
    existing = path
    for ancestor in (path, *path.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                why = "is a file, not a folder" if ancestor == path else f"lies under a file ({ancestor})"
                raise BenchError(why, path, what)
            existing = ancestor
            break
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
            existing = path
        tempfile.NamedTemporaryFile(dir=existing, prefix=".write-test-").close()
    except OSError as exc:
        raise BenchError(f"cannot create or write in it ({exc.strerror or exc.__class__.__name__})", path, what) from None
    return path


@contextlib.contextmanager
def run_dir_lock(run_dir: Path, name: str = ".lock", also_existing: str | None = None):
    """Hold ``<run_dir>/<name>`` (an OS file lock) for the block: a second process given the same run
    directory is refused at once with one line instead of writing beside the first. Under torchrun
    rank 0 holds ``.lock`` and each other rank ``.lock.rank<R>``; a plain run holds ``.lock`` and,
    through ``also_existing`` (a glob), every rank's lock left in the directory, so it is refused
    while any rank of a launch still works there."""
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock, as before
        yield
        return
    names = [name] + sorted(p.name for p in run_dir.glob(also_existing) if p.name != name) if also_existing else [name]
    with contextlib.ExitStack() as held:
        for lock_name in names:
            handle = held.enter_context(open_no_follow(run_dir / lock_name, "a+"))  # closing releases
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise BenchError(f"in use by {holder} ({lock_name}); wait for it to finish, or give another --out",
                                 run_dir) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"unifybench pid {os.getpid()} on {socket.gethostname()}")
            handle.flush()
        yield


def check_no_links(run_dir: Path) -> None:
    """Refuse a run directory that is, or holds, a symbolic link: everything a run writes (``.lock``,
    ``predictions.jsonl``, ``log.txt``, ``images/``, ``state/``) would follow it out of ``--out``. A
    planted ``.lock -> FILE`` in a shared ``--out`` would otherwise truncate FILE."""
    run_dir = Path(run_dir)
    if run_dir.is_symlink():
        raise BenchError("is a symbolic link; a run writes only into a real folder under --out", run_dir)
    if not run_dir.is_dir():
        return
    for top, dirs, files in os.walk(run_dir):  # a linked folder is listed here, never entered
        for name in dirs + files:
            entry = Path(top) / name
            if entry.is_symlink():
                raise BenchError(f"holds a symbolic link ({entry.relative_to(run_dir)} -> {os.readlink(entry)}); a "
                                 f"run writes only inside its own directory: remove the link", run_dir)


# The files and folders a run directory holds, by name (cli's write_output refuses to overwrite them).
RUN_FILES = (RUN_JSON, RESULTS_JSON, SCORES_JSONL, PREDICTIONS_JSONL, "log.txt", ".lock", "missing.txt")
RUN_FOLDERS = ("images", "state")


def check_run_files(run_dir: Path) -> None:
    """Refuse a run directory whose files are folders (or its folders files), or hard-linked: a run
    replaces, appends to and locks them, which would crash half-way or write through the link into
    another file. One line naming the entry."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    entries = [(run_dir / n, "file") for n in RUN_FILES] + [(run_dir / n, "folder") for n in RUN_FOLDERS]
    entries += [(p, "file") for p in run_dir.glob("predictions.rank*.jsonl")] + \
        [(p, "file") for p in run_dir.glob(".lock.rank*")]
    for path, kind in entries:
        if not path.exists():
            continue
        if kind == "file" and not path.is_file():
            raise BenchError("is not a file (a run writes this name as a file); move it aside", path)
        if kind == "folder" and not path.is_dir():
            raise BenchError("is not a folder (a run keeps its files in it); move it aside", path)
        if kind == "file" and path.stat().st_nlink > 1:
            raise BenchError(f"has {path.stat().st_nlink} hard links: writing it would change another file too; "
                             f"replace it with a copy or move it aside", path)


def open_no_follow(path: Path, mode: str):
    """``open(path, mode)`` for appending or locking, refusing a symbolic link at the last step."""
    flags = {"a": os.O_WRONLY | os.O_APPEND | os.O_CREAT, "a+": os.O_RDWR | os.O_APPEND | os.O_CREAT}[mode]
    try:
        fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BenchError("is a symbolic link; a run writes only inside its own directory", path) from None
        raise BenchError(f"cannot open for writing ({exc.strerror or exc.__class__.__name__})", path) from None
    return os.fdopen(fd, mode, encoding="utf-8")


def read_jsonl(path: Path) -> list[dict]:
    """Every row of a JSON-lines file (as :func:`write_jsonl_atomic` writes it)."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise BenchError(f"not a JSON line ({exc.msg})", path, f"line {line_no}") from exc
    return rows


def read_score_rows(path: Path) -> list[dict]:
    """``scores.jsonl``: every row a JSON object with a text ``scorer``, a known ``task`` and a text
    ``concept``, as the scorers write them; otherwise one line naming the file and the line."""
    if not path.is_file():
        raise BenchError("not a file; move it aside", path)
    rows = read_jsonl(path)
    for line_no, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not isinstance(row.get("scorer"), str) or row.get("task") not in TASKS \
                or not isinstance(row.get("concept"), str):
            raise BenchError("not a score row (a JSON object with a text 'scorer', a known 'task' and a text "
                             "'concept')", path, f"row {line_no}")
    return rows


def check_results(results, path: Path) -> dict:
    """``results.json`` as the scorer writes it: an object whose ``tasks`` map each task to its metrics
    (and ``concepts`` each concept to its tasks); otherwise one line naming the file."""
    def mapping_of_mappings(value) -> bool:
        return isinstance(value, dict) and all(isinstance(v, dict) for v in value.values())

    if not isinstance(results, dict):
        raise BenchError(f"not a results record (expected a JSON object, found {type(results).__name__})", path)
    for name, required in (("tasks", True), ("concepts", False), ("bench", True), ("backbones", True)):
        value = results.get(name)
        if value is None and not required:
            continue
        ok = mapping_of_mappings(value) if name in ("tasks", "concepts") else isinstance(value, dict)
        if not ok:
            raise BenchError(f"not a results record: '{name}' should be a JSON object"
                             f"{' of objects' if name in ('tasks', 'concepts') else ''}", path)
    if not all(mapping_of_mappings(v) for v in (results.get("concepts") or {}).values()):
        raise BenchError("not a results record: 'concepts' should map each concept to its tasks' metrics", path)
    return results


class RunStore:
    """``rank``: under torchrun, the rank whose file this store appends to
    (``predictions.rank<R>.jsonl``); every rank's finished requests count as done."""

    def __init__(self, run_dir: Path, rank: int | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.main_path = self.run_dir / PREDICTIONS_JSONL
        self.predictions_path = self.main_path if rank is None else self.run_dir / f"predictions.rank{rank}.jsonl"
        self.predictions: dict[str, Prediction] = {}
        # What this process's method returned for a request it could not store ("returned 2 of 3
        # images"): scoring names it instead of "no prediction".
        self.shortfalls: dict[str, str] = {}
        # One rule for a key found twice, within a file or across rank files: the same record is
        # kept once; a different one is refused (the numbers would depend on which line won).
        for path in [self.main_path, *self.rank_files()]:
            for key, (record, where) in self._load_predictions(path).items():
                if key in self.predictions and self.predictions[key] != record:
                    raise BenchError(f"two different predictions for {key!r}; move one aside", path, where)
                self.predictions.setdefault(key, record)

    def rank_files(self) -> list[Path]:
        return sorted(self.run_dir.glob("predictions.rank*.jsonl"),
                      key=lambda p: int(p.name[len("predictions.rank"):-len(".jsonl")] or 0))

    def merge_rank_files(self) -> None:
        """Every rank's predictions into ``predictions.jsonl`` (once all ranks are done), then the
        rank files removed: one predictions file, as a single process leaves it (the ranks' logs,
        locks and ``ranks/`` stay, as a record of the launch)."""
        files = self.rank_files()
        if not files:
            return
        write_text_atomic(self.main_path, "".join(p.to_json() + "\n" for p in self.predictions.values()))
        for path in files:
            path.unlink()
        self.predictions_path = self.main_path

    def _load_predictions(self, path: Path) -> dict[str, tuple[Prediction, str]]:
        if not path.exists():
            return {}
        if not path.is_file():
            raise BenchError("not a file; move it aside", path)
        data = path.read_bytes()
        records: dict[str, tuple[Prediction, str]] = {}
        good_end = 0
        position = 0
        for line_no, raw in enumerate(data.splitlines(keepends=True), 1):
            line_end = position + len(raw)
            position = line_end
            if not raw.endswith(b"\n"):
                break  # torn last line from a kill mid-write
            where = f"line {line_no}"
            record = Prediction.from_json(raw, path, where, self.run_dir)
            key = record.key
            if key in records and records[key][0] != record:
                raise BenchError(f"two different predictions for {key!r}; move the file aside", path, where)
            records[key] = (record, where)
            good_end = line_end
        if good_end < len(data) and path == self.predictions_path:  # only this store's own file
            with open(path, "r+b") as fh:
                fh.truncate(good_end)
        return records

    def inside(self, rel: str, path: Path | None = None, where: str | None = None) -> Path:
        """``run_dir / rel`` when ``rel`` is a relative path that stays inside the run directory,
        following no link; else a BenchError."""
        return inside_run_dir(self.run_dir, rel, path, where)

    def __contains__(self, key: str) -> bool:
        return key in self.predictions

    def append(self, prediction: Prediction) -> None:
        """Record one finished request durably; a key already present is never written twice."""
        if prediction.key in self.predictions:
            return
        with open_no_follow(self.predictions_path, "a") as fh:
            fh.write(prediction.to_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.predictions[prediction.key] = prediction

    def image_folder(self, concept: str, task: str, index: int, prompt: str) -> Path:
        return self.run_dir / "images" / concept / task / f"{index:03d}_{safe_filename(prompt)}"

    def save_images(self, folder: Path, images: list[Image.Image | Path]) -> list[str]:
        """Write images as ``<i>.png`` (files are copied as they are); return run-relative paths."""
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for i, image in enumerate(images):
            if isinstance(image, Image.Image):
                target = atomic_write(folder / f"{i}.png", lambda tmp: image.save(tmp, format="PNG"))
            else:
                source = Path(image)
                if not source.is_file():
                    raise BenchError("generated image not found", source)
                target = atomic_write(folder / f"{i}{source.suffix.lower()}",
                                      lambda tmp: shutil.copyfile(source, tmp))
            written.append(target.relative_to(self.run_dir).as_posix())
        return written

    def state_dir(self, concept: str) -> Path:
        return self.run_dir / "state" / concept
