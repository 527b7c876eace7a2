"""The streaming image pipeline behind every generation score.

``stream_inputs(paths, transforms, ...)`` yields batches of preprocessed inputs, in order:

- Decoding and preprocessing run in DataLoader worker processes (``num_workers``; none for small
  jobs, where starting workers costs more than it saves). Each image is decoded once and every
  transform (one per encoder input: CLIP, DINO, face) is applied to that one decoded image.
- On CUDA, JPEG files skip the CPU decoder: a worker only reads their bytes, and the batch is
  decoded on the GPU by nvJPEG (``torchvision.io.decode_jpeg(..., device="cuda")``) and
  preprocessed there with the same transforms on tensors, one call per group of equally sized
  images. Other formats go through the workers.
- Nothing but the current batches lives in memory: the caller turns each batch into embeddings
  (and scores) and drops the pixels, so memory stays flat however many images are scored.

A file that cannot be read or decoded raises :class:`BenchError` naming it, whether it failed in a
worker, on the GPU or in the main process.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from ..errors import BenchError
from ..images import open_rgb

# A decoded RGB image (PIL in a worker; a uint8 [N, 3, H, W] stack of GPU-decoded images) -> input(s).
Transform = Callable[[Any], Any]
JPEG_MAGIC = b"\xff\xd8\xff"
# Below this many images, worker processes cost more to start than they save.
MIN_IMAGES_FOR_WORKERS = 64


def default_num_workers() -> int:
    """Worker processes for decoding: one per core, at most 16. On a GPU, PNG decoding on the CPU is
    the limit (FACTS.md: ~120 img/s per process against ~25k img/s for the encoders), so every core
    should decode; the main process mostly waits on the GPU."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(16, cores))


def gpu_jpeg_available(device: str | torch.device) -> bool:
    """Whether nvJPEG decoding can be used: a CUDA device and a torchvision built with it."""
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except ImportError:
        return False
    return True


class _Inputs(torch.utils.data.Dataset):
    """Item i: (i, {name: transform(decoded image)}, None) or, for a JPEG left to the GPU,
    (i, None, raw bytes); a failure is (i, None, None, message) reported by the main process."""

    def __init__(self, paths: Sequence[Path], transforms: dict[str, Transform], jpeg_bytes: bool):
        self.paths = list(paths)
        self.transforms = transforms
        self.jpeg_bytes = jpeg_bytes

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        try:
            if self.jpeg_bytes:
                data = Path(path).read_bytes()
                if data[:3] == JPEG_MAGIC:
                    return i, None, torch.frombuffer(bytearray(data), dtype=torch.uint8), None
            img = open_rgb(path)
            return i, {name: fn(img) for name, fn in self.transforms.items()}, None, None
        except BenchError as e:
            return i, None, None, e.message
        except OSError as e:
            return i, None, None, f"cannot read image: {e.strerror or e}"


def _collate(items):
    return list(items)


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # the main process's encoders own the cores' threads
    try:
        os.nice(5)  # decoding fills the gaps; the encoders' threads keep priority on a busy CPU
    except OSError:
        pass


def _stack(values: list) -> Any:
    if values and all(isinstance(v, torch.Tensor) for v in values):
        return torch.stack(values)
    return values


