"""Textual inversion, DreamBooth-LoRA and the zero-shot prompt row on the tiny pipeline of diffusers'
own tests (tokenizer built in code; no downloads): what trains, the files in diffusers' formats and
their loaders, seeded images independent of batching, the base pipeline bit-identical after a
concept, and the real command line."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from unifybench.testing import cli, only_run_dir, predict, read_results
from unifybench.data import load_benchmark
from unifybench.errors import BenchError
from unifybench.methods import GenRequest
from unifybench.seeding import image_seed

from unifybench_diffusion.method import (EMBEDS_FILES, IMAGENET_TEMPLATES_SMALL, LORA_FILE, DreamBoothLoRA,
                                         SDPrompt, TextualInversion)

SAMPLE = {"model": "tiny", "steps": "2", "gen_batch": "2"}
TI = {**SAMPLE, "train_steps": "2", "accumulation": "2"}
LORA = {**SAMPLE, "train_steps": "2", "lr": "0.05"}


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("mini")


def _requests(concept: str, n: int = 3, n_images: int = 2) -> list[GenRequest]:
    prompts = ["A photo of <c>.", "<c> on the beach.", "<c> wearing its hat."]
    return [GenRequest(concept, "gen", i, prompts[i % 3].replace("<c>", f"<{concept}>"), n_images, 7) for i in range(n)]


def _bytes(images) -> list[list[bytes]]:
    return [[im.tobytes() for im in group] for group in images]


def test_textual_inversion_trains_only_the_placeholder_row_and_leaves_the_base_bit_identical(bench, tmp_path):
    method = TextualInversion(TI, seed=0)
    host = method.host
    concept = bench.concept("dog")
    before = {k: v.clone() for k, v in host.pipe.text_encoder.state_dict().items()}
    fingerprint = method.isolation_fingerprint()
    n_ids = len(host.pipe.tokenizer)

    state = method.personalize(concept, tmp_path / "dog")

    assert method.isolation_fingerprint() == fingerprint and len(host.pipe.tokenizer) == n_ids
    after = host.pipe.text_encoder.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    init, how = method._initial_rows(concept)
    assert how == ["'dog': one token"]  # the class noun is one token: its row starts the placeholder
    dog_id = host.pipe.tokenizer.encode("dog", add_special_tokens=False)[0]
    # The embedding by its module, not its state-dict name (transformers 5.5.4 spells it differently).
    embedding = host.pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    assert torch.equal(init[0]["embed"][0], embedding[dog_id])
    trained = state["rows"][0]["embed"]
    assert trained.shape == (1, 32) and not torch.equal(trained, init[0]["embed"])
    with method.activate(concept, state):
        table = host.pipe.text_encoder.get_input_embeddings().weight
        placeholder = host.pipe.tokenizer.convert_tokens_to_ids("<dog>")
        assert placeholder == n_ids and table.shape[0] == n_ids + 1
        assert torch.equal(table[:n_ids], embedding)
        assert torch.equal(table[placeholder:placeholder + 1], trained)
    assert method.isolation_fingerprint() == fingerprint
    meta = json.loads((tmp_path / "dog" / "textual_inversion.json").read_text())
    assert meta["train_args"]["lr"] == pytest.approx(5e-4 * 2)  # scaled by batch 1 x accumulation 2
    assert meta["steps"] == 2 and meta["initializer"] == how


def test_an_initializer_of_several_tokens_starts_from_their_mean(bench):
    method = TextualInversion({**TI, "initializer": "stuffed animal"}, seed=0)
    rows, how = method._initial_rows(bench.concept("dog"))
    ids = method.host.pipe.tokenizer.encode("stuffed animal", add_special_tokens=False)
    table = method.host.pipe.text_encoder.get_input_embeddings().weight.detach()
    assert len(ids) > 1 and how == [f"'stuffed animal': mean of {len(ids)} tokens"]
    assert torch.allclose(rows[0]["embed"][0], table[ids].mean(dim=0))


def test_the_saved_embedding_loads_through_load_textual_inversion_and_draws_the_same_images(bench, tmp_path):
    from safetensors.torch import load_file

    concept = bench.concept("dog")
    trained = TextualInversion(TI, seed=0)
    state = trained.personalize(concept, tmp_path / "runs" / "dog")
    saved = load_file(str(tmp_path / "runs" / "dog" / EMBEDS_FILES[0]))
    assert list(saved) == ["<dog>"] and torch.equal(saved["<dog>"], state["rows"][0]["embed"])
    ours = predict(trained, concept, state, _requests("dog"))

    external = TextualInversion({**SAMPLE, "embeds": str(tmp_path / "runs")}, seed=0)
    fingerprint = external.isolation_fingerprint()
    loaded_state = external.personalize(concept, tmp_path / "state")
    theirs = predict(external, concept, loaded_state, _requests("dog"))
    assert _bytes(ours) == _bytes(theirs)
    assert external.isolation_fingerprint() == fingerprint  # diffusers' loader undone after the concept
    base = SDPrompt(SAMPLE, seed=0)
    plain = predict(base, concept, None, [GenRequest("dog", "gen", 0, "A photo of <dog>.", 2, 7)])
    assert _bytes(plain)[0] != _bytes(ours)[0]  # the learned row is what the prompt used

    with pytest.raises(BenchError, match="no learned_embeds.safetensors for concept 'cat'"):
        external.personalize(bench.concept("cat"), tmp_path / "cat")
    (tmp_path / "runs" / "dog" / EMBEDS_FILES[0]).write_bytes(b"garbage")
    with pytest.raises(BenchError, match="cannot load"):
        TextualInversion(TI, seed=0).load_state(concept, tmp_path / "runs" / "dog")


def test_lora_weights_round_trip_through_load_lora_weights_and_the_base_comes_back(bench, tmp_path):
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    concept = bench.concept("cat")
    method = DreamBoothLoRA(LORA, seed=0)
    host = method.host
    fingerprint = method.isolation_fingerprint()
    state = method.personalize(concept, tmp_path / "runs" / "cat")
    assert method.isolation_fingerprint() == fingerprint  # training's adapter removed
    saved = load_file(str(tmp_path / "runs" / "cat" / LORA_FILE))
    assert saved and all(k.startswith("unet.") for k in saved)
    assert any("lora.up" in k and v.abs().sum() > 0 for k, v in saved.items())  # B moved off its zero init
    with method.activate(concept, state):
        assert method.isolation_fingerprint() != fingerprint
        live = convert_state_dict_to_diffusers(get_peft_model_state_dict(host.pipe.unet, adapter_name="ub_cat"))
        assert {f"unet.{k}" for k in live} == set(saved)
        assert all(torch.equal(live[k].float().cpu(), saved[f"unet.{k}"]) for k in live)
    assert method.isolation_fingerprint() == fingerprint
    meta = json.loads((tmp_path / "runs" / "cat" / "dreambooth_lora.json").read_text())
    assert meta["instance_prompt"] == "a photo of sks cat" and meta["train_args"]["rank"] == 4
    assert set(meta["targets"]) == {"to_k", "to_q", "to_v", "to_out.0"}  # the tiny UNet has no add_*_proj

    ours = predict(method, concept, state, _requests("cat", n=2))
    external = DreamBoothLoRA({**SAMPLE, "lora": str(tmp_path / "runs")}, seed=0)
    theirs = predict(external, concept, external.personalize(concept, tmp_path / "s"), _requests("cat", n=2))
    assert _bytes(ours) == _bytes(theirs)
    assert method._prompt(concept, state, "<cat> on the beach.") == "sks cat on the beach."


def test_prior_preservation_draws_class_images_once_per_class_and_reuses_them(bench, tmp_path):
    method = DreamBoothLoRA({**LORA, "prior": "true", "class_images": "3"}, seed=0)
    files = method.class_image_files(bench.concept("dog"), tmp_path)
    assert len(files) == 3 and all(f.is_file() for f in files)
    stamps = [f.stat().st_mtime_ns for f in files]
    again = DreamBoothLoRA({**LORA, "prior": "true", "class_images": "3"}, seed=0)
    assert again.class_image_files(bench.concept("dog2"), tmp_path) == files  # dog2 is a dog too
    assert [f.stat().st_mtime_ns for f in files] == stamps
    original = files[1].read_bytes()
    files[1].unlink()  # an interrupted cache is completed with the same image, drawn in the same call
    assert again.class_image_files(bench.concept("dog"), tmp_path)[1].read_bytes() == original
    state = method.personalize(bench.concept("dog"), tmp_path / "dog")
    meta = json.loads((tmp_path / "dog" / "dreambooth_lora.json").read_text())
    assert meta["class_prompt"] == "a photo of dog" and meta["class_photos"] == 3 and state["lora_dir"]


def test_images_are_the_same_whatever_the_requests_are_batched_with(bench):
    method = SDPrompt({**SAMPLE, "gen_batch": "4"}, seed=0)
    concept = bench.concept("dog")
    requests = _requests("dog", n=3, n_images=2)
    together = predict(method, concept, None, requests)
    alone = [predict(method, concept, None, [r])[0] for r in requests]
    assert _bytes(together) == _bytes(alone)
    reversed_ = predict(method, concept, None, requests[::-1])[::-1]
    assert _bytes(together) == _bytes(reversed_)
    seeds = [[im.tobytes() for im in g] for g in together]
    assert len({b for g in seeds for b in g}) == 6  # every image its own seed


def test_every_pipeline_call_holds_one_request_in_fixed_slots(bench, monkeypatch):
    """On CPUs whose kernels make a sample's pixels depend on its slot (issue 25: AVX-512), the
    byte test above may pass by luck on this machine; what makes it hold on any machine is that a
    call's whole content comes from one request: its seeds in index order, padded with the last."""
    method = SDPrompt({**SAMPLE, "gen_batch": "4"}, seed=0)
    calls = []
    real = method.host.generate

    def recording(prompts, seeds, **kw):
        calls.append((list(prompts), list(seeds)))
        return real(prompts, seeds, **kw)

    monkeypatch.setattr(method.host, "generate", recording)
    concept = bench.concept("dog")
    requests = [*_requests("dog", n=2, n_images=2), GenRequest("dog", "gen", 5, "<dog> in snow.", 6, 7)]
    predict(method, concept, None, requests)
    want = []
    for r in requests:
        seeds = [image_seed(r.seed, r.key, i) for i in range(r.n_images)]
        size = min(4, r.n_images)
        for k in range(0, len(seeds), size):
            chunk = seeds[k:k + size]
            want.append(chunk + [chunk[-1]] * (size - len(chunk)))
    assert [s for _, s in calls] == want
    assert all(len(set(p)) == 1 for p, _ in calls)  # one prompt, one request, per call


