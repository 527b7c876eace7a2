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

from _data_fixtures import DREAMBENCH as DATA  # noqa: E402 - photos held in the repository

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIFYBENCH_CACHE", str(tmp_path / "default-cache"))


@pytest.fixture(scope="module")
def tiny():
    return load_backbones("tiny", seed=0)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    refs = [DATA / "dog" / f"0{i}.jpg" for i in range(3)]
    tmp = tmp_path_factory.mktemp("gens")
    wide = tmp / "wide.png"  # a non-square image, so centre-cropping matters
    Image.open(DATA / "cat" / "02.jpg").convert("RGB").crop((0, 32, 256, 224)).resize((400, 300)).save(wide)
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
        else:  # mean-reference: CLIP to the mean of the raw reference features; DINO as above
            out["clip_i"].append(F.cosine_similarity(gc, torch.stack(ref_c).mean(0), dim=0).item())
            out["dino"].append(sum(F.cosine_similarity(gd, r, dim=0).item() for r in ref_d) / len(refs))
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
    got = FidelityScorer(tiny, "dreambooth", batch_size=7, cache_dir=None).score(refs, gens, TEXTS)
    assert_close(got, plain_scores(tiny, refs, gens, TEXTS))


def test_batch_size_does_not_change_scores(tiny, images):
    refs, gens = images
    # fp32 on the CPU: the batch size changes no score by more than 1e-5.
    results = [FidelityScorer(tiny, batch_size=b, cache_dir=None).score(refs, gens, TEXTS) for b in (1, 3, 7, 64)]
    for other in results[1:]:
        assert_close(results[0], other, tol=1e-5)


def test_mean_reference_pairing(tiny, images):
    refs, gens = images
    mean = FidelityScorer(tiny, "mean-reference").score(refs, gens, TEXTS)
    assert_close(mean, plain_scores(tiny, refs, gens, TEXTS, pairing="mean"))
    every = FidelityScorer(tiny, "dreambooth").score(refs, gens, TEXTS)
    assert any(abs(x - y) > 1e-4 for x, y in zip(mean["clip_i"], every["clip_i"]))
    assert mean["clip_t"] == pytest.approx(every["clip_t"], abs=1e-6)
    assert mean["dino"] == pytest.approx(every["dino"], abs=1e-6)  # DINO is not in their code


def test_reference_protocol_differs(tiny, images):
    refs, gens = images
    ref = FidelityScorer(tiny, "reference").score(refs, gens)
    db = FidelityScorer(tiny, "dreambooth").score(refs, gens)
    assert "clip_t" not in ref
    assert any(abs(x - y) > 1e-4 for x, y in zip(ref["clip_i"], db["clip_i"]))
    assert ref["dino"] == pytest.approx(db["dino"], abs=1e-6)  # DINO is not in the reference code
    x = fidelity.clip_reference(Image.open(gens[0]).convert("RGB"))
    # The [0.5, 1] bug: every pixel lies above CLIP's mean, so no CLIP-normalised value is negative.
    assert x.shape == (3, 224, 224) and x.min() > 0.0


def test_duplicate_paths_encoded_once(tiny, images, tmp_path):
    refs, _ = images
    copy = tmp_path / "copy.jpg"
    shutil.copyfile(refs[0], copy)
    scorer = FidelityScorer(tiny, batch_size=2, cache_dir=None)
    seen = []
    real = scorer.stream
    scorer.stream = lambda paths, *rest: (seen.extend(paths), real(paths, *rest))[1]
    emb = scorer.embed_images([refs[0], copy, refs[1], refs[0]])
    assert seen == [Path(refs[0]), copy, Path(refs[1])]  # the repeated path is decoded once
    assert emb["clip"].shape == (4, 32) and emb["dino"].shape == (4, 32)
    assert torch.equal(emb["clip"][0], emb["clip"][3]) and torch.equal(emb["dino"][0], emb["dino"][3])
    assert torch.allclose(emb["clip"][0], emb["clip"][1], atol=1e-6)  # same bytes, other path
    assert torch.allclose(emb["clip"].norm(dim=-1), torch.ones(4), atol=1e-5)


