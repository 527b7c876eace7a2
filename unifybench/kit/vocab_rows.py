"""Learning new vocabulary rows of a frozen model, once, for every token-learning adapter.

Plugins import these names from :mod:`unifybench.kit.rows` (the rows layer, with the resumable
epoch loop); importing them from here keeps working. What lives here:

- :class:`NewTokens`: a concept's tokens exist only inside ``with``: its strings are added to the
  tokenizer, the vocabulary grows where they need rows, and their rows are written; on leaving, the
  tokenizer is the one from before, the vocabulary has its old size, and every row the block wrote
  that existed before holds its old value again, so the base model is bit-identical afterwards.
  Growing the vocabulary never touches the global random state (the new rows are written, not drawn).
- :class:`RowTrainer`: trains only given rows, through float32 master copies, writing no other row.
- The UniCTokens public checkpoint format (``epoch_<N>_embed.pt``, ``epoch_<N>_lm_head_weight.pt``,
  ``epoch_<N>_lm_head_bias.pt``): :func:`save_rows`, :func:`load_rows`, :func:`checkpoint_epochs`.

A *host* is anything with a ``tokenizer`` attribute (a ``transformers`` tokenizer), a ``model``
(a ``transformers`` model with ``resize_token_embeddings``) and ``vocab_row_params()``: the
parameters whose dim 0 indexes the vocabulary (input embedding, and an untied output head's weight
and bias), each listed once.
"""
from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch

from ..errors import BenchError

ROW_FILES = (("embed", "embed"), ("head_weight", "lm_head_weight"), ("head_bias", "lm_head_bias"))


@dataclass
class VocabRowParam:
    """A parameter whose dim 0 indexes the vocabulary: embedding weight, head weight or head bias."""

    name: str  # "embed", "head_weight", "head_bias"
    param: torch.nn.Parameter


def vocabulary_size(host) -> int:
    return host.vocab_row_params()[0].param.shape[0]


def get_rows(host, ids: Sequence[int]) -> dict[str, torch.Tensor]:
    """float32 CPU copies of rows: ``embed`` [n, d], ``head_weight`` [n, d] (the embedding's when the
    head is tied) and ``head_bias`` [n] (zeros when the head has none)."""
    idx = torch.tensor(list(ids), dtype=torch.long)
    found = {}
    for vp in host.vocab_row_params():
        found[vp.name] = vp.param.detach()[idx.to(vp.param.device)].float().cpu().clone()
    if "head_weight" not in found:
        found["head_weight"] = found["embed"].clone()
    if "head_bias" not in found:
        found["head_bias"] = torch.zeros(len(idx))
    return found


@torch.no_grad()
def set_rows(host, ids: Sequence[int], rows: dict[str, torch.Tensor]) -> None:
    idx = torch.tensor(list(ids), dtype=torch.long)
    for vp in host.vocab_row_params():
        if vp.name in rows:
            p = vp.param
            p.data[idx.to(p.device)] = rows[vp.name].to(p.device, p.dtype)


def _resize(host, n: int) -> None:
    """Resize the vocabulary to ``n`` rows without drawing from the global random state (new rows are
    initialised by the model's own init, which draws; they are overwritten by the caller)."""
    devices = [host.model.device] if getattr(host.model, "device", torch.device("cpu")).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        host.model.resize_token_embeddings(n, mean_resizing=False)
    for vp in host.vocab_row_params():
        vp.param.requires_grad_(False)


