"""The Show-o backend on a tiny random-init Show-o and MAGVIT-v2 built from configs in code: official
parameter names, the authors' id layout, cached understanding, MaskGIT, the transition, the authors'
checkpoint, local folders, and the whole command line."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from unifybench.testing import cli, only_run_dir, read_results, predict

from unifybench.errors import BenchError
from unifybench_unictokens.backend import TextExample
from unifybench.kit.weights import load_strict
from unifybench_unictokens.magvit import MagvitConfig, MagvitV2
from unifybench_unictokens.showo_backend import ShowoBackend, phi_config

from showo_folders import save_showo

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def backend():
    return ShowoBackend("tiny", seed=0)


@pytest.fixture(scope="module")
def photos():
    from unifybench.data import MINI_BENCH_PATH

    root = MINI_BENCH_PATH / "concept" / "test"
    return sorted(root.rglob("*.jpg"))[:3]


# ------------------------------------------------------------------ official names

def _official_magvit() -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in (DATA / "magvitv2_state_dict.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape = line.split(" ", 1)
        rows.append((name, tuple(int(x) for x in shape.strip("()").split(",") if x.strip())))
    return rows


def test_magvit_names_and_shapes_are_the_official_ones_and_load_strictly_both_ways(tmp_path):
    official = _official_magvit()
    model = MagvitV2(MagvitConfig())
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == official
    assert sum(v.numel() for k, v in model.state_dict().items() if v.is_floating_point()) == 95_493_500
    # A file with exactly the official names loads; ours saved loads back; a renamed entry is one line.
    load_strict(model, {k: torch.zeros(s) for k, s in official}, "official", "test")
    tiny = MagvitV2(MagvitConfig(ch=32, encoder_ch_mult=(1, 1), encoder_blocks=(1, 1), decoder_ch_mult=(1, 1),
                                 decoder_blocks=(1, 1), z_channels=4, image_size=8))
    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    state["encoder.conv_in.weight"] = torch.randn_like(state["encoder.conv_in.weight"])
    load_strict(tiny, state, "ours", "test")
    assert torch.equal(tiny.state_dict()["encoder.conv_in.weight"], state["encoder.conv_in.weight"])
    state["encoder.conv_in.weights"] = state.pop("encoder.conv_in.weight")
    with pytest.raises(BenchError) as err:
        load_strict(tiny, state, "renamed", "test")
    assert "1 missing (e.g. encoder.conv_in.weight)" in err.value.one_line() and "1 unexpected" in err.value.one_line()


def _official_phi_names(layers: int) -> set[str]:
    """Transcribed from the official Phi copy (``models/phi.py``): PhiForCausalLM(model: embed_tokens,
    layers.N(self_attn: q_proj, k_proj, v_proj, dense, q_layernorm, k_layernorm; mlp: fc1, fc2;
    input_layernorm), final_layernorm; lm_head with a bias); rotary buffers are not persistent."""
    names = {"model.embed_tokens.weight", "model.final_layernorm.weight", "model.final_layernorm.bias",
             "lm_head.weight", "lm_head.bias"}
    for i in range(layers):
        for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.dense",
                     "self_attn.q_layernorm", "self_attn.k_layernorm", "mlp.fc1", "mlp.fc2", "input_layernorm"):
            names |= {f"model.layers.{i}.{part}.weight", f"model.layers.{i}.{part}.bias"}
    return names


def test_the_language_model_has_show_o_s_names_and_a_saved_model_loads_from_its_folders(backend, tmp_path, photos):
    from transformers import PhiForCausalLM

    full = PhiForCausalLM(phi_config(58498, {"num_hidden_layers": 2}))  # Phi-1.5's width, 2 of its 24 layers
    assert set(full.state_dict()) == _official_phi_names(2)
    assert full.config.hidden_size == 2048 and full.lm_head.weight.shape == (58498, 2048)
    del full
    folders = save_showo(backend, tmp_path / "saved")
    state = torch.load(folders["model"] / "pytorch_model.bin", weights_only=True)
    assert all(k.startswith("showo.") for k in state)
    loaded = ShowoBackend(str(folders["model"]), vq_model=str(folders["vq_model"]), tokenizer=str(folders["tokenizer"]))
    example = [TextExample("What is it?", photos[0])]
    assert loaded.answer(example, 6) == backend.answer(example, 6)
    assert torch.equal(loaded.encode_images(photos), backend.encode_images(photos))
    # A file with one more weight is refused in one line.
    state["showo.extra.weight"] = torch.zeros(1)
    torch.save(state, folders["model"] / "pytorch_model.bin")
    with pytest.raises(BenchError, match="unexpected"):
        ShowoBackend(str(folders["model"]), vq_model=str(folders["vq_model"]), tokenizer=str(folders["tokenizer"]))


def test_a_show_o_folder_sets_the_image_size_and_a_misfit_names_llm_config(backend, tmp_path):
    folders = save_showo(backend, tmp_path / "saved")
    config_file = folders["model"] / "config.json"
    config = json.loads(config_file.read_text())
    n = backend.tokens_per_image
    config["num_vq_tokens"] = 4 * n  # a Show-o whose images have four times the codes: twice the side
    config_file.write_text(json.dumps(config))
    loaded = ShowoBackend(str(folders["model"]), vq_model=str(folders["vq_model"]), tokenizer=str(folders["tokenizer"]))
    assert loaded.tokens_per_image == 4 * n and loaded.image_size == 2 * backend.image_size
    config["num_vq_tokens"] = n + 1
    config_file.write_text(json.dumps(config))
    with pytest.raises(BenchError, match="not a square number"):
        ShowoBackend(str(folders["model"]), vq_model=str(folders["vq_model"]), tokenizer=str(folders["tokenizer"]))
    del config["llm_config"], config["num_vq_tokens"]  # Phi-1.5's sizes assumed: the tiny weights do not fit
    config_file.write_text(json.dumps(config))
    with pytest.raises(BenchError, match=r"weights do not fit.*--method-arg llm_config=DIR"):
        ShowoBackend(str(folders["model"]), vq_model=str(folders["vq_model"]), tokenizer=str(folders["tokenizer"]))


# ------------------------------------------------------------------ the authors' id layout

def test_new_tokens_give_the_logits_of_the_authors_insertion_at_the_first_image_id(backend, photos):
    """The authors add a concept's n tokens at id 50305 (here: code_offset) and shift the image ids and
    the mask up by n; ours come after the mask. Same rows under other ids: the logits of every text
    token, new token and image code must be the same."""
    tokens = ["<bo>"] + [f"<token_{i}>" for i in range(4)]
    n = len(tokens)
    rows = {"embed": torch.randn(n, backend.hidden_size), "head_weight": torch.randn(n, backend.hidden_size),
            "head_bias": torch.randn(n)}
    with backend.new_tokens(tokens, rows) as ids:
        ours = backend.model
        size = ours.get_input_embeddings().weight.shape[0]
        off = backend.code_offset

        def theirs_id(i: int) -> int:
            if i < off:
                return i
            if i <= backend.mask_id:  # image codes and the mask move up by n
                return i + n
            return off + (i - backend.mask_id - 1)  # the new tokens sit where the image ids began

        perm = torch.tensor([theirs_id(i) for i in range(size)])
        assert sorted(perm.tolist()) == list(range(size))
        theirs = copy.deepcopy(ours)
        with torch.no_grad():
            for name in ("model.embed_tokens.weight", "lm_head.weight", "lm_head.bias"):
                src = ours.get_parameter(name)
                theirs.get_parameter(name)[perm] = src
        codes = backend.encode_images(photos[:1])[0]
        example = TextExample(backend.understanding_prompt("<bo> is <token_0><token_1>.", "Is <bo> here?", False),
                              photos[0])
        prompt, _ = backend._mmu_ids(example, codes)
        seq = torch.tensor([prompt + [ids[2], backend.code_offset + 3]])
        mask, positions = backend._mmu_mask([seq.shape[1]], seq.shape[1], left_pad=False)
        ours_logits = ours(input_ids=seq, attention_mask=mask, position_ids=positions).logits
        seq_theirs = perm[seq]
        theirs_logits = theirs(input_ids=seq_theirs, attention_mask=mask, position_ids=positions).logits
        torch.testing.assert_close(theirs_logits[..., perm], ours_logits, atol=1e-5, rtol=1e-5)
        # MaskGIT's slice: their code rows [off + n, off + n + codes) are our [off, off + codes).
        torch.testing.assert_close(theirs_logits[..., off + n:off + n + backend.n_codes],
                                   ours_logits[..., off:off + backend.n_codes], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ understanding

def test_understanding_runs_one_forward_per_token_it_uses(backend, photos, monkeypatch):
    calls = []
    forward = backend.model.forward
    monkeypatch.setattr(backend.model, "forward", lambda *a, **kw: calls.append(1) or forward(*a, **kw))
    monkeypatch.setattr(backend, "eos", -1)  # no reply ends early
    backend.answer([TextExample("What is it?", photos[0])], max_new_tokens=5)
    assert len(calls) == 5  # the prompt's, then one for each of tokens 2-5: none after the last


def test_understanding_with_the_cache_gives_the_tokens_of_the_cache_less_loop(backend, photos):
    examples = [TextExample("Is it here?", photos[0]), TextExample("What colour is the wall behind it, and why?",
                                                                     photos[1]),
                TextExample("What does it like?", None)]  # text only: the black placeholder image
    cached = backend.answer(examples, 12)
    reference = [backend.reference_answer(ex, 12) for ex in examples]
    assert cached == reference
    assert backend.answer(examples[1:2], 12) == reference[1:2]  # batch composition changes nothing


# ------------------------------------------------------------------ MaskGIT

def authors_mask_len(num_vq_tokens: int, step: int, timesteps: int) -> int:
    """Transcribed from showlab/Show-o: models/sampling.py ``cosine_schedule`` and the mask length of
    ``Showo.t2i_generate`` (models/modeling_showo.py), in float32 as there."""
    def cosine_schedule(t):
        return torch.cos(t * math.pi * 0.5)

    ratio = 1.0 * (step + 1) / timesteps
    mask_ratio = cosine_schedule(torch.tensor(ratio))
    return int((num_vq_tokens * mask_ratio).floor())


def test_the_mask_count_is_the_authors_float32_schedule_for_every_step_count_to_200():
    from unifybench_unictokens.showo_backend import masked_count

    differs_in_float64 = set()
    for steps in range(1, 201):
        for step in range(steps):
            theirs = authors_mask_len(1024, step, steps)
            assert masked_count(1024, step, steps) == theirs, (steps, step)
            if step < steps - 1 and math.floor(1024 * math.cos(math.pi / 2 * ((step + 1) / steps))) != theirs:
                differs_in_float64.add(steps)
    assert 18 in differs_in_float64 and len(differs_in_float64) == 67  # what the float64 formula got wrong


def test_the_generation_photos_are_the_authors_transform_crop_then_a_quarter_mirrored(backend, photos):
    """pdata.image_transform(crop_augmentation=True) of arctanxarc/UniCTokens, transcribed with the
    same torchvision calls and the global generator seeded as ours: the same pixels, bit for bit."""
    from PIL import Image
    from torchvision import transforms

    def authors_image_transform(image, resolution):
        resolution_to_resize = int(resolution * 1.1)
        image = transforms.Resize(resolution_to_resize, interpolation=transforms.InterpolationMode.BICUBIC)(image)
        image = transforms.RandomCrop(size=(resolution, resolution))(image)
        image = transforms.ToTensor()(image)
        if torch.rand(1) < 0.5:
            image = transforms.RandomHorizontalFlip()(image)
        return transforms.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], inplace=True)(image)

    size = backend.image_size
    for seed in range(24):
        with Image.open(photos[seed % len(photos)]) as im:
            pil = im.convert("RGB")
        ours = backend._pixels([pil], augment=torch.Generator().manual_seed(seed))[0]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            theirs = authors_image_transform(pil, size)
        assert torch.equal(ours, theirs), seed


def test_maskgit_follows_the_schedule_never_remasks_and_is_seeded_per_image(backend):
    prompts = ["a dog on the beach", "a red clock", "a cat in the jungle"]
    seeds = [11, 12, 13]
    steps = 10
    trace: list[torch.Tensor] = []
    out = backend.generate_codes(prompts, seeds, steps=steps, trace=trace, keep_steps=tuple(range(1, steps + 1)))
    n = backend.tokens_per_image
    assert len(trace) == steps
    unknown = torch.full((3,), n)
    for t, masked in enumerate(trace):
        expected = torch.clamp(unknown - 1, max=authors_mask_len(n, t, steps)).clamp(min=1)
        assert torch.equal(masked.sum(1), expected), t
        if t:
            assert not (masked & ~trace[t - 1]).any(), t  # a fixed token is never masked again
        fixed = ~masked
        assert torch.equal(out.steps[t + 1][fixed], out.codes[fixed]), t  # and keeps its code to the end
        unknown = masked.sum(1)
    assert out.codes.min() >= 0 and out.codes.max() < backend.n_codes
    again = backend.generate_codes(prompts, seeds, steps=steps)
    assert torch.equal(again.codes, out.codes)
    alone = backend.generate_codes(prompts[1:2], seeds[1:2], steps=steps)
    shuffled = backend.generate_codes(prompts[::-1], seeds[::-1], steps=steps)
    assert torch.equal(alone.codes[0], out.codes[1]) and torch.equal(shuffled.codes.flip(0), out.codes)
    other = backend.generate_codes(prompts, [21, 22, 23], steps=steps)
    assert not torch.equal(other.codes, out.codes)
    images = backend.decode_codes(out.codes)
    assert len(images) == 3 and images[0].size == (backend.image_size, backend.image_size)


def test_the_losses_draw_only_from_their_generator(backend, photos):
    codes = backend.encode_images(photos[:2])
    a = backend.image_loss(["a dog", "a cat"], codes, torch.Generator().manual_seed(3))
    b = backend.image_loss(["a dog", "a cat"], codes, torch.Generator().manual_seed(3))
    c = backend.image_loss(["a dog", "a cat"], codes, torch.Generator().manual_seed(4))
    assert float(a) == float(b) != float(c)
    text = backend.text_loss([TextExample("Is it here?", photos[0], "Yes."), TextExample("And now?", None, "No.")])
    assert text.ndim == 0 and float(text) > 0


# ------------------------------------------------------------------ the method on Show-o

TINY = {"model": "tiny", "epochs": "1", "transition_images": "3", "max_new_tokens": "4", "steps": "40"}


def test_late_change_transition_clusters_the_codes_that_changed_after_the_step(tmp_path):
    from unifybench.data import load_benchmark
    from unifybench_unictokens.method import UniCTokens
    from unifybench_unictokens.stages import STAGE_ROWS, Personalizer, TokenGroups, kmeans

    concept = load_benchmark("mini").concept("dog")
    method = UniCTokens({**TINY, "transition_step": "30"}, seed=0)
    assert method.cfg.transition_rule == "late_change" and method.cfg.train_batch == (4, 1, 1)
    assert method.cfg.weight_decay == (1e-4, 1e-3, 1e-3) and method.cfg.adam_eps == (1e-6, 1e-8, 1e-8)
    before = method.isolation_fingerprint()
    state = method.personalize(concept, tmp_path)
    assert method.isolation_fingerprint() == before  # the base model is bit-identical after training
    meta = json.loads((tmp_path / "transition" / "unictokens.json").read_text())
    assert meta["rule"] == "late_change" and meta["step"] == 30 and meta["prompt"].endswith("in the middle of the photo.")
    # Recomputed independently from stage 2's saved rows.
    backend, cfg = method.backend, method.cfg
    groups = TokenGroups(concept.token)
    rows2 = {k: torch.load(tmp_path / "stage2" / f"epoch_1_{f}.pt", weights_only=True)
             for k, f in (("embed", "embed"), ("head_weight", "lm_head_weight"), ("head_bias", "lm_head_bias"))}
    with backend.new_tokens(groups.rows(STAGE_ROWS[2]), rows2):
        gen = backend.generate_codes([meta["prompt"]] * 3, [0, 1, 2], guidance=cfg.guidance, keep_steps=(30,))
    changed = gen.steps[30] != gen.codes
    assert meta["positions"] == int(changed.sum()) > 0
    expected = kmeans(backend.code_embeddings(gen.codes[changed][None]).reshape(-1, backend.hidden_size), 8,
                      cfg.kmeans_seed + 2)
    assert torch.allclose(torch.load(tmp_path / "transition" / "understanding_init.pt", weights_only=True), expected)
    assert Personalizer(backend, cfg, "tiny").transition_prompt(groups, "human").endswith("'s face in detail.")
    assert state["n_rows"] == 33


def test_the_authors_published_bo_checkpoint_loads_on_a_show_o_of_their_width(tmp_path):
    """saves/bo/example/epoch_15_*.pt: 25 rows of width 2048 saved on a GPU (a stage-2 checkpoint,
    evaluated without understanding tokens), loaded with weights_only on the CPU into a Show-o of
    Phi-1.5's width (one layer, so that the test stays small)."""
    from transformers import PhiForCausalLM

    from unifybench.data import load_benchmark
    from unifybench_unictokens.method import UniCTokens
    from unifybench_unictokens.showo_backend import _lm_vocab, add_showo_specials, build_tiny_tokenizer
    from unifybench_unictokens.magvit import tiny_magvit_config

    tokenizer = build_tiny_tokenizer()
    text_vocab = len(tokenizer)
    add_showo_specials(tokenizer)
    vq = MagvitV2(tiny_magvit_config())
    torch.manual_seed(0)
    sizes = {"hidden_size": 2048, "num_hidden_layers": 1, "num_attention_heads": 16, "num_key_value_heads": 16,
             "intermediate_size": 256, "max_position_embeddings": 512}
    lm = PhiForCausalLM(phi_config(_lm_vocab(text_vocab, vq.config.codebook_size), sizes))
    host = ShowoBackend.__new__(ShowoBackend)
    host.model, host.vq, host.tokenizer, host.pad, host.n_codes, host.tokens_per_image = \
        lm, vq, tokenizer, text_vocab, vq.config.codebook_size, vq.config.codes_per_image
    folders = save_showo(host, tmp_path / "wide")
    method = UniCTokens({"model": str(folders["model"]), "vq_model": str(folders["vq_model"]),
                         "tokenizer": str(folders["tokenizer"]), "checkpoint": str(DATA / "unictokens_bo_example"),
                         "epoch": "15", "max_new_tokens": "3", "steps": "2"}, seed=0)
    concept = load_benchmark("mini").concept("dog")
    state = method.personalize(concept, tmp_path / "state")
    assert state["n_rows"] == 25
    published = torch.load(DATA / "unictokens_bo_example" / "epoch_15_embed.pt", map_location="cpu", weights_only=True)
    assert torch.equal(state["rows"]["embed"], published)
    checkpoint = json.loads((tmp_path / "state" / "checkpoint.json").read_text())
    assert checkpoint["rows"] == 25 and checkpoint["epoch"] == 15
    # Evaluated without understanding tokens (there are none), and drawn with the generation ones.
    assert method._question(concept, state, "Q?").startswith("<dog> is <token_0>") and "<token_24>" not in \
        method._question(concept, state, "Q?")
    from unifybench.methods import AnswerRequest, GenRequest

    reply = predict(method, concept, state, [AnswerRequest("dog", "rec", 0, "Is <dog> here?", concept.test_images[0])])
    images = predict(method, concept, state, [GenRequest("dog", "gen", 0, "a <dog> on the beach", 1, 0)])
    assert isinstance(reply[0], str) and images[0][0].size == (16, 16)


