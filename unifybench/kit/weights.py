"""Weights a method loads itself, outside ``from_pretrained``: a module of its own (a VQGAN decoder,
a tokenizer transformers lacks) filled from a checkpoint's files.

- :func:`hub_snapshot`: a hub repository's folder in the local Hugging Face cache.
- :func:`read_state_dict`: the tensors of a folder in the hub's layout (safetensors, or a
  ``pytorch_model.bin`` read ``weights_only``: an untrusted file runs no code).
- :func:`load_strict`: every name and shape matching, or one line naming what differs.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import BenchError


def hub_snapshot(repo: str, argument: str, local_only: bool = False, *, hint: str = "pass a local folder",
                 allow_patterns: list[str] | None = None) -> Path:
    """A hub repository's files in the local Hugging Face cache (downloaded unless ``local_only``);
    any failure is one line naming ``--method-arg ARGUMENT`` and ``hint`` (what to pass instead)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, local_files_only=local_only, allow_patterns=allow_patterns))
    except Exception as exc:  # noqa: BLE001 - offline, missing, gated: all one line
        raise BenchError(f"cannot load {repo!r} ({exc.__class__.__name__}: {str(exc).splitlines()[0][:160]}); "
                         f"{hint}", where=f"--method-arg {argument}") from exc


def read_state_dict(folder: Path, where: str) -> dict:
    """The weights of a model folder in the hub's layout: ``model.safetensors`` /
    ``pytorch_model.safetensors`` (safetensors) or ``pytorch_model.bin`` (``weights_only``)."""
    import torch

    folder = Path(folder)
    for name in ("model.safetensors", "pytorch_model.safetensors", "diffusion_pytorch_model.safetensors"):
        if (folder / name).is_file():
            from safetensors.torch import load_file

            try:
                return load_file(folder / name)
            except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input
                raise BenchError(f"cannot read weights ({exc.__class__.__name__})", folder / name, where) from exc
    for name in ("pytorch_model.bin", "model.bin"):
        if (folder / name).is_file():
            try:
                return torch.load(folder / name, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001
                raise BenchError(f"cannot read weights ({exc.__class__.__name__})", folder / name, where) from exc
    raise BenchError("no weights (model.safetensors, pytorch_model.safetensors or pytorch_model.bin)", folder, where)


def load_strict(module, state: dict, source, where: str, what: str = "weights") -> None:
    """Load ``state`` into ``module`` with every name and shape matching, or raise one line naming
    how many are missing, unexpected or of another shape, with an example of each."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                 f"{len(wrong)} of another shape (e.g. {wrong[0]}: {tuple(state[wrong[0]].shape)} for "
                 f"{tuple(own[wrong[0]].shape)})" if wrong else ""]
        raise BenchError(f"{what} do not fit: " + "; ".join(p for p in parts if p), source, where)
    module.load_state_dict(state, strict=True)
