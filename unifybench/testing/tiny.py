"""Tiny random-init models built in code (nothing is downloaded) for a plugin's own tests, and the
bundled bench's concepts. The numbers such models give are random-init numbers: a test checks
plumbing with them, never quality.

- :func:`tiny_clip`: an open_clip ``CLIP`` (embed 32, 2+2 layers) with the ViT-B-32 tokenizer,
  the one ``--backbones tiny`` scores with.
- :func:`tiny_llava`: a LLaVA-style ``LlavaForConditionalGeneration`` (CLIP vision tower, Llama text
  model) with its ``LlavaProcessor``: a word-level tokenizer, ``<image>`` placeholder, chat template.
- :func:`bundled_concept`: a :class:`~unifybench.records.Concept` of the bundled mini bench (its
  real photos, description and conversations); :func:`small_bench`: a :class:`Benchmark` built in a
  folder in the UnifyBench or Yo'LLaVA layout (:mod:`unifybench.testing.benches`).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["tiny_clip", "tiny_llava", "bundled_concept", "small_bench"]


def tiny_clip(seed: int = 0):
    """``(model, tokenizer)``: the tiny open_clip CLIP of ``--backbones tiny``, in eval mode."""
    from ..scoring.encoders import _load_clip

    model, tokenizer, _ = _load_clip("tiny", "ViT-B-32", seed, local_only=True)
    return model.eval(), tokenizer


def tiny_llava(seed: int = 0):
    """``(model, processor)``: a tiny LLaVA and its processor (``processor.tokenizer``), random init."""
    from ..scoring.judges.backends import _tiny_llava

    return _tiny_llava(seed)


def bundled_concept(name: str = "dog"):
    """A concept of the bundled mini bench (``unifybench.data.mini``)."""
    from ..data import load_benchmark

    return load_benchmark("mini").concept(name)


def small_bench(root: Path, layout: str = "unifybench"):
    """A two-concept benchmark of small real photos written under ``root`` and read back:
    ``layout`` ``"unifybench"`` (concepts ``bo``, ``pg``) or ``"yollava"`` (``bo``, ``mam``)."""
    from ..data import load_benchmark
    from .benches import make_unifybench, make_yollava

    makers = {"unifybench": make_unifybench, "yollava": make_yollava}
    if layout not in makers:
        raise ValueError(f"layout {layout!r}: expected one of {', '.join(makers)}")
    return load_benchmark(str(makers[layout](Path(root))))