def test_reference_embeddings_cached_in_memory_and_on_disk(tiny, images, tmp_path):
    refs, gens = images
    cache = tmp_path / "cache"
    first = FidelityScorer(tiny, cache_dir=cache)
    calls = []
    real = first.embed_images
    first.embed_images = lambda paths, *rest: calls.append(list(paths)) or real(paths, *rest)
    a = first.score(refs, gens[:2])
    first.score(refs, gens[2:])  # same concept, other prompts: references not encoded again
    assert len(calls) == 1 and len(list(cache.rglob("*.pt"))) == 2  # one entry per encoder
    # A new scorer (a new process, as far as the cache knows) reads them from disk.
    second = FidelityScorer(tiny, cache_dir=cache)
    second.embed_images = lambda paths, *rest: pytest.fail("references recomputed despite the disk cache")
    got = second.reference_embeddings(refs)
    want = FidelityScorer(tiny, cache_dir=None).embed_images(refs)
    assert torch.equal(got["clip"], want["clip"]) and torch.equal(got["dino"], want["dino"])
    assert second.cache.hits == 2
    b = FidelityScorer(tiny, cache_dir=cache).score(refs, gens[:2])
    assert a == b
    # The key covers the preprocessing, the weights and the photos' content.
    FidelityScorer(tiny, "reference", cache_dir=cache).reference_embeddings(refs)
    assert len(list(cache.rglob("*.pt"))) == 3  # reference protocol: new CLIP entry, same DINO input
    FidelityScorer(load_backbones("tiny", seed=1), cache_dir=cache).reference_embeddings(refs)
    assert len(list(cache.rglob("*.pt"))) == 5
    changed = tmp_path / "ref.jpg"
    shutil.copyfile(refs[0], changed)
    third = FidelityScorer(tiny, cache_dir=cache)
    third.reference_embeddings([changed, refs[1], refs[2]])
    assert third.cache.hits == 2  # same bytes under another name: found
    Image.open(refs[0]).convert("RGB").rotate(90).save(changed)
    third.reference_embeddings([changed, refs[1], refs[2]])
    assert third.cache.misses == 2 and len(list(cache.rglob("*.pt"))) == 7


def test_corrupt_cache_entry_is_recomputed(tiny, images, tmp_path):
    refs, gens = images
    cache = tmp_path / "cache"
    want = FidelityScorer(tiny, cache_dir=cache).score(refs, gens)
    for f in cache.rglob("*.pt"):
        f.write_bytes(b"torn")
    assert FidelityScorer(tiny, cache_dir=cache).score(refs, gens) == want


def test_worker_processes_give_the_same_scores(tiny, images):
    refs, gens = images
    many = list(gens) * 3
    texts = TEXTS * 3
    inline = FidelityScorer(tiny, batch_size=5, num_workers=0, cache_dir=None).score(refs, many, texts)
    workers = FidelityScorer(tiny, batch_size=5, num_workers=2, cache_dir=None).score(refs, many, texts)
    assert inline == workers
    assert_close(inline, {k: v * 3 for k, v in plain_scores(tiny, refs, gens, TEXTS).items()})


def test_score_many_matches_separate_concepts(tiny, images):
    refs, gens = images
    scorer = FidelityScorer(tiny, batch_size=3, cache_dir=None)
    groups = [(refs, gens[:3], TEXTS[:3]), (refs[:1], gens[1:], None), (refs[1:], [], [])]
    together = scorer.score_many(groups)
    apart = [FidelityScorer(tiny, batch_size=64, cache_dir=None).score(r, g, t) for r, g, t in groups]
    for x, y in zip(together, apart):
        assert_close(x, y)
    assert "clip_t" not in together[1] and together[2] == {"clip_i": [], "dino": [], "clip_t": []}


def test_gpu_decode_is_guarded(tiny):
    from unifybench.scoring.pipeline import gpu_jpeg_available

    assert not gpu_jpeg_available("cpu")
    with pytest.raises(BenchError):
        list(fidelity.stream_inputs([DATA / "dog" / "00.jpg"], {}, batch_size=1, device="cpu", gpu_decode=True))


def test_corrupt_and_missing_images(tiny, images, tmp_path):
    refs, gens = images
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG this is not an image" * 10)
    scorer = FidelityScorer(tiny, cache_dir=None)
    with pytest.raises(BenchError) as err:
        scorer.score(refs, [gens[0], bad])
    assert err.value.path == str(bad) and "broken.png" in str(err.value)
    # The same from a worker process, in the middle of a long job.
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(Path(gens[0]).read_bytes()[:2000])
    with pytest.raises(BenchError) as err:
        FidelityScorer(tiny, batch_size=4, num_workers=2, cache_dir=None).score(
            refs, list(gens) * 2 + [truncated] + list(gens))
    assert err.value.path == str(truncated)
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
    monkeypatch.setattr(encoders, "_load_clip", lambda kind, name, seed, local_only: (torch.nn.Identity(), None, "stub"))
    start = time.monotonic()
    with pytest.raises(BenchError) as err:
        load_backbones("default")
    assert time.monotonic() - start < 10
    assert "facebook/dino-vits16" in str(err.value) and "--backbones random" in str(err.value)


def test_unknown_kind():
    with pytest.raises(BenchError):
        load_backbones("huge")


