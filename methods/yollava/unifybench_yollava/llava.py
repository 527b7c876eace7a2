"""LLaVA through transformers' ``LlavaForConditionalGeneration``: prompts, images, loss and replies.

The conversation format is the one the Yo'LLaVA code builds (LLaVA's ``llava_v1`` template):
``{system} USER: <image>\\n{text} ASSISTANT:`` with the ``<image>`` placeholder expanded into the
model's image tokens, and without the image line for text-only turns. Images are padded to a
square in the image processor's mean colour before preprocessing (LLaVA-1.5's ``expand2square``,
the "pad" aspect-ratio mode the model was trained with). ``model=tiny`` builds a tiny random-init
LLaVA (CLIP vision tower + a 2-layer Llama) and a byte-level BPE tokenizer in code; ``model=random-13b``
the same at LLaVA-1.5-13B's sizes (speed and dtype paths on a GPU without the checkpoint).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from unifybench.errors import BenchError
from unifybench.images import open_rgb
from unifybench.kit.models import random_init
from unifybench.kit.rows import VocabRowParam, freeze
from unifybench.logs import quiet_transformers

DEFAULT_MODEL = "llava-hf/llava-1.5-13b-hf"
SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the human's questions.")
IMAGE = "<image>"

_TINY_CORPUS = [
    SYSTEM, "USER: Can you see <bo> in this photo? Answer with a single word or phrase. ASSISTANT: Yes",
    "Is it in the photo? No, I have analyzed the image and it is not present in the photo.",
    "What colour is the dog? It is brown and white, a small dog with a round head and large eyes.",
    "A. Dog B. Cat. The answer is A. Tell me something about it. What does it look like?",
] * 4


RANDOM_MODELS = ("tiny", "random-13b")  # built in code with random weights, never loaded
# LLaVA-1.5-13B (llava-hf/llava-1.5-13b-hf's config): Vicuna-13B and CLIP ViT-L/14 at 336 px.
LLAVA_13B = {"vision": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                            image_size=336, patch_size=14, projection_dim=768),
             "text": dict(vocab_size=32064, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                          num_attention_heads=40, num_key_value_heads=40, max_position_embeddings=4096,
                          rms_norm_eps=1e-5)}


def _tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", IMAGE, "<pad>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=360, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_TINY_CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", extra_special_tokens={"image_token": IMAGE})
    return tokenizer


def _llava(tokenizer, vision: dict, text: dict, seed: int):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    text = LlamaConfig(**text, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    config = LlavaConfig(vision_config=CLIPVisionConfig(**vision), text_config=text,
                         image_token_index=tokenizer.convert_tokens_to_ids(IMAGE), vision_feature_layer=-2,
                         vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config)


def build_tiny(seed: int = 0):
    """A tiny random-init LLaVA whose text vocabulary is padded past the tokenizer (as llava-1.5's
    32,064 rows for 32,002 ids), so the padding rows are exercised as on the real model."""
    from transformers import CLIPImageProcessor

    tokenizer = _tiny_tokenizer()
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=32, patch_size=8, projection_dim=32)
    text = dict(vocab_size=len(tokenizer) + 16, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512)
    model = _llava(tokenizer, vision, text, seed)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return model, tokenizer, processor


def build_random(seed: int = 0, device: str = "cpu", dtype: torch.dtype = torch.float16, sizes: dict | None = None):
    """LLaVA-1.5-13B's sizes (:data:`LLAVA_13B`, or ``sizes``) with random weights, made directly on
    ``device`` in ``dtype`` (13B parameters: 26 GB in fp16, never a float32 copy on the host): the
    fp16 path on a GPU without the checkpoint. The tokenizer is the tiny one (its ids fit far inside
    the 32,064 rows); the image processor is CLIP's at the tower's size."""
    from transformers import CLIPImageProcessor

    sizes = sizes or LLAVA_13B
    tokenizer = _tiny_tokenizer()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = _llava(tokenizer, sizes["vision"], sizes["text"], seed)
    finally:
        torch.set_default_dtype(previous)
    side = sizes["vision"]["image_size"]
    processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    return model, tokenizer, processor


def load_pretrained(name: str, dtype: torch.dtype):
    from transformers import AutoImageProcessor, AutoTokenizer, LlavaForConditionalGeneration

    try:
        model = LlavaForConditionalGeneration.from_pretrained(name, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(name)
        image_processor = AutoImageProcessor.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot load LLaVA checkpoint {name!r} ({str(exc).splitlines()[0][:160]}); pass "
                         f"model=tiny for a tiny random-init model or model=LOCAL_FOLDER",
                         where="--method-arg model") from exc
    return model, tokenizer, image_processor


class LlavaHost:
    """One LLaVA, shared by every concept of a process (each concept's tokens live in
    :class:`unifybench.kit.rows.NewTokens` blocks; the base model is never changed)."""

    def __init__(self, model_name: str = DEFAULT_MODEL, *, device: str = "cpu", seed: int = 0,
                 dtype: torch.dtype | None = None):
        self.device = torch.device(device)
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.model_name = model_name
        if model_name == "tiny":
            model, tokenizer, image_processor = build_tiny(seed)
        elif model_name == "random-13b":
            model, tokenizer, image_processor = build_random(seed, str(self.device), self.dtype)
        else:
            model, tokenizer, image_processor = load_pretrained(model_name, self.dtype)
        self.model = freeze(model.to(self.device, self.dtype).eval())
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        cfg = self.model.config
        self.image_token = getattr(cfg, "image_token_id", None)
        if self.image_token is None:
            self.image_token = getattr(cfg, "image_token_index")
        vision = cfg.vision_config
        side = vision.image_size // vision.patch_size
        self.n_image_tokens = side * side + (1 if cfg.vision_feature_select_strategy == "full" else 0)
        self.bos, self.eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        self.hidden_size = cfg.text_config.hidden_size
        self.initializer_range = getattr(cfg.text_config, "initializer_range", 0.02)

    # ------------------------------------------------------------------ vocabulary rows
    def vocab_row_params(self) -> list[VocabRowParam]:
        emb = self.model.get_input_embeddings().weight
        found = [VocabRowParam("embed", emb)]
        head = self.model.get_output_embeddings()
        if head is not None and head.weight is not emb:
            found.append(VocabRowParam("head_weight", head.weight))
            if getattr(head, "bias", None) is not None:
                found.append(VocabRowParam("head_bias", head.bias))
        return found

    # ------------------------------------------------------------------ images
    def pixels(self, images: Sequence, flips: Sequence[bool] | None = None) -> torch.Tensor:
        """Square-padded in the processor's mean colour, optionally mirrored, then preprocessed."""
        # int(), not round(): LLaVA's expand2square truncates the mean colour.
        mean = tuple(int(255 * m) for m in (getattr(self.image_processor, "image_mean", None) or (0.5,) * 3))
        out = []
        for i, image in enumerate(images):
            im = open_rgb(image)
            w, h = im.size
            if w != h:
                square = Image.new("RGB", (max(w, h), max(w, h)), mean)
                square.paste(im, ((max(w, h) - w) // 2, (max(w, h) - h) // 2))
                im = square
            if flips is not None and flips[i]:
                im = ImageOps.mirror(im)
            out.append(im)
        values = self.image_processor(out, return_tensors="pt")["pixel_values"]
        return values.to(self.device, self.dtype)

    # ------------------------------------------------------------------ prompts
    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_text(self, user: str, has_image: bool) -> str:
        return f"{SYSTEM} USER: {IMAGE + chr(10) if has_image else ''}{user} ASSISTANT:"

    def ids(self, text: str) -> list[int]:
        """<s> + the text, with <image> expanded into the model's image tokens (chunks tokenized
        apart, as LLaVA's ``tokenizer_image_token``)."""
        out = [self.bos]
        for k, chunk in enumerate(text.split(IMAGE)):
            if k:
                out += [self.image_token] * self.n_image_tokens
            out += self._encode(chunk)
        return out

    # ------------------------------------------------------------------ training loss
    def loss(self, examples: Sequence[tuple[str, object, str]], flips: Sequence[bool]) -> torch.Tensor:
        """Mean cross-entropy of the answer tokens of (user text, image or None, answer) examples;
        the answer follows the prompt after a space, without an end-of-sequence token, as the Yo'LLaVA
        training script builds it."""
        seqs, labels = [], []
        for user, image, answer in examples:
            prompt = self.prompt_text(user, image is not None)
            full = self.ids(prompt + " " + answer)
            n_prompt = len(self.ids(prompt))
            seqs.append(full)
            labels.append([-100] * n_prompt + full[n_prompt:])
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        lab = torch.full((len(seqs), width), -100, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (s, l) in enumerate(zip(seqs, labels)):
            ids[i, :len(s)], lab[i, :len(l)], mask[i, :len(s)] = torch.tensor(s), torch.tensor(l), 1
        with_image = [(img, f) for (_, img, _), f in zip(examples, flips) if img is not None]
        extra = {"pixel_values": self.pixels([i for i, _ in with_image], [f for _, f in with_image])} if with_image else {}
        logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False,
                            **extra).logits[:, :-1].float()
        target = lab[:, 1:].to(self.device)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)

    # ------------------------------------------------------------------ replies
    @torch.no_grad()
    def answer(self, examples: Sequence[tuple[str, object]], max_new_tokens: int,
               temperature: float = 0.0, seeds: Sequence[int] | None = None) -> list[str]:
        """Greedy replies to (user text, image or None), batched with left padding; with a temperature,
        sampled one at a time, each from its own seed."""
        prompts = [(self.prompt_text(user, image is not None), [] if image is None else [image])
                   for user, image in examples]
        return self.reply(prompts, max_new_tokens, temperature, seeds)

    @torch.no_grad()
    def reply(self, prompts: Sequence[tuple[str, Sequence]], max_new_tokens: int, temperature: float = 0.0,
              seeds: Sequence[int] | None = None) -> list[str]:
        """Replies to whole prompts (the template already applied; one ``<image>`` per image, the
        images in the order their placeholders appear), greedy and batched, or sampled one at a time."""
        if temperature > 0:
            out = []
            for prompt, seed in zip(prompts, seeds or [0] * len(prompts)):
                torch.manual_seed(int(seed))
                out += self._generate([prompt], max_new_tokens, {"do_sample": True, "temperature": temperature})
            return out
        return self._generate(prompts, max_new_tokens, {"do_sample": False})

    def _generate(self, prompts, max_new_tokens: int, sampling: dict) -> list[str]:
        seqs = [self.ids(text) for text, _ in prompts]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):], mask[i, width - len(s):] = torch.tensor(s), 1
        images = [image for _, shown in prompts for image in shown]
        extra = {"pixel_values": self.pixels(images)} if images else {}
        with quiet_transformers():
            out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **extra,
                                      max_new_tokens=max_new_tokens, pad_token_id=self.pad, eos_token_id=self.eos,
                                      **sampling)
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in out[:, width:]]

    def describe(self) -> dict:
        return {"model": self.model_name, "dtype": str(self.dtype).replace("torch.", ""),
                "hidden_size": self.hidden_size, "image_tokens": self.n_image_tokens,
                "vocabulary_rows": self.model.get_input_embeddings().weight.shape[0],
                "tokenizer_ids": len(self.tokenizer), "random_init": random_init(self.model_name, RANDOM_MODELS)}


def save_folder(host: LlavaHost, folder: Path) -> None:
    """A local folder in the hub's layout (model + tokenizer + image processor), for tests."""
    host.model.save_pretrained(folder)
    host.tokenizer.save_pretrained(folder)
    host.image_processor.save_pretrained(folder)
