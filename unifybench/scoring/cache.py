"""On-disk cache of reference embeddings.

A concept's reference photos are encoded once per scorer configuration and kept under
``$UNIFYBENCH_CACHE`` (default ``~/.cache/unifybench``) in ``ref-embeddings/<key>.pt``. The key
hashes everything that determines the numbers:

- the content (sha256) of every photo, in order (rows of the stored tensor follow that order);
- the encoder: its name and a fingerprint of its weights (names, shapes and a sample of the values
  of every tensor), so random-init weights made by another torch release get another key;
- the preprocessing (the protocol's description of it) and the compute dtype and device type.

Set ``UNIFYBENCH_CACHE=off`` to disable it. Writes go through a temporary file and a rename, so a
killed process leaves no half-written entry; an unreadable entry is recomputed and rewritten.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

ENV = "UNIFYBENCH_CACHE"
FORMAT_VERSION = 1


def default_cache_dir() -> Path | None:
    """``$UNIFYBENCH_CACHE`` or ``~/.cache/unifybench``; None when the variable says ``off``."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in ("off", "0", "none", "false"):
        return None
    if value:
        return Path(value).expanduser()
    return Path("~/.cache/unifybench").expanduser()


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A cheap, content-based fingerprint of a model's weights (every tensor's name, shape, dtype,
    sum and its first and last 64 values)."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in list(module.state_dict().items()):
            flat = t.detach().reshape(-1)
            h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
            if flat.numel() == 0:
                continue
            if flat.is_floating_point():
                sample = torch.cat([flat[:64], flat[-64:], flat.double().sum().reshape(1).to(flat.dtype)])
                h.update(sample.float().cpu().numpy().tobytes())
            else:
                h.update(torch.cat([flat[:64], flat[-64:]]).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def cache_key(photo_digests: list[str], encoder: str, preprocessing: str, dtype: str) -> str:
    blob = json.dumps({"v": FORMAT_VERSION, "photos": list(photo_digests), "encoder": encoder,
                       "preprocessing": preprocessing, "dtype": dtype}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class EmbeddingCache:
    """``get(key) -> Tensor | None`` and ``put(key, tensor)`` over files in ``root``."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) / "ref-embeddings" if root is not None else None
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.pt"

    def get(self, key: str) -> torch.Tensor | None:
        if self.root is None:
            return None
        path = self._path(key)
        if path.is_file():
            try:
                value = torch.load(path, map_location="cpu", weights_only=True)
                if isinstance(value, torch.Tensor):
                    self.hits += 1
                    return value
            except Exception:  # noqa: BLE001 - a torn or foreign file: recompute and overwrite it
                pass
        self.misses += 1
        return None

    def put(self, key: str, value: torch.Tensor) -> None:
        if self.root is None:
            return
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                torch.save(value.detach().cpu().contiguous(), fh)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only or full cache folder costs speed, never a result
