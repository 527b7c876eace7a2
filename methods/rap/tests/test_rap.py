"""RAP on a tiny LLaVA built in code (no downloads): every prompt byte for byte against RAP-MLLM's
scripts, the images in their order (the question's photo, then the reference; text-only questions
carry the reference), the one-entry database, the original-LLaVA conversion round trip, and the
command line on the bundled bench and on a MyVLM-layout bench."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from unifybench.data import load_benchmark
from unifybench.errors import BenchError
from unifybench.methods import AnswerRequest
from unifybench.tasks import build_requests
from unifybench.testing import cli, only_run_dir, predict, read_results
from unifybench.testing.benches import make_myvlm, make_unifybench

from unifybench_rap import convert as conversion
from unifybench_rap.method import RAP

# conv_llava_v0's and conv_llava_v1's system text (RAP-MLLM llava/conversation.py), typed out again.
SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the human's questions.")
# retriever.py: extra_info += f"{i+1}.<image>\n Name: <{name}>, Info: {info}\n" for the one entry.
ENTRY = "1.<image>\n Name: <bo>, Info: <bo> is a shiba inu with orange fur.\n"
# VQA.py / TQA.py: 'Please give a single character from the options above. \n' closes the question.
CLOSE = "Please give a single character from the options above. \n"
FAST = {"model": "tiny", "max_new_tokens": "3"}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return load_benchmark(make_unifybench(tmp_path_factory.mktemp("ub") / "bench"))


@pytest.fixture(scope="module")
def state(bench, tmp_path_factory):
    return RAP(FAST).personalize(bench.concept("bo"), tmp_path_factory.mktemp("state"))


def _requests(bench, task):
    return [w.request for w in build_requests(bench, [task], ["bo"], seed=0, images_per_prompt=1, limit=None)["bo"]]


def _user(prompt: str, conv: str = "v1") -> str:
    head, tail = (f"{SYSTEM} USER: ", " ASSISTANT:") if conv == "v1" else (f"{SYSTEM}###Human: ", "###Assistant:")
    assert prompt.startswith(head) and prompt.endswith(tail), prompt
    return prompt[len(head):-len(tail)]


def test_the_database_entry_is_one_photo_the_cropped_one_and_the_description(bench, tmp_path):
    concept = bench.concept("bo")
    method = RAP(FAST)
    state = method.personalize(concept, tmp_path)
    saved = json.loads((tmp_path / "database.json").read_text())
    cropped = str(concept.cropped_train_images[0].resolve())
    assert saved == {"concept_dict": {"<bo>": {"name": "bo", "image": cropped,
                                               "info": "<bo> is a shiba inu with orange fur.", "category": "dog"}},
                     "path_to_concept": {cropped: "<bo>"}}
    assert method.load_state(concept, tmp_path) == state
    assert not any(p.suffix == ".pt" for p in tmp_path.iterdir())  # nothing is trained


def test_a_database_entry_pointing_elsewhere_is_refused_on_reload(bench, tmp_path):
    """The run directory may come from someone else: its entry's photo is never read on its word."""
    concept = bench.concept("bo")
    method = RAP(FAST)
    method.personalize(concept, tmp_path)
    database = json.loads((tmp_path / "database.json").read_text())
    elsewhere = tmp_path / "private.png"
    elsewhere.write_bytes(Path(concept.train_images[-1]).read_bytes())
    database["concept_dict"]["<bo>"]["image"] = str(elsewhere)
    (tmp_path / "database.json").write_text(json.dumps(database))
    with pytest.raises(BenchError, match="not the one this concept gives"):
        method.load_state(concept, tmp_path)


