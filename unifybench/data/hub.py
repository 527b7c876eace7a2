"""Benchmarks by their Hugging Face dataset names: ``--bench HankYang428/unictokens_data[@REVISION]``.

The dataset repository is fetched with ``huggingface_hub.snapshot_download(repo_type="dataset")``
into the user's Hugging Face cache (``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE`` and
``HF_TOKEN`` are huggingface_hub's own, read by it). The releases are plain files, so the
``datasets`` package is not involved. A release that ships one top-level archive (``.zip``,
``.tar``, ``.tar.gz``, ``.tgz``) is unpacked once beside the snapshot, per revision; the
benchmark is the first folder at most two levels down whose format is recognised.
"""
from __future__ import annotations

import os
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

from ..errors import BenchError
from .formats import detect_format

# owner/name, optionally @revision: what the hub calls a dataset; never a path that exists.
HUB_NAME = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>[\w./-]+))?$")
ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz")


def looks_like_hub_name(spec: str) -> bool:
    return bool(HUB_NAME.match(spec)) and not Path(spec).expanduser().exists()


def fetch(spec: str) -> tuple[Path, dict]:
    """The local folder of a hub dataset (downloaded or from the cache) and where it came from:
    ``{"hub": repo, "revision": commit}``."""
    from huggingface_hub import constants, snapshot_download

    match = HUB_NAME.match(spec)
    repo, revision = match["repo"], match["revision"]
    fetch_cmd = f"hf download {repo} --repo-type dataset" + (f" --revision {revision}" if revision else "")
    try:
        snapshot = Path(snapshot_download(repo_id=repo, repo_type="dataset", revision=revision))
    except Exception as exc:  # noqa: BLE001 - huggingface_hub's errors: offline, not found, gated, HTTP
        name = type(exc).__name__
        if constants.HF_HUB_OFFLINE or "LocalEntryNotFound" in name or "Offline" in name:
            why = (f"is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and the hub is offline or "
                   f"unreachable; on a connected machine run `{fetch_cmd}` with the same HF_HOME, or pass a folder")
        elif "RepositoryNotFound" in name or "RevisionNotFound" in name:
            why = "was not found on the hub (or needs HF_TOKEN for access)"
        elif "Gated" in name:
            why = "is gated: accept its terms on the hub and set HF_TOKEN"
        else:
            why = f"could not be fetched ({name}: {str(exc).splitlines()[0][:160] if str(exc) else ''})"
        raise BenchError(why, where=f"dataset {repo}{'@' + revision if revision else ''}") from None
    root = find_root(_unpacked(snapshot))
    return root, {"hub": repo, "revision": snapshot.name, "requested": revision or "main", "path": str(root)}


def _unpacked(snapshot: Path) -> Path:
    """The snapshot itself, or, when it holds top-level archives and no recognisable benchmark, the
    folder they are unpacked into (once per revision, through a temporary folder and a rename)."""
    archives = sorted(p for p in snapshot.iterdir() if p.is_file() and p.name.lower().endswith(ARCHIVES))
    if not archives or _recognised(snapshot):
        return snapshot
    # .../datasets--owner--name/snapshots/<commit>/ -> .../datasets--owner--name/unifybench-unpacked/<commit>/
    target = snapshot.parent.parent / "unifybench-unpacked" / snapshot.name
    if target.is_dir():
        return target
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for archive in archives:
            _extract(archive, tmp)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _extract(archive: Path, dest: Path) -> None:
    """Unpack, refusing members that would land outside ``dest`` (absolute paths, ``..``, links)."""
    dest_resolved = dest.resolve()

    def inside(name: str) -> bool:
        return (dest_resolved / name).resolve().is_relative_to(dest_resolved)

    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    if not inside(member):
                        raise BenchError(f"archive member {member!r} points outside the archive", archive)
                zf.extractall(dest)
        else:
            with tarfile.open(archive) as tf:
                for member in tf.getmembers():
                    if not inside(member.name) or member.issym() or member.islnk() or member.isdev():
                        raise BenchError(f"archive member {member.name!r} is a link, a device or points outside "
                                         f"the archive", archive)
                try:
                    tf.extractall(dest, filter="data")  # Python's own guard too, where it has one
                except TypeError:
                    tf.extractall(dest)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise BenchError(f"corrupt archive ({exc})", archive) from None


def _recognised(folder: Path) -> bool:
    try:
        detect_format(folder)
        return True
    except BenchError:
        return False


def find_root(folder: Path) -> Path:
    """``folder`` or the first folder at most two levels below it (in name order) that is a benchmark."""
    level = [folder]
    for _ in range(3):
        for candidate in level:
            if _recognised(candidate):
                return candidate
        level = [d for parent in level for d in sorted(parent.iterdir())
                 if d.is_dir() and not d.name.startswith(".")]
    raise BenchError("no benchmark in a known format (unifybench, dreambench, yollava, myvlm, dreambench_plus) at most "
                     "two folders down",
                     folder)
