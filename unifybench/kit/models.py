"""Base models: named by hub name, local folder or a built-in name (``tiny``), checked before the
run directory exists, loaded once per process, on a chosen device and dtype.

- :func:`check_available` is what a method's ``check_available`` hook calls: a built-in name is
  always there; a folder must exist; a hub name must be in the local Hugging Face cache when the hub
  is offline or unreachable, and must exist on the hub otherwise (one small metadata request, no
  download). A missing checkpoint then costs seconds, not a traceback after hours of training.
- :func:`shared` keeps one loaded model per key in the process: concepts share the weights.
- :func:`torch_dtype` turns a ``dtype`` argument (or ``None``: bfloat16 on CUDA, float32 elsewhere)
  into a ``torch.dtype``.
- :func:`cache_kwarg_name`: the keyword a ``transformers`` decoder takes its KV cache by, for methods
  that write their own decoding loop.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from .. import offline as hub
from ..errors import BenchError

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_LOADED: dict[tuple, Any] = {}


def offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks for no hub access (the rule is :mod:`unifybench.offline`'s)."""
    return hub.hub_offline()


# Whether models must come from the local cache: offline, or the hub cannot be reached
# (``from_pretrained(..., local_files_only=local_only())``).
local_only = hub.local_only


def random_init(name: str, builtins) -> bool:
    """Whether the model ``name`` has random weights: a built-in name (``tiny``, ``random``, ...) is
    built in code from a config and never loaded. The one rule behind every adapter's
    ``describe()["random_init"]``, given the built-in names its ``check_available`` is given."""
    return name in tuple(builtins)


def kind_of(name: str, builtins: tuple[str, ...] = ()) -> str:
    """``builtin`` (built in code), ``hub`` (``owner/name`` that is not a local path), else ``folder``."""
    if name in builtins:
        return "builtin"
    if _HUB_NAME.match(name) and not Path(name).expanduser().exists():
        return "hub"
    return "folder"


def check_all_available(*checks: dict) -> None:
    """:func:`check_available` for each of ``checks`` (its keyword arguments), refusing in one line that
    names every model that cannot be loaded, not only the first: offline, a user downloads them all
    at once instead of one per attempt."""
    problems = []
    for kwargs in checks:
        try:
            check_available(**kwargs)
        except BenchError as exc:
            problems.append(exc)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise BenchError(f"{len(problems)} models cannot be loaded: "
                         + "; ".join(f"[{p.where}] {p.message}" for p in problems), where="--method-arg")


def check_available(name: str, *, builtins: tuple[str, ...] = (), argument: str = "model",
                    what: str = "model") -> str:
    """Refuse, in one line, a model that cannot be loaded here; returns its kind (see :func:`kind_of`)."""
    where = f"--method-arg {argument}"
    kind = kind_of(name, builtins)
    if kind == "builtin":
        return kind
    if kind == "folder":
        path = Path(name).expanduser()
        if not path.is_dir():
            raise BenchError(f"{what} folder not found" if not path.exists() else f"not a folder ({what} expected)",
                             path, where)
        return kind
    if hub.local_only():
        from huggingface_hub import snapshot_download

        try:
            snapshot_download(name, local_files_only=True)
        except Exception:  # noqa: BLE001 - not cached (LocalEntryNotFoundError and kin)
            why = hub.why_local()
            raise BenchError(f"{what} {name!r} is not in the local Hugging Face cache and {why}; on a connected "
                             f"machine run `hf download {name}` with the same HF_HOME, or pass a local folder",
                             where=where) from None
        return kind
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(name)
    except Exception as exc:  # noqa: BLE001 - not found, gated, HTTP
        kind_name = type(exc).__name__
        if "RepositoryNotFound" in kind_name:
            why = "was not found on the hub (or needs HF_TOKEN for access)"
        elif "Gated" in kind_name:
            why = "is gated: accept its terms on the hub and set HF_TOKEN"
        else:
            why = f"could not be looked up on the hub ({kind_name})"
        raise BenchError(f"{what} {name!r} {why}", where=where) from None
    return kind


def shared(key: tuple, load: Callable[[], Any]) -> Any:
    """The object ``load()`` made for ``key`` in this process, made on first use."""
    if key not in _LOADED:
        _LOADED[key] = load()
    return _LOADED[key]


def torch_dtype(name: str | None, device: str):
    """``bfloat16``/``float16``/``float32``; ``None`` (the :class:`~unifybench.kit.args.Auto`
    default): bfloat16 on CUDA, float32 elsewhere."""
    import torch

    if name is None:
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    return getattr(torch, name)


def on_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


def cache_kwarg_name(model) -> str:
    """The keyword a ``transformers`` decoder takes its KV cache by: ``cache`` from 5.24 on,
    ``past_key_values`` before. The wrong one is swallowed by ``**kwargs`` without an error, and every
    step would then attend to its own token alone, so it is looked up rather than assumed."""
    import inspect

    params = inspect.signature(model.forward).parameters
    if "cache" in params:
        return "cache"
    if "past_key_values" in params:
        return "past_key_values"
    raise BenchError(f"{type(model).__name__}.forward takes neither `cache` nor `past_key_values`; this "
                     "transformers version is not supported", where="transformers")