def test_run_on_show_o_covers_every_task_and_names_the_backend_on_the_leaderboard(tmp_path):
    args = ["run", "--method", "unictokens", *[x for k, v in TINY.items() for x in ("--method-arg", f"{k}={v}")],
            "--concepts", "dog", "--limit", "1", "--images-per-prompt", "1", "--backbones", "tiny",
            "--out", str(tmp_path / "runs")]
    ran = cli(*args)
    assert ran.returncode == 0, ran.stderr[-3000:]
    results = read_results(only_run_dir(tmp_path / "runs"))
    assert results["method_details"]["backend_name"] == "showo"
    for task in ("rec", "vqa", "text_only", "choice", "gen", "attr_gen"):
        assert task in results["tasks"], task
    assert isinstance(results["tasks"]["rec"]["accuracy"], float) and isinstance(results["tasks"]["gen"]["clip_i"], float)
    prompt = cli("run", "--method", "text-prompt", "--method-arg", "model=tiny", "--method-arg", "steps=4",
                 "--method-arg", "max_new_tokens=4", "--tasks", "rec,gen", "--concepts", "dog", "--limit", "1",
                 "--images-per-prompt", "1", "--backbones", "tiny", "--out", str(tmp_path / "runs"))
    assert prompt.returncode == 0, prompt.stderr[-2000:]
    board = cli("leaderboard", str(tmp_path / "runs"), "--no-published")
    assert "| unictokens [showo] (" in board.stdout and "| text-prompt [showo] (" in board.stdout


def test_generation_bench_checks_codes_and_replies_and_prints_ratios(capsys):
    from unifybench.bench.generation import main

    assert main(["--method", "unictokens", "--backend", "showo", "--model", "tiny", "--batch", "2", "--steps", "6",
                 "--max-new-tokens", "6"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["same_codes"] == 1.0 and result["same_replies"] == 1.0 and result["steps"] == 6
    assert result["reference_images_per_s"] > 0 and result["ratio"] > 0 and result["understanding_ratio"] > 0
