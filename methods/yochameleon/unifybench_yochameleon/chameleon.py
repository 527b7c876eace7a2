"""Chameleon (Anole) through transformers' ``ChameleonForConditionalGeneration``: sequences, loss,
replies and images, as the Yo'Chameleon code builds them.

Text is what their ``ChameleonProcessor`` call makes of it: ``<s>`` + the tokens, each ``<image>``
replaced by ``<racm3:break>`` + the photo's 1,024 VQ tokens (as BPE ids) + ``<eoss>``, and the
chat separator ``<reserved08706>`` (end of turn) appended. A training conversation is
``{human}<reserved08706>{bot}<reserved08706>``; the loss covers every token after the first end of
turn, over the whole vocabulary (their patched forward computes it before any masking; the stock
forward would mask the image tokens and make image answers unlearnable).

transformers' Chameleon answers text only: image tokens cannot be sampled, and its VQ model has no
decoder. Images are drawn here as their patched ``generate(multimodal_generation_mode="image-only")``
draws them: after the prompt, ``<racm3:break>``, then 1,024 tokens sampled from the image tokens
only (top-k 50 at temperature 1: transformers' sampling defaults, which their call keeps), then
decoded by :mod:`.vqgan`. Each image samples from uniforms drawn from its own seed, so no image
depends on the others in its call.

``model=tiny`` builds a tiny random-init Chameleon (2 layers, 64 wide, a 16 px VQGAN with 64 codes:
16 tokens an image) and a byte-level BPE tokenizer with Chameleon's special and reserved tokens, in code;
``model=random`` the same at Chameleon-7B's sizes (speed figures on a GPU).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from unifybench.errors import BenchError
from unifybench.images import open_rgb
from unifybench.kit.models import cache_kwarg_name, random_init
from unifybench.kit.weights import hub_snapshot
from unifybench.logs import quiet_transformers
from unifybench.kit.rows import VocabRowParam

from .vqgan import VQGANDecoder, decode_codes, load_strict, read_checkpoint_decoder, read_vqgan_file, to_bytes

DEFAULT_MODEL = "leloy/Anole-7b-v0.1-hf"
RANDOM_MODELS = ("tiny", "random")  # built in code with random weights
IMAGE = "<image>"
BOI, EOI = "<racm3:break>", "<eoss>"  # begin and end of image: ids 8197 and 8196 in Chameleon
END_OF_TURN = "<reserved08706>"  # id 8710: the chat separator the processor appends
RESERVED = re.compile(r"<reserved\d{5}>")
# The concept's tokens (their config): here, not in method.py, so the speed hook reads them without
# importing the method module that imports it.
IDENTIFIER = 16200  # <reserved16200>: SKS_TOKEN of their config
LATENT_START = 16201  # LATENT_TOKEN_START


def reserved(i: int) -> str:
    return f"<reserved{i:05d}>"


def image_token_name(code: int) -> str:
    """Chameleon's name of VQ code ``code``: IMGIMG, its digits as letters (0 -> A ... 9 -> J), Z."""
    return "IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z"


TINY_CODES = 64
TINY_RESERVED = range(16200, 16265)  # the identifier and up to 64 latent tokens
_TINY_CORPUS = [
    "Is it in this photo? Yes, it is in this photo. No, it is not in the photo.",
    "What colour is the dog? It is brown and white, a small dog with a round head and large eyes.",
    "A photo of a dog in the jungle. Can you see it in this image? Describe it in detail.",
] * 4


def build_tiny(seed: int = 0):
    """(model, tokenizer, image processor, decoder): random init, in code, no download."""
    return _build(seed, full_size=False)


