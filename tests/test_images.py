"""Every image mode opened by its values' range, in the one loader every reader, scorer, judge and
page uses; decompression bombs are one line, not a traceback (issue 24)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import cli
from unifybench.errors import BenchError
from unifybench.images import open_rgb, to_rgb

GRADIENT = np.arange(32 * 32, dtype=np.float64).reshape(32, 32) / (32 * 32 - 1)  # 0 .. 1


def _gray(image: Image.Image) -> np.ndarray:
    rgb = np.asarray(to_rgb(image))
    assert rgb.dtype == np.uint8 and rgb.shape[2] == 3 and (rgb[..., 0] == rgb[..., 2]).all()
    return rgb[..., 0].astype(int)


def test_16_bit_and_32_bit_grayscale_keep_their_values(tmp_path):
    expected = np.rint(GRADIENT * 255).astype(int)
    path = tmp_path / "g16.png"
    Image.fromarray(np.rint(GRADIENT * 65535).astype(np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    assert np.abs(_gray(Image.open(path)) - expected).max() <= 1  # not the white convert("RGB") gives
    as_i = Image.fromarray(np.rint(GRADIENT * 65535).astype(np.int32), mode="I")
    assert np.abs(_gray(as_i) - expected).max() <= 1
    assert np.abs(_gray(Image.fromarray(GRADIENT.astype(np.float32), mode="F")) - expected).max() <= 1
    assert np.abs(_gray(Image.fromarray((GRADIENT * 255).astype(np.float32), mode="F")) - expected).max() <= 1


def test_transparent_pixels_lie_on_white_and_cmyk_and_palettes_convert():
    la = Image.fromarray(np.stack([np.full((4, 4), 10, np.uint8), np.array([[0, 255] * 2] * 4, np.uint8)], -1),
                         mode="LA")
    got = np.asarray(to_rgb(la))
    assert (got[:, 0::2] == 255).all() and (got[:, 1::2] == 10).all()  # transparent: white; opaque: its grey
    palette = Image.new("P", (2, 1))
    palette.putpalette([200, 0, 0, 0, 0, 200] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0
    assert np.asarray(to_rgb(palette)).tolist() == [[[255, 255, 255], [0, 0, 200]]]
    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))
    assert np.asarray(to_rgb(cmyk))[0, 0].tolist() == [255, 0, 0]


def test_a_16_bit_photo_scores_as_its_8_bit_self_through_the_command_line(tmp_path):
    refs, gens8, gens16 = (tmp_path / d for d in ("refs", "gens8", "gens16"))
    for d in (refs, gens8, gens16):
        d.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(refs / "r.png")
    picture = np.rint(GRADIENT * 255).astype(np.uint8)
    Image.fromarray(picture).convert("RGB").save(gens8 / "g.png")
    Image.fromarray(picture.astype(np.uint16) * 257).save(gens16 / "g.png")
    scores = []
    for gens in (gens8, gens16):
        ran = cli("score-images", "--refs", str(refs), "--gens", str(gens), "--backbones", "tiny", "--json")
        assert ran.returncode == 0, ran.stderr
        scores.append(json.loads(ran.stdout))
    assert scores[0]["clip_i"] == pytest.approx(scores[1]["clip_i"], abs=1e-6)
    assert scores[0]["dino"] == pytest.approx(scores[1]["dino"], abs=1e-6)


def test_a_decompression_bomb_is_one_line_in_every_loader_and_a_missing_thumbnail_in_pages(tmp_path, monkeypatch):
    from unifybench.pages import thumbnail_uri
    from unifybench.scoring.judges.backends import jpeg_bytes

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # a 64 x 64 file is then a bomb (over twice that)
    bomb = tmp_path / "bomb.png"
    Image.new("L", (64, 64)).save(bomb)
    with pytest.raises(BenchError, match="decompression bomb"):
        open_rgb(bomb)
    with pytest.raises(BenchError, match="decompression bomb") as exc:
        jpeg_bytes(bomb)
    assert str(bomb) in exc.value.one_line()
    from unifybench.data.common import validate_images

    with pytest.raises(BenchError, match="decompression bomb"):  # the readers' check too
        validate_images([bomb])
    assert thumbnail_uri(bomb) is None
