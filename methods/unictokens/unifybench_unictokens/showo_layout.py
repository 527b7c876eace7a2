"""Show-o's id and mask layout, as pure functions of ids: no model, no tokenizer (the ids of the
specials are arguments), so each rule is checked against the official code without building a model
(``tests/test_showo_layout.py``). Written from ``showlab/Show-o`` ``training/prompting_utils.py``
(``UniversalPrompting``, ``create_attention_mask_predict_next``, ``create_attention_mask_for_mmu``)
and ``models/modeling_showo.py``.

- ids: Phi's text ids, then ``[PAD]`` and the nine task tokens at ``len(tokenizer)``, code c at
  ``len(tokenizer) + 10 + c``, the mask token last.
- understanding: ``<|mmu|> <|soi|> codes <|eoi|> <|sot|>`` then the question's ids; every row sees the
  image prefix (up to ``<|eoi|>``) and the text is causal. Rows of a batch are padded on the left,
  and each row's positions count from 0 at its first token.
- generation: ``[PAD]... <|t2i|> <|sot|> text <|eot|>`` left-padded (or cut) to ``max_text_len + 1``,
  ``<|soi|>``, the codes, ``<|eoi|>``; text rows causal and, after the padding, blind to it; the image
  span sees every text and image token but no padding.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

SPECIALS = ("<|soi|>", "<|eoi|>", "<|sov|>", "<|eov|>", "<|t2i|>", "<|mmu|>", "<|t2v|>", "<|v2v|>", "<|lvg|>")
PAD = "[PAD]"
EOT = "<|endoftext|>"
MAX_TEXT_LEN = 128  # the configs' dataset.preprocessing.max_seq_length; prompts are padded to it + 1
# Blocked attention entries: the official masks use iinfo(int64).min (added to float scores).
BLOCKED = float(torch.iinfo(torch.int64).min)


def code_offset(text_vocab: int) -> int:
    """The id of image code 0: after the text ids, ``[PAD]`` and the nine task tokens."""
    return text_vocab + len(SPECIALS) + 1


def lm_vocab(text_vocab: int, codebook: int) -> int:
    """The language model's vocabulary: text, ``[PAD]`` and the specials, the codes, the mask token."""
    return code_offset(text_vocab) + codebook + 1


def mmu_prompt_ids(codes: Sequence[int], question_ids: Sequence[int], *, mmu: int, soi: int, eoi: int, bos: int,
                   offset: int) -> list[int]:
    """Understanding's prompt: ``<|mmu|> <|soi|>`` the codes (as ids) ``<|eoi|> <|sot|>`` the question."""
    return [mmu, soi] + [int(c) + offset for c in codes] + [eoi, bos] + list(question_ids)


def mmu_allowed(lengths: Sequence[int], width: int, tokens_per_image: int,
                left_pad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Understanding's omni-attention for rows of ``lengths`` padded to ``width`` (on the left or the
    right): which keys each row sees ([B, width, width] booleans) and the position ids [B, width].
    A padding row sees itself, so that no row is left without a key."""
    eoi_at = tokens_per_image + 2
    r = torch.arange(width)
    allowed, positions = [], []
    for n in lengths:
        start = width - n if left_pad else 0
        rows, cols = r[:, None] - start, r[None, :] - start
        ok = (cols >= 0) & ((cols <= rows) | (cols <= eoi_at))
        ok |= torch.eye(width, dtype=torch.bool)
        allowed.append(ok)
        positions.append((r - start).clamp(min=0))
    return torch.stack(allowed), torch.stack(positions)


def t2i_text_ids(text_ids: Sequence[int] | None, *, pad: int, t2i: int, bos: int, eos: int,
                 max_text_len: int) -> list[int]:
    """``[PAD]... <|t2i|> <|sot|> text <|eot|>``, left-padded (or cut, ending in ``<|eot|>``) to
    ``max_text_len + 1``; ``None``: the dropped condition, as the empty prompt."""
    ids = [t2i, bos] + list(text_ids or []) + [eos]
    width = max_text_len + 1
    if len(ids) > width:
        ids = ids[: width - 1] + [eos]
    return [pad] * (width - len(ids)) + ids


def t2i_sequence(texts: torch.Tensor, image_ids: torch.Tensor, *, soi: int, eoi: int) -> torch.Tensor:
    """Generation's sequences [B, L]: each text (:func:`t2i_text_ids`), ``<|soi|>``, the image ids, ``<|eoi|>``."""
    b = texts.shape[0]
    soi_col = torch.full((b, 1), soi, dtype=torch.long, device=texts.device)
    eoi_col = torch.full((b, 1), eoi, dtype=torch.long, device=texts.device)
    return torch.cat([texts, soi_col, image_ids.to(texts.device), eoi_col], 1)


def t2i_allowed(seqs: torch.Tensor, *, pad: int, max_text_len: int) -> torch.Tensor:
    """Generation's omni-attention (``create_attention_mask_predict_next`` with ``rm_pad_in_image``) as
    [B, L, L] booleans: text rows causal and, unless padding themselves, blind to the padding; the
    image span (from ``<|soi|>``, at ``max_text_len + 1``) sees every token but the padding."""
    n = seqs.shape[1]
    pad_key = seqs == pad
    r = torch.arange(n, device=seqs.device)
    in_image = (r >= max_text_len + 1)[None, :, None]
    causal = (r[None, :, None] >= r[None, None, :])
    text_rows = causal & (~pad_key[:, None, :] | pad_key[:, :, None])
    return torch.where(in_image, ~pad_key[:, None, :], text_rows)


def additive(allowed: torch.Tensor) -> torch.Tensor:
    """Booleans as the float additive mask Phi takes, [B, 1, L, L]: 0 where allowed, else :data:`BLOCKED`."""
    return torch.where(allowed, 0.0, BLOCKED)[:, None]


def masked_count(n: int, step: int, steps: int) -> int:
    """Positions left masked after MaskGIT step ``step`` of ``steps``, as ``Showo.t2i_generate``
    computes it: ``(num_vq_tokens * cosine_schedule(torch.tensor(ratio))).floor()`` in float32 (in
    float64 it differs by one at 67 of the step counts 1-200, Show-o's 18 among them)."""
    ratio = 1.0 * (step + 1) / steps
    return int((n * torch.cos(torch.tensor(ratio) * math.pi * 0.5)).floor())
