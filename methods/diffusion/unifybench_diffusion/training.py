"""What the two trainers share: the training photos, progress lines in the run's log, the record of
a finished training, and reading a safetensors file's header to check files trained elsewhere."""
from __future__ import annotations

from pathlib import Path

from unifybench.errors import BenchError
from unifybench.kit.files import read_json
from unifybench.records import Concept

from .base import LOG

def training_photos(concept: Concept) -> list[Path]:
    if not concept.train_images:
        raise BenchError("no training photos to personalize on", where=f"concept {concept.name}")
    return list(concept.train_images)


def read_header(path: Path, what: str) -> dict[str, tuple[str, list[int]]]:
    """``{name: (dtype, shape)}`` of a safetensors file, read from its header without loading it; a
    file that is not one (a payload or text named .safetensors) is one line naming it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: (str(f.get_slice(k).get_dtype()), list(f.get_slice(k).get_shape())) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for any bad file
        raise BenchError(f"not a safetensors file of {what} ({exc.__class__.__name__})", path) from None



FLOATS = ("F32", "F16", "BF16", "F64")


def log_step(what: str, concept: Concept, step: int, steps: int, losses: list[float]) -> None:
    """A line in the run's log.txt at every tenth of the training, with the mean loss since the last."""
    every = max(1, steps // 10)
    if (step + 1) % every == 0 or step + 1 == steps:
        recent = losses[-every:]
        LOG.info(f"{what} {concept.name}: step {step + 1}/{steps}, loss {sum(recent) / len(recent):.4f}")


def finished(path: Path) -> bool:
    """Whether a training's record says it finished (an interrupted run may have finished training
    and saved its files, but not told the runner)."""
    meta = read_json(path)
    return isinstance(meta, dict) and bool(meta.get("finished"))
