"""Show-o's id and mask layout (:mod:`unifybench_unictokens.showo_layout`) against the official rules,
without a model. The references below are transcribed from ``showlab/Show-o``
``training/prompting_utils.py`` (Apache-2.0): ``UniversalPrompting.t2i_gen_prompt``,
``create_attention_mask_predict_next`` and ``create_attention_mask_for_mmu``; the vocabulary's numbers
are Show-o's (phi-1_5: 50,295 text ids, 8,192 codes)."""
from __future__ import annotations

import pytest
import torch

from unifybench_unictokens.showo_layout import (BLOCKED, additive, code_offset, lm_vocab, mmu_allowed, mmu_prompt_ids,
                                                t2i_allowed, t2i_sequence, t2i_text_ids)

# A small vocabulary in Show-o's order: text ids (the last one is <|endoftext|>, bos and eos), [PAD]
# then the nine task tokens, then the codes.
TEXT_VOCAB, CODES, TOKENS_PER_IMAGE, MAX_TEXT = 40, 16, 9, 12
EOS = BOS = TEXT_VOCAB - 1
PAD, SOI, EOI, T2I, MMU = TEXT_VOCAB, TEXT_VOCAB + 1, TEXT_VOCAB + 2, TEXT_VOCAB + 5, TEXT_VOCAB + 6
OFFSET = code_offset(TEXT_VOCAB)


# ------------------------------------------------------------------ the references, as the authors wrote them

def reference_t2i_gen_prompt(text_ids, image_ids, max_text_len):
    """``UniversalPrompting.t2i_gen_prompt`` (``self.max_text_len`` is the constructor's + 1)."""
    own_max = max_text_len + 1
    sequence_ids = []
    for i in range(len(text_ids)):
        if len(text_ids[i]) == 0:
            text_ids[i] = [BOS]
        elif text_ids[i][0] != BOS:
            text_ids[i] = [BOS] + text_ids[i]
        temp_ids = [T2I] + text_ids[i] + [EOS]
        if own_max >= len(temp_ids):
            temp_ids = [PAD] * (own_max - len(temp_ids)) + temp_ids
        else:
            temp_ids = temp_ids[:own_max - 1] + [EOS]
        sequence_ids.append(torch.cat([torch.tensor(temp_ids), torch.tensor([SOI]), image_ids[i],
                                       torch.tensor([EOI])], dim=0).unsqueeze(0))
    return torch.cat(sequence_ids, dim=0)


def reference_predict_next(sequence, pad_id, soi_id, eoi_id, rm_pad_in_image=False, return_inverse_mask=True):
    """``create_attention_mask_predict_next``."""
    N, L = sequence.shape
    is_padding = sequence == pad_id
    is_start_image = sequence == soi_id
    is_end_image = sequence == eoi_id
    cumulative_start = torch.cumsum(is_start_image, dim=1)
    cumulative_end = torch.cumsum(is_end_image, dim=1)
    in_image_segment = (cumulative_start > cumulative_end) | is_start_image | is_end_image
    is_text = ~(in_image_segment)
    causal_mask = torch.tril(torch.ones((L, L), dtype=torch.bool)).to(sequence.device)
    mask_text = is_text[:, :, None] * causal_mask[None, :, :]
    is_text_image = is_text | in_image_segment
    mask_text_image_bi = is_text_image[:, :, None] * is_text_image[:, None, :]
    if rm_pad_in_image:
        sid_img = torch.where(sequence == soi_id)[1]
        for i in range(mask_text_image_bi.shape[0]):
            pad_end_idx = torch.where(sequence[i] == pad_id)
            if len(pad_end_idx[0]) != 0:
                pad_end_idx = pad_end_idx[0][-1]
                mask_text[i][pad_end_idx + 1:, :pad_end_idx + 1] = 0
            id_padding = torch.where(is_padding[i] == True)  # noqa: E712 - as written
            mask_text_image_bi[i][sid_img[i]:, id_padding[0]] = 0
    mask_text[in_image_segment] = mask_text_image_bi[in_image_segment]
    if return_inverse_mask:
        inverted_mask = 1.0 - mask_text.type(sequence.dtype)
        inverted_mask = inverted_mask.masked_fill(inverted_mask.to(torch.bool), torch.iinfo(sequence.dtype).min)
        return inverted_mask.unsqueeze(1)
    return mask_text.unsqueeze(1)


def reference_mask_for_mmu(sequence, eoi_id):
    """``create_attention_mask_for_mmu`` with ``return_inverse_mask=False``."""
    N, L = sequence.shape
    causal_mask = torch.tril(torch.ones((N, 1, L, L), dtype=torch.bool)).to(sequence.device)
    eoi_image = torch.where(sequence == eoi_id)[1]
    causal_mask[:, :, :, :eoi_image[0] + 1] = 1
    return causal_mask


# ------------------------------------------------------------------ the checks

