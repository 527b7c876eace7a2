"""Janus / Janus-Pro through ``transformers``' ``JanusForConditionalGeneration``.

Everything specific to Janus lives here: the chat format, the SigLIP understanding path, the VQ
tokenizer, the separate generation embedding / head, classifier-free guidance, and a decoding loop
with a static KV cache (compiled into CUDA graphs on a GPU). ``model=tiny`` builds a tiny random-init
Janus, its tokenizer and its image processor from code, for tests and smoke runs.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from unifybench.errors import BenchError
from unifybench.kit.models import cache_kwarg_name, random_init
from unifybench.kit.rows import freeze
from unifybench.logs import quiet_transformers

from .backend import GeneratedCodes, TextExample, UnifiedBackend, VocabRowParam, pil_image

DEFAULT_MODEL = "deepseek-community/Janus-Pro-1B"

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
IMAGE = "<image_placeholder>"
BOI = "<begin_of_image>"
EOI = "<end_of_image>"
SPECIALS = [BOS, EOS, PAD, IMAGE, BOI, EOI]

# A few sentences to train the tiny tokenizer on; byte-level BPE encodes any text regardless.
_TINY_CORPUS = [
    "<|User|>: Is the dog in this image? <|Assistant|>: Yes, it is in this image.",
    "A photo of a cat in the jungle. A photo of a backpack on the beach.",
    "Describe the object in this photo. What colour is the wall behind it?",
    "No. Yes. A. B. C. D. Answer with the option's letter.",
    "the a an is of in on with and to it its this that there what which who where",
    "a red clock, a blue cushion, a yellow teddy bear, a brown plushie, a green bottle",
] * 4


def build_tiny(seed: int = 0):
    """A tiny random-init Janus (2 Llama layers of width 64, 32 px images, 16 codes per image)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (JanusConfig, JanusForConditionalGeneration, JanusImageProcessor,
                              JanusVisionConfig, JanusVQVAEConfig, LlamaConfig, PreTrainedTokenizerFast)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_TINY_CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in SPECIALS}
    vocab = len(tokenizer)

    size, patch = 32, 8  # VQ: 4 levels = 8x downsampling, so 4 x 4 = 16 codes per image
    n_codes = (size // patch) ** 2
    text = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                       bos_token_id=ids[BOS], eos_token_id=ids[EOS], pad_token_id=ids[PAD],
                       tie_word_embeddings=False)
    vision = JanusVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=size,
                               patch_size=patch, projection_dim=64, num_image_tokens=n_codes, mlp_ratio=2.0,
                               depth=1)
    vq = JanusVQVAEConfig(embed_dim=8, num_embeddings=64, latent_channels=32, base_channels=32,
                          channel_multiplier=[1, 1, 1, 1], num_res_blocks=1, projection_dim=64,
                          image_token_embed_dim=64, num_hidden_layers=1)
    config = JanusConfig(text_config=text, vision_config=vision, vq_config=vq, image_token_id=ids[IMAGE],
                         tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(config)
    gc = model.generation_config
    gc.bos_token_id, gc.eos_token_id, gc.pad_token_id = ids[BOS], ids[EOS], ids[PAD]
    gc.generation_kwargs = {"boi_token_id": ids[BOI]}
    processor = JanusImageProcessor(size={"height": size, "width": size}, image_mean=[0.5, 0.5, 0.5],
                                    image_std=[0.5, 0.5, 0.5], min_size=4)
    return model, tokenizer, processor


def build_random_1b(seed: int = 0, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """Janus-Pro-1B's architecture (24 x 2048 Llama, SigLIP-L/16 at 384 px, 16,384 VQ codes, 576 per image)
    with seeded random weights and the tiny tokenizer: speed measurements only, no download."""
    from transformers import (JanusConfig, JanusForConditionalGeneration, JanusImageProcessor,
                              JanusVisionConfig, JanusVQVAEConfig, LlamaConfig)

    _, tokenizer, _ = build_tiny(seed)
    tid = tokenizer.convert_tokens_to_ids
    text = LlamaConfig(vocab_size=102400, hidden_size=2048, intermediate_size=5632, num_hidden_layers=24,
                       num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=16384,
                       bos_token_id=tid(BOS), eos_token_id=tid(EOS), pad_token_id=tid(PAD), tie_word_embeddings=False)
    config = JanusConfig(text_config=text, vision_config=JanusVisionConfig(), vq_config=JanusVQVAEConfig(),
                         image_token_id=tid(IMAGE), tie_word_embeddings=False)
    torch.manual_seed(seed)
    with torch.device(device):
        model = JanusForConditionalGeneration(config).to(dtype)
    gc = model.generation_config
    gc.bos_token_id, gc.eos_token_id, gc.pad_token_id = tid(BOS), tid(EOS), tid(PAD)
    gc.generation_kwargs = {"boi_token_id": tid(BOI)}
    processor = JanusImageProcessor(size={"height": 384, "width": 384}, image_mean=[0.5, 0.5, 0.5],
                                    image_std=[0.5, 0.5, 0.5])
    return model, tokenizer, processor


def load_pretrained(name: str, device: str, dtype: torch.dtype):
    from transformers import AutoImageProcessor, AutoTokenizer, JanusForConditionalGeneration

    try:
        model = JanusForConditionalGeneration.from_pretrained(name, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(name)
        processor = AutoImageProcessor.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot load Janus checkpoint {name!r} ({str(exc).splitlines()[0]}); pass "
                         f"model=tiny for a tiny random-init model or model=LOCAL_FOLDER",
                         where="--method-arg model") from exc
    return model, tokenizer, processor


class JanusBackend(UnifiedBackend):
    name = "janus"

    def __init__(self, model_name: str = DEFAULT_MODEL, *, device: str = "cpu", seed: int = 0,
                 dtype: torch.dtype | None = None, compile_decode: bool | None = None):
        self.device = torch.device(device)
        if dtype is None:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.dtype = dtype
        self.model_name = model_name
        if model_name == "tiny":
            model, tokenizer, processor = build_tiny(seed)
        elif model_name == "random-1b":
            model, tokenizer, processor = build_random_1b(seed, device, dtype)
        else:
            model, tokenizer, processor = load_pretrained(model_name, device, dtype)
        self.model = freeze(model.to(self.device, dtype).eval())
        self.tokenizer = tokenizer
        self.processor = processor
        cfg = self.model.config
        self.hidden_size = cfg.text_config.hidden_size
        self.n_codes = cfg.vision_config.num_image_tokens
        # A hub tokenizer names its own specials (Janus-Pro: image_token, boi_token, eoi_token); the tiny
        # one uses the same strings.
        tid = tokenizer.convert_tokens_to_ids
        self.bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tid(BOS)
        self.eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tid(EOS)
        self.image_id = cfg.image_token_id
        self.boi = tid(getattr(tokenizer, "boi_token", None) or BOI)
        self.eoi = tid(getattr(tokenizer, "eoi_token", None) or EOI)
        gen_kwargs = getattr(self.model.generation_config, "generation_kwargs", None) or {}
        self.boi = gen_kwargs.get("boi_token_id", self.boi)
        # The pad token also masks the unconditional branch: take generate()'s, so both paths agree.
        self.pad = next((t for t in (self.model.generation_config.pad_token_id, tokenizer.pad_token_id)
                         if t is not None), self.eos)
        self.compile_decode = (self.device.type == "cuda") if compile_decode is None else compile_decode
        self._decoders: dict[tuple[int, int], "_StaticDecoder"] = {}

    # ------------------------------------------------------------------ vocabulary
    def _embed(self) -> torch.nn.Embedding:
        return self.model.get_input_embeddings()

    def vocab_row_params(self):
        emb = self._embed().weight
        found = [VocabRowParam("embed", emb)]
        head = self.model.get_output_embeddings()
        if head is not None and head.weight is not emb:
            found.append(VocabRowParam("head_weight", head.weight))
            if getattr(head, "bias", None) is not None:
                found.append(VocabRowParam("head_bias", head.bias))
        return found

    def has_head_bias(self):
        head = self.model.get_output_embeddings()
        return getattr(head, "bias", None) is not None

    def word_embedding(self, text):
        ids = self.tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"] or [self.pad]
        with torch.no_grad():
            return self._embed().weight[torch.tensor(ids, device=self.device)].float().mean(0).cpu()

    # ------------------------------------------------------------------ images
    def _pixels(self, images) -> torch.Tensor:
        out = self.processor([pil_image(im) for im in images], return_tensors="pt")["pixel_values"]
        return out.to(self.device, self.dtype)

    @torch.no_grad()
    def encode_images(self, images, augment=None):
        pixels = self._pixels(images)
        vq = self.model.model.vqmodel
        enc = vq.encode(pixels.to(next(vq.parameters()).dtype), return_dict=True)
        return enc.image_tokens.view(len(images), -1)

    @torch.no_grad()
    def decode_codes(self, codes):
        out = self.model.decode_image_tokens(codes.to(self.device))  # [n, H, W, 3] in [-1, 1]
        arr = ((out.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
        return [Image.fromarray(a) for a in arr]

    def code_embeddings(self, codes):
        return self.model.prepare_embeddings_for_image_generation(codes.to(self.device))

    # ------------------------------------------------------------------ prompts
    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _understanding_ids(self, ex: TextExample) -> tuple[list[int], list[int]]:
        """Janus-Pro's chat format; returns (prompt ids, answer ids)."""
        ids = [self.bos] + self._ids("<|User|>: ")
        if ex.image is not None:
            ids += [self.boi] + [self.image_id] * self.n_codes + [self.eoi] + self._ids("\n")
        ids += self._ids(ex.prompt.strip() + "\n\n<|Assistant|>:")
        answer = self._ids(" " + ex.answer.strip()) + [self.eos] if ex.answer else []
        return ids, answer

    def generation_prompt_ids(self, prompt: str) -> list[int]:
        return [self.bos] + self._ids(f"<|User|>: {prompt.strip()}\n\n<|Assistant|>:") + [self.boi]

    def _images_of(self, examples):
        imgs = [ex.image for ex in examples if ex.image is not None]
        return self._pixels(imgs) if imgs else None

    # ------------------------------------------------------------------ losses
    def text_loss(self, examples):
        seqs, labels = [], []
        for ex in examples:
            p, a = self._understanding_ids(ex)
            seqs.append(p + a)
            labels.append([-100] * len(p) + a)
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        lab = torch.full((len(seqs), width), -100, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (s, l) in enumerate(zip(seqs, labels)):
            ids[i, :len(s)] = torch.tensor(s)
            lab[i, :len(l)] = torch.tensor(l)
            mask[i, :len(s)] = 1
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         pixel_values=self._images_of(examples), use_cache=False)
        logits = out.logits[:, :-1].float()
        target = lab[:, 1:].to(self.device)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)

    def _left_pad(self, seqs: list[list[int]], width: int | None = None):
        width = width or max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):] = torch.tensor(s)
            mask[i, width - len(s):] = 1
        return ids.to(self.device), mask.to(self.device)

    def image_loss(self, prompts, codes, generator=None):
        codes = codes.to(self.device)
        ids, mask = self._left_pad([self.generation_prompt_ids(p) for p in prompts])
        text_emb = self._embed()(ids)
        code_emb = self.code_embeddings(codes[:, :-1]).to(text_emb.dtype)
        embeds = torch.cat([text_emb, code_emb], 1)
        full_mask = torch.cat([mask, torch.ones_like(codes[:, :-1])], 1)
        pos = (full_mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self.model.model.language_model(inputs_embeds=embeds, attention_mask=full_mask,
                                                 position_ids=pos, use_cache=False).last_hidden_state
        hidden = hidden[:, ids.shape[1] - 1:]  # the position before each code
        logits = self.model.model.generation_head(hidden).float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes.reshape(-1))

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def answer(self, examples, max_new_tokens=64):
        seqs = [self._understanding_ids(TextExample(ex.prompt, ex.image))[0] for ex in examples]
        ids, mask = self._left_pad(seqs)
        pixels = self._images_of(examples)
        # No pixel_values key at all for a text-only batch: transformers 5.24's generate() encodes images
        # whenever the key is present, None or not, and the vision tower then fails.
        images = {} if pixels is None else {"pixel_values": pixels}
        with quiet_transformers():  # it warns of max_length beside max_new_tokens, and of its own arguments
            out = self.model.generate(input_ids=ids, attention_mask=mask, **images,
                                      max_new_tokens=max_new_tokens, do_sample=False, generation_mode="text",
                                      pad_token_id=self.pad, eos_token_id=self.eos, bos_token_id=self.bos)
        new = out[:, ids.shape[1]:]
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]

    def _uncond(self, seqs: list[list[int]]) -> list[list[int]]:
        """Janus's unconditional branch: every prompt token but BOS and BOI replaced by the pad token."""
        return [[t if t in (self.bos, self.boi) else self.pad for t in s] for s in seqs]

    def prepare_generation(self, prompts: Sequence[str], bucket: int = 32):
        """Left-padded conditional + unconditional prompt ids [2n, L], L rounded up to ``bucket``
        so compiled decoding sees few distinct shapes."""
        seqs = [self.generation_prompt_ids(p) for p in prompts]
        width = int(math.ceil(max(len(s) for s in seqs) / bucket) * bucket)
        return self._left_pad(seqs + self._uncond(seqs), width)

    @torch.no_grad()
    def generate_codes(self, prompts, seeds, *, guidance=5.0, temperature=1.0, keep_steps=(), greedy=False,
                       keep_logits=0):
        ids, mask = self.prepare_generation(prompts)
        uniforms = torch.stack([torch.rand(self.n_codes, generator=torch.Generator().manual_seed(int(s)))
                                for s in seeds]).to(self.device)
        dec = self._decoder(len(prompts), ids.shape[1])
        codes, probs, logits = dec.run(ids, mask, uniforms, guidance, temperature, greedy=greedy,
                                       keep_logits=keep_logits)
        return GeneratedCodes(codes, probs, logits if keep_logits else None)

    @torch.no_grad()
    def reference_guided_logits(self, prompts, codes: torch.LongTensor, guidance=5.0, temperature=1.0):
        """Guided next-code logits at every step given ``codes`` [n, K], from one plain forward of the whole
        sequence with no cache: what each decoding step must reproduce. Returns [K, n, V]."""
        ids, mask = self.prepare_generation(prompts)
        n, K = codes.shape
        both = torch.cat([codes, codes]).to(self.device)
        embeds = torch.cat([self._embed()(ids), self.code_embeddings(both[:, :-1]).to(self.dtype)], 1) \
            if K > 1 else self._embed()(ids)
        full_mask = torch.cat([mask, torch.ones_like(both[:, :-1])], 1)
        pos = (full_mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self.model.model.language_model(inputs_embeds=embeds, attention_mask=full_mask, position_ids=pos,
                                                 use_cache=False).last_hidden_state[:, ids.shape[1] - 1:]
        logits = self.model.model.generation_head(hidden).float()
        guided = logits[n:] + guidance * (logits[:n] - logits[n:])
        return (guided / max(float(temperature), 1e-5)).transpose(0, 1)

    def _decoder(self, batch: int, prompt_len: int) -> "_StaticDecoder":
        key = (batch, prompt_len)
        if key not in self._decoders:
            if len(self._decoders) >= 3:  # each holds a KV cache (Janus-Pro-1B, 2x32 rows: ~8 GB in bf16)
                self._decoders.pop(next(iter(self._decoders)))
            self._decoders[key] = _StaticDecoder(self, batch, prompt_len, compile_step=self.compile_decode)
        return self._decoders[key]

    def describe(self):
        return {"backend": "janus", "model": self.model_name, "dtype": str(self.dtype).replace("torch.", ""),
                "hidden_size": self.hidden_size, "codes_per_image": self.n_codes,
                "random_init": random_init(self.model_name, ("tiny", "random-1b")),
                "decoding": "static KV cache" + ((" + torch.compile(reduce-overhead): CUDA graphs"
                                                  if self.device.type == "cuda" else " + torch.compile (inductor)")
                                                 if self.compile_decode else ", eager steps")}


class _StaticDecoder:
    """Classifier-free-guided image decoding with a static KV cache and fixed shapes.

    One instance per (batch, padded prompt length). Each step runs the language model on one token
    per row, the generation head, guidance and inverse-CDF sampling from pre-drawn uniforms (so each
    image depends only on its own seed, never on what it is batched with, and no RNG runs inside the
    step). On CUDA the step is compiled with ``mode="reduce-overhead"``, which captures it as a CUDA
    graph: the ~50 ms of per-step Python and kernel-launch overhead of eager ``generate`` becomes one
    graph replay.
    """

    def __init__(self, backend: JanusBackend, batch: int, prompt_len: int, compile_step: bool):
        from transformers import StaticCache

        self.b = backend
        self.batch = batch
        self.prompt_len = prompt_len
        self.max_len = prompt_len + backend.n_codes
        lm = backend.model.model.language_model
        self.cache = StaticCache(config=backend.model.config.text_config, max_cache_len=self.max_len)
        self.lm = lm
        self.cache_kwarg = cache_kwarg_name(lm)
        self.dtype = backend.dtype
        self.step = self._step
        if compile_step:
            import torch._dynamo.config as dynamo_config

            # One compiled graph per (batch, prompt bucket): allow a few more than the default 8.
            dynamo_config.recompile_limit = max(getattr(dynamo_config, "recompile_limit", 8), 64)
            # fullgraph=False so an unexpected graph break degrades speed, not correctness; on the tiny
            # model the step traces as one graph with fullgraph=True (tests/test_unictokens.py).
            self.step = torch.compile(self._step, mode="reduce-overhead", fullgraph=False, dynamic=False)

    def _head(self, hidden, guidance: torch.Tensor, temperature: torch.Tensor):
        logits = self.b.model.model.generation_head(hidden).float()
        cond, uncond = logits[: self.batch], logits[self.batch:]
        guided = uncond + guidance * (cond - uncond)
        return guided / temperature

    def _sample(self, logits, u, greedy: torch.Tensor):
        """Inverse-CDF sampling from the pre-drawn uniform ``u``, or the argmax where ``greedy`` (a bool
        tensor, not a Python bool: one compiled graph serves both, and compiling costs a minute or more
        per graph at Janus-Pro-1B's size)."""
        probs = torch.softmax(logits, -1)
        cdf = probs.cumsum(-1)
        sampled = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1).contiguous()).squeeze(-1)
        code = torch.where(greedy, probs.argmax(-1), sampled.clamp(max=probs.shape[-1] - 1))
        return code, probs.gather(-1, code.unsqueeze(-1)).squeeze(-1)

    def _step(self, prev_code, mask, pos, u, guidance, temperature, greedy: torch.Tensor):
        """One decoding step for every row: embed the previous code, run the LM one position, sample."""
        emb = self.b.model.prepare_embeddings_for_image_generation(torch.cat([prev_code, prev_code]).unsqueeze(-1))
        hidden = self.lm(inputs_embeds=emb.to(self.dtype), attention_mask=mask, position_ids=pos,
                         use_cache=True, **{self.cache_kwarg: self.cache}).last_hidden_state[:, -1]
        logits = self._head(hidden, guidance, temperature)
        code, p = self._sample(logits, u, greedy)
        return code, p, logits

    @torch.no_grad()
    def run(self, ids, mask, uniforms, guidance, temperature, greedy=False, keep_logits: int = 0):
        """Codes [n, T], their probabilities [n, T], and the guided logits of the first ``keep_logits`` steps."""
        b, dev = self.b, self.b.device
        self.cache.reset()
        full_mask = torch.ones((2 * self.batch, self.max_len), dtype=torch.long, device=dev)
        full_mask[:, : self.prompt_len] = mask
        pos_all = (full_mask.cumsum(-1) - 1).clamp(min=0)
        g = torch.tensor(float(guidance), device=dev)
        t = torch.tensor(max(float(temperature), 1e-5), device=dev)
        greedy = torch.tensor(bool(greedy), device=dev)
        # Prefill: one eager call per batch.
        hidden = self.lm(inputs_embeds=b._embed()(ids), attention_mask=full_mask,
                         position_ids=pos_all[:, : self.prompt_len], use_cache=True,
                         **{self.cache_kwarg: self.cache}).last_hidden_state[:, -1]
        logits = self._head(hidden, g, t)
        code, p = self._sample(logits, uniforms[:, 0], greedy)
        codes, ps = [code], [p]
        kept = [logits.clone()] if keep_logits else []
        for i in range(1, b.n_codes):
            # Fresh tensors (storage offset 0) so the compiled step sees identical inputs at every step.
            pos = pos_all[:, self.prompt_len + i - 1: self.prompt_len + i].clone()
            code, p, logits = self.step(code, full_mask, pos, uniforms[:, i].clone(), g, t, greedy)
            code, p = code.clone(), p.clone()
            codes.append(code)
            ps.append(p)
            if i < keep_logits:
                kept.append(logits.clone())
        return torch.stack(codes, 1), torch.stack(ps, 1), kept