def build_random(seed: int = 0, device: str = "cpu", dtype: torch.dtype = torch.bfloat16):
    """Chameleon-7B's sizes (ChameleonConfig's defaults: 32 layers of 4,096, 65,536 vocabulary rows; the
    VQGAN's 8,192 codes, 1,024 tokens a 512 px image) with random weights, made on ``device`` in
    ``dtype``: speed figures on a GPU without the checkpoint. The tokenizer is the tiny one with all
    8,192 image tokens."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return _build(seed, full_size=True)
    finally:
        torch.set_default_dtype(previous)


def _build(seed: int, full_size: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (ChameleonConfig, ChameleonForConditionalGeneration, ChameleonVQVAEConfig,
                              PreTrainedTokenizerFast)

    codes = 8192 if full_size else TINY_CODES
    specials = (["<unk>", "<s>", "</s>", "<pad>", IMAGE, BOI, EOI, END_OF_TURN] + [reserved(i) for i in TINY_RESERVED]
                + [image_token_name(c) for c in range(codes)])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=len(specials) + 300, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_TINY_CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", sep_token=END_OF_TURN)
    ids = dict(vocabulary_map=tokenizer.get_vocab(), bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if full_size:
        config = ChameleonConfig(vq_config=ChameleonVQVAEConfig().to_dict(), **ids)
        processor = image_processor_class()()
    else:
        vq = ChameleonVQVAEConfig(embed_dim=8, num_embeddings=TINY_CODES, latent_channels=8, resolution=16,
                                  base_channels=32, channel_multiplier=[1, 1, 1], num_res_blocks=1)
        config = ChameleonConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                 max_position_embeddings=1024, vq_config=vq.to_dict(), **ids)
        processor = image_processor_class()(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    torch.manual_seed(seed)
    model = ChameleonForConditionalGeneration(config)
    decoder = VQGANDecoder(model.config.vq_config)
    return model, tokenizer, processor, decoder


def image_processor_class():
    """transformers' PIL-backed Chameleon image processor: the authors' values exactly (the torchvision-backed
    ``ChameleonImageProcessor`` that ``AutoImageProcessor`` gives in transformers 5 differs by up to 2
    levels in about 0.7% of pixel values). Every transformers this project supports (5.5 on) has it."""
    from transformers import ChameleonImageProcessorPil

    return ChameleonImageProcessorPil


def hub_folder(name: str) -> Path:
    """A local folder, or a hub name's snapshot in the local cache (downloaded when the hub is reachable)."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder
    return hub_snapshot(name, "model", hint="pass model=tiny for a tiny random-init model or model=LOCAL_FOLDER",
                        allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"])


def load_pretrained(name: str, dtype: torch.dtype):
    from transformers import AutoTokenizer, ChameleonForConditionalGeneration

    folder = hub_folder(name)
    try:
        with quiet_transformers():  # the decoder's weights are "unexpected" to transformers: read apart
            model = ChameleonForConditionalGeneration.from_pretrained(folder, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        image_processor = image_processor_class().from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot load Chameleon checkpoint ({str(exc).splitlines()[0][:160]}); pass model=tiny for "
                         f"a tiny random-init model or model=LOCAL_FOLDER", folder, "--method-arg model") from exc
    return model, tokenizer, image_processor, folder


class ChameleonHost:
    """One Chameleon, shared by every concept of a process (a concept's rows live in
    :class:`unifybench.kit.rows.NewTokens` blocks; the base model is never changed)."""

    def __init__(self, model_name: str = DEFAULT_MODEL, *, device: str = "cpu", seed: int = 0,
                 dtype: torch.dtype | None = None, vqgan: Path | None = None):
        self.device = torch.device(device)
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.model_name = model_name
        self._vqgan = vqgan
        self._decoder: VQGANDecoder | None = None
        self._decoder_placed: VQGANDecoder | None = None
        self._folder: Path | None = None
        if model_name == "tiny":
            model, tokenizer, image_processor, self._decoder = build_tiny(seed)
        elif model_name == "random":
            model, tokenizer, image_processor, self._decoder = build_random(seed, str(self.device), self.dtype)
        else:
            model, tokenizer, image_processor, self._folder = load_pretrained(model_name, self.dtype)
        self.model = model.to(self.device, self.dtype).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        cfg = self.model.config
        self.hidden_size = cfg.hidden_size
        ids = tokenizer.convert_tokens_to_ids
        self.bos, self.eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        self.boi, self.eoi, self.eot, self.image_placeholder = ids(BOI), ids(EOI), ids(END_OF_TURN), ids(IMAGE)
        mapping = self.model.model.vocabulary_mapping
        bpe2img = mapping.bpe2img
        self.image_bpe = torch.tensor(sorted(bpe2img), dtype=torch.long)  # BPE ids of the image tokens, ascending
        self.image_codes = torch.tensor([bpe2img[int(t)] for t in self.image_bpe], dtype=torch.long)
        vq = cfg.vq_config
        side = vq.resolution // 2 ** (len(vq.channel_multiplier) - 1)
        self.tokens_per_image = side * side

    # ------------------------------------------------------------------ vocabulary rows
    def vocab_row_params(self) -> list[VocabRowParam]:
        emb = self.model.get_input_embeddings().weight
        found = [VocabRowParam("embed", emb)]
        head = self.model.get_output_embeddings()
        if head is not None and head.weight is not emb:
            found.append(VocabRowParam("head_weight", head.weight))
        return found

    def has_token(self, token: str) -> bool:
        return token in self.tokenizer.get_vocab()

    # ------------------------------------------------------------------ images
    def pixels(self, images: Sequence, flips: Sequence[bool] | None = None) -> torch.Tensor:
        out = []
        for i, image in enumerate(images):
            im = open_rgb(image, alpha="drop")  # their datasets' Image.open(path).convert("RGB")
            out.append(ImageOps.mirror(im) if flips is not None and flips[i] else im)
        values = self.image_processor(out, return_tensors="pt")["pixel_values"]
        return values.to(self.device, self.dtype)

    @torch.no_grad()
    def image_tokens(self, images: Sequence, flips: Sequence[bool] | None = None) -> torch.Tensor:
        """BPE ids ``[n, tokens_per_image]`` of photos (the authors' ``get_image_tokens``)."""
        return self.model.model.get_image_tokens(self.pixels(images, flips)).long().cpu()

    # ------------------------------------------------------------------ sequences
    def _tokens(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def sequence(self, text: str, images: Sequence = (), flips: Sequence[bool] | None = None) -> list[int]:
        """``<s>`` + text + end of turn, each ``<image>`` expanded into its photo's tokens (in order)."""
        ids = [self.bos] + self._tokens(text) + [self.eot]
        slots = [i for i, t in enumerate(ids) if t == self.image_placeholder]
        if len(slots) != len(images):
            raise ValueError(f"{len(slots)} <image> in the text for {len(images)} images")
        if not slots:
            return ids
        tokens = self.image_tokens(images, flips)
        out, last = [], 0
        for k, at in enumerate(slots):
            out += ids[last:at] + [self.boi] + tokens[k].tolist() + [self.eoi]
            last = at + 1
        return out + ids[last:]

    # ------------------------------------------------------------------ training loss
    def labelled(self, human: str, bot: str, images: Sequence = (), flips: Sequence[bool] | None = None):
        """(ids, labels) of one conversation: the labels are the ids after the first end of turn
        (the bot's reply and its closing end of turn), -100 before."""
        ids = self.sequence(f"{human}{END_OF_TURN}{bot}", images, flips)
        first = ids.index(self.eot)
        return ids, [-100] * (first + 1) + ids[first + 1:]

    def loss(self, conversations: Sequence[tuple[str, str, list, list[bool]]]) -> torch.Tensor:
        """Mean cross-entropy of every token after the first end of turn, over (human, bot, images,
        flips) conversations: ``{human}<reserved08706>{bot}`` as the processor makes it (with its final
        end of turn), right-padded as their fixed-length batches are."""
        pairs = [self.labelled(*conversation) for conversation in conversations]
        seqs, labels = [ids for ids, _ in pairs], [lab for _, lab in pairs]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        lab = torch.full((len(seqs), width), -100, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (s, l) in enumerate(zip(seqs, labels)):
            ids[i, :len(s)], lab[i, :len(l)], mask[i, :len(s)] = torch.tensor(s), torch.tensor(l), 1
        hidden = self.model.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                  use_cache=False).last_hidden_state
        logits = self.model.lm_head(hidden[:, :-1]).float()  # no image-token mask: their patched forward
        target = lab[:, 1:].to(self.device)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)

    # ------------------------------------------------------------------ replies
    @torch.no_grad()
    def answer(self, text: str, image, max_new_tokens: int, *, drop: Sequence[str] = (),
               rename: dict[str, str] | None = None) -> str:
        """The greedy reply to one prompt (one per call: a reply never depends on the questions asked
        beside it), in text-only mode (image tokens and both image markers suppressed), up to the
        model's end of turn or ``</s>``; the tokens in ``drop`` (the latent ones it writes first)
        removed and those in ``rename`` (the identifier) written as the concept's own token."""
        ids = torch.tensor([self.sequence(text, [image] if image is not None else [])], device=self.device)
        with quiet_transformers():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=max_new_tokens, eos_token_id=[self.eos, self.eot],
                                      pad_token_id=self.pad, suppress_tokens=[self.boi, self.eoi])
        reply = [t for t in out[0, ids.shape[1]:].tolist() if t not in (self.eos, self.eot, self.pad)]
        text = self.tokenizer.decode(reply, skip_special_tokens=False)
        return clean_reply(text, drop, rename or {})

    # ------------------------------------------------------------------ images
    def decoder(self) -> VQGANDecoder:
        """The VQGAN decoder: the checkpoint's own weights (or ``vqgan=``), loaded strictly on first use."""
        if self._decoder is None:
            decoder = VQGANDecoder(self.model.config.vq_config)
            if self._vqgan is not None:
                state, source = read_vqgan_file(self._vqgan, "--method-arg vqgan"), self._vqgan
            else:
                state, source = read_checkpoint_decoder(self._folder, "--method-arg model"), self._folder
            load_strict(decoder, state, source, "--method-arg vqgan" if self._vqgan else "--method-arg model")
            self._decoder = decoder
        if self._decoder_placed is not self._decoder:  # once: a built-in model's comes made on the CPU
            self._decoder = self._decoder.to(self.device, self.dtype).eval()
            self._decoder_placed = self._decoder
        return self._decoder

    @torch.no_grad()
    def draw(self, text: str, seeds: Sequence[int], *, top_k: int = 50, temperature: float = 1.0,
             keep_logits: int = 0):
        """One call: ``len(seeds)`` images of one prompt, row ``i`` sampled from uniforms drawn from
        ``seeds[i]``. Returns (PIL images, BPE tokens [n, T], the first ``keep_logits`` steps' logits)."""
        from transformers import DynamicCache

        n, T = len(seeds), self.tokens_per_image
        prompt = self.sequence(text) + [self.boi]  # the first sampled token is forced to begin an image
        ids = torch.tensor([prompt] * n, device=self.device)
        uniforms = torch.stack([torch.rand(T, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        uniforms = uniforms.to(self.device)
        allowed = self.image_bpe.to(self.device)
        cache = DynamicCache(config=self.model.config)  # filled in place by each call
        kv = {cache_kwarg_name(self.model.model): cache}
        hidden = self.model.model(input_ids=ids, use_cache=True, **kv).last_hidden_state[:, -1]
        tokens, kept = [], []
        for step in range(T):
            logits = self.model.lm_head(hidden).float()[:, allowed]
            if step < keep_logits:
                kept.append(logits.clone())
            choice = _sample_top_k(logits, uniforms[:, step], top_k, temperature)
            token = allowed[choice]
            tokens.append(token)
            if step + 1 < T:
                pos = torch.full((n, 1), len(prompt) + step, device=self.device, dtype=torch.long)
                hidden = self.model.model(input_ids=token[:, None], position_ids=pos, use_cache=True,
                                          **kv).last_hidden_state[:, -1]
        bpe = torch.stack(tokens, 1).cpu()
        return self.decode(bpe), bpe, kept

    def codes_of(self, bpe: torch.Tensor) -> torch.Tensor:
        """BPE ids of image tokens to VQ codebook indices."""
        where = torch.searchsorted(self.image_bpe, bpe)
        return self.image_codes[where]

    @torch.no_grad()
    def decode(self, bpe: torch.Tensor) -> list[Image.Image]:
        decoder = self.decoder()
        pixels = decode_codes(self.model.model.vqmodel, decoder, self.codes_of(bpe).to(self.device))
        return [Image.fromarray(p.permute(1, 2, 0).cpu().numpy()) for p in to_bytes(pixels)]

    def describe(self) -> dict:
        return {"model": self.model_name, "dtype": str(self.dtype).replace("torch.", ""),
                "hidden_size": self.hidden_size, "tokens_per_image": self.tokens_per_image,
                "vocabulary_rows": self.model.get_input_embeddings().weight.shape[0],
                "tokenizer_ids": len(self.tokenizer), "random_init": random_init(self.model_name, RANDOM_MODELS),
                "vqgan": str(self._vqgan) if self._vqgan else "the checkpoint's model.vqmodel.decoder"}


def clean_reply(text: str, drop: Sequence[str], rename: dict[str, str]) -> str:
    """``text`` with each reserved token in ``drop`` removed and each in ``rename`` replaced; any other
    reserved token stays (it is what the model wrote)."""
    dropped = set(drop)

    def one(match: re.Match) -> str:
        token = match.group(0)
        return "" if token in dropped else rename.get(token, token)

    return RESERVED.sub(one, text).strip()


def _sample_top_k(logits: torch.Tensor, u: torch.Tensor, top_k: int, temperature: float) -> torch.Tensor:
    """Index into ``logits`` [n, V] sampled by inverse CDF from uniforms ``u`` [n] over the ``top_k``
    most likely entries at ``temperature`` (transformers' order: temperature, then top-k)."""
    scaled = logits / max(float(temperature), 1e-5)
    k = min(int(top_k), scaled.shape[-1]) if top_k and top_k > 0 else scaled.shape[-1]
    values, index = scaled.topk(k, dim=-1)  # sorted, largest first: ties keep the lower index
    probs = torch.softmax(values, -1)
    cdf = probs.cumsum(-1)
    pick = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1).contiguous()).squeeze(-1).clamp(max=k - 1)
    return index.gather(-1, pick.unsqueeze(-1)).squeeze(-1)


def save_folder(host: ChameleonHost, folder: Path) -> None:
    """A local folder in the hub's layout, with the decoder's weights under ``model.vqmodel.decoder.``
    inside ``model.safetensors`` as Anole's checkpoint keeps them (for tests)."""
    from safetensors.torch import load_file, save_file

    host.model.save_pretrained(folder)
    host.tokenizer.save_pretrained(folder)
    host.image_processor.save_pretrained(folder)
    weights = folder / "model.safetensors"
    state = load_file(str(weights))
    state.update({f"model.vqmodel.decoder.{k}": v.detach().cpu().contiguous()
                  for k, v in host.decoder().state_dict().items()})
    save_file(state, str(weights), metadata={"format": "pt"})
