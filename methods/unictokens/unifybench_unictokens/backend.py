"""The small interface a unified understanding-and-generation model must offer to UniCTokens.

The stage logic (``stages.py``) talks only to this interface. A backend wraps one base model
(Janus here, ``janus_backend.py``; a Show-o backend would be one more file) and offers:

- vocabulary rows: the parameters holding them (input embedding, text output head weight and
  bias), so that :mod:`unifybench.kit.rows` can add a concept's tokens for the length of a block,
  train exactly those rows (through float32 master rows) and never write any other row;
- images <-> discrete codes, and the model's input embedding of image codes;
- a text loss (teacher-forced answers to questions, optionally about an image);
- an image-token loss (teacher-forced codes of an image after a prompt);
- text answers, and image generation exposing each sampled code's probability.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from unifybench.kit import rows as kit_rows
from unifybench.kit.rows import VocabRowParam  # noqa: F401  (re-exported: backends build these)


def pil_image(image: Path | Image.Image) -> Image.Image:
    """An RGB PIL image from a path or an image; an unreadable file is one line naming it."""
    from unifybench.images import open_rgb

    return open_rgb(image)


@dataclass(frozen=True)
class TextExample:
    """One user turn (optionally about an image) and, for training, the reply to learn."""

    prompt: str
    image: Path | Image.Image | None = None
    answer: str = ""


@dataclass
class GeneratedCodes:
    codes: torch.LongTensor  # [n, T] image codes
    probs: torch.Tensor  # [n, T] probability of each sampled code under the (guided) distribution
    logits: list | None = None  # guided logits [n, V] of the first steps, when asked for (checks)
    steps: dict[int, torch.LongTensor] | None = None  # MaskGIT: step (1-based) -> its predicted codes [n, T]


class UnifiedBackend(ABC):
    """What UniCTokens needs from a unified model. Nothing here is specific to one architecture."""

    name: str = ""
    hidden_size: int
    device: torch.device
    model: torch.nn.Module
    # The transition rule the backend's generation supports best, and its reply length by default.
    default_transition: str = "lowest_prob"
    default_max_new_tokens: int = 64
    # Whether encode_images(..., augment=generator) draws a random crop and flip (the authors'
    # generation data); when not, the stages encode the photos once.
    augments_generation_data: bool = False

    def understanding_prompt(self, prefix: str, question: str, training: bool) -> str:
        """How the concept prompt (``<c> is <tokens>.``) and a question make one user turn."""
        return f"{prefix} {question}"

    # --------------------------------------------------------------- vocabulary rows
    tokenizer: object

    @abstractmethod
    def vocab_row_params(self) -> list[VocabRowParam]:
        """The parameters holding per-token rows (tied parameters listed once)."""

    @abstractmethod
    def has_head_bias(self) -> bool:
        """Whether the text output head has a bias (Show-o: yes; Janus: no)."""

    def new_tokens(self, tokens: Sequence[str], rows: dict[str, torch.Tensor] | None = None) -> kit_rows.NewTokens:
        """``with backend.new_tokens(tokens, rows) as ids:`` the tokens exist with these rows only
        inside the block; the base model is bit-identical afterwards (:class:`unifybench.kit.rows.NewTokens`)."""
        return kit_rows.NewTokens(self, tokens, rows)

    def get_rows(self, ids: Sequence[int]) -> dict[str, torch.Tensor]:
        """float32 CPU copies: ``embed`` [n, d], ``head_weight`` [n, d], ``head_bias`` [n]."""
        return kit_rows.get_rows(self, ids)

    def set_rows(self, ids: Sequence[int], rows: dict[str, torch.Tensor]) -> None:
        kit_rows.set_rows(self, ids, rows)

    @abstractmethod
    def word_embedding(self, text: str) -> torch.Tensor:
        """Mean input embedding of the tokens of ``text`` (float32 [d]): initialises the identifier."""

    # --------------------------------------------------------------- images <-> codes
    @abstractmethod
    def encode_images(self, images: Sequence[Path | Image.Image],
                      augment: torch.Generator | None = None) -> torch.LongTensor:
        """Discrete codes [n, T] of each image; with ``augment``, of a random crop and flip drawn from
        it (where the backend's training recipe augments; others ignore it)."""

    @abstractmethod
    def decode_codes(self, codes: torch.LongTensor) -> list[Image.Image]:
        """Images from codes [n, T]."""

    @abstractmethod
    def code_embeddings(self, codes: torch.LongTensor) -> torch.Tensor:
        """The model's input embeddings of image codes, in the language model's width: [..., d]."""

    # --------------------------------------------------------------- losses
    @abstractmethod
    def text_loss(self, examples: Sequence[TextExample]) -> torch.Tensor:
        """Mean cross-entropy of the answers given the prompts (and images), differentiable."""

    @abstractmethod
    def image_loss(self, prompts: Sequence[str], codes: torch.LongTensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean cross-entropy of each image's codes after its prompt, differentiable; any random draw
        (a mask ratio, a dropped condition) comes from ``generator``."""

    # --------------------------------------------------------------- inference
    @abstractmethod
    def answer(self, examples: Sequence[TextExample], max_new_tokens: int = 64) -> list[str]:
        """Greedy replies, one per example, batched."""

    @abstractmethod
    def generate_codes(self, prompts: Sequence[str], seeds: Sequence[int], *, guidance: float,
                       temperature: float, keep_steps: Sequence[int] = ()) -> GeneratedCodes:
        """One image's codes per prompt, each sampled reproducibly from its own seed, with per-code
        probabilities (and, for an iterative sampler, the predictions of the ``keep_steps``)."""

    def describe(self) -> dict:
        return {"backend": self.name}