def test_sd_prompt_names_the_concept_by_its_description(bench):
    method = SDPrompt(SAMPLE)
    dog = bench.concept("dog")
    prompt = method._prompt(dog, None, "a <dog> in the jungle")
    assert prompt.startswith("a fluffy Pembroke Welsh Corgi") and prompt.endswith(", a dog, in the jungle")
    assert "<" not in prompt
    plain = dataclasses.replace(dog, description="<dog> is a small dog with a fox-like face.")
    assert method._prompt(plain, None, "a <dog> in the jungle") == "a small dog with a fox-like face in the jungle"


def test_templates_and_defaults_are_the_diffusers_readme_recipes():
    assert len(IMAGENET_TEMPLATES_SMALL) == 27 and IMAGENET_TEMPLATES_SMALL[0] == "a photo of a {}"
    ti = TextualInversion({"model": "tiny"})
    assert (ti.train_steps, ti.lr, ti.accumulation, ti.train_batch) == (3000, pytest.approx(2e-3), 4, 1)
    lora = DreamBoothLoRA({"model": "tiny"})
    assert (lora.train_steps, lora.lr, lora.rank, lora.prior) == (500, 1e-4, 4, False)
    assert (ti.steps, ti.guidance, ti.scheduler) == (50, 7.5, "ddim")


