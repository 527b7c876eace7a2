"""Yo'Chameleon's photo preprocessing, reply cleaning and bf16 post-processing checked against the
authors' own functions (``thaoshibe/YoChameleon``, transcribed here in our words), on a tiny
random-init Chameleon built in code."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from unifybench.methods import AnswerRequest
from unifybench.testing.benches import make_unifybench

from unifybench_yochameleon.chameleon import END_OF_TURN, ChameleonHost
from unifybench_yochameleon.method import YoChameleon
from unifybench_yochameleon.vqgan import to_bytes


@pytest.fixture(scope="module")
def host():
    return YoChameleon({"model": "tiny"}).host


def _noise_photo(path, size, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    channels = 4 if mode == "RGBA" else 3
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8), mode).save(path)
    return path


# ------------------------------------------------------------------ 1. photo preprocessing


def _their_pixels(path, shortest: int, crop: int) -> torch.Tensor:
    """Their dataset's ``Image.open(path).convert("RGB")`` (alpha dropped), then their
    ChameleonImageProcessor.preprocess (their transformers 4.47): shortest edge to ``shortest``
    (get_resize_output_image_size: the long side int(size * long / short)) by PIL LANCZOS, centre crop
    with top (h - crop) // 2 and left (w - crop) // 2, rescale in float64 by 0.0078 then float32,
    normalize (x - 1) / 1 in float32, channels first."""
    image = Image.open(path).convert("RGB")
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = shortest, int(shortest * long / short)
    new_height, new_width = (new_long, new_short) if width <= height else (new_short, new_long)
    array = np.array(image.resize((new_width, new_height), resample=Image.LANCZOS, reducing_gap=None))
    top, left = (array.shape[0] - crop) // 2, (array.shape[1] - crop) // 2
    array = array[top:top + crop, left:left + crop]
    x = (array.astype(np.float64) * 0.0078).astype(np.float32)
    mean, std = np.array([1.0] * 3, dtype=np.float32), np.array([1.0] * 3, dtype=np.float32)
    x = (x - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def test_photos_are_preprocessed_to_the_authors_values_exactly(host, tmp_path):
    from transformers import ChameleonImageProcessor

    photos = [_noise_photo(tmp_path / f"{i}.png", size, seed=i)
              for i, size in enumerate([(45, 29), (30, 61), (16, 16), (200, 97)])]
    photos.append(_noise_photo(tmp_path / "alpha.png", (37, 52), "RGBA", seed=9))  # alpha dropped, as theirs
    ours = host.pixels(photos)
    theirs = torch.stack([_their_pixels(p, 16, 16) for p in photos])
    assert ours.dtype == torch.float32 and torch.equal(ours, theirs)
    # The torchvision-backed processor AutoImageProcessor gives in transformers 5 does not: the check can fail.
    torchvision_backed = ChameleonImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    other = torchvision_backed([Image.open(p).convert("RGB") for p in photos], return_tensors="pt")["pixel_values"]
    assert not torch.equal(other, theirs)


# ------------------------------------------------------------------ 2. reply cleaning


def _their_trim(long_answer: str) -> str:
    """evaluation/recognition.py's chameleon_trim_answer: after the first end of turn, up to the next
    (``.`` stops at a newline)."""
    short_answer = re.findall(r"<reserved08706>(.*)", long_answer)[0]
    return short_answer.split("<reserved08706>")[0]


def test_replies_keep_the_concept_named_and_drop_only_the_latent_tokens(tmp_path, monkeypatch):
    from unifybench.data import load_benchmark

    bench = load_benchmark(make_unifybench(tmp_path / "bench"))
    concept = bench.concept("bo")
    method = YoChameleon({"model": "tiny"})
    host = method.host
    und = method.understanding_prompt()
    bodies = {"rec": f"{und}Yes, <reserved16200> is in this photo.",
              "vqa": f"{und}No, this photo does not include <reserved16200>.<reserved16260>",
              "text_only": f"{und}<reserved16200> is a shiba inu with orange fur."}
    asked = []

    def fake_generate(input_ids, max_new_tokens, **kwargs):
        task = next(t for t in bodies if len(asked) == list(bodies).index(t))
        asked.append((task, max_new_tokens))
        reply = host.tokenizer(bodies[task] + END_OF_TURN, add_special_tokens=False)["input_ids"]
        return torch.cat([input_ids, torch.tensor([reply], device=input_ids.device)], 1)

    monkeypatch.setattr(host.model, "generate", fake_generate)
    image = concept.train_images[0]
    with method.activate(concept, {"rows": method._init_rows(concept)}):
        replies = method.answer(concept, None, [AnswerRequest("bo", "rec", 0, "Is <bo> here?", image),
                                                AnswerRequest("bo", "vqa", 1, "Is <bo> here?", image),
                                                AnswerRequest("bo", "text_only", 2, "Who is <bo>?", None)])
    for task, reply in zip(bodies, replies):
        # Their reply: the trimmed decoded text, which keeps every token; ours writes the identifier as
        # the concept's token and removes the latent tokens, nothing else (<reserved16260> stays);
        # generate stops at the end of turn.
        theirs = _their_trim(f"<s>prompt{END_OF_TURN}{bodies[task]}{END_OF_TURN}garbage")
        for token in method.tokens()[1:]:
            theirs = theirs.replace(token, "")
        assert reply == theirs.replace("<reserved16200>", concept.token).strip(), task
    assert replies[0] == "Yes, <bo> is in this photo."
    assert replies[1] == "No, this photo does not include <bo>.<reserved16260>"
    # Their eval_recognition decodes at most 30 tokens; open questions 200 (their describe prompt, test.py).
    assert asked == [("rec", 30), ("vqa", 200), ("text_only", 200)]


# ------------------------------------------------------------------ 3. bf16 post-processing


def _their_postprocess(pixel_values: torch.Tensor) -> torch.Tensor:
    """Their ChameleonImageProcessor.postprocess: unnormalize with mean and std tensors in the pixels'
    dtype (pixel_values * std + mean), ``pixel_values *= 1.0 / rescale_factor`` (0.0078), clip to
    0..255, ``.to(torch.uint8)``."""
    mean = torch.tensor([1.0, 1.0, 1.0], dtype=pixel_values.dtype, device=pixel_values.device)
    std = torch.tensor([1.0, 1.0, 1.0], dtype=pixel_values.dtype, device=pixel_values.device)
    pixel_values = (pixel_values * std.view(1, -1, 1, 1)) + mean.view(1, -1, 1, 1)
    pixel_values *= 1.0 / 0.0078
    return torch.clip(pixel_values, 0, 255).to(dtype=torch.uint8)


def test_bytes_follow_their_postprocess_in_the_decoders_dtype():
    torch.manual_seed(0)
    x = (torch.rand(2, 3, 32, 32) * 2.4 - 1.2)
    for dtype in (torch.float32, torch.bfloat16):
        assert torch.equal(to_bytes(x.to(dtype)), _their_postprocess(x.to(dtype).clone())), dtype
    # In bf16, converting to float32 first (what this adapter did) changes bytes: the check can fail.
    assert not torch.equal(_their_postprocess(x.to(torch.bfloat16).float()), to_bytes(x.to(torch.bfloat16)))


def test_a_bf16_decoder_gives_their_bytes(host):
    bf16 = ChameleonHost("tiny", dtype=torch.bfloat16)
    tokens = host.image_bpe[torch.randint(0, len(host.image_bpe), (2, host.tokens_per_image),
                                          generator=torch.Generator().manual_seed(1))]
    from unifybench_yochameleon.vqgan import decode_codes

    pixels = decode_codes(bf16.model.model.vqmodel, bf16.decoder(), bf16.codes_of(tokens))
    assert pixels.dtype == torch.bfloat16
    ours = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in bf16.decode(tokens)])
    assert torch.equal(ours, _their_postprocess(pixels.clone()))


# ------------------------------------------------------------------ self_prompting=false


def test_one_token_set_asks_and_draws_with_their_non_self_prompting_prompts(tmp_path):
    from unifybench.data import load_benchmark
    from unifybench.methods import GenRequest

    concept = load_benchmark(make_unifybench(tmp_path / "bench")).concept("bo")
    method = YoChameleon({"model": "tiny", "self_prompting": "false", "max_new_tokens": "2", "rec_max_new_tokens": "2"})
    host = method.host
    asked, drawn = [], []
    real_answer, real_draw = host.answer, host.draw
    host.answer = lambda text, image, n, **kw: asked.append(text) or real_answer(text, image, n, **kw)
    host.draw = lambda text, seeds, **kw: drawn.append(text) or real_draw(text, seeds, **kw)
    try:
        with method.activate(concept, {"rows": method._init_rows(concept)}):
            method.answer(concept, None, [AnswerRequest("bo", "rec", 0, "Is <bo> here?", concept.train_images[0])])
            method.generate(concept, None, [GenRequest("bo", "gen", 0, "A photo of <bo>.", 1, 0)])
    finally:
        host.answer, host.draw = real_answer, real_draw
    # YoChameleonTrainer without self-prompting: one set of prefix_token latent tokens.
    prefix_tokens = [f"<reserved{16201 + i}>" for i in range(16)]
    personalized_tokens = ["<reserved16200>"] + prefix_tokens
    sks_prompt = f"{personalized_tokens[0]} is {''.join(personalized_tokens[1:])}."
    # RecognitionData.__getitem__ and eval_clip_similarity's non-self-prompting prompt, each then given
    # to their processor, which appends its own separator (host.sequence does).
    their_question = f"{sks_prompt} Can you see <reserved16200> in this photo?<image><reserved08706>"
    their_drawing = sks_prompt + " A photo of <reserved16200>.<reserved08706>"
    assert asked == [their_question] and drawn == [their_drawing]
    assert host.sequence(their_drawing)[-2:] == [host.eot, host.eot]
