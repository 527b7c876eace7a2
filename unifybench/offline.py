"""Whether models can come from the Hugging Face hub or only from its local cache: HF_HUB_OFFLINE,
or a hub that cannot be reached. Below the scorers and the kit, which both ask it (as adapters may)."""
from __future__ import annotations

import os


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set (to 1, true, yes or on)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hugging Face hub (``HF_ENDPOINT``) opens within ``timeout``."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def local_only() -> bool:
    """Whether to look only in the local cache: offline, or the hub cannot be reached (asked only when
    not offline: the connection attempt costs up to its timeout)."""
    return hub_offline() or not hub_reachable()


def why_local() -> str:
    """Why :func:`local_only` holds, for a message."""
    return "HF_HUB_OFFLINE is set" if hub_offline() else "the Hugging Face hub cannot be reached"
