"""The ``mean-reference`` protocol against a transcription of Yo'Chameleon's
``evaluation/clip_image_similarity.py`` (``CLIPEvaluator``, ``thaoshibe/YoChameleon``), on a tiny
random-init CLIP (no downloads) and images made here."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from unifybench.scoring import fidelity
from unifybench.scoring.encoders import load_backbones
from unifybench.scoring.fidelity import FidelityScorer

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]  # openai/clip-vit-large-patch14's preprocessor_config.json
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@pytest.fixture(scope="module")
def tiny():
    return load_backbones("tiny", seed=0)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Noise and smooth pictures; sizes whose centre-crop margin is 3 mod 4 (231 -> offset 3, not 4)."""
    folder = tmp_path_factory.mktemp("mean-reference")
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate([(231, 224), (224, 235), (300, 240), (256, 256), (351, 230), (240, 319)]):
        if i % 2:
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        else:
            yy, xx = np.mgrid[0:h, 0:w]
            pixels = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy + 40 * i) % 256)], -1).astype(np.uint8)
        paths.append(folder / f"{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths[:3], paths[3:]


class TheirCLIPEvaluator:
    """Their CLIPEvaluator (model openai/clip-vit-large-patch14: CLIPModel + CLIPImageProcessor of
    transformers 4.47), with ``get_image_features`` given as ``features`` (open_clip's ``encode_image``
    is that: the projected, unnormalised image embedding)."""

    def __init__(self, features):
        self.features = features

    def load_image(self, image_path):
        return Image.open(image_path)

    def preprocess(self, image):
        """CLIPImageProcessor.preprocess: convert_rgb, resize shortest edge 224 (long side int(224 *
        long / short)) by PIL bicubic, center_crop top (h - 224) // 2, rescale float64 * 1/255 then
        float32, normalize (x - mean) / std in float32, channels first."""
        image = image.convert("RGB")
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = 224, int(224 * long / short)
        new_height, new_width = (new_long, new_short) if width <= height else (new_short, new_long)
        array = np.array(image.resize((new_width, new_height), resample=Image.BICUBIC, reducing_gap=None))
        top, left = (array.shape[0] - 224) // 2, (array.shape[1] - 224) // 2
        array = array[top:top + 224, left:left + 224]
        x = (array.astype(np.float64) * (1 / 255)).astype(np.float32)
        x = (x - np.array(CLIP_MEAN, dtype=np.float32)) / np.array(CLIP_STD, dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]

    @torch.no_grad()
    def get_image_features(self, image_ft):
        return self.features(image_ft)

    def compute_similarity(self, real_images, fake_images, average=True):
        if isinstance(real_images[0], str):
            real_images = [self.load_image(image_path) for image_path in real_images]
            fake_images = [self.load_image(image_path) for image_path in fake_images]
        real_images_ft = [self.preprocess(image) for image in real_images]
        real_images_ft = [self.get_image_features(image_ft) for image_ft in real_images_ft]
        if average:
            real_images_ft = torch.concat(real_images_ft, dim=0).mean(dim=0, keepdim=True)
        clip_scores = []
        for fake_image in fake_images:
            fake_images_ft = self.preprocess(fake_image)
            fake_images_ft = self.get_image_features(fake_images_ft)
            clip_scores.append(torch.nn.functional.cosine_similarity(real_images_ft, fake_images_ft).item())
        return clip_scores


def test_clip_i_is_their_clip_evaluators_score(tiny, images):
    refs, gens = images
    theirs = TheirCLIPEvaluator(tiny.clip_model.encode_image)
    want = theirs.compute_similarity([str(p) for p in refs], [str(p) for p in gens])
    got = FidelityScorer(tiny, "mean-reference", cache_dir=None).score(refs, gens)["clip_i"]
    assert got == pytest.approx(want, abs=1e-6)
    # Their preprocessing, value for value (the crop offset of a 231 px side included).
    for path in refs + gens:
        ours = fidelity.clip_yochameleon(Image.open(path).convert("RGB"))
        assert torch.equal(ours, theirs.preprocess(Image.open(path))[0]), path.name
    # Averaging unit vectors instead (this protocol's old rule) gives other numbers: the check can fail.
    with torch.no_grad():
        raw = [tiny.clip_model.encode_image(theirs.preprocess(Image.open(p)))[0] for p in refs + gens]
    unit_mean = F.normalize(torch.stack([F.normalize(r, dim=0) for r in raw[:3]]).mean(0), dim=0)
    old = [float(F.normalize(g, dim=0) @ unit_mean) for g in raw[3:]]
    assert max(abs(a - b) for a, b in zip(old, want)) > 1e-5


def test_raw_reference_features_have_their_own_cache_entries(tiny, images, tmp_path):
    refs, _ = images
    cache = tmp_path / "cache"
    raw = FidelityScorer(tiny, "mean-reference", cache_dir=cache).reference_embeddings(refs)
    assert not torch.allclose(raw["clip"].norm(dim=-1), torch.ones(len(refs)))  # raw, not unit vectors
    assert torch.allclose(raw["dino"].norm(dim=-1), torch.ones(len(refs)), atol=1e-5)  # DINO: as dreambooth
    again = FidelityScorer(tiny, "mean-reference", cache_dir=cache)
    assert torch.equal(again.reference_embeddings(refs)["clip"], raw["clip"]) and again.cache.hits == 2


def test_their_encoder_vit_l14_is_the_protocols_default(monkeypatch, tiny, images, tmp_path):
    from unifybench import cli
    from unifybench.scoring import encoders

    refs, gens = images
    asked = []
    monkeypatch.setattr(encoders, "load_backbones", lambda kind, **kw: asked.append(kw["clip_name"]) or tiny)
    (tmp_path / "refs").mkdir(), (tmp_path / "gens").mkdir()
    for p in refs:
        (tmp_path / "refs" / p.name).write_bytes(p.read_bytes())
    for p in gens:
        (tmp_path / "gens" / p.name).write_bytes(p.read_bytes())
    for protocol in ("mean-reference", "dreambooth"):
        assert cli.main(["score-images", "--refs", str(tmp_path / "refs"), "--gens", str(tmp_path / "gens"),
                         "--backbones", "tiny", "--protocol", protocol, "--json"]) == 0
    assert cli.main(["score-images", "--refs", str(tmp_path / "refs"), "--gens", str(tmp_path / "gens"),
                     "--backbones", "tiny", "--protocol", "mean-reference", "--clip", "ViT-B-32", "--json"]) == 0
    assert asked == ["ViT-L-14", "ViT-B-32", "ViT-B-32"]
