"""`unifybench score-images` and `python -m unifybench.bench fidelity`, checked against a plain
per-image computation (tests/test_fidelity.py) on tiny random-init backbones."""
from __future__ import annotations

import json
import os

import pytest
from PIL import Image

os.environ["HF_HUB_OFFLINE"] = "1"

from test_fidelity import DATA, plain_scores  # noqa: E402

from unifybench import cli  # noqa: E402
from unifybench.scoring.encoders import load_backbones  # noqa: E402


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIFYBENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def folders(tmp_path):
    """refs/: 3 dog photos; gens/<prompt folder>/: 2 + 2 images (GenEval-style nesting), one PNG."""
    refs, gens = tmp_path / "refs", tmp_path / "gens"
    refs.mkdir()
    for i in range(3):
        Image.open(DATA / "dog" / f"0{i}.jpg").convert("RGB").resize((160, 160)).save(refs / f"{i}.jpg")
    a, b = gens / "000_beach", gens / "001_snow"
    a.mkdir(parents=True)
    b.mkdir()
    Image.open(DATA / "dog" / "03.jpg").convert("RGB").resize((200, 150)).save(a / "0.png")
    Image.open(DATA / "cat" / "00.jpg").convert("RGB").resize((160, 160)).save(a / "1.jpg")
    Image.open(DATA / "cat" / "01.jpg").convert("RGB").resize((160, 160)).save(b / "0.jpg")
    Image.open(DATA / "dog" / "04.jpg").convert("RGB").resize((160, 160)).save(b / "1.jpg")
    return refs, gens


def run(capsys, *args):
    code = cli.main(["score-images", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def expected(refs, gens, texts, pairing="all"):
    tiny = load_backbones("tiny", seed=0)
    r = sorted(refs.rglob("*.jpg"))
    g = sorted((p for p in gens.rglob("*") if p.is_file()), key=lambda p: p.relative_to(gens).as_posix())
    s = plain_scores(tiny, r, g, texts or ["x"] * len(g), pairing)
    return {k: sum(v) / len(v) for k, v in s.items()}


def test_json_summary_matches_plain_computation(folders, capsys):
    refs, gens = folders
    code, out, err = run(capsys, "--refs", refs, "--gens", gens, "--backbones", "tiny", "--prompt",
                         "a photo of <bo> on a beach", "--class", "dog", "--batch-size", "3", "--json")
    assert code == 0, err
    got = json.loads(out)
    want = expected(refs, gens, ["a photo of dog on a beach"] * 4)
    for k in ("clip_i", "clip_t", "dino"):
        assert abs(got[k] - want[k]) < 1e-5, k
    assert got["n_refs"] == 3 and got["n_gens"] == 4 and got["protocol"] == "dreambooth"
    assert got["backbones"]["kind"] == "tiny" and "random init" in got["backbones"]["clip"]
    assert "random-init" in got["label"]


def test_prompts_file_and_protocols(folders, capsys, tmp_path):
    refs, gens = folders
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"000_beach": "a <bo> on a beach", "001_snow": "a <bo> in the snow",
                                   "001_snow/1.jpg": "a <bo> asleep"}))
    code, out, err = run(capsys, "--refs", refs, "--gens", gens, "--backbones", "tiny", "--prompts", prompts,
                         "--class", "dog", "--protocol", "mean-reference", "--json")
    assert code == 0, err
    got = json.loads(out)
    texts = ["a dog on a beach", "a dog on a beach", "a dog in the snow", "a dog asleep"]
    want = expected(refs, gens, texts, pairing="mean")
    for k in ("clip_i", "clip_t", "dino"):
        assert abs(got[k] - want[k]) < 1e-5, k
    assert got["protocol"] == "mean-reference"
    code, out, _ = run(capsys, "--refs", refs, "--gens", gens, "--backbones", "tiny", "--protocol", "reference",
                       "--json")
    ref = json.loads(out)
    assert code == 0 and "clip_t" not in ref and ref["protocol"] == "reference"
    assert abs(ref["clip_i"] - want["clip_i"]) > 1e-4
    code, out, _ = run(capsys, "--refs", refs, "--gens", gens, "--backbones", "tiny")
    assert code == 0 and "clip_i" in out and "4 generated vs 3 reference images" in out


def test_bad_input_exits_2_naming_the_file(folders, capsys, tmp_path):
    refs, gens = folders
    bad = gens / "001_snow" / "2.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    code, out, err = run(capsys, "--refs", refs, "--gens", gens, "--backbones", "tiny", "--json")
    assert code == 2 and out == "" and str(bad) in err and len(err.strip().splitlines()) == 1
    bad.unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "--refs", refs, "--gens", empty, "--backbones", "tiny")
    assert code == 2 and "no image files" in err
    code, _, err = run(capsys, "--refs", refs, "--gens", gens, "--backbones", "tiny", "--prompt", "x",
                       "--prompts", tmp_path / "p.json")
    assert code == 2 and "not both" in err
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"000_beach": "a dog"}))
    code, _, err = run(capsys, "--refs", refs, "--gens", gens, "--backbones", "tiny", "--prompts", partial)
    assert code == 2 and "001_snow/0.jpg" in err


def test_benchmark_prints_one_json_line(capsys):
    from unifybench.bench import fidelity as bench

    assert bench.main(["--n", "4", "--backbones", "tiny", "--batch-size", "3", "--format", "jpg"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    for key in ("n", "format", "device", "naive_img_s", "pipeline_img_s", "ratio", "max_abs_diff"):
        assert key in result
    assert result["n"] == 4 and result["format"] == "jpg" and result["device"] == "cpu"
    assert result["max_abs_diff"] <= 1e-4 and "decode_floor_img_s" not in result
    img = bench.make_image(3)
    assert img.shape == (512, 512, 3) and img.std() > 20  # not a constant colour


def test_benchmark_links_paths_to_fewer_distinct_images(tmp_path):
    from unifybench.bench import fidelity as bench

    paths = bench.make_images(tmp_path, 5, "png", distinct=2, processes=1)
    assert len(paths) == len(set(paths)) == 5 and all(p.parent == tmp_path for p in paths)
    assert len({p.stat().st_ino for p in paths}) == 2
    assert [p.read_bytes() for p in paths[2:4]] == [p.read_bytes() for p in paths[0:2]]
    assert paths[0].read_bytes() != paths[1].read_bytes()


def test_benchmark_times_the_loop_on_a_subset(capsys):
    """--naive-n K: the loop scores K of the N images (the first of each half), compared with the
    pipeline's scores of those same images."""
    from unifybench.bench import fidelity as bench

    assert bench.main(["--n", "6", "--naive-n", "3", "--backbones", "tiny", "--batch-size", "4",
                       "--format", "png", "--workers", "0"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == 6 and result["naive_n"] == 3
    assert result["max_abs_diff"] <= 1e-4 and result["ratio"] > 0
