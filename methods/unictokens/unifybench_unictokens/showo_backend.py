"""Show-o (``showlab/show-o-512x512``), UniCTokens' own backbone, behind :class:`backend.UnifiedBackend`.

Show-o is transformers' own ``PhiForCausalLM`` (Phi-1.5's sizes with ``qk_layernorm=True`` and a
vocabulary of text + 10 specials + 8,192 image codes + a mask token), the MAGVIT-v2 image tokenizer
(:mod:`.magvit`), omni-attention masks, and MaskGIT sampling. Everything specific to it lives here,
written from ``showlab/Show-o`` (``models/modeling_showo.py``, ``models/sampling.py``,
``training/prompting_utils.py``) and the UniCTokens scripts (``eval/``, ``train_w_3_stages/``):

- id layout (the official one): Phi's text ids, then ``[PAD] <|soi|> <|eoi|> <|sov|> <|eov|>
  <|t2i|> <|mmu|> <|t2v|> <|v2v|> <|lvg|>`` at ``len(tokenizer)`` (50,295 for phi-1_5), then code c
  at ``len(tokenizer) + 10 + c``, and the mask token last. A concept's new tokens get rows after the
  mask token (:mod:`unifybench.newrows`); the authors insert them at 50,305 and shift the image ids.
  Rows are looked up by id and softmaxes run over sets of rows, so the two layouts give the same
  logits for every text token, new token and image code (``tests/test_showo.py``).
- understanding: ``<|mmu|> <|soi|> codes <|eoi|> <|sot|> USER: {question} ASSISTANT:``, every row
  seeing the whole image prefix and the text causal; greedy, at most 100 new tokens, as
  ``eval/eval_p_mmu.py``, but with a KV cache and batched (left padding, position ids from 0 at each
  row's first token): the same tokens as its cache-less loop.
- generation: ``[PAD]... <|t2i|> <sot> text <eot>`` left-padded to 129, ``<|soi|>``, the masked
  codes, ``<|eoi|>``; MaskGIT over 50 steps with the cosine schedule; classifier-free guidance
  ``(1 + s)·cond − s·uncond`` against the empty prompt; confidence = log p + temperature·Gumbel with
  the temperature re-assigned ``temperature·(1 − ratio)`` at every step (it compounds); batched,
  each image drawing from its own generator seeded by its seed, so batch composition changes none.
- losses as the training scripts: the answer tokens after the image and the question; the masked
  codes (and ``<|soi|>``, ``<|eoi|>``, which the official label layout includes) at a cosine mask
  ratio, with the text condition dropped with probability 0.1.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from unifybench.errors import BenchError
from unifybench.kit.models import cache_kwarg_name
from unifybench.kit.rows import freeze
from unifybench.logs import quiet_transformers
from unifybench.kit.weights import hub_snapshot, load_strict, read_state_dict

from .backend import GeneratedCodes, TextExample, UnifiedBackend, VocabRowParam, pil_image
from .magvit import DEFAULT_VQ, TINY_HINT, MagvitConfig, MagvitV2, load_magvit, tiny_magvit_config

DEFAULT_MODEL = "showlab/show-o-512x512"
DEFAULT_TOKENIZER = "microsoft/phi-1_5"
SPECIALS = ("<|soi|>", "<|eoi|>", "<|sov|>", "<|eov|>", "<|t2i|>", "<|mmu|>", "<|t2v|>", "<|v2v|>", "<|lvg|>")
PAD = "[PAD]"
EOT = "<|endoftext|>"
MAX_TEXT_LEN = 128  # the configs' dataset.preprocessing.max_seq_length; prompts are padded to it + 1
COND_DROPOUT = 0.1  # training.cond_dropout_prob
# Blocked attention entries: the official masks use iinfo(int64).min (added to float scores).
BLOCKED = float(torch.iinfo(torch.int64).min)

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


def _lm_vocab(text_vocab: int, codebook: int) -> int:
    return text_vocab + len(SPECIALS) + 1 + codebook + 1  # + [PAD] + the specials, codes, the mask token


def build_tiny(seed: int = 0):
    """A tiny random-init Show-o: a 2-layer Phi of width 64, a tiny MAGVIT-v2 (16 codes per 16 px
    image, 64-code book) and the tiny tokenizer."""
    from transformers import PhiForCausalLM

    tokenizer = build_tiny_tokenizer()
    text_vocab = len(tokenizer)
    add_showo_specials(tokenizer)
    vq_cfg = tiny_magvit_config()
    torch.manual_seed(seed)
    lm = PhiForCausalLM(phi_config(_lm_vocab(text_vocab, vq_cfg.codebook_size), TINY_PHI))
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
        lm = PhiForCausalLM(phi_config(_lm_vocab(text_vocab, vq_cfg.codebook_size))).to(dtype)
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


def _local_only() -> bool:
    from unifybench.kit.models import local_only

    return local_only()


def masked_count(n: int, step: int, steps: int) -> int:
    """Positions left masked after MaskGIT step ``step`` of ``steps``, as ``Showo.t2i_generate``
    computes it: ``(num_vq_tokens * cosine_schedule(torch.tensor(ratio))).floor()`` in float32 (in
    float64 it differs by one at 67 of the step counts 1-200, Show-o's 18 among them)."""
    ratio = 1.0 * (step + 1) / steps
    return int((n * torch.cos(torch.tensor(ratio) * math.pi * 0.5)).floor())


class ShowoBackend(UnifiedBackend):
    name = "showo"
    default_transition = "late_change"
    default_max_new_tokens = 100  # eval_p_mmu.py's max_new_tokens
    augments_generation_data = True

    def __init__(self, model_name: str = DEFAULT_MODEL, *, vq_model: str = DEFAULT_VQ,
                 tokenizer: str = DEFAULT_TOKENIZER, llm_config: str | None = None, device: str = "cpu",
                 seed: int = 0, dtype: torch.dtype | None = None, steps: int = 50):
        self.device = torch.device(device)
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.model_name = model_name
        if model_name == "tiny":
            lm, vq, tok, text_vocab, max_text = build_tiny(seed)
        elif model_name == "random":
            lm, vq, tok, text_vocab, max_text = build_random(seed, str(self.device), self.dtype)
        else:
            local_only = _local_only()
            tok, text_vocab = load_tokenizer(tokenizer, local_only)
            lm, config = load_showo_lm(model_name, llm_config=llm_config, local_only=local_only, dtype=self.dtype)
            vq = load_magvit(vq_model, local_only=local_only)
            max_text = MAX_TEXT_LEN
            fit_image_size(vq, config.get("num_vq_tokens"), model_name)
        self.model = freeze(lm.to(self.device, self.dtype).eval())
        self.vq = freeze(vq.to(self.device, torch.float32).eval())  # float32 always: codes are signs of its output
        self.tokenizer = tok
        self.hidden_size = self.model.config.hidden_size
        self.max_text_len = max_text
        self.steps = steps
        tid = tok.convert_tokens_to_ids
        self.pad, self.soi, self.eoi, self.t2i, self.mmu = tid(PAD), tid("<|soi|>"), tid("<|eoi|>"), tid("<|t2i|>"), \
            tid("<|mmu|>")
        self.bos = tok.bos_token_id
        self.eos = tok.eos_token_id
        self.code_offset = text_vocab + len(SPECIALS) + 1
        self.n_codes = self.vq.config.codebook_size
        self.mask_id = self.code_offset + self.n_codes
        self.tokens_per_image = self.vq.config.codes_per_image
        self.image_size = self.vq.config.image_size
        if self.pad != text_vocab or self.model.config.vocab_size != self.mask_id + 1:
            raise BenchError(f"the tokenizer ({text_vocab} text ids, [PAD] at {self.pad}) and the model "
                             f"(vocabulary {self.model.config.vocab_size}) do not fit the Show-o layout "
                             f"(text + 10 specials + {self.n_codes} codes + mask)", where="--method-arg tokenizer")
        self._reserve_image_ids()
        self.cache_kwarg = cache_kwarg_name(self.model.model)
        self._codes_of: dict[tuple, torch.LongTensor] = {}  # (path, size, mtime) -> codes, unaugmented

    def _reserve_image_ids(self) -> None:
        """Give the image codes and the mask token ids in the tokenizer (special placeholders, dropped
        when a reply is decoded, as the reference's decoding drops ids it does not know), so that a
        concept's new tokens get ids after the mask token and never the rows of image codes."""
        tok = self.tokenizer
        if len(tok) == self.mask_id + 1:
            return
        if len(tok) != self.code_offset:
            raise BenchError(f"the tokenizer has {len(tok)} ids, expected {self.code_offset} (text and specials) or "
                             f"{self.mask_id + 1}", where="--method-arg tokenizer")
        tok.add_tokens([f"<|image_{c}|>" for c in range(self.n_codes)] + ["<|mask|>"], special_tokens=True)

    # ------------------------------------------------------------------ vocabulary
    def vocab_row_params(self):
        head = self.model.lm_head
        return [VocabRowParam("embed", self.model.get_input_embeddings().weight),
                VocabRowParam("head_weight", head.weight), VocabRowParam("head_bias", head.bias)]

    def has_head_bias(self):
        return True

    def word_embedding(self, text):
        # As the authors' stage 1: the word's tokens without a leading space.
        ids = self.tokenizer(text.strip(), add_special_tokens=False)["input_ids"] or [self.pad]
        with torch.no_grad():
            return self.model.get_input_embeddings().weight[torch.tensor(ids, device=self.device)].float().mean(0).cpu()

    def understanding_prompt(self, prefix, question, training):
        # The authors' eval puts a newline between the concept prompt and the question; their
        # training data joins the two directly.
        return prefix + question if training else f"{prefix}\n{question}"

    # ------------------------------------------------------------------ images
    def _pixels(self, images, augment: torch.Generator | None = None) -> torch.Tensor:
        """[-1, 1] pixels: resize the shortest side to the image size (bicubic), centre-crop; with
        ``augment``, as the authors' generation data: resize to 1.1x, a random crop, a mirror (p 0.25).
        ``None`` is the black placeholder the reference uses for text-only questions."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        size = self.image_size
        out = []
        for image in images:
            if image is None:
                out.append(torch.full((3, size, size), -1.0))
                continue
            pil = pil_image(image)
            if augment is None:
                pil = TF.center_crop(TF.resize(pil, [size], interpolation=InterpolationMode.BICUBIC), [size, size])
            else:
                pil = TF.resize(pil, [int(size * 1.1)], interpolation=InterpolationMode.BICUBIC)
                top = int(torch.randint(0, pil.height - size + 1, (1,), generator=augment))
                left = int(torch.randint(0, pil.width - size + 1, (1,), generator=augment))
                pil = TF.crop(pil, top, left, size, size)
                # The authors' pdata.image_transform: `if torch.rand(1) < 0.5:` a RandomHorizontalFlip()
                # (a second coin): a photo is mirrored with probability 0.25, the draws in that order.
                if float(torch.rand((), generator=augment)) < 0.5 and float(torch.rand((), generator=augment)) < 0.5:
                    pil = TF.horizontal_flip(pil)
            # ToTensor (divides by 255) then Normalize(0.5, 0.5), as the authors' transform.
            out.append((TF.pil_to_tensor(pil).to(torch.float32).div(255) - 0.5) / 0.5)
        return torch.stack(out).to(self.device)

    @torch.no_grad()
    def encode_images(self, images, augment=None):
        if augment is not None:
            return self.vq.encode(self._pixels(images, augment))
        rows: list[torch.LongTensor | None] = []
        keys = []
        for image in images:
            key = None
            if isinstance(image, (str, Path)):
                st = Path(image).stat()
                key = (str(image), st.st_size, st.st_mtime_ns)
            keys.append(key)
            rows.append(self._codes_of.get(key) if key is not None else None)
        todo = [i for i, r in enumerate(rows) if r is None]
        if todo:
            codes = self.vq.encode(self._pixels([images[i] for i in todo]))
            for i, row in zip(todo, codes):
                rows[i] = row
                if keys[i] is not None:
                    self._codes_of[keys[i]] = row
        return torch.stack(rows)  # type: ignore[arg-type]

    @torch.no_grad()
    def decode_codes(self, codes):
        pixels = self.vq.decode(codes.to(self.device).clamp(0, self.n_codes - 1))
        # As the authors: clamp((x + 1) / 2) * 255, then truncated to uint8 (numpy's astype).
        arr = (((pixels.float() + 1) / 2).clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(a) for a in arr]

    def code_embeddings(self, codes):
        return self.model.get_input_embeddings()(codes.to(self.device) + self.code_offset)

    # ------------------------------------------------------------------ sequences and masks
    def _text_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _mmu_ids(self, ex: TextExample, codes: torch.LongTensor) -> tuple[list[int], list[int]]:
        """(prompt, answer) ids: <|mmu|> <|soi|> codes <|eoi|> <|sot|> USER: ... ASSISTANT: [answer <|eot|>]."""
        prompt = [self.mmu, self.soi] + (codes + self.code_offset).tolist() + [self.eoi, self.bos]
        prompt += self._text_ids("USER: " + ex.prompt + " ASSISTANT:")
        answer = self._text_ids(" " + ex.answer.strip()) + [self.eos] if ex.answer else []
        return prompt, answer

    def _mmu_mask(self, lengths: list[int], width: int, left_pad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Understanding's omni-attention as a float additive mask [B, 1, width, width] and the
        position ids [B, width]: text rows causal, every row sees the image prefix (up to <|eoi|>)."""
        eoi_at = self.tokens_per_image + 2
        r = torch.arange(width)
        allowed, positions = [], []
        for n in lengths:
            start = width - n if left_pad else 0
            rows, cols = r[:, None] - start, r[None, :] - start
            ok = (cols >= 0) & ((cols <= rows) | (cols <= eoi_at))
            ok |= torch.eye(width, dtype=torch.bool)  # a padding row sees itself: no row without a key
            allowed.append(ok)
            positions.append((r - start).clamp(min=0))
        mask = torch.where(torch.stack(allowed), 0.0, BLOCKED)[:, None].to(self.device, self.dtype)
        return mask, torch.stack(positions).to(self.device)

    def _t2i_text(self, prompt: str | None) -> list[int]:
        """[PAD]... <|t2i|> <|sot|> text <|eot|>, left-padded (or cut) to max_text_len + 1; ``None``:
        the dropped condition, as the empty prompt."""
        text = [self.bos] + (self._text_ids(prompt) if prompt else [])
        ids = [self.t2i] + text + [self.eos]
        width = self.max_text_len + 1
        if len(ids) > width:
            ids = ids[: width - 1] + [self.eos]
        return [self.pad] * (width - len(ids)) + ids

    def _t2i_mask(self, seqs: torch.Tensor) -> torch.Tensor:
        """Generation's omni-attention (``create_attention_mask_predict_next``, ``rm_pad_in_image``):
        text rows causal, the image span (<|soi|> ... <|eoi|>) sees every text and image token, and no
        row after the padding sees it. Float additive [B, 1, L, L]."""
        b, n = seqs.shape
        pad = seqs == self.pad
        r = torch.arange(n, device=seqs.device)
        in_image = (r >= self.max_text_len + 1)[None, :, None]
        causal = (r[None, :, None] >= r[None, None, :])
        text_rows = causal & (~pad[:, None, :] | pad[:, :, None])
        allowed = torch.where(in_image, ~pad[:, None, :], text_rows)
        return torch.where(allowed, 0.0, BLOCKED)[:, None].to(self.dtype)

    def _t2i_seqs(self, texts: list[list[int]], image_ids: torch.Tensor) -> torch.Tensor:
        head = torch.tensor(texts, dtype=torch.long, device=self.device)
        b = head.shape[0]
        soi = torch.full((b, 1), self.soi, dtype=torch.long, device=self.device)
        eoi = torch.full((b, 1), self.eoi, dtype=torch.long, device=self.device)
        return torch.cat([head, soi, image_ids.to(self.device), eoi], 1)

    # ------------------------------------------------------------------ losses
    def text_loss(self, examples):
        codes = self.encode_images([ex.image for ex in examples])
        seqs, labels = [], []
        for ex, row in zip(examples, codes):
            p, a = self._mmu_ids(ex, row)
            seqs.append(p + a)
            labels.append([-100] * len(p) + a)
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        lab = torch.full((len(seqs), width), -100, dtype=torch.long)
        for i, (s, l) in enumerate(zip(seqs, labels)):
            ids[i, :len(s)] = torch.tensor(s)
            lab[i, :len(l)] = torch.tensor(l)
        mask, positions = self._mmu_mask([len(s) for s in seqs], width, left_pad=False)
        logits = self.model(input_ids=ids.to(self.device), attention_mask=mask, position_ids=positions,
                            use_cache=False).logits[:, :-1].float()
        target = lab[:, 1:].to(self.device)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)

    def image_loss(self, prompts, codes, generator=None):
        """The masked-token loss of the training scripts: per image a timestep t ~ U(0, 1), mask ratio
        cos(πt/2), that many random positions masked (at least one), the condition dropped with
        probability 0.1; cross-entropy over the whole vocabulary at <|soi|>, the masked codes and <|eoi|>."""
        codes = codes.to(self.device)
        b, n = codes.shape
        g = generator or torch.Generator().manual_seed(0)
        t = torch.rand(b, generator=g)
        n_masked = (n * torch.cos(t * math.pi / 2)).round().clamp(min=1)
        masked = (torch.rand(b, n, generator=g).argsort(-1) < n_masked[:, None]).to(self.device)
        dropped = torch.rand(b, generator=g) < COND_DROPOUT
        texts = [self._t2i_text(None if drop else p) for p, drop in zip(prompts, dropped.tolist())]
        ids = torch.where(masked, self.mask_id, codes + self.code_offset)
        seqs = self._t2i_seqs(texts, ids)
        labels = torch.full_like(seqs, -100)
        start = self.max_text_len + 1
        labels[:, start] = self.soi
        labels[:, start + 1:start + 1 + n] = torch.where(masked, codes + self.code_offset, -100)
        labels[:, start + 1 + n] = self.eoi
        logits = self.model(input_ids=seqs, attention_mask=self._t2i_mask(seqs), use_cache=False).logits
        logits = logits[:, start:].float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, start:].reshape(-1), ignore_index=-100)

    # ------------------------------------------------------------------ understanding
    def _mmu_batch(self, examples):
        codes = self.encode_images([ex.image for ex in examples])
        seqs = [self._mmu_ids(TextExample(ex.prompt, ex.image), row)[0] for ex, row in zip(examples, codes)]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):] = torch.tensor(s)
        mask, positions = self._mmu_mask([len(s) for s in seqs], width, left_pad=True)
        return ids.to(self.device), mask, positions, [len(s) for s in seqs]

    def _decode_reply(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True).strip()

    @torch.no_grad()
    def answer(self, examples, max_new_tokens=100):
        """Greedy replies, batched, with a KV cache: the prompt once, then one token per step."""
        from transformers import DynamicCache

        ids, mask, positions, lengths = self._mmu_batch(examples)
        b, width = ids.shape
        cache = DynamicCache(config=self.model.config)
        with quiet_transformers():
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                                **{self.cache_kwarg: cache}).logits[:, -1]
        visible = torch.arange(width, device=self.device)[None, :] >= (width - torch.tensor(lengths,
                                                                                         device=self.device))[:, None]
        last = positions[:, -1]
        replies: list[list[int]] = [[] for _ in range(b)]
        done = torch.zeros(b, dtype=torch.bool, device=self.device)
        for step in range(max_new_tokens):
            token = logits.float().argmax(-1)  # the reference's top-k 1 filter, then a draw: the argmax
            for i in (~done).nonzero().flatten().tolist():
                replies[i].append(int(token[i]))
            done |= token == self.eos
            if bool(done.all()) or step == max_new_tokens - 1:  # no forward for a token never used
                break
            visible = torch.cat([visible, torch.ones((b, 1), dtype=torch.bool, device=self.device)], 1)
            last = last + 1
            step_mask = torch.where(visible, 0.0, BLOCKED)[:, None, None].to(self.dtype)
            logits = self.model(input_ids=token[:, None], attention_mask=step_mask, position_ids=last[:, None],
                                use_cache=True, **{self.cache_kwarg: cache}).logits[:, -1]
        return [self._decode_reply(r) for r in replies]

    @torch.no_grad()
    def reference_answer(self, example: TextExample, max_new_tokens=100) -> str:
        """``Showo.mmu_generate`` as the authors' eval runs it, for checks and speed baselines: one
        example, no cache, the whole sequence recomputed for every new token with the mask grown by a
        blocked column and a causal row (``finfo(float32).min``), the argmax taken each step."""
        ids, mask, _, _ = self._mmu_batch([example])
        mask = mask[0, 0]
        result: list[int] = []
        for _ in range(max_new_tokens):
            logits = self.model(input_ids=ids, attention_mask=mask[None, None], use_cache=False).logits
            n = mask.shape[-1]
            grown = torch.hstack([mask, torch.full((n, 1), torch.finfo(torch.float32).min, device=self.device,
                                                   dtype=mask.dtype)])
            mask = torch.vstack([grown, torch.hstack([mask[-1], torch.zeros(1, device=self.device,
                                                                            dtype=mask.dtype)])[None]])
            token = logits[:, -1].float().argmax(-1)
            result.append(int(token))
            ids = torch.cat([ids, token[:, None]], 1)
            if int(token) == self.eos:
                break
        return self._decode_reply(result)

    # ------------------------------------------------------------------ generation
    def _code_logits(self, seqs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits over the image codes only, at the image positions: [B, T, codes] (float32). The head
        is applied to the code rows alone; the rest of the vocabulary is never needed here."""
        start = self.max_text_len + 2
        hidden = self.model.model(input_ids=seqs, attention_mask=mask, use_cache=False).last_hidden_state
        hidden = hidden[:, start:start + self.tokens_per_image]
        head = self.model.lm_head
        rows = slice(self.code_offset, self.code_offset + self.n_codes)
        return F.linear(hidden, head.weight[rows], head.bias[rows]).float()

    @torch.no_grad()
    def generate_codes(self, prompts, seeds, *, guidance=5.0, temperature=1.0, keep_steps=(), steps=None,
                       trace=None):
        """MaskGIT as ``Showo.t2i_generate``, batched over prompts; each image's draws (a uniform per
        position for the categorical sample and one for its Gumbel noise, every step) come from its
        own generator, so an image depends on its prompt and seed alone. ``trace``: a list that
        receives, per step, the positions left masked after it ([B, T] booleans), for checks."""
        steps = steps or self.steps
        b, n, c = len(prompts), self.tokens_per_image, self.n_codes
        uniforms = torch.stack([torch.rand(steps, 2, n, generator=torch.Generator().manual_seed(int(s)))
                                for s in seeds]).to(self.device)
        cond = [self._t2i_text(p) for p in prompts]
        guided = guidance > 0
        texts = cond + [self._t2i_text("")] * b if guided else cond
        current = torch.full((b, n), -1, dtype=torch.long, device=self.device)  # -1: still masked
        mask = None
        probs_fixed = torch.zeros((b, n), device=self.device)
        kept: dict[int, torch.LongTensor] = {}
        temp = float(temperature)
        for step in range(steps):
            image_ids = torch.where(current < 0, self.mask_id, current + self.code_offset)
            seqs = self._t2i_seqs(texts, image_ids.repeat(2, 1) if guided else image_ids)
            if mask is None:
                mask = self._t2i_mask(seqs)  # depends on the padding only: the same every step
            logits = self._code_logits(seqs, mask)
            if guided:
                cond_logits, uncond_logits = logits.chunk(2)
                logits = (1 + guidance) * cond_logits - guidance * uncond_logits
            probs = logits.softmax(-1)
            cdf = probs.cumsum(-1)
            draw = uniforms[:, step, 0].unsqueeze(-1) * cdf[..., -1:]
            sampled = torch.searchsorted(cdf, draw.contiguous()).squeeze(-1).clamp(max=c - 1)
            unknown = current < 0
            sampled = torch.where(unknown, sampled, current)
            ratio = (step + 1) / steps
            mask_len = torch.clamp(unknown.sum(-1, keepdim=True) - 1, max=masked_count(n, step, steps)).clamp(min=1)
            selected = probs.gather(-1, sampled[..., None]).squeeze(-1)
            confidence_p = torch.where(unknown, selected, torch.finfo(torch.float32).max)
            temp = temp * (1.0 - ratio)  # re-assigned every step, as the reference does: it compounds
            # -log(-log(u)), each log's argument clamped at 1e-20 as the reference's log() helper does
            gumbel = -torch.log((-torch.log(uniforms[:, step, 1].clamp(min=1e-20))).clamp(min=1e-20))
            confidence = torch.log(confidence_p.clamp(min=1e-20)) + temp * gumbel
            cut = confidence.sort(-1).values.gather(1, mask_len)
            masking = confidence < cut
            newly = unknown & ~masking
            probs_fixed = torch.where(newly, selected, probs_fixed)
            current = torch.where(masking, -1, sampled)
            if trace is not None:
                trace.append(masking.clone())
            if step + 1 in keep_steps:
                kept[step + 1] = sampled.clone()
        probs_fixed = torch.where(current < 0, selected, probs_fixed)
        return GeneratedCodes(sampled, probs_fixed, None, kept or None)

    def describe(self):
        return {"backend": "showo", "model": self.model_name, "dtype": str(self.dtype).replace("torch.", ""),
                "hidden_size": self.hidden_size, "codes_per_image": self.tokens_per_image,
                "image_size": self.image_size, "maskgit_steps": self.steps,
                "random_init": self.model_name in ("tiny", "random"),
                "understanding": "KV cache, batched (left padding)", "generation": "MaskGIT, batched"}

    def save(self, folder: Path) -> dict[str, Path]:
        """The three folders a model saved by the official code has: the language model (``config.json``
        with the Phi sizes, ``pytorch_model.bin`` with the ``showo.`` prefix), MAGVIT-v2, the tokenizer."""
        folder = Path(folder)
        lm_dir, vq_dir, tok_dir = folder / "show-o", folder / "magvitv2", folder / "tokenizer"
        lm_dir.mkdir(parents=True, exist_ok=True)
        sizes = {k: v for k, v in self.model.config.to_dict().items()
                 if k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                          "num_key_value_heads", "max_position_embeddings", "hidden_act", "layer_norm_eps")}
        (lm_dir / "config.json").write_text(json.dumps({
            "_class_name": "Showo", "w_clip_vit": False, "vocab_size": self.model.config.vocab_size,
            "llm_vocab_size": self.pad, "llm_model_path": DEFAULT_TOKENIZER, "codebook_size": self.n_codes,
            "num_vq_tokens": self.tokens_per_image, "llm_config": sizes}, indent=1))
        torch.save({f"showo.{k}": v for k, v in self.model.state_dict().items()}, lm_dir / "pytorch_model.bin")
        self.vq.save(vq_dir)
        self.tokenizer.save_pretrained(tok_dir)
        return {"model": lm_dir, "vq_model": vq_dir, "tokenizer": tok_dir}
