"""Show-o's loading: the tiny and full-size random-init models built in code, and a Show-o folder or
hub name (the language model with the ``showo.`` names, MAGVIT-v2 in :mod:`.magvit`, the tokenizer
with Show-o's specials), each refused in one line when it does not fit."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from unifybench.errors import BenchError
from unifybench.kit.weights import hub_snapshot, load_strict, read_state_dict

from .magvit import TINY_HINT, MagvitConfig, MagvitV2, tiny_magvit_config
from .showo_layout import EOT, MAX_TEXT_LEN, PAD, SPECIALS, lm_vocab

DEFAULT_MODEL = "showlab/show-o-512x512"
DEFAULT_TOKENIZER = "microsoft/phi-1_5"

_TINY_CORPUS = [
    "USER: Is the dog in this image? ASSISTANT: Yes, it is in this image.",
    "A photo of a cat in the jungle. A photo of a backpack on the beach. in the middle of the photo",
    "Describe the object in this photo. What colour is the wall behind it? 's face in detail.",
    "No. Yes. A. B. C. D. Answer with the option's letter.",
    "the a an is of in on with and to it its this that there what which who where",
    "a red clock, a blue cushion, a yellow teddy bear, a brown plushie, a green bottle",
] * 4


def add_showo_specials(tokenizer) -> None:
    """As the official ``UniversalPrompting``: ``[PAD]`` as the pad token, then the nine task tokens."""
    tokenizer.add_special_tokens({"pad_token": PAD})
    tokenizer.add_tokens(list(SPECIALS))


def build_tiny_tokenizer():
    """A small byte-level BPE with Phi's ``<|endoftext|>`` as bos and eos (built in code: no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_TINY_CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT)


def phi_config(vocab_size: int, sizes: dict | None = None):
    """Show-o's language model: Phi-1.5's sizes (transformers' defaults) unless ``sizes`` says other,
    with ``qk_layernorm`` on and an untied head, as the official Phi copy forces."""
    from transformers import PhiConfig

    sizes = {k: v for k, v in (sizes or {}).items() if k not in ("vocab_size", "qk_layernorm", "tie_word_embeddings",
                                                                 "model_type", "architectures", "transformers_version")}
    return PhiConfig(**sizes, vocab_size=vocab_size, qk_layernorm=True, tie_word_embeddings=False)


TINY_PHI = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 4, "max_position_embeddings": 512}


def build_tiny(seed: int = 0):
    """A tiny random-init Show-o: a 2-layer Phi of width 64, a tiny MAGVIT-v2 (16 codes per 16 px
    image, 64-code book) and the tiny tokenizer."""
    from transformers import PhiForCausalLM

    tokenizer = build_tiny_tokenizer()
    text_vocab = len(tokenizer)
    add_showo_specials(tokenizer)
    vq_cfg = tiny_magvit_config()
    torch.manual_seed(seed)
    lm = PhiForCausalLM(phi_config(lm_vocab(text_vocab, vq_cfg.codebook_size), TINY_PHI))
    vq = MagvitV2(vq_cfg)
    return lm, vq, tokenizer, text_vocab, 24


def build_random(seed: int = 0, device: str = "cpu", dtype=torch.float32):
    """Show-o's full sizes with seeded random weights (speed only): the tiny tokenizer, so the text
    vocabulary is small; the 24 x 2048 Phi, the 8,192 codes and 1,024 codes per image are the real ones."""
    from transformers import PhiForCausalLM

    tokenizer = build_tiny_tokenizer()
    text_vocab = len(tokenizer)
    add_showo_specials(tokenizer)
    vq_cfg = MagvitConfig()
    torch.manual_seed(seed)
    with torch.device(device):
        lm = PhiForCausalLM(phi_config(lm_vocab(text_vocab, vq_cfg.codebook_size))).to(dtype)
        vq = MagvitV2(vq_cfg)
    return lm, vq, tokenizer, text_vocab, MAX_TEXT_LEN


def load_tokenizer(name: str, local_only: bool):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot load the tokenizer {name!r} ({str(exc).splitlines()[0][:160]}); pass a local "
                         f"folder, or model=tiny", where="--method-arg tokenizer") from exc
    text_vocab = len(tokenizer)
    if PAD not in tokenizer.get_vocab():  # a tokenizer saved by the official code has them already
        add_showo_specials(tokenizer)
    else:
        text_vocab = tokenizer.convert_tokens_to_ids(PAD)
    return tokenizer, text_vocab


def load_showo_lm(name: str, *, llm_config: str | None, local_only: bool, dtype):
    """The language model from a Show-o folder or hub name, and the folder's ``config.json``:
    ``vocab_size``; the Phi sizes under ``llm_config`` where a folder carries them, else
    ``llm_config=DIR``, else Phi-1.5's; the weights with the ``showo.`` prefix, loaded strictly."""
    from transformers import PhiConfig, PhiForCausalLM

    folder = Path(name) if Path(name).is_dir() else hub_snapshot(name, "model", local_only, hint=TINY_HINT)
    config_file = folder / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    except ValueError as exc:
        raise BenchError(f"malformed JSON ({exc})", config_file) from exc
    if config.get("w_clip_vit"):
        raise BenchError("Show-o with a CLIP-ViT understanding encoder (w_clip_vit) is not supported; use "
                         "show-o-512x512", config_file, "--method-arg model")
    sizes = config.get("llm_config")
    if llm_config is not None:
        try:
            sizes = PhiConfig.from_pretrained(llm_config, local_files_only=True).to_dict()
        except (OSError, ValueError) as exc:
            raise BenchError(f"not a Phi config folder ({str(exc).splitlines()[0][:160]})", llm_config,
                             "--method-arg llm_config") from exc
    lm = PhiForCausalLM(phi_config(int(config.get("vocab_size", 58498)), sizes))
    state = read_state_dict(folder, "--method-arg model")
    stripped = {k[len("showo."):]: v for k, v in state.items() if k.startswith("showo.")}
    others = sorted(k for k in state if not k.startswith("showo."))
    if others:
        raise BenchError(f"weights outside the language model ({len(others)}, e.g. {others[0]})", folder,
                         "--method-arg model")
    try:
        load_strict(lm, stripped, folder, "--method-arg model")
    except BenchError as exc:
        if sizes is None:  # Phi-1.5's sizes were assumed: the likeliest cause, and its remedy
            raise BenchError(f"{exc.message}; a Show-o of other sizes needs its Phi config: --method-arg "
                             f"llm_config=DIR (a folder with that config.json)", exc.path, exc.where) from None
        raise
    return lm.to(dtype), config


def fit_image_size(vq, num_vq_tokens, source) -> None:
    """A Show-o says how many codes an image has (``num_vq_tokens``: 1024 at 512 px, 256 at 256 px);
    MAGVIT-v2's convolutions take any size, so the images are resized to the side that gives them."""
    if num_vq_tokens is None:
        return
    side = math.isqrt(int(num_vq_tokens))
    if side * side != int(num_vq_tokens):
        raise BenchError(f"num_vq_tokens {num_vq_tokens} is not a square number of codes", source,
                         "--method-arg model")
    vq.config.image_size = side * 2 ** (len(vq.config.encoder_ch_mult) - 1)
