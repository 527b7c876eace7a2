"""Calls whose content depends on one request alone, so that batch size and batch composition
change no output.

Kernels may round a sample differently in another slot of a batch or at another batch size (on
AVX-512 CPUs a Stable Diffusion pixel moved by a level with its slot: issue 25). So a method that
draws several images per request puts one request's images in each call, image ``i`` always in
slot ``i % size``, and pads a short last call with repeats of its last item: every call is then a
function of the request and the call size alone.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence, TypeVar

T = TypeVar("T")


def call_size(limit: int, n_items: int) -> int:
    """Items per call for a request of ``n_items``: ``limit`` at most, all of them when fewer.
    ``n_items`` is the same for every request of a run (``--images-per-prompt``), so a run has
    one call shape (a compiled step is traced once)."""
    return max(1, min(limit, n_items))


def padded_calls(items: Sequence[T], size: int) -> Iterator[tuple[list[T], int]]:
    """``(call, n_real)`` for consecutive chunks of ``size`` items; a short last chunk is padded to
    ``size`` with its last item, and the caller keeps the first ``n_real`` outputs."""
    for start in range(0, len(items), size):
        chunk = list(items[start:start + size])
        yield chunk + [chunk[-1]] * (size - len(chunk)), len(chunk)


def draw_in_calls(seeds: Sequence[int], limit: int, draw: Callable[[list[int]], Sequence], size: int | None = None) -> list:
    """One request's images: ``draw(call_seeds)`` for each padded call of ``size`` (default
    :func:`call_size` of ``limit``), the padding's images dropped."""
    images: list = []
    for call, n in padded_calls(list(seeds), size or call_size(limit, len(seeds))):
        images += list(draw(call))[:n]
    return images

