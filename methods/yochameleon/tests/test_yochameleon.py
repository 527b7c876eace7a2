"""Yo'Chameleon on a tiny Chameleon and VQGAN built in code (no downloads): the decoder has the
official names and loads strictly, an image goes through encode -> decode, only the concept's rows
train and the base model comes back bit-identical, the training conversations, labels, prompts and
image sampling are the authors' (their rules transcribed here), and the real command line runs all
six tasks and puts the run beside the published Yo'Chameleon rows, never in their table."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unifybench.data import load_benchmark
from unifybench.errors import BenchError
from unifybench.methods import AnswerRequest, GenRequest
from unifybench.testing import cli, only_run_dir, read_results
from unifybench.testing.benches import make_unifybench, photo

from unifybench_yochameleon.chameleon import END_OF_TURN, ChameleonHost, _sample_top_k, save_folder
from unifybench_yochameleon.method import YoChameleon
from unifybench_yochameleon.vqgan import (VQGANDecoder, load_strict, read_checkpoint_decoder, read_vqgan_file,
                                          to_bytes)

DATA = Path(__file__).parent / "data"
FAST = {"model": "tiny", "epochs": "2", "max_negatives": "3", "gen_repeats": "3", "max_new_tokens": "4"}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The UnifyBench-layout fixture with three hard negatives for bo."""
    root = make_unifybench(tmp_path_factory.mktemp("ub") / "bench")
    for i in range(3):
        photo(root / "concept" / "train" / "bo" / "negative_example" / f"{i}.png")
    return load_benchmark(root)


@pytest.fixture(scope="module")
def host():
    return YoChameleon({"model": "tiny"}).host


# ------------------------------------------------------------------ the decoder