def test_each_prompt_is_the_authors_byte_for_byte(bench, state):
    concept = bench.concept("bo")
    reference = state["image"]
    method = RAP(FAST)
    expected = {
        # recognition.py: question.replace("<image>\n", ""); Query = f"<image>\n[{extra_info}]{question}";
        # the question is recognition_test.json's.
        "rec": "<image>\n[" + ENTRY + "]Is <bo> in this image? Answer with a single word or phrase.",
        # VQA.py has no open-ended form: the recognition layout with the benchmark's question.
        "vqa": "<image>\n[" + ENTRY + "]What color is <bo>'s fur?",
        # TQA.py: Query = f"{extra_info}{q}", the retrieved photo the only image.
        "text_only": ENTRY + "What does <bo> like?",
        # caption.py with retrieval: DEFAULT_IMAGE_TOKEN + f"\n[{extra_info}]Give a caption of the image."
        "caption": "<image>\n[" + ENTRY + "]Give a caption of the image.",
    }
    for task, user in expected.items():
        for request in _requests(bench, task):
            prompt, images = method.prompt(concept, state, request)
            assert _user(prompt) == user, task
            shown = [request.image] if request.image is not None else []
            assert images == shown + [reference], task  # the question's photo first, then the reference
    visual, text = _requests(bench, "choice")
    prompt, images = method.prompt(concept, state, visual)
    assert _user(prompt) == ("<image>\n[" + ENTRY + "]Question: What animal is <bo>?\nOptions:\nA. Dog\nB. Cat\n" + CLOSE)
    assert images == [visual.image, reference]
    prompt, images = method.prompt(concept, state, text)
    assert _user(prompt) == ENTRY + "Question: What does <bo> wear?\nOptions:\nA. A scarf\nB. A red hat\n" + CLOSE
    assert images == [reference]  # TQA.py shows the reference photo to a text-only question


def test_v0_is_the_llava_v0_template(bench, state):
    request = _requests(bench, "rec")[0]
    prompt, _ = RAP({**FAST, "conv": "v0"}).prompt(bench.concept("bo"), state, request)
    assert prompt == (f"{SYSTEM}###Human: <image>\n[{ENTRY}]Is <bo> in this image? Answer with a single word or "
                      "phrase.###Assistant:")


def test_a_question_that_does_not_name_the_concept_retrieves_nothing(bench, state, tmp_path):
    # retrieve(): `if concept in inp` over the question text; nothing named, nothing retrieved.
    photo = bench.concept("bo").test_images[0]
    method = RAP({**FAST, "rec_prompt": "bench"})
    request = AnswerRequest("bo", "rec", 0, "Is the dog here?", photo)
    prompt, images = method.prompt(bench.concept("bo"), state, request)
    assert _user(prompt) == "<image>\n[]Is the dog here?" and images == [photo]
    request = AnswerRequest("bo", "text_only", 0, "What does the dog like?", None)
    prompt, images = method.prompt(bench.concept("bo"), state, request)
    assert _user(prompt) == "What does the dog like?" and images == []


def test_the_model_sees_the_images_in_order_with_one_image_slot_each(bench, state, monkeypatch):
    method = RAP(FAST)
    host = method.host
    seen, slots = [], []
    pixels, generate = host.pixels, host.model.generate

    def record_pixels(images, flips=None):
        seen.append([str(i) for i in images])
        return pixels(images, flips)

    def record_generate(**kwargs):
        slots.append((kwargs["input_ids"] == host.image_token).sum(dim=1).tolist())
        return generate(**kwargs)

    monkeypatch.setattr(host, "pixels", record_pixels)
    monkeypatch.setattr(host.model, "generate", record_generate)
    requests = _requests(bench, "rec")[:1] + _requests(bench, "text_only")
    replies = predict(method, bench.concept("bo"), state, requests)
    assert len(replies) == 2 and all(isinstance(r, str) for r in replies)
    assert seen == [[str(requests[0].image), state["image"], state["image"]]]  # one batch, in prompt order
    assert slots == [[2 * host.n_image_tokens, host.n_image_tokens]]


def test_sampling_is_seeded_per_request(bench, state):
    method = RAP({**FAST, "conv": "v0", "temperature": "0.2", "max_new_tokens": "6"})
    requests = _requests(bench, "vqa")
    first = predict(method, bench.concept("bo"), state, requests)
    assert predict(method, bench.concept("bo"), state, requests) == first
    details = method.describe()
    assert details["reference_compatible"] and details["conversation"] == "llava_v0"
    assert details["decoding"] == "sampled, temperature 0.2"


# ----------------------------------------------------------------------------- conversion