def test_jpeg_byte_path_decodes_like_pil(tiny, images, monkeypatch):
    """The nvJPEG route (bytes read in workers, batch decoded by torchvision.io.decode_jpeg, the same
    transforms on tensors), exercised on the CPU: mixed JPEG/PNG batches keep their order and land
    within resampling differences of the PIL route."""
    from unifybench.scoring import pipeline

    refs, gens = images
    monkeypatch.setattr(pipeline, "gpu_jpeg_available", lambda device: True)
    decoded = []
    real = pipeline._decode_jpegs_on_gpu
    monkeypatch.setattr(pipeline, "_decode_jpegs_on_gpu",
                        lambda datas, paths, device: decoded.extend(paths) or real(datas, paths, device))
    mixed = list(gens) * 2  # three JPEGs and one PNG, twice
    byte_path = FidelityScorer(tiny, batch_size=3, num_workers=2, gpu_decode=True, cache_dir=None)
    got = byte_path.score(refs, mixed, TEXTS * 2)
    assert "nvJPEG" in byte_path.describe()["decode"]
    assert sorted(map(str, decoded)) == sorted(str(p) for p in list(refs) + mixed if str(p).endswith(".jpg"))
    want = FidelityScorer(tiny, batch_size=3, cache_dir=None).score(refs, mixed, TEXTS * 2)
    assert_close(got, want, tol=2e-2)
    assert got["clip_i"][3] == pytest.approx(want["clip_i"][3], abs=5e-3)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torchvision 0.29's decoders, used on purpose
@pytest.mark.parametrize("protocol", sorted(fidelity.PROTOCOLS))
def test_gpu_path_transforms_a_stack_as_it_does_each_image(protocol, tmp_path):
    """The nvJPEG route preprocesses each group of equally sized decoded images with one call per
    transform: the stack must come out exactly as the images one by one, and in their order."""
    from torchvision.io import decode_image as tv_decode

    from unifybench.scoring.pipeline import transform_same_sized

    wide = tmp_path / "wide.png"
    Image.open(DATA / "cat" / "02.jpg").convert("RGB").resize((400, 300)).save(wide)
    paths = [DATA / "dog" / "00.jpg", wide, DATA / "cat" / "01.jpg", wide, DATA / "dog" / "01.jpg"]
    decoded = [tv_decode(str(p)) for p in paths]
    assert len({tuple(d.shape) for d in decoded}) >= 2  # at least two groups, interleaved
    spec = fidelity.PROTOCOLS[protocol]
    transforms = {"clip": spec["clip"], "dino": spec["dino"]}
    rows = transform_same_sized(decoded, transforms)
    for image, row in zip(decoded, rows):
        for name, fn in transforms.items():
            one = fn(image)
            assert row[name].shape == one.shape == (3, 224, 224)
            torch.testing.assert_close(row[name], one, atol=1e-6, rtol=0)


def test_clip_vit_l14_is_selectable():
    big = load_backbones("random", clip_name="ViT-L-14")
    assert big.clip_model.visual.output_dim == 768 and "ViT-L-14" in big.info["clip"]
    assert big.clip_text(["a photo of a dog"]).shape == (1, 768)


def test_real_images_on_a_benchmark_without_a_split_is_leave_one_out(tmp_path):
    """DreamBench has no held-out photos: real-images returns the reference photos themselves, and
    each is compared with the *other* reference photos (DreamBooth's real-image upper bound)."""
    import json

    from unifybench.testing import cli

    out = tmp_path / "runs"
    ran = cli("run", "--method", "real-images", "--bench", str(DATA), "--concepts", "dog", "--limit", "1",
              "--images-per-prompt", "3", "--backbones", "tiny", "--out", str(out))
    assert ran.returncode == 0, ran.stderr
    run_dir = next(p for p in out.iterdir() if p.is_dir())
    rows = [json.loads(line) for line in (run_dir / "scores.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("scorer") == "fidelity"]
    assert len(rows) == 3
    refs = sorted((DATA / "dog").glob("*.jpg"))
    backbones = load_backbones("tiny", seed=0)
    for row in rows:
        image = run_dir / row["image"] if not Path(row["image"]).is_absolute() else Path(row["image"])
        same = [r for r in refs if r.read_bytes() == image.read_bytes()]
        assert len(same) == 1  # the photo itself, not a held-out one
        others = [r for r in refs if r != same[0]]
        want = plain_scores(backbones, others, [image], [row["prompt"]])
        assert row["clip_i"] == pytest.approx(want["clip_i"][0], abs=1e-5)
        assert row["dino"] == pytest.approx(want["dino"][0], abs=1e-5)
        against_all = plain_scores(backbones, refs, [image], [row["prompt"]])
        assert abs(against_all["clip_i"][0] - row["clip_i"]) > 1e-4  # it is not scored against itself