def test_the_vocabulary_is_show_o_s():
    # METHODS.md §1: 50,295 Phi ids, [PAD] and nine specials, code c at 50305 + c, the mask token 58497 last.
    assert code_offset(50295) == 50305
    assert lm_vocab(50295, 8192) == 58498
    assert lm_vocab(TEXT_VOCAB, CODES) == OFFSET + CODES + 1 == PAD + 10 + CODES + 1


TEXTS = [[], [3, 4, 5], list(range(1, MAX_TEXT - 2)), list(range(1, MAX_TEXT - 1)), list(range(1, MAX_TEXT + 6))]


def _codes(n_rows: int) -> torch.Tensor:
    return torch.randint(0, CODES, (n_rows, TOKENS_PER_IMAGE), generator=torch.Generator().manual_seed(0)) + OFFSET


def test_generation_ids_are_the_official_prompt_padded_or_cut_to_max_text_len_plus_one():
    image_ids = _codes(len(TEXTS))
    ours = t2i_sequence(torch.tensor([t2i_text_ids(t or None, pad=PAD, t2i=T2I, bos=BOS, eos=EOS, max_text_len=MAX_TEXT)
                                      for t in TEXTS]), image_ids, soi=SOI, eoi=EOI)
    theirs = reference_t2i_gen_prompt([list(t) for t in TEXTS], image_ids, MAX_TEXT)
    assert torch.equal(ours, theirs)
    assert ours.shape[1] == MAX_TEXT + 1 + TOKENS_PER_IMAGE + 2
    assert ours[-1, MAX_TEXT] == EOS and (ours[-1] == PAD).sum() == 0  # the longest prompt is cut, ending in <|eot|>


def test_generation_mask_is_the_official_omni_attention_without_padding():
    image_ids = _codes(len(TEXTS))
    seqs = t2i_sequence(torch.tensor([t2i_text_ids(t, pad=PAD, t2i=T2I, bos=BOS, eos=EOS, max_text_len=MAX_TEXT)
                                      for t in TEXTS]), image_ids, soi=SOI, eoi=EOI)
    allowed = t2i_allowed(seqs, pad=PAD, max_text_len=MAX_TEXT)
    expected = reference_predict_next(seqs, PAD, SOI, EOI, rm_pad_in_image=True, return_inverse_mask=False)[:, 0]
    assert torch.equal(allowed, expected.bool())
    # As a float additive mask: the official inverse mask's values (0, iinfo(int64).min), as floats.
    inverse = reference_predict_next(seqs, PAD, SOI, EOI, rm_pad_in_image=True, return_inverse_mask=True)
    assert BLOCKED == float(torch.iinfo(torch.int64).min)
    assert torch.equal(additive(allowed), inverse.float())


def test_understanding_mask_is_the_official_one_for_each_row_of_a_left_padded_batch():
    questions = [[7], [7, 8, 9, 10, 11], list(range(1, 15))]
    codes = _codes(len(questions)) - OFFSET
    rows = [mmu_prompt_ids(c.tolist(), q, mmu=MMU, soi=SOI, eoi=EOI, bos=BOS, offset=OFFSET)
            for c, q in zip(codes, questions)]
    # METHODS.md §1: <|mmu|> <|soi|> codes <|eoi|> then bos and the question.
    assert rows[0][:2] == [MMU, SOI] and rows[0][2 + TOKENS_PER_IMAGE:] == [EOI, BOS, 7]
    assert rows[0][2:2 + TOKENS_PER_IMAGE] == (codes[0] + OFFSET).tolist()
    lengths = [len(r) for r in rows]
    width = max(lengths)
    for left_pad in (True, False):
        allowed, positions = mmu_allowed(lengths, width, TOKENS_PER_IMAGE, left_pad)
        for row, n, seen, pos in zip(rows, lengths, allowed, positions):
            start = width - n if left_pad else 0
            alone = reference_mask_for_mmu(torch.tensor([row]), EOI)[0, 0]
            assert torch.equal(seen[start:start + n, start:start + n], alone)
            assert torch.equal(pos[start:start + n], torch.arange(n))
            real = torch.zeros(width, dtype=torch.bool)
            real[start:start + n] = True
            assert not seen[real][:, ~real].any()  # a token never sees padding
            if left_pad:  # a padding row sees itself, so that no row of the batch is without a key
                assert torch.equal(seen[~real][:, ~real], torch.eye(width - n, dtype=torch.bool))


@pytest.mark.parametrize("n", [1, 4, 13])
def test_a_single_understanding_row_is_the_official_mask_unchanged(n):
    row = mmu_prompt_ids([0] * TOKENS_PER_IMAGE, list(range(1, n + 1)), mmu=MMU, soi=SOI, eoi=EOI, bos=BOS,
                         offset=OFFSET)
    allowed, positions = mmu_allowed([len(row)], len(row), TOKENS_PER_IMAGE, left_pad=True)
    assert torch.equal(allowed, reference_mask_for_mmu(torch.tensor([row]), EOI)[:, 0])
    assert torch.equal(positions[0], torch.arange(len(row)))
