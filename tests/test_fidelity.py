import os

os.environ["HF_HUB_OFFLINE"] = "1"

import shutil
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from unifybench.errors import BenchError
from unifybench.scoring import encoders, fidelity
from unifybench.scoring.encoders import load_backbones
from unifybench.scoring.fidelity import FidelityScorer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dreambench"
if not DATA.is_dir():
    DATA = Path("/work/shared/data/dreambench")
pytestmark = pytest.mark.skipif(not (DATA / "dog").is_dir(), reason="DreamBench photos not found")

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="module")
def tiny():
    return load_backbones("tiny", seed=0)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    refs = [DATA / "dog" / f"0{i}.jpg" for i in range(3)]
    tmp = tmp_path_factory.mktemp("gens")
    wide = tmp / "wide.png"  # a non-square image, so centre-cropping matters
    Image.open(DATA / "cat" / "02.jpg").convert("RGB").crop((0, 64, 512, 448)).resize((400, 300)).save(wide)
    gens = [DATA / "cat" / "00.jpg", DATA / "cat" / "01.jpg", DATA / "dog" / "03.jpg", wide]
    return refs, gens


# ------------------------------------------------------------------ independent computation

def plain_clip(model, path):
    tf = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224),
                    T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])
    x = tf(Image.open(path).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        return model.encode_image(x)[0]


def plain_dino(model, path):
    tf = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224),
                    T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    x = tf(Image.open(path).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        return model(pixel_values=x).last_hidden_state[0, 0]


def plain_scores(backbones, refs, gens, texts, pairing="all"):
    ref_c = [plain_clip(backbones.clip_model, p) for p in refs]
    ref_d = [plain_dino(backbones.dino_model, p) for p in refs]
    out = {"clip_i": [], "dino": [], "clip_t": []}
    for i, g in enumerate(gens):
        gc, gd = plain_clip(backbones.clip_model, g), plain_dino(backbones.dino_model, g)
        if pairing == "all":
            out["clip_i"].append(sum(F.cosine_similarity(gc, r, dim=0).item() for r in ref_c) / len(refs))
            out["dino"].append(sum(F.cosine_similarity(gd, r, dim=0).item() for r in ref_d) / len(refs))
        else:
            mc = torch.stack([r / r.norm() for r in ref_c]).mean(0)
            md = torch.stack([r / r.norm() for r in ref_d]).mean(0)
            out["clip_i"].append(F.cosine_similarity(gc, mc, dim=0).item())
            out["dino"].append(F.cosine_similarity(gd, md, dim=0).item())
        tokens = backbones.tokenizer([texts[i]])
        with torch.no_grad():
            t = backbones.clip_model.encode_text(tokens)[0]
        out["clip_t"].append(F.cosine_similarity(gc, t, dim=0).item())
    return out


def assert_close(a, b, tol=1e-5):
    assert set(a) == set(b)
    for key in a:
        assert len(a[key]) == len(b[key])
        for x, y in zip(a[key], b[key]):
            assert abs(x - y) <= tol, (key, a[key], b[key])


TEXTS = ["a cat on a sofa", "a cat", "a dog in the grass", "a cat"]


def test_dreambooth_matches_plain_loop(tiny, images):
    refs, gens = images
    got = FidelityScorer(tiny, "dreambooth", batch_size=7).score(refs, gens, TEXTS)
    assert_close(got, plain_scores(tiny, refs, gens, TEXTS))


def test_batch_size_does_not_change_scores(tiny, images):
    refs, gens = images
    results = [FidelityScorer(tiny, batch_size=b).score(refs, gens, TEXTS) for b in (1, 7, 64)]
    assert_close(results[0], results[1])
    assert_close(results[0], results[2])


def test_mean_reference_pairing(tiny, images):
    refs, gens = images
    mean = FidelityScorer(tiny, "mean-reference").score(refs, gens, TEXTS)
    assert_close(mean, plain_scores(tiny, refs, gens, TEXTS, pairing="mean"))
    every = FidelityScorer(tiny, "dreambooth").score(refs, gens, TEXTS)
    assert any(abs(x - y) > 1e-4 for x, y in zip(mean["clip_i"], every["clip_i"]))
    assert mean["clip_t"] == pytest.approx(every["clip_t"], abs=1e-6)


def test_reference_protocol_differs(tiny, images):
    refs, gens = images
    ref = FidelityScorer(tiny, "reference").score(refs, gens)
    db = FidelityScorer(tiny, "dreambooth").score(refs, gens)
    assert "clip_t" not in ref
    assert any(abs(x - y) > 1e-4 for x, y in zip(ref["clip_i"], db["clip_i"]))
    assert ref["dino"] == pytest.approx(db["dino"], abs=1e-6)  # DINO is not in the reference code
    x = fidelity.clip_reference(Image.open(gens[0]).convert("RGB"))
    assert x.shape == (3, 224, 224) and x.min() > 0.45 and x.max() < 1.05  # the [0.5, 1] bug


def test_duplicates_encoded_once(tiny, images, tmp_path, monkeypatch):
    refs, _ = images
    copy = tmp_path / "copy.jpg"
    shutil.copyfile(refs[0], copy)
    calls = []
    real = fidelity.load_image_inputs
    monkeypatch.setattr(fidelity, "load_image_inputs", lambda p, proto: calls.append(p) or real(p, proto))
    scorer = FidelityScorer(tiny, batch_size=2)
    emb = scorer.embed_images([refs[0], copy, refs[1], refs[0]])
    assert len(calls) == 2
    assert emb["clip"].shape == (4, 32) and emb["dino"].shape == (4, 32)
    assert torch.equal(emb["clip"][0], emb["clip"][1]) and torch.equal(emb["dino"][0], emb["dino"][3])
    assert torch.allclose(emb["clip"].norm(dim=-1), torch.ones(4), atol=1e-5)
    scorer.embed_images([refs[1], copy])
    assert len(calls) == 2


def test_corrupt_and_missing_images(tiny, images, tmp_path):
    refs, gens = images
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG this is not an image" * 10)
    scorer = FidelityScorer(tiny)
    with pytest.raises(BenchError) as err:
        scorer.score(refs, [gens[0], bad])
    assert err.value.path == str(bad) and "broken.png" in str(err.value)
    with pytest.raises(BenchError) as err:
        scorer.score(refs, [tmp_path / "missing.png"])
    assert "missing.png" in str(err.value)
    with pytest.raises(BenchError):
        scorer.score(refs, gens, ["only one text"])
    with pytest.raises(BenchError):
        FidelityScorer(tiny, protocol="clipscore")


def test_describe(tiny):
    d = FidelityScorer(tiny, "reference", batch_size=5).describe()
    assert d["protocol"] == "reference" and d["batch_size"] == 5 and d["dtype"] == "float32"
    assert "Normalize(mean=-1, std=2)" in d["clip_preprocessing"]
    assert "tiny" in d["backbones"]["clip"] and "random init" in d["backbones"]["dino"]


def test_random_backbones_deterministic():
    a = load_backbones("random", seed=3)
    b = load_backbones("random", seed=3)
    assert "random init, seed 3" in a.describe()["clip"] and "random init" in a.describe()["dino"]
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    ca, cb = a.clip_image(x), b.clip_image(x)
    assert ca.shape == (1, 512) and torch.equal(ca, cb)
    da, db = a.dino_image(x), b.dino_image(x)
    assert da.shape == (1, 384) and torch.equal(da, db)
    assert torch.equal(a.clip_text(["a dog"]), b.clip_text(["a dog"]))


def test_default_backbones_offline_fail_fast():
    start = time.monotonic()
    with pytest.raises(BenchError) as err:
        load_backbones("default")
    assert time.monotonic() - start < 10
    msg = str(err.value)
    assert "ViT-B-32" in msg and "HF_HOME" in msg and "--backbones random" in msg


def test_default_dino_offline_fail_fast(monkeypatch):
    monkeypatch.setattr(encoders, "_load_clip", lambda kind, name, seed: (torch.nn.Identity(), None, "stub"))
    start = time.monotonic()
    with pytest.raises(BenchError) as err:
        load_backbones("default")
    assert time.monotonic() - start < 10
    assert "facebook/dino-vits16" in str(err.value) and "--backbones random" in str(err.value)


def test_unknown_kind():
    with pytest.raises(BenchError):
        load_backbones("huge")
