"""The tests' writer of a Show-o in the official code's three folders (the language model with the
``showo.`` names, MAGVIT-v2, the tokenizer): what ``model=DIR``, ``vq_model=DIR`` and ``tokenizer=DIR``
load. Only the tests write such folders, so the writer lives here, not in the backend."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from unifybench_unictokens.showo_loading import DEFAULT_TOKENIZER

PHI_SIZES = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "max_position_embeddings", "hidden_act", "layer_norm_eps")


def save_showo(backend, folder: Path) -> dict[str, Path]:
    """``backend``'s model, MAGVIT-v2 and tokenizer in ``folder/show-o`` (``config.json`` with the Phi
    sizes, ``pytorch_model.bin`` with the ``showo.`` prefix), ``folder/magvitv2`` and ``folder/tokenizer``."""
    folder = Path(folder)
    lm_dir, vq_dir, tok_dir = folder / "show-o", folder / "magvitv2", folder / "tokenizer"
    lm_dir.mkdir(parents=True, exist_ok=True)
    sizes = {k: v for k, v in backend.model.config.to_dict().items() if k in PHI_SIZES}
    (lm_dir / "config.json").write_text(json.dumps({
        "_class_name": "Showo", "w_clip_vit": False, "vocab_size": backend.model.config.vocab_size,
        "llm_vocab_size": backend.pad, "llm_model_path": DEFAULT_TOKENIZER, "codebook_size": backend.n_codes,
        "num_vq_tokens": backend.tokens_per_image, "llm_config": sizes}, indent=1))
    torch.save({f"showo.{k}": v for k, v in backend.model.state_dict().items()}, lm_dir / "pytorch_model.bin")
    backend.vq.save(vq_dir)
    backend.tokenizer.save_pretrained(tok_dir)
    return {"model": lm_dir, "vq_model": vq_dir, "tokenizer": tok_dir}