def fingerprint(host) -> str:
    """The tokenizer's size and a content hash of every vocabulary row: equal before and after a
    concept is active, or the concept has leaked into the base model."""
    h = hashlib.sha256(f"{len(host.tokenizer)}|{vocabulary_size(host)}".encode())
    with torch.no_grad():
        for vp in host.vocab_row_params():
            t = vp.param.detach()
            h.update(f"{vp.name}|{tuple(t.shape)}|{t.dtype}".encode())
            h.update(t.float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class NewTokens:
    """``with NewTokens(host, tokens, rows) as ids:`` the tokens exist, with ``rows`` (aligned with
    ``tokens``; by name as in :func:`get_rows`; None: zeros), only inside the block.

    Re-entering with the same tokens while already inside is not supported: one concept at a time."""

    def __init__(self, host, tokens: Sequence[str], rows: dict[str, torch.Tensor] | None = None):
        self.host = host
        self.tokens = list(tokens)
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError(f"duplicate tokens in {self.tokens}")
        self.rows = rows
        self.ids: list[int] = []

    def __enter__(self) -> list[int]:
        host = self.host
        self._tokenizer = copy.deepcopy(host.tokenizer)
        self._size = vocabulary_size(host)
        vocab = host.tokenizer.get_vocab()
        missing = [t for t in self.tokens if t not in vocab]
        if missing:
            host.tokenizer.add_tokens(missing)
        self.ids = [host.tokenizer.convert_tokens_to_ids(t) for t in self.tokens]
        old = [i for i in self.ids if i < self._size]
        self._saved = (old, get_rows(host, old) if old else None)
        if max(self.ids) >= self._size:
            _resize(host, max(self.ids) + 1)
        rows = self.rows
        if rows is None:
            width = host.vocab_row_params()[0].param.shape[1]
            rows = {"embed": torch.zeros(len(self.ids), width), "head_weight": torch.zeros(len(self.ids), width),
                    "head_bias": torch.zeros(len(self.ids))}
        set_rows(host, self.ids, rows)
        # Rows grown for padding between the old size and a new id (none when ids are contiguous) hold
        # zeros, not the model's random init.
        grown = [i for i in range(self._size, vocabulary_size(host)) if i not in set(self.ids)]
        if grown:
            set_rows(host, grown, {k: torch.zeros((len(grown),) + v.shape[1:]) for k, v in rows.items()})
        return self.ids

    def __exit__(self, *exc) -> None:
        host = self.host
        old, saved = self._saved
        if saved is not None:
            set_rows(host, old, saved)
        if vocabulary_size(host) != self._size:
            _resize(host, self._size)
        host.tokenizer = self._tokenizer


# ----------------------------------------------------------------------------- training


class RowTrainer:
    """Trains only the given rows of every vocabulary parameter, in float32 whatever the model's dtype.

    The optimizer holds a float32 master copy of just those rows, not the vocabulary matrices: AdamW
    over the whole matrices would keep moments for every row (on Janus-Pro-1B two 102,400 x 2048
    matrices) and its weight decay would move every row, and on a bf16 model each update smaller than
    half the spacing of bf16 numbers near a weight would round away. Each step reads the rows'
    gradients from the model, steps the masters and writes them back into those rows in the model's
    dtype; no other row is ever written, so the model stays bit-identical on every other token.
    """

    def __init__(self, host, train_ids: Sequence[int], *, lr: float, weight_decay: float, eps: float = 1e-8,
                 init: dict[str, torch.Tensor] | None = None):
        """``init``: the rows' starting values by parameter name ("embed", "head_weight", "head_bias"),
        aligned with ``train_ids``; default: the model's rows (rounded to its dtype)."""
        vocab = host.vocab_row_params()
        self.names = [vp.name for vp in vocab]
        self.params = [vp.param for vp in vocab]
        self.rows = torch.tensor(list(dict.fromkeys(train_ids)), dtype=torch.long, device=self.params[0].device)
        self.masters = [(init[name].to(p.device) if init is not None else p.detach()[self.rows]).float().clone()
                        .requires_grad_(True) for name, p in zip(self.names, self.params)]
        for p in self.params:
            p.requires_grad_(True)
        self.opt = torch.optim.AdamW(self.masters, lr=lr, weight_decay=weight_decay, eps=eps)

    def step(self, loss: torch.Tensor) -> float:
        for p in self.params:
            p.grad = None
        loss.backward()
        self.accumulate()
        self.apply()
        return float(loss.detach())

    def accumulate(self) -> None:
        """Add the rows' gradients of the last ``backward`` to the masters' and clear the model's
        (gradient accumulation; several trainers can share one backward, one per text encoder)."""
        for p, master in zip(self.params, self.masters):
            # A matrix the loss did not reach (no gradient) is skipped by AdamW, as it would be in place.
            if p.grad is not None:
                grad = p.grad[self.rows].float()
                master.grad = grad if master.grad is None else master.grad + grad
            p.grad = None

    def apply(self) -> None:
        """One optimizer step on the accumulated gradients; the rows written back into the model."""
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for p, master in zip(self.params, self.masters):
                p.data[self.rows] = master.detach().to(p.dtype)

    def exact_rows(self, ids: Sequence[int], base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rows for ``ids`` as in :func:`get_rows` (float32, CPU), the trained ones taken from their
        float32 masters and the others from ``base`` (rows aligned with ``ids``), not from a model that
        may hold them rounded to bf16."""
        out = {name: rows.detach().float().cpu().clone() for name, rows in base.items()}
        position = {int(t): i for i, t in enumerate(ids)}
        where = torch.tensor([position[int(t)] for t in self.rows.tolist()])
        for name, master in zip(self.names, self.masters):
            out[name][where] = master.detach().float().cpu()
        if "head_weight" not in self.names:  # tied head: its rows are the embedding's
            out["head_weight"] = out["embed"].clone()
        return out

    def state_dict(self) -> dict:
        """The float32 masters and AdamW's moments (CPU): with :meth:`load_state_dict`, training
        continues bit for bit where it stopped."""
        return {"names": list(self.names), "masters": [m.detach().cpu().clone() for m in self.masters],
                "optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if list(state["names"]) != self.names or [tuple(m.shape) for m in state["masters"]] != [
                tuple(m.shape) for m in self.masters]:
            raise ValueError("saved rows do not match this model's trained rows")
        with torch.no_grad():
            for master, saved, p in zip(self.masters, state["masters"], self.params):
                master.copy_(saved.to(master.device))
                p.data[self.rows] = master.detach().to(p.dtype)
        self.opt.load_state_dict(state["optimizer"])

    def close(self) -> None:
        for p in self.params:
            p.requires_grad_(False)
            p.grad = None
        self.opt = None


# ----------------------------------------------------------------------------- the UniCTokens public format


def save_rows(folder: Path, epoch: int, rows: dict[str, torch.Tensor]) -> None:
    """``epoch_<N>_embed.pt``, ``epoch_<N>_lm_head_weight.pt``, ``epoch_<N>_lm_head_bias.pt`` (float32),
    each written through a temporary file and a rename."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, suffix in ROW_FILES:
        tmp = folder / f".epoch_{epoch}_{suffix}.pt.tmp"
        torch.save(rows[key].detach().float().cpu().contiguous(), tmp)
        os.replace(tmp, folder / f"epoch_{epoch}_{suffix}.pt")


def checkpoint_epochs(folder: Path) -> list[int]:
    found = []
    for p in folder.glob("epoch_*_embed.pt"):
        try:
            found.append(int(p.name.split("_")[1]))
        except ValueError:
            pass
    return sorted(found)


def load_rows(folder: Path, epoch: int | None, width: int, *, allowed_rows: Iterable[int] | None = None,
              rows_help: str = "", map_location="cpu") -> tuple[dict[str, torch.Tensor], int]:
    """Load a checkpoint of this format (``weights_only``, so an untrusted file runs no code); a
    BenchError (one line) when it does not fit a model of hidden size ``width`` or has a row count
    outside ``allowed_rows``."""
    epochs = checkpoint_epochs(folder)
    if not epochs:
        raise BenchError("no epoch_<N>_embed.pt files", folder)
    if epoch is None:
        epoch = epochs[-1]
    elif epoch not in epochs:
        raise BenchError(f"no epoch {epoch} (found {', '.join(map(str, epochs))})", folder)
    rows = {}
    for key, suffix in ROW_FILES:
        path = folder / f"epoch_{epoch}_{suffix}.pt"
        if not path.is_file():
            if key == "embed":
                raise BenchError("file not found", path)
            continue
        try:
            t = torch.load(path, weights_only=True, map_location=map_location)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input
            detail = str(exc).splitlines()[0] if str(exc) else ""
            raise BenchError(f"cannot load ({exc.__class__.__name__}: {detail})", path) from exc
        if not isinstance(t, torch.Tensor):
            raise BenchError(f"expected a tensor, found {type(t).__name__}", path)
        rows[key] = t.float()
    embed = rows["embed"]
    path = folder / f"epoch_{epoch}_embed.pt"
    if embed.ndim != 2 or embed.shape[1] != width:
        raise BenchError(f"expected rows of width {width} (the base model's hidden size), found shape "
                         f"{list(embed.shape)}", path)
    n = embed.shape[0]
    allowed = [str(a) for a in sorted(allowed_rows)] if allowed_rows is not None else None
    if allowed is not None and str(n) not in allowed:
        counts = allowed[0] if len(allowed) == 1 else f"{', '.join(allowed[:-1])} or {allowed[-1]}"
        raise BenchError(f"expected {counts} rows{rows_help}, found {n}", path)
    hw = rows.setdefault("head_weight", embed.clone())
    if tuple(hw.shape) != tuple(embed.shape):
        raise BenchError(f"expected lm_head rows of shape {list(embed.shape)}, found {list(hw.shape)}",
                         folder / f"epoch_{epoch}_lm_head_weight.pt")
    hb = rows.setdefault("head_bias", torch.zeros(n))
    if tuple(hb.shape) != (n,):
        raise BenchError(f"expected a bias of shape [{n}], found {list(hb.shape)}",
                         folder / f"epoch_{epoch}_lm_head_bias.pt")
    return rows, epoch
