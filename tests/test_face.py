"""Face identity: the scorer with a fake face backend built in code, the optional extra, and the
runner's use of it (human concepts only, identity-prompt images, face_missing reported)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ["HF_HUB_OFFLINE"] = "1"

from unifybench.errors import BenchError  # noqa: E402
from unifybench.scoring import face as face_mod  # noqa: E402
from unifybench.scoring.face import FaceScorer, load_face_backend  # noqa: E402

from _data_fixtures import DREAMBENCH  # noqa: E402 - photos held in the repository


def fake_embedding(rgb: np.ndarray) -> np.ndarray | None:
    """A deterministic 'face embedding' from pixel statistics; dark images have 'no face'."""
    x = rgb.astype(np.float64) / 255
    if x.mean() < 0.08:
        return None
    h = x.shape[0]
    v = np.array([x[..., 0].mean(), x[..., 1].mean(), x[..., 2].mean(), x.std(),
                  x[: h // 2].mean() - x[h // 2:].mean(), 0.25])
    return (v / np.linalg.norm(v)).astype(np.float32)


class FakeFace:
    name = "fake face (pixel statistics)"

    def __init__(self):
        self.calls = 0

    def embed(self, rgb):
        self.calls += 1
        return fake_embedding(rgb)


def independent_face_sim(refs, gens):
    """Mean cosine over every (reference, generated) pair in which both have a face."""
    def emb(p):
        return fake_embedding(np.asarray(Image.open(p).convert("RGB")))

    r = [e for e in map(emb, refs) if e is not None]
    out = []
    for g in gens:
        e = emb(g)
        out.append(None if e is None or not r else
                   float(np.mean([np.dot(a, e) / np.linalg.norm(a) / np.linalg.norm(e) for a in r])))
    return out


@pytest.fixture
def photos(tmp_path):
    refs = [DREAMBENCH / "dog" / f"0{i}.jpg" for i in range(3)]
    dark = tmp_path / "dark.png"
    Image.new("RGB", (64, 48), (5, 5, 8)).save(dark)
    gens = [DREAMBENCH / "cat" / "00.jpg", dark, DREAMBENCH / "dog" / "03.jpg", DREAMBENCH / "cat" / "01.jpg"]
    return refs + [dark], gens


def test_face_scorer_against_independent_computation(photos, tmp_path):
    refs, gens = photos
    backend = FakeFace()
    got = FaceScorer(backend, batch_size=2, cache_dir=tmp_path / "c").score(refs, gens)
    want = independent_face_sim(refs, gens)
    assert got["face_found"] == [True, False, True, True]
    assert got["face_missing"] == 1 and got["face_missing_refs"] == 1
    assert got["face_sim"][1] is None
    for a, b in zip(got["face_sim"], want):
        assert (a is None and b is None) or abs(a - b) < 1e-6
    # Reference faces come from the cache the second time.
    calls = backend.calls
    again = FaceScorer(backend, cache_dir=tmp_path / "c").score(refs, gens[:1])
    assert backend.calls == calls + 1 and again["face_sim"][0] == pytest.approx(got["face_sim"][0], abs=1e-7)


def test_no_reference_face(photos, tmp_path):
    refs, gens = photos
    got = FaceScorer(FakeFace(), cache_dir=None).score([refs[-1]], gens)
    assert got["face_sim"] == [None] * 4 and got["face_missing_refs"] == 1 and got["face_missing"] == 1


def test_insightface_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "insightface", None)  # import fails as when not installed
    monkeypatch.setitem(sys.modules, "insightface.app", None)
    with pytest.raises(BenchError) as err:
        load_face_backend("default")
    assert 'pip install "unifybench[face]"' in str(err.value)
    with pytest.raises(BenchError):
        load_face_backend("huge")


def test_random_and_tiny_face_backends_are_deterministic(photos):
    refs, _ = photos
    rgb = np.asarray(Image.open(refs[0]).convert("RGB"))
    a, b = load_face_backend("tiny", seed=1), load_face_backend("tiny", seed=1)
    assert np.array_equal(a.embed(rgb), b.embed(rgb)) and abs(np.linalg.norm(a.embed(rgb)) - 1) < 1e-5
    assert "random init" in load_face_backend("random").name


def test_run_scores_face_identity_for_human_concepts_only(tmp_path, monkeypatch):
    from _data_fixtures import make_unifybench

    from unifybench.runner import RunSpec, run

    root = make_unifybench(tmp_path / "ub")
    info = root / "concept" / "train" / "bo" / "info.json"
    data = json.loads(info.read_text())
    data["conversation_type"] = "human"
    info.write_text(json.dumps(data))
    # real-images returns held-out photos; for the identity prompt (index 25, 2 images) photos 2 and 3.
    Image.new("RGB", (48, 48), (3, 3, 3)).save(root / "concept" / "test" / "bo" / "3.png")
    monkeypatch.setenv("UNIFYBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(face_mod, "load_face_backend", lambda kind, device="cpu", seed=0: FakeFace())

    spec = RunSpec(method="real-images", bench=str(root), tasks=["gen"], backbones="tiny", images_per_prompt=2,
                   limit=2)
    outcome = run(spec, tmp_path / "runs")
    results = outcome.results
    bo = results["concepts"]["bo"]["gen"]
    pg = results["concepts"]["pg"]["gen"]
    assert pg["face_sim"] == "not scored: not a human concept" and "face_missing" not in pg
    assert bo["face_missing"] == 1 and bo["face_missing_refs"] == 0

    from unifybench.data import load_benchmark

    concept = load_benchmark(str(root), "auto").concept("bo")
    assert concept.identity_prompt == "A photo of <bo>."
    held = concept.heldout_images
    want = independent_face_sim(concept.reference_images, [held[2], held[3]])
    assert want[1] is None
    assert bo["face_sim"] == pytest.approx(want[0], abs=1e-6)
    assert results["tasks"]["gen"]["face_sim"] == pytest.approx(want[0], abs=1e-6)
    assert results["tasks"]["gen"]["face_missing"] == 1

    rows = [json.loads(line) for line in (outcome.run_dir / "scores.jsonl").read_text().splitlines()]
    identity = [r for r in rows if r.get("purpose") == "identity"]
    plain = [r for r in rows if r["concept"] == "bo" and r["scorer"] == "fidelity"]
    references = [r for r in rows if r["concept"] == "bo" and r.get("purpose") == "reference"]
    assert len(references) == len(concept.reference_images) and all(r["face_found"] for r in references)
    assert len(identity) == 2 and all("clip_i" not in r for r in identity)
    assert [r["face_found"] for r in identity] == [True, False]
    assert len(plain) == 4 and all("face_sim" not in r for r in plain)  # 2 prompts x 2 images
    assert bo["clip_i"] == pytest.approx(np.mean([r["clip_i"] for r in plain]), abs=1e-9)
    predictions = (outcome.run_dir / "predictions.jsonl").read_text()
    assert '"prompt": "A photo of <bo>."' in predictions and "A photo of <pg>" not in predictions
    assert results["generation_scoring"]["face"]["face"] == FakeFace.name
