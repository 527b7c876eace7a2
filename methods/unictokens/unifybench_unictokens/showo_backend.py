"""Show-o (``showlab/show-o-512x512``), UniCTokens' own backbone, behind :class:`backend.UnifiedBackend`.

Show-o is transformers' own ``PhiForCausalLM`` (Phi-1.5's sizes with ``qk_layernorm=True`` and a
vocabulary of text + 10 specials + 8,192 image codes + a mask token), the MAGVIT-v2 image tokenizer
(:mod:`.magvit`), omni-attention masks, and MaskGIT sampling, written from ``showlab/Show-o``
(``models/modeling_showo.py``, ``models/sampling.py``, ``training/prompting_utils.py``) and the
UniCTokens scripts (``eval/``, ``train_w_3_stages/``). Building and loading are in :mod:`.showo_loading`,
the id and mask layout (pure functions of ids) in :mod:`.showo_layout`; this module runs the model:

- id layout (the official one): Phi's text ids, then ``[PAD] <|soi|> <|eoi|> <|sov|> <|eov|>
  <|t2i|> <|mmu|> <|t2v|> <|v2v|> <|lvg|>`` at ``len(tokenizer)`` (50,295 for phi-1_5), then code c
  at ``len(tokenizer) + 10 + c``, and the mask token last. A concept's new tokens get rows after the
  mask token (:mod:`unifybench.kit.rows`); the authors insert them at 50,305 and shift the image ids.
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

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from unifybench.errors import BenchError
from unifybench.kit.models import cache_kwarg_name, random_init
from unifybench.kit.rows import freeze
from unifybench.logs import quiet_transformers
from unifybench.offline import local_only as hub_local_only

from . import showo_layout as layout
from .backend import GeneratedCodes, TextExample, UnifiedBackend, VocabRowParam, pil_image
from .magvit import DEFAULT_VQ, load_magvit
# Names importable from this module before loading and layout had modules of their own.
from .showo_layout import BLOCKED, EOT, MAX_TEXT_LEN, PAD, SPECIALS, masked_count  # noqa: F401
from .showo_layout import lm_vocab as _lm_vocab  # noqa: F401
from .showo_loading import (DEFAULT_MODEL, DEFAULT_TOKENIZER, TINY_PHI, add_showo_specials,  # noqa: F401
                            build_random, build_tiny, build_tiny_tokenizer, fit_image_size, load_showo_lm,
                            load_tokenizer, phi_config)

COND_DROPOUT = 0.1  # training.cond_dropout_prob


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
            local_only = hub_local_only()
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
        self.code_offset = layout.code_offset(text_vocab)
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
        prompt = layout.mmu_prompt_ids(codes.tolist(), self._text_ids("USER: " + ex.prompt + " ASSISTANT:"),
                                       mmu=self.mmu, soi=self.soi, eoi=self.eoi, bos=self.bos, offset=self.code_offset)
        answer = self._text_ids(" " + ex.answer.strip()) + [self.eos] if ex.answer else []
        return prompt, answer

    def _mmu_mask(self, lengths: list[int], width: int, left_pad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Understanding's omni-attention (:func:`.showo_layout.mmu_allowed`) as a float additive mask
        [B, 1, width, width] and the position ids [B, width], on the model's device."""
        allowed, positions = layout.mmu_allowed(lengths, width, self.tokens_per_image, left_pad)
        return layout.additive(allowed).to(self.device, self.dtype), positions.to(self.device)

    def _t2i_text(self, prompt: str | None) -> list[int]:
        """:func:`.showo_layout.t2i_text_ids` of the prompt; ``None``: the dropped condition, as the empty prompt."""
        return layout.t2i_text_ids(self._text_ids(prompt) if prompt else None, pad=self.pad, t2i=self.t2i,
                                   bos=self.bos, eos=self.eos, max_text_len=self.max_text_len)

    def _t2i_mask(self, seqs: torch.Tensor) -> torch.Tensor:
        """Generation's omni-attention (:func:`.showo_layout.t2i_allowed`), float additive [B, 1, L, L]."""
        return layout.additive(layout.t2i_allowed(seqs, pad=self.pad, max_text_len=self.max_text_len)).to(self.dtype)

    def _t2i_seqs(self, texts: list[list[int]], image_ids: torch.Tensor) -> torch.Tensor:
        return layout.t2i_sequence(torch.tensor(texts, dtype=torch.long, device=self.device), image_ids,
                                   soi=self.soi, eoi=self.eoi)

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
            step_mask = layout.additive(visible[:, None]).to(self.dtype)  # one query row: [B, 1, 1, W]
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
                "random_init": random_init(self.model_name, ("tiny", "random")),
                "understanding": "KV cache, batched (left padding)", "generation": "MaskGIT, batched"}