def stream_inputs(paths: Sequence[str | Path], transforms: dict[str, Transform], *, batch_size: int,
                  device: str | torch.device = "cpu", num_workers: int | None = None,
                  gpu_decode: bool | None = None) -> Iterator[tuple[list[int], dict[str, Any]]]:
    """Yield ``(indices, {name: batch})`` over ``paths`` in order; a batch is a stacked tensor on
    ``device`` when the transform returns tensors, else a list.

    ``gpu_decode`` (default: when available) decodes JPEGs with nvJPEG on a CUDA ``device``.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        return
    if batch_size < 1:
        raise BenchError(f"batch size must be at least 1, not {batch_size}", where="batch_size")
    device = torch.device(device)
    if gpu_decode is None:
        gpu_decode = gpu_jpeg_available(device)
    elif gpu_decode and not gpu_jpeg_available(device):
        raise BenchError("GPU JPEG decoding needs a CUDA device and torchvision with nvJPEG", where="gpu_decode")
    if num_workers is None:
        num_workers = default_num_workers() if len(paths) >= MIN_IMAGES_FOR_WORKERS else 0
    dataset = _Inputs(paths, transforms, jpeg_bytes=gpu_decode)
    # Workers hand over small chunks, so the first encoder batch does not wait for one worker to
    # decode a whole batch alone; chunks are joined into batches of ``batch_size`` here.
    chunk = max(1, -(-batch_size // (2 * num_workers))) if num_workers else batch_size
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=chunk, shuffle=False, num_workers=num_workers, collate_fn=_collate,
        worker_init_fn=_worker_init if num_workers else None,
        pin_memory=device.type == "cuda", prefetch_factor=2 if num_workers else None,
        persistent_workers=False)
    for items in _rebatch(loader, batch_size):
        indices = [it[0] for it in items]
        for i, _, _, error in items:
            if error is not None:
                raise BenchError(error, path=paths[i])
        rows: list[dict[str, Any] | None] = [it[1] for it in items]
        jpegs = [(k, it[2]) for k, it in enumerate(items) if it[2] is not None]
        if jpegs:
            decoded = _decode_jpegs_on_gpu([data for _, data in jpegs], [paths[items[k][0]] for k, _ in jpegs],
                                           device)
            for (k, _), row in zip(jpegs, transform_same_sized(decoded, transforms)):
                rows[k] = row
        batch = {}
        for name in transforms:
            values = [row[name] for row in rows]  # type: ignore[index]
            if jpegs:  # GPU-decoded rows already live on the device
                values = [v.to(device) if isinstance(v, torch.Tensor) else v for v in values]
            value = _stack(values)
            if isinstance(value, torch.Tensor):
                value = value.to(device, non_blocking=True)
            batch[name] = value
        yield indices, batch


def transform_same_sized(images: list[torch.Tensor], transforms: dict[str, Transform]) -> list[dict[str, Any]]:
    """``{name: transform(image)}`` for each decoded uint8 [3, H, W] tensor, calling each transform once
    per group of equally sized images on their stack (the transforms treat leading dimensions as a
    batch). On the GPU, one call per image would be bound by kernel launches (a few per transform and
    image), not by the pixels."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(i)
    rows: list[dict[str, Any]] = [{} for _ in images]
    for members in groups.values():
        stacked = torch.stack([images[i] for i in members])
        for name, fn in transforms.items():
            for i, value in zip(members, fn(stacked)):
                rows[i][name] = value
    return rows


def _rebatch(loader, batch_size: int):
    pending: list = []
    for items in loader:
        pending.extend(items)
        while len(pending) >= batch_size:
            yield pending[:batch_size]
            pending = pending[batch_size:]
    if pending:
        yield pending


def _decode_jpegs_on_gpu(datas: list[torch.Tensor], paths: list[Path], device: torch.device) -> list[torch.Tensor]:
    """nvJPEG decode of a batch to uint8 RGB [3, H, W] tensors on ``device``; the file that fails is named."""
    import warnings

    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders in favour of torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg

        return _decode_jpegs(decode_jpeg, ImageReadMode, datas, paths, device)


def _decode_jpegs(decode_jpeg, ImageReadMode, datas, paths, device):
    try:
        return list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        out = []
        for data, path in zip(datas, paths):  # find the culprit, or fall back to the CPU decoder
            try:
                out.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                img = open_rgb(path)  # raises BenchError naming the file if it is corrupt
                from torchvision.transforms.v2 import functional as TF
                out.append(TF.pil_to_tensor(img).to(device))
        return out