def _tokenizer_without_image_and_pad():
    """A byte-level BPE tokenizer as a Llama checkpoint ships one: no <image>, no <pad>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from unifybench_yollava.llava import _TINY_CORPUS

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_TINY_CORPUS, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def _original_checkpoint(root, tower_in_shards: bool):
    """A tiny LLaVA written as LLaVA's own code saves it (llava_llama): the language model under
    ``model.``, the projector as ``model.mm_projector.{0,2}``, the CLIP tower (when saved at all) as
    ``model.vision_tower.vision_tower.vision_model``; and the tower's own repository beside it."""
    from safetensors.torch import save_file
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration)

    tokenizer = _tokenizer_without_image_and_pad()
    vocab = len(tokenizer)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=32)
    text = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                       bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(5)
    model = LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text, image_token_index=vocab))
    ours = model.state_dict()
    original = {}
    for key, value in ours.items():
        if key.startswith("model.language_model."):
            original["model." + key[len("model.language_model."):]] = value
        elif key.startswith("model.multi_modal_projector."):
            layer, name = key[len("model.multi_modal_projector."):].split(".", 1)
            original[f"model.mm_projector.{ {'linear_1': 0, 'linear_2': 2}[layer]}.{name}"] = value
        elif key.startswith("model.vision_tower.") and tower_in_shards:  # CLIPVisionTower wraps CLIPVisionModel
            rest = key[len("model.vision_tower."):].removeprefix("vision_model.")
            original["model.vision_tower.vision_tower.vision_model." + rest] = value
        elif key == "lm_head.weight":
            original[key] = value
    source, tower = root / "rap", root / "clip"
    source.mkdir(parents=True)
    names = sorted(original)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, keys in shards.items():
        save_file({k: original[k].contiguous() for k in keys}, source / file)
    (source / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}))
    (source / "config.json").write_text(json.dumps({
        **text.to_dict(), "model_type": "llava_llama", "architectures": ["LlavaLlamaForCausalLM"],
        "mm_hidden_size": 32, "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch", "mm_vision_tower": "openai/clip-vit-large-patch14-336",
        "image_aspect_ratio": "pad", "tune_mm_mlp_adapter": False}))
    tokenizer.save_pretrained(source)
    torch.manual_seed(6)  # the tower's own repository holds other weights: which one was used shows
    clip = CLIPVisionModel(vision)
    if not tower_in_shards:
        clip.load_state_dict({k[k.index("vision_tower.") + len("vision_tower."):]: v for k, v in ours.items()
                              if k.startswith("model.vision_tower.")})
    clip.save_pretrained(tower)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tower)
    return source, tower, ours, vocab


@pytest.mark.parametrize("tower_in_shards", [False, True])
def test_an_original_llava_checkpoint_converts_tensor_for_tensor(tmp_path, tower_in_shards, monkeypatch):
    from transformers import AutoTokenizer, LlavaForConditionalGeneration

    source, tower, ours, vocab = _original_checkpoint(tmp_path, tower_in_shards)
    assert conversion.is_original(source)
    folder = conversion.ensure_converted(source, tower, tmp_path / "cache")
    assert folder.parent == tmp_path / "cache" and not conversion.is_original(folder)
    converted = LlavaForConditionalGeneration.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.convert_tokens_to_ids("<image>") == vocab and tokenizer.pad_token == "<pad>"
    assert converted.config.image_token_id == vocab and converted.config.vision_feature_layer == -2
    assert converted.config.projector_hidden_act == "gelu"
    rows = math.ceil((vocab + 2) / 64) * 64
    state = converted.state_dict()
    assert set(state) == set(ours)
    for key, value in ours.items():
        if key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
            assert state[key].shape[0] == rows
            assert torch.equal(state[key][:vocab], value), key
            assert torch.allclose(state[key][vocab:], value.mean(dim=0).expand(rows - vocab, -1)), key
        else:
            assert torch.equal(state[key], value), key
    # A second use loads what the first wrote.
    monkeypatch.setattr(conversion, "convert", lambda *a: pytest.fail("converted twice"))
    assert conversion.ensure_converted(source, tower, tmp_path / "cache") == folder