@pytest.mark.parametrize("method, value, message", [
    ("textual-inversion", "dtype=float16", "expected bfloat16 or float32"),
    ("sd-prompt", "scheduler=fast", "expected one of ddim"),
    ("dreambooth-lora", "prior=perhaps", "expected true or false"),
    ("textual-inversion", "embeds=/nowhere", "/nowhere [--method-arg embeds]: folder not found"),
])
def test_bad_arguments_are_one_line(tmp_path, method, value, message):
    ran = cli("run", "--method", method, "--method-arg", "model=tiny", "--method-arg", value,
              "--out", str(tmp_path / "runs"))
    assert ran.returncode != 0 and message in ran.stderr and len(ran.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("method, args", [("textual-inversion", TI), ("dreambooth-lora", LORA), ("sd-prompt", SAMPLE)])
def test_run_scores_gen_and_attr_gen_and_reaches_the_leaderboard(tmp_path, method, args):
    ran = cli("run", "--method", method, *[x for k, v in args.items() for x in ("--method-arg", f"{k}={v}")],
              "--concepts", "dog,cat", "--limit", "1", "--images-per-prompt", "2", "--backbones", "tiny",
              "--judge", "hf:tiny", "--judge-max-tokens", "1", "--out", str(tmp_path / "runs"))
    assert ran.returncode == 0, ran.stderr[-3000:]
    results = read_results(only_run_dir(tmp_path / "runs"))
    assert isinstance(results["tasks"]["gen"]["clip_i"], float) and isinstance(results["tasks"]["gen"]["dino"], float)
    assert isinstance(results["tasks"]["attr_gen"]["attr_score"], float)
    sampling = results["method_details"]["sampling"]
    assert sampling["scheduler"] == "ddim" and sampling["steps"] == 2
    board = cli("leaderboard", str(tmp_path / "runs"))
    assert f"| {method} (" in board.stdout


def test_a_concept_draws_the_same_images_alone_and_after_another(tmp_path):
    args = ["--method", "textual-inversion", *[x for k, v in TI.items() for x in ("--method-arg", f"{k}={v}")],
            "--limit", "1", "--images-per-prompt", "2", "--backbones", "tiny", "--tasks", "gen"]
    alone = cli("run", *args, "--concepts", "cat", "--out", str(tmp_path / "a"))
    after = cli("run", *args, "--concepts", "dog,cat", "--batch-size", "1", "--out", str(tmp_path / "b"))
    assert alone.returncode == 0 and after.returncode == 0, after.stderr[-2000:]

    def cat_images(out):
        run = only_run_dir(out)
        return {p.relative_to(run / "images"): p.read_bytes() for p in sorted((run / "images").rglob("*.png"))
                if "cat" in p.parts}
    assert cat_images(tmp_path / "a") and cat_images(tmp_path / "a") == cat_images(tmp_path / "b")


def test_sdxl_textual_inversion_trains_both_text_encoders_and_its_files_load_back(bench, tmp_path):
    """On the tiny SDXL of diffusers' tests: one row per text encoder, saved as learned_embeds.safetensors
    and learned_embeds_2.safetensors, read back by diffusers' loader into the right encoder each."""
    from safetensors.torch import load_file

    xl = {"model": "tiny-xl", "steps": "2", "gen_batch": "2", "train_steps": "2", "accumulation": "1"}
    method = TextualInversion(xl, seed=0)
    concept = bench.concept("dog")
    fingerprint = method.isolation_fingerprint()
    state = method.personalize(concept, tmp_path / "runs" / "dog")
    init, _ = method._initial_rows(concept)
    assert len(state["rows"]) == 2
    for trained, start in zip(state["rows"], init):
        assert not torch.equal(trained["embed"], start["embed"])  # both encoders' rows learned
    files = [load_file(str(tmp_path / "runs" / "dog" / f)) for f in EMBEDS_FILES]
    assert [list(f) for f in files] == [["<dog>"], ["<dog>"]]
    ours = predict(method, concept, state, _requests("dog", n=1))
    external = TextualInversion({k: v for k, v in xl.items() if "train" not in k and k != "accumulation"}
                                | {"embeds": str(tmp_path / "runs")}, seed=0)
    theirs = predict(external, concept, external.personalize(concept, tmp_path / "s"), _requests("dog", n=1))
    assert _bytes(ours) == _bytes(theirs) and method.isolation_fingerprint() == fingerprint
    lora = DreamBoothLoRA({"model": "tiny-xl", "steps": "2", "gen_batch": "2", "train_steps": "1"}, seed=0)
    lora_state = lora.personalize(concept, tmp_path / "lora")
    assert predict(lora, concept, lora_state, _requests("dog", n=1)) and lora.isolation_fingerprint() == fingerprint


@pytest.mark.parametrize("method", ["sd-prompt", "textual-inversion", "dreambooth-lora"])
def test_generation_bench_prints_the_ratio_and_the_pixel_agreement(capsys, method):
    from unifybench.bench.generation import main

    assert main(["--method", method, "--model", "tiny", "--batch", "2", "--steps", "2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["batch"] == 2 and result["ratio"] > 0 and result["max_pixel_diff"] <= 2
    assert result["same_pixels"] > 0.99 and result["random_init"] is True
    assert result["images_per_request"] == 2 and result["fixed_slots_cost"] is None  # one request: nothing to pack


def test_generation_bench_prices_the_fixed_slots_against_packed_calls(capsys):
    from unifybench.bench.generation import main

    assert main(["--method", "sd-prompt", "--model", "tiny", "--batch", "4", "--images-per-prompt", "2",
                 "--steps", "2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["images_per_request"] == 2 and result["packed_images_per_s"] > 0 and result["fixed_slots_cost"] > 0


def test_dreambooth_crops_are_the_scripts_exif_transposed_lanczos_resize_then_a_crop(tmp_path):
    """train_dreambooth_lora.py (diffusers 0.42): exif_transpose on opening, then Compose([Resize(size,
    LANCZOS), RandomCrop(size), ToTensor(), Normalize([0.5], [0.5])]), computed by torchvision."""
    from PIL import Image
    from PIL.ImageOps import exif_transpose
    from torchvision import transforms

    from unifybench.images import open_rgb

    method = DreamBoothLoRA(LORA, seed=0)
    res = method.host.resolution
    for size, orientation in [((3 * res + 7, 2 * res + 1), 6), ((res + 1, 4 * res - 3), 1)]:
        path = tmp_path / f"{orientation}.jpg"
        exif = Image.Exif()
        exif[0x0112] = orientation  # 6: the camera was turned; the photo is shown rotated by 90 degrees
        Image.fromarray(torch.randint(0, 256, (size[1], size[0], 3), dtype=torch.uint8).numpy()).save(path, exif=exif)
        ours = method._crops(open_rgb(path, exif_transpose=True), torch.Generator().manual_seed(3))
        upright = exif_transpose(Image.open(path)).convert("RGB")
        resized = transforms.Resize(res, interpolation=transforms.InterpolationMode.LANCZOS)(upright)
        expected = transforms.Normalize([0.5], [0.5])(transforms.ToTensor()(resized))
        crops = [expected[:, top:top + res, left:left + res] for top in range(expected.shape[1] - res + 1)
                 for left in range(expected.shape[2] - res + 1)]
        assert any(torch.allclose(ours, crop, atol=1e-6) for crop in crops), orientation


def test_dreambench_prompts_are_the_protocols_and_name_the_class_once():
    """DreamBench's prompts are 'a {0} {1} in the jungle'.format(unique_token, class_token); our
    DreamBench reader writes them 'a <c> dog in the jungle' (the concept's token for {0})."""
    from unifybench.data.dreambench import _fill
    from unifybench.records import Concept

    dog = Concept(name="dog", token="<dog>", class_noun="dog", description="<dog> is a fluffy corgi.")
    lora, zero_shot = DreamBoothLoRA(LORA), SDPrompt(SAMPLE)
    for template in ("a {0} {1} in the jungle", "a red {0} {1}", "a {0} {1} with a city in the background"):
        asked = _fill(template, dog.token, dog.class_noun)
        assert lora._prompt(dog, None, asked) == template.format("sks", "dog")
        assert " dog dog" not in zero_shot._prompt(dog, None, asked)
    assert lora._prompt(dog, None, "a <dog> in the jungle") == "a sks dog in the jungle"  # UnifyBench's form


def test_sd_prompt_shortens_a_long_description_and_keeps_the_scene(bench):
    import dataclasses

    method = SDPrompt(SAMPLE)
    long = "<dog> is a " + " ".join(["very"] * 120) + " fluffy dog."
    concept = dataclasses.replace(bench.concept("dog"), description=long)
    prompt = method._prompt(concept, None, "a <dog> in the jungle")
    assert prompt.startswith("a very very") and prompt.endswith("in the jungle")
    assert len(method.host.pipe.tokenizer(prompt).input_ids) <= method.host.pipe.tokenizer.model_max_length


def test_a_local_folder_in_diffusers_layout_draws_what_the_same_weights_draw(bench, tmp_path):
    """model=LOCAL_FOLDER, as a user's download: the tiny pipeline saved with save_pretrained."""
    tiny = SDPrompt(SAMPLE, seed=0)
    tiny.host.pipe.save_pretrained(tmp_path / "sd")
    local = SDPrompt({**SAMPLE, "model": str(tmp_path / "sd")}, seed=0)
    assert local.describe()["base_model"] == str(tmp_path / "sd") and local.describe()["random_init"] is False
    request = [GenRequest("dog", "gen", 0, "A photo of <dog> on a beach.", 2, 7)]
    concept = bench.concept("dog")
    drawn, expected = predict(local, concept, None, request)[0], predict(tiny, concept, None, request)[0]
    assert [im.tobytes() for im in drawn] == [im.tobytes() for im in expected]


@pytest.mark.parametrize("method, arg, filename", [("textual-inversion", "embeds", "learned_embeds.safetensors"),
                                                   ("dreambooth-lora", "lora", "pytorch_lora_weights.safetensors")])
def test_garbage_files_trained_elsewhere_are_refused_before_anything_is_made(tmp_path, method, arg, filename):
    from safetensors.torch import save_file

    folder = tmp_path / "trained" / "dog"
    folder.mkdir(parents=True)
    cases = [(b"#!/bin/sh\nrm -rf /\n", "not a safetensors file"),
             ({"weight": torch.zeros(3, 4, 5)}, "expected one float embedding" if arg == "embeds" else "diffusers' naming"),
             ({"unet.x.lora.down.weight": torch.zeros(2, dtype=torch.int32)},
              "expected one float embedding" if arg == "embeds" else "not a float matrix")]
    for content, message in cases:
        if isinstance(content, bytes):
            (folder / filename).write_bytes(content)
        else:
            save_file(content, str(folder / filename))
        ran = cli("run", "--method", method, "--method-arg", "model=tiny", "--method-arg", f"{arg}={folder.parent}",
                  "--concepts", "dog", "--tasks", "gen", "--out", str(tmp_path / "runs"))
        assert ran.returncode == 2 and message in ran.stderr and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
        assert str(folder / filename) in ran.stderr and not (tmp_path / "runs").exists()


def test_dreambench_plus_recipes_prompt_as_written_and_start_from_the_subjects_first_word(tmp_path):
    """DreamBench++'s generate_models.py trains DreamBooth-LoRA on 'a photo of {subject}' and draws the
    prompts as written ('a kitten on a beach'); its textual inversion starts from the subject's first
    word (``sample.subject.split(" ")[0]``)."""
    from tests._dreambench_plus import make_dreambench_plus

    dbp = load_benchmark(str(make_dreambench_plus(tmp_path)))
    woman = dbp.concept("human_00")
    prompt = dbp.prompts["human_00"][0]
    lora = DreamBoothLoRA({**LORA, "identifier": "none"})
    assert lora._prompt(woman, None, prompt.prompt) == prompt.class_prompt == "a young woman on a beach"
    assert f"a photo of {lora.instance_phrase(woman)}" == "a photo of young woman"
    method = TextualInversion({**TI, "initializer": "first-word"}, seed=0)
    _, how = method._initial_rows(woman)
    assert how[0].startswith("'young': ")


def test_a_unet_only_lora_prints_no_diffusers_warning_on_stderr(tmp_path):
    """diffusers warns "No LoRA keys associated to CLIPTextModel" when a LoRA has no text-encoder
    layers (the script's default): expected here, so not printed once per concept."""
    import os
    import subprocess
    import sys

    args = [x for k, v in LORA.items() for x in ("--method-arg", f"{k}={v}")]
    ran = subprocess.run([sys.executable, "-m", "unifybench", "run", "--method", "dreambooth-lora", *args,
                          "--tasks", "gen", "--concepts", "dog,cat", "--limit", "1", "--images-per-prompt", "1", "--backbones", "tiny",
                          "--out", str(tmp_path / "runs"), "-q"],
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "No LoRA keys" not in ran.stderr, ran.stderr[-2000:]


def test_an_embedding_of_another_width_is_refused_before_the_run_directory(tmp_path):
    from safetensors.torch import save_file

    from unifybench_diffusion.sd import RANDOM_MODELS, RANDOM_TEXT_WIDTHS

    for name, build in RANDOM_MODELS.items():  # the declared widths are the built encoders'
        if name != "random":
            pipe = build(0)
            encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if getattr(pipe, "text_encoder_2", None) else [])
            assert tuple(e.config.hidden_size for e in encoders) == RANDOM_TEXT_WIDTHS[name]
    folder = tmp_path / "trained" / "dog"
    folder.mkdir(parents=True)
    save_file({"<dog>": torch.zeros(1, 7)}, str(folder / EMBEDS_FILES[0]))
    args = [x for k, v in SAMPLE.items() for x in ("--method-arg", f"{k}={v}")]
    ran = cli("run", "--method", "textual-inversion", *args, "--method-arg", f"embeds={tmp_path / 'trained'}",
              "--concepts", "dog", "--tasks", "gen", "--out", str(tmp_path / "runs"))
    line = ran.stderr.strip()
    assert ran.returncode == 2 and len(line.splitlines()) == 1, ran.stderr[-2000:]
    assert "width 7" in line and "width 32" in line and EMBEDS_FILES[0] in line
    assert not (tmp_path / "runs").exists()
    save_file({"<dog>": torch.zeros(1, 32)}, str(folder / EMBEDS_FILES[0]))  # the right width passes the check
    saved = tmp_path / "sd"
    RANDOM_MODELS["tiny"](0).save_pretrained(saved)
    from unifybench_diffusion.sd import text_encoder_widths

    assert text_encoder_widths(str(saved)) == (32,) and text_encoder_widths("nobody/not-cached") is None


def test_a_lora_of_another_model_is_refused_before_the_run_directory(tmp_path):
    from safetensors.torch import save_file

    from unifybench_diffusion.sd import unet_linear_shapes

    shapes = unet_linear_shapes("tiny")
    to_q = next(name for name in shapes if name.endswith("attn1.to_q"))
    width = shapes[to_q][0]
    folder = tmp_path / "lora" / "dog"
    folder.mkdir(parents=True)
    args = [x for k, v in SAMPLE.items() for x in ("--method-arg", f"{k}={v}")]
    cases = [({"unet.mid_block.no_such_layer.to_q.lora_A.weight": torch.zeros(4, width),
               "unet.mid_block.no_such_layer.to_q.lora_B.weight": torch.zeros(width, 4)}, "names no module"),
             ({f"unet.{to_q}.lora.down.weight": torch.zeros(4, width + 7),
               f"unet.{to_q}.lora.up.weight": torch.zeros(shapes[to_q][1], 4)}, f"has width {width}")]
    for layers, message in cases:
        save_file(layers, str(folder / LORA_FILE))
        ran = cli("run", "--method", "dreambooth-lora", *args, "--method-arg", f"lora={tmp_path / 'lora'}",
                  "--concepts", "dog", "--tasks", "gen", "--out", str(tmp_path / "runs"))
        line = ran.stderr.strip()
        assert ran.returncode == 2 and len(line.splitlines()) == 1 and message in line and LORA_FILE in line, line
        assert not (tmp_path / "runs").exists()
    # A LoRA this adapter trained on the same model passes the check and is used.
    lora_args = [x for k, v in LORA.items() for x in ("--method-arg", f"{k}={v}")]
    trained = cli("run", "--method", "dreambooth-lora", *lora_args, "--concepts", "dog", "--tasks", "gen", "--limit", "1",
                  "--images-per-prompt", "1", "--backbones", "tiny", "--out", str(tmp_path / "trained"))
    assert trained.returncode == 0, trained.stderr[-2000:]
    state = only_run_dir(tmp_path / "trained") / "state"
    from safetensors import safe_open

    with safe_open(str(next(state.rglob(LORA_FILE))), framework="pt") as saved:
        assert any(k.startswith("unet.") and k.endswith(".lora.down.weight") for k in saved.keys())  # checked
    reused = cli("run", "--method", "dreambooth-lora", *args, "--method-arg", f"lora={state}", "--concepts", "dog",
                 "--tasks", "gen", "--limit", "1", "--images-per-prompt", "1", "--backbones", "tiny",
                 "--out", str(tmp_path / "runs"))
    assert reused.returncode == 0, reused.stderr[-2000:]