def _official_decoder() -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in (DATA / "vqgan_decoder_state_dict.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape = line.split(" ", 1)
        rows.append((name, tuple(int(x) for x in shape.strip("()").split(",") if x.strip())))
    return rows


def test_the_decoder_has_the_official_names_and_shapes_and_loads_strictly(tmp_path):
    from transformers import ChameleonVQVAEConfig

    official = _official_decoder()
    decoder = VQGANDecoder(ChameleonVQVAEConfig())  # Chameleon's sizes are the config's defaults
    assert [(k, tuple(v.shape)) for k, v in decoder.state_dict().items()] == official
    assert sum(v.numel() for v in decoder.state_dict().values()) == 39_294_851
    load_strict(decoder, {k: torch.zeros(s) for k, s in official}, "official", "test")
    renamed = {k: torch.zeros(s) for k, s in official}
    renamed["conv_in.weights"] = renamed.pop("conv_in.weight")
    with pytest.raises(BenchError) as err:
        load_strict(decoder, renamed, "renamed", "test")
    line = err.value.one_line()
    assert "1 missing (e.g. conv_in.weight)" in line and "1 unexpected" in line and "\n" not in line
    # The original vqgan.ckpt (Lightning: state_dict -> decoder.*) is read without running code.
    ckpt = tmp_path / "vqgan.ckpt"
    torch.save({"state_dict": {f"decoder.{k}": torch.ones(s) for k, s in official[:3]},
                "global_step": 10}, ckpt)
    assert sorted(read_vqgan_file(ckpt, "test")) == sorted(k for k, _ in official[:3])


def test_random_weights_have_chameleon_7b_sizes_for_speed_figures():
    from unifybench_yochameleon.chameleon import build_random

    model, tokenizer, _, decoder = build_random(0, "meta", torch.bfloat16)  # shapes only: nothing allocated
    assert sum(p.numel() for p in model.parameters()) == 7_043_090_432
    assert model.config.vocab_size == 65536 and model.config.num_hidden_layers == 32
    assert len(model.model.vocabulary_mapping.image_tokens) == 8192 and tokenizer.convert_tokens_to_ids("<reserved16232>")
    assert sum(p.numel() for p in decoder.parameters()) == 39_294_851


def test_a_photo_goes_through_encode_and_decode_and_bytes_follow_their_postprocess(host, tmp_path):
    src = photo(tmp_path / "p.png", size=40)
    tokens = host.image_tokens([src])
    assert tokens.shape == (1, host.tokens_per_image)
    assert bool(torch.isin(tokens, host.image_bpe).all())
    images = host.decode(tokens)
    assert images[0].size == (16, 16) and images[0].mode == "RGB"
    # Their ChameleonImageProcessor.postprocess, transcribed: unnormalize (x * std + mean, mean and std
    # 1), times 1 / rescale_factor (0.0078), clip to 0..255, then .to(uint8).
    x = torch.linspace(-1.2, 1.2, 97).reshape(1, 1, 97, 1).repeat(1, 3, 1, 1)
    theirs = x * 1.0 + 1.0
    theirs = theirs * (1.0 / 0.0078)
    theirs = torch.clip(theirs, 0, 255).to(dtype=torch.uint8)
    assert torch.equal(to_bytes(x), theirs)


def test_a_checkpoint_folder_keeps_its_decoder_in_the_weights_and_draws_the_same_images(host, tmp_path):
    folder = tmp_path / "tiny-anole"
    save_folder(host, folder)
    assert sorted(read_checkpoint_decoder(folder, "test")) == sorted(host.decoder().state_dict())
    loaded = ChameleonHost(str(folder))
    assert type(loaded.image_processor).__name__ == "ChameleonImageProcessorPil"  # the authors' values (PIL)
    text = "<reserved16200> is <reserved16201>. A photo of <reserved16200>."
    a_images, a_tokens, _ = host.draw(text, [5, 6])
    b_images, b_tokens, _ = loaded.draw(text, [5, 6])
    assert torch.equal(a_tokens, b_tokens)
    assert [im.tobytes() for im in a_images] == [im.tobytes() for im in b_images]
    # Weights without the decoder (what transformers' own conversions give): one line, naming the folder.
    bare = tmp_path / "no-decoder"
    host.model.save_pretrained(bare)
    with pytest.raises(BenchError) as err:
        read_checkpoint_decoder(bare, "--method-arg model")
    assert "no VQGAN decoder weights" in err.value.one_line() and str(bare) in err.value.one_line()


def test_a_checkpoint_without_decoder_is_refused_before_training_when_images_are_asked(host, tmp_path):
    bare = tmp_path / "no-decoder"
    save_folder(host, bare)
    from safetensors.torch import load_file, save_file

    weights = load_file(str(bare / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if ".decoder." not in k}, str(bare / "model.safetensors"),
              metadata={"format": "pt"})
    out = tmp_path / "runs"
    ran = cli("run", "--method", "yochameleon", "--method-arg", f"model={bare}", "--tasks", "gen",
              "--concepts", "dog", "--limit", "1", "--backbones", "tiny", "--out", str(out))
    assert ran.returncode == 2, ran.stderr[-2000:]
    error = ran.stderr.strip().splitlines()[-1]
    assert "no VQGAN decoder weights" in error and str(bare) in error
    assert not out.exists() or not any(out.iterdir())
    args = YoChameleon.parse_arguments({"model": str(bare)})
    YoChameleon.check_run(args, [load_benchmark("mini").concept("dog")], ["rec", "vqa"])  # no image: fine


# ------------------------------------------------------------------ training


def test_only_the_concepts_rows_train_and_the_base_model_is_bit_identical_after(bench, tmp_path):
    method = YoChameleon(FAST, seed=3)
    host = method.host
    concept = bench.concept("bo")
    before = {name: p.detach().clone() for name, p in host.model.named_parameters()}
    n_tokenizer = len(host.tokenizer)

    state = method.personalize(concept, tmp_path / "bo")

    after = dict(host.model.named_parameters())
    assert after.keys() == before.keys()
    for name, value in before.items():
        assert torch.equal(after[name], value), name  # every weight, every row, bit for bit
    assert len(host.tokenizer) == n_tokenizer
    rows = state["rows"]
    assert rows["embed"].shape == (33, host.hidden_size) and rows["head_weight"].shape == (33, host.hidden_size)
    init = method._init_rows(concept)
    assert not torch.equal(rows["embed"], init["embed"]) and not torch.equal(rows["head_weight"], init["head_weight"])
    # Their tokens are Chameleon's reserved ones: no row is added, and inside the concept only those 33 differ.
    ids = [host.tokenizer.convert_tokens_to_ids(t) for t in method.tokens()]
    assert ids == list(range(ids[0], ids[0] + 33))
    with method.activate(concept, state):
        for name, value in (("embed", before["model.embed_tokens.weight"]), ("head_weight", before["lm_head.weight"])):
            now = {vp.name: vp.param for vp in host.vocab_row_params()}[name].detach()
            changed = (now != value).any(1).nonzero().flatten().tolist()
            assert changed == ids, name
            assert torch.equal(now[ids], rows[name])
    for name, value in before.items():
        assert torch.equal(dict(host.model.named_parameters())[name], value), name
    meta = json.loads((tmp_path / "bo" / "yochameleon.json").read_text())
    assert [e["epoch"] for e in meta["losses"]] == [1, 2] and meta["selected_epoch"] == 2
    assert (tmp_path / "bo" / "2-token.pt").is_file() and (tmp_path / "bo" / "2-lmhead.pt").is_file()


def _their_personalized_prompt(token_length: int, identifier: int = 16200, index: int = 16201) -> str:
    """create_conversation_by_ranking.py's get_personalized_prompt, transcribed."""
    prefix_tokens = [f'<reserved{index + i}>' for i in range(token_length)]
    personalized_tokens = [f'<reserved{identifier}>']
    personalized_tokens.extend(prefix_tokens)
    if identifier == 16200:
        return f"{personalized_tokens[0]} is {''.join(personalized_tokens[1:])}. A photo of <reserved{identifier}>."
    return f"A photo of {''.join(personalized_tokens[1:])}."


def test_training_conversations_are_built_as_their_scripts_and_self_prompting_dataset_build_them(bench):
    method = YoChameleon({"model": "tiny", "max_negatives": "2"}, seed=1)
    concept = bench.concept("bo")
    examples, counts = method.training_set(concept)
    # Their YoChameleonTrainer with prefix_token 16 and self-prompting: 16 generation tokens from
    # <reserved16201>, then 16 understanding tokens, in the prompt "<sks> is <gen><und>.".
    prefix_token, start = 16, 16201
    understanding_prompt = "".join(f"<reserved{start + prefix_token + i}>" for i in range(prefix_token))
    generation_prompt = "".join(f"<reserved{start + i}>" for i in range(prefix_token))
    tokens = ["<reserved16200>"] + [f"<reserved{start + i}>" for i in range(prefix_token)] + \
        [f"<reserved{start + prefix_token + i}>" for i in range(prefix_token)]
    sks_prompt = f"{tokens[0]} is {''.join(tokens[1:])}."
    assert method.concept_prompt() == sks_prompt
    assert method.understanding_prompt() == understanding_prompt and method.generation_prompt() == generation_prompt

    # PersonalizedDataset_SelfPrompting on an image-generation conversation of 1000.json's real-photo part.
    conv0 = _their_personalized_prompt(token_length=16)
    caption = conv0.split('.')[0]
    their_gen_human = f'{caption}{understanding_prompt}. A photo of <reserved16200>.'
    gen = [(h, b, i) for h, b, i in examples if b == "<image>"]
    assert gen and all(h == their_gen_human for h, _, _ in gen)
    assert [i[0] for _, _, i in gen] == [concept.train_images[k % 3] for k in range(len(gen))]

    # ... and on an understanding one (recognition.json: "{question}<image>" / "{answer}").
    understanding = [(h, b, i) for h, b, i in examples if b != "<image>"]
    for human, bot, images in understanding:
        assert human.startswith(f"{sks_prompt} ")
        assert bot.startswith(understanding_prompt) and bot.count("<reserved162") - bot.count("<reserved16200>") == 16
        assert human.endswith("<image>") == bool(images)
    # create_conversation.py: positives (first limit_positive photos) repeated to match twice the limit.
    image_paths = list(concept.train_images)[:5]
    limit_negative = 2
    their_positives = image_paths * ((limit_negative * 2) // len(image_paths) + 1)
    assert counts["positives"] == len(their_positives) == 6
    assert counts["hard_negatives"] == 2 and counts["easy_negatives"] == min(2, counts["easy_available"])
    yes = [i[0] for h, b, i in understanding if i and b[len(understanding_prompt):].startswith("Yes")]
    assert sorted(map(str, yes)) == sorted(map(str, their_positives))


def test_labels_are_every_token_after_the_first_end_of_turn_as_their_dataset_masks_them(host, tmp_path):
    src = photo(tmp_path / "p.png")
    human, bot = "<reserved16200> is <reserved16201>. A photo of <reserved16200>.", "<image>"
    ids, labels = host.labelled(human, bot, [src], [False])
    # Their rule: the processor appends the separator, then labels[start:end+1] for each pair of
    # end-of-turn positions (start after the first, end at the second); -100 elsewhere.
    clone_inputs = torch.tensor(ids)
    eot_indices = (clone_inputs == host.eot).nonzero()[:]
    their = torch.full(clone_inputs.shape, -100)
    for start_idx, end_idx in zip(eot_indices[0::2] + 1, eot_indices[1::2]):
        their[start_idx:end_idx + 1] = clone_inputs[start_idx:end_idx + 1]
    assert labels == their.tolist()
    # The image answer is <racm3:break>, the photo's tokens, <eoss>, then the end of turn.
    labelled = [t for t in labels if t != -100]
    assert labelled[0] == host.boi and labelled[-2:] == [host.eoi, host.eot]
    assert labelled[1:-2] == host.image_tokens([src])[0].tolist()


# ------------------------------------------------------------------ prompts and sampling


def test_questions_and_drawing_prompts_are_their_evaluations(bench):
    method = YoChameleon({"model": "tiny", "max_new_tokens": "3"})
    concept = bench.concept("bo")
    asked, drawn = [], []
    host = method.host
    real_answer, real_draw = host.answer, host.draw
    host.answer = lambda text, image, n, **kw: asked.append((text, image)) or real_answer(text, image, n, **kw)
    host.draw = lambda text, seeds, **kw: drawn.append(text) or real_draw(text, seeds, **kw)
    try:
        with method.activate(concept, {"rows": method._init_rows(concept)}):
            image = concept.train_images[0]
            method.answer(concept, None, [AnswerRequest("bo", "rec", 0, "Is <bo> in this image?", image),
                                          AnswerRequest("bo", "text_only", 1, "What colour is <bo>?", None),
                                          AnswerRequest("bo", "vqa", 2, "Is <image> <bo>?", image)])
            method.generate(concept, None, [GenRequest("bo", "gen", 0, "A photo of <bo>.", 1, 0),
                                            GenRequest("bo", "gen", 1, "<bo> on the beach", 1, 0)])
    finally:
        host.answer, host.draw = real_answer, real_draw
    sks_prompt = method.concept_prompt()
    # RecognitionData_SelfPrompting: f'{personalized_prompt} Is {placeholder_token} in this photo?<image>'
    assert asked[0] == (f'{sks_prompt} Is <reserved16200> in this photo?<image>', image)
    assert asked[1] == (f"{sks_prompt} What colour is <reserved16200>?", None)
    assert asked[2] == (f"{sks_prompt} Is  <reserved16200>?<image>", image)  # the benchmark's "<image>" is text
    # eval_clip_similarity with self-prompting: f'{sks_prompt} A photo of {identifier}.<reserved08706>{generation_prompt}'
    assert drawn[0] == f'{sks_prompt} A photo of <reserved16200>.<reserved08706>{method.generation_prompt()}'
    assert drawn[1] == f'{sks_prompt} <reserved16200> on the beach.{END_OF_TURN}{method.generation_prompt()}'
    # The processor appends its separator: every sequence ends with the end of turn.
    assert host.sequence(drawn[0])[-1] == host.eot and host.sequence(drawn[0])[0] == host.bos


def test_image_tokens_are_sampled_from_image_tokens_only_and_each_image_from_its_own_seed(host):
    text = "<reserved16200> is <reserved16201>. A photo of <reserved16200>."
    _, tokens, _ = host.draw(text, [11, 12, 13])
    assert bool(torch.isin(tokens, host.image_bpe).all())
    for row, seed in enumerate([11, 12, 13]):
        assert torch.equal(host.draw(text, [seed])[1][0], tokens[row])  # nothing depends on the other rows
    assert not torch.equal(tokens[0], tokens[1])


def test_top_k_sampling_draws_each_token_with_transformers_top_k_probability():
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper

    torch.manual_seed(0)
    logits = torch.randn(2, 40) * 3
    for top_k, temperature in ((5, 1.0), (12, 0.7), (0, 1.3)):
        warped = TemperatureLogitsWarper(temperature)(None, logits.clone())
        if top_k:
            warped = TopKLogitsWarper(top_k)(None, warped)
        probs = torch.softmax(warped, -1)
        grid = 4000
        u = (torch.arange(grid) + 0.5) / grid
        for row in range(2):
            picks = _sample_top_k(logits[row].expand(grid, -1), u, top_k, temperature)
            freq = torch.bincount(picks, minlength=40).float() / grid
            assert float((freq - probs[row]).abs().max()) <= 1.5 / grid
            assert bool((probs[row][picks.unique()] > 0).all())


# ------------------------------------------------------------------ the command line


def test_the_command_line_runs_all_six_tasks_and_the_leaderboard_keeps_it_out_of_the_published_table(tmp_path):
    args = ["run", "--method", "yochameleon", *[x for k, v in FAST.items() for x in ("--method-arg", f"{k}={v}")],
            "--concepts", "dog", "--limit", "1", "--images-per-prompt", "1", "--backbones", "tiny",
            "--out", str(tmp_path / "runs")]
    ran = cli(*args)
    assert ran.returncode == 0, ran.stderr[-3000:]
    results = read_results(only_run_dir(tmp_path / "runs"))
    for task in ("rec", "vqa", "text_only", "choice", "gen", "attr_gen"):
        assert task in results["tasks"], task
    assert isinstance(results["tasks"]["rec"]["accuracy"], float) and isinstance(results["tasks"]["gen"]["clip_i"], float)
    assert results["method_details"]["random_init"] is True
    board = cli("leaderboard", str(tmp_path / "runs"))
    assert board.returncode == 0, board.stderr[-2000:]
    tables = board.stdout.split("### ")
    ours = [t for t in tables if "| yochameleon (" in t]
    published = [t for t in tables if "Yo'Chameleon" in t and "[published]" in t]
    assert len(ours) == 1 and "random-init" in ours[0].splitlines()[0] and "[published]" not in ours[0]
    assert len(published) == 2 and all("| yochameleon (" not in t for t in published)


def test_the_generation_bench_checks_cached_decoding_and_prints_a_ratio(capsys):
    from unifybench.bench.generation import main

    assert main(["--method", "yochameleon", "--model", "tiny", "--batch", "2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["logits_ok"] is True and result["same_tokens_as_one_by_one"] == 1.0
    assert result["baseline_images_per_s"] > 0 and result["ratio"] > 0 and result["random_init"] is True
