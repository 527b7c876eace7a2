"""Per-epoch files of a method's training: row files in the Yo'LLaVA / Yo'Chameleon authors' format,
and the resume state that lets an interrupted concept continue bit for bit.

- :func:`save_token_rows` / :func:`load_token_rows` / :func:`token_row_epochs`: ``<epoch>-token.pt``
  (input-embedding rows) and ``<epoch>-lmhead.pt`` (``lm_head`` rows), float32 ``[n, d]`` in token
  order, as both authors' ``save_checkpoint`` write them; loaded ``weights_only`` (an untrusted file
  runs no code), a wrong shape or an unreadable file one line naming it.
- :func:`training_costs`: a training record's epochs, steps, seconds and losses, for the speed hooks.
- :func:`write_resume` / :func:`read_resume`: after each epoch, whatever the method needs to go on
  (trained rows' masters, optimizer moments, generators' states, the log so far) in ``resume.pt``,
  read back only when it was made by the same training (``key``): anything else starts over.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import BenchError
from .files import atomic_write

ROW_FILES = (("embed", "token"), ("head_weight", "lmhead"))
RESUME_FILE = "resume.pt"


def save_token_rows(folder: Path, epoch: str, rows: dict) -> None:
    import torch

    for key, suffix in ROW_FILES:
        tensor = rows[key].detach().float().cpu().contiguous()
        atomic_write(Path(folder) / f"{epoch}-{suffix}.pt", lambda tmp: torch.save(tensor, tmp))


def token_row_epochs(folder: Path) -> list:
    """The epochs with a ``-token.pt`` file in ``folder``: numbers, and ``"best"``."""
    found = []
    for p in Path(folder).glob("*-token.pt"):
        stem = p.name[: -len("-token.pt")]
        if stem == "best":
            found.append("best")
        elif stem.isdigit():
            found.append(int(stem))
    return found


def load_token_rows(folder: Path, epoch: str, width: int, n_rows: int, rows_are: str = "the learned tokens") -> dict:
    """``embed`` and ``head_weight`` ``[n_rows, width]`` (float32) and a zero ``head_bias``."""
    import torch

    rows = {}
    for key, suffix in ROW_FILES:
        path = Path(folder) / f"{epoch}-{suffix}.pt"
        if not path.is_file():
            raise BenchError(f"file not found (epochs here: {sorted(map(str, token_row_epochs(folder)))})", path)
        try:
            t = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input
            raise BenchError(f"cannot load ({exc.__class__.__name__})", path) from exc
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (n_rows, width):
            shape = list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise BenchError(f"expected rows of shape [{n_rows}, {width}] ({rows_are}, the model's width), "
                             f"found {shape}", path)
        rows[key] = t.float()
    rows["head_bias"] = torch.zeros(n_rows)
    return rows


def write_resume(folder: Path, state: dict) -> None:
    import torch

    atomic_write(Path(folder) / RESUME_FILE, lambda tmp: torch.save(state, tmp))


def read_resume(folder: Path, key: dict) -> dict | None:
    """The last epoch's state when every item of ``key`` matches what it was saved with (arguments,
    training set, base model, seed); None otherwise, or for an unreadable file."""
    import torch

    path = Path(folder) / RESUME_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors, numbers, lists: no code
    except Exception:  # noqa: BLE001 - a torn or foreign file: start over
        return None
    if not isinstance(state, dict) or any(state.get(k) != v for k, v in key.items()):
        return None
    return state


def drop_resume(folder: Path) -> None:
    """A finished training: its epoch files are the record."""
    (Path(folder) / RESUME_FILE).unlink(missing_ok=True)


def training_costs(meta: dict) -> dict:
    """What ``python -m unifybench.bench personalize`` reports of a training record (a dict with
    ``losses``: ``[{"loss", "steps"?}, ...]`` per epoch, ``seconds``, optionally ``epochs`` and
    ``steps``): epochs, steps, seconds, the first and last epoch's loss, seconds per step."""
    losses = meta.get("losses") or []
    steps = meta.get("steps", sum(e.get("steps", 0) for e in losses))
    seconds = meta.get("seconds")
    return {"epochs": meta.get("epochs", len(losses)), "steps": steps, "seconds": seconds,
            "loss_first_epoch": round(losses[0]["loss"], 4) if losses else None,
            "loss_last_epoch": round(losses[-1]["loss"], 4) if losses else None,
            "seconds_per_step": round(seconds / steps, 4) if steps and seconds is not None else None}