def test_the_command_line_converts_once_and_runs_an_original_checkpoint(tmp_path):
    source, tower, _, _ = _original_checkpoint(tmp_path, tower_in_shards=False)
    args = ["run", "--method", "rap", "--method-arg", f"model={source}", "--method-arg", f"vision_tower={tower}",
            "--method-arg", f"converted={tmp_path / 'cache'}", "--method-arg", "max_new_tokens=3",
            "--tasks", "rec,choice", "--concepts", "dog", "--limit", "1", "--out", str(tmp_path / "runs")]
    ran = cli(*args)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    results = read_results(only_run_dir(tmp_path / "runs"))
    assert isinstance(results["tasks"]["rec"]["accuracy"], float)
    assert len(list((tmp_path / "cache").iterdir())) == 1


# ----------------------------------------------------------------------------- command line

def test_run_on_the_mini_bench_every_task(tmp_path):
    ran = cli("run", "--method", "rap", "--method-arg", "model=tiny", "--method-arg", "max_new_tokens=3",
              "--tasks", "rec,vqa,text_only,choice,caption", "--concepts", "cat", "--limit", "2",
              "--out", str(tmp_path))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    run_dir = only_run_dir(tmp_path)
    results = read_results(run_dir)
    assert results["label"].startswith("every score")  # random-init weights say so
    assert isinstance(results["tasks"]["caption"]["recall"], float)
    details = json.loads((run_dir / "run.json").read_text())["method_details"]
    assert details["conversation"] == "llava_v1" and details["decoding"] == "greedy"


def test_run_captions_on_a_myvlm_layout(tmp_path):
    bench = make_myvlm(tmp_path / "myvlm")
    ran = cli("run", "--method", "rap", "--method-arg", "model=tiny", "--method-arg", "max_new_tokens=3",
              "--bench", str(bench), "--tasks", "caption", "--split", "1", "--backbones", "tiny",
              "--out", str(tmp_path / "runs"))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    results = read_results(only_run_dir(tmp_path / "runs"))
    assert results["bench"]["format"] == "myvlm"
    assert results["counts"]["items"] == 4  # two concepts, six photos each, four of them for training
    assert isinstance(results["tasks"]["caption"]["clip_score"], float)  # MyVLM ships reference captions


def test_a_missing_model_or_tower_is_refused_before_the_run_directory(tmp_path):
    source, tower, _, _ = _original_checkpoint(tmp_path, tower_in_shards=False)
    for args, message in ((["model=/nowhere/rap"], "RAP-LLaVA checkpoint folder not found"),
                          ([f"model={source}", "vision_tower=/nowhere/clip"], "CLIP vision tower folder not found")):
        flags = [part for a in args for part in ("--method-arg", a)]
        ran = cli("run", "--method", "rap", *flags, "--tasks", "rec", "--out", str(tmp_path / "runs"))
        assert ran.returncode == 2 and message in ran.stderr, ran.stderr
        assert len(ran.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# ----------------------------------------------------------------------------- random-13b

def test_random_13b_builds_on_the_device_in_its_dtype_and_answers(bench, state, monkeypatch):
    """model=random-13b (tools/device/gpu_checks.sh's rap_answers: fp16 on CUDA) is LLaVA-1.5-13B's
    config built in code; here at small sizes, in fp16 on the CPU: every weight made in the dtype
    (no float32 copy of 13B parameters), the image processor at the tower's size, replies."""
    from unifybench_yollava import llava

    assert llava.LLAVA_13B["text"]["hidden_size"] == 5120 and llava.LLAVA_13B["vision"]["image_size"] == 336
    small = {"vision": {**llava.LLAVA_13B["vision"], "hidden_size": 32, "intermediate_size": 64,
                        "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 28},
             "text": {**llava.LLAVA_13B["text"], "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                      "num_attention_heads": 4, "num_key_value_heads": 4}}
    monkeypatch.setattr(llava, "LLAVA_13B", small)
    method = RAP({"model": "random-13b", "dtype": "float16", "max_new_tokens": "3"})
    RAP.check_available(method.args)  # a built-in name: nothing to find
    host = method.host
    assert {p.dtype for p in host.model.parameters()} == {torch.float16}
    assert host.n_image_tokens == 4 and host.pixels([bench.concept("bo").train_images[0]]).shape[-1] == 28
    assert host.model.get_input_embeddings().weight.shape[0] == 32064
    details = method.describe()
    assert details["random_init"] and details["backend"]["dtype"] == "float16"
    answers = predict(method, bench.concept("bo"), state, _requests(bench, "rec")[:2])
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
