"""Checking a ``--device`` before any work starts, so a bad one is a one-line error, not a traceback
from deep inside torch after the benchmark has been read and the method loaded."""
from __future__ import annotations

from .errors import BenchError


def check_device(device: str, where: str = "--device") -> str:
    """Return ``device`` if torch can use it here: cpu, cuda[:N] with that GPU visible, or mps."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise BenchError(f"not a device torch knows: {device!r} (use cpu, cuda, cuda:N or mps)", where=where) from exc
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise BenchError(f"{device!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU; "
                             "use --device cpu", where=where)
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise BenchError(f"{device!r} asked for, but {count} CUDA GPU(s) are visible", where=where)
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise BenchError(f"{device!r} asked for, but MPS is not available here; use --device cpu", where=where)
    elif parsed.type != "cpu":
        raise BenchError(f"unsupported device {device!r} (use cpu, cuda, cuda:N or mps)", where=where)
    return device
