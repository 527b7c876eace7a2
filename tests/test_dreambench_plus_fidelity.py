"""DreamBench++'s CLIP/DINO protocol (their metrics/clip_score.py and dino_score.py at 66ca27e, with
generate_images.py storing every image as .jpg first), transcribed and compared with our scorer on
the same tiny random-init networks: what is checked is the input pipeline and the 1:1 pairing."""
from __future__ import annotations

import json

import PIL.Image
import PIL.ImageOps
import pytest
import torch
from torchvision import transforms

from tests._dreambench_plus import make_dreambench_plus
from tests.conftest import only_run_dir, run_cli
from unifybench.scoring.encoders import DINO_VITS8, load_backbones
from unifybench.scoring.fidelity import FidelityScorer
from unifybench.testing.benches import photo


def their_load_image(path):  # utils/image_utils.py load_image, for RGB files
    return PIL.ImageOps.exif_transpose(PIL.Image.open(path)).convert("RGB")


def their_stored(path, tmp):  # generate_images.py: save_image(image, path=".../{i}_0.jpg")
    out = tmp / f"stored_{path.stem}.jpg"
    their_load_image(path).save(out)
    return their_load_image(out)


their_dino_processor = transforms.Compose([  # DinoScore.__init__
    transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
    transforms.CenterCrop(224),
    transforms.ToTensor(),
    transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
])


def their_clip_processor():  # CLIPProcessor of openai/clip-vit-base-patch32: its preprocessor_config.json
    # The PIL processor: the one transformers of their time gave (5.x defaults to a torchvision backend).
    try:
        from transformers.models.clip import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:  # a transformers whose CLIPImageProcessor is still the PIL one
        from transformers import CLIPImageProcessor

    return CLIPImageProcessor(do_resize=True, size={"shortest_edge": 224}, resample=3, do_center_crop=True,
                              crop_size={"height": 224, "width": 224}, do_rescale=True, rescale_factor=1 / 255,
                              do_normalize=True, image_mean=[0.48145466, 0.4578275, 0.40821073],
                              image_std=[0.26862954, 0.26130258, 0.27577711], do_convert_rgb=True)


def test_their_clip_i_and_dino_pairs_are_ours(tmp_path):
    tiny = load_backbones("tiny", dino_name=DINO_VITS8)
    assert tiny.dino_model.config.patch_size == 8 and tiny.dino_name == DINO_VITS8
    ref = photo(tmp_path / "ref.jpg", size=300)
    gens = [photo(tmp_path / f"gen{i}.png", size=256 + 32 * i) for i in range(3)]
    ours = FidelityScorer(tiny, protocol="dreambench_plus", batch_size=2, cache_dir=None).score([ref], gens)

    src = their_stored(ref, tmp_path)
    with torch.no_grad():
        def dino(image):  # DinoScore.get_image_features(norm=True); the hub model returns [CLS] after the norm
            out = tiny.dino_model(pixel_values=their_dino_processor(image)[None]).last_hidden_state[:, 0]
            return out / out.norm(p=2, dim=-1, keepdim=True)

        def clip(image):  # CLIPScore.get_image_features(norm=True)
            pixels = their_clip_processor()(images=[image], return_tensors="pt")["pixel_values"]
            out = tiny.clip_model.encode_image(pixels)
            return out / out.norm(p=2, dim=-1, keepdim=True)

        for i, gen in enumerate(gens):
            tgt = their_stored(gen, tmp_path)
            their_dino = 100 * (dino(src) * dino(tgt)).sum(axis=-1)  # dino_score: x100
            their_clip = 100 * (clip(src) * clip(tgt)).sum(axis=-1)
            assert ours["dino"][i] * 100 == pytest.approx(their_dino.item(), abs=1e-3)
            assert ours["clip_i"][i] * 100 == pytest.approx(their_clip.item(), abs=1e-3)


def test_protocol_reference_on_dreambench_plus_scores_with_their_protocol_and_dino_vits8(tmp_path):
    root = make_dreambench_plus(tmp_path)
    out = tmp_path / "runs"
    proc = run_cli("run", "--method", "real-images", "--bench", str(root), "--tasks", "gen", "--limit", "1",
                   "--images-per-prompt", "1", "--backbones", "tiny", "--protocol", "reference", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    scoring = json.loads((only_run_dir(out) / "results.json").read_text())["generation_scoring"]
    assert scoring["protocol"] == "dreambench_plus" and "patch 8" in scoring["backbones"]["dino"]
