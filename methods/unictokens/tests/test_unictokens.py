"""UniCTokens on a tiny random-init Janus (backend=janus), CPU, short schedules: stages, rows, checkpoints,
harness. The Show-o backend, the default, has tests/test_showo.py."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from unifybench.seeding import image_seed

from unifybench.testing import only_run_dir, read_results, cli, predict

from unifybench.data import load_benchmark
from unifybench.errors import BenchError
from unifybench.methods import AnswerRequest, GenRequest, load_method_class
from unifybench_unictokens.backend import TextExample
from unifybench_unictokens.method import UniCTokens
from unifybench_unictokens.stages import STAGE_ROWS, RowTrainer, TokenGroups, kmeans, load_rows, save_rows

SHORT = {"backend": "janus", "model": "tiny", "epochs": "2", "transition_images": "2", "max_new_tokens": "6"}


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("mini", "auto")


@pytest.fixture(scope="module")
def trained(bench, tmp_path_factory):
    """One personalization of the mini bench's dog, shared by the tests below."""
    method = UniCTokens(SHORT, seed=0)
    concept = bench.concept("dog")
    backend = method.backend
    base = {n: p.detach().clone() for n, p in backend.model.named_parameters()}
    base_tokens = len(backend.tokenizer)
    state_dir = tmp_path_factory.mktemp("state") / "dog"
    state_dir.mkdir()
    state = method.personalize(concept, state_dir)
    return {"method": method, "concept": concept, "state": state, "state_dir": state_dir, "base": base,
            "base_tokens": base_tokens}


def test_three_stages_run_and_losses_go_down(trained):
    sd = trained["state_dir"]
    for stage, n_rows in ((1, 17), (2, 25), (3, 33)):
        folder = sd / f"stage{stage}"
        meta = json.loads((folder / "unictokens.json").read_text())
        assert meta["finished"] and meta["epochs"] == 2 and len(meta["rows"]) == n_rows
        losses = [row["loss"] for row in meta["losses"]]
        assert losses[-1] < losses[0], (stage, losses)
        for epoch in (1, 2):
            embed = torch.load(folder / f"epoch_{epoch}_embed.pt", weights_only=True)
            assert embed.shape == (n_rows, 64) and embed.dtype == torch.float32
            assert torch.load(folder / f"epoch_{epoch}_lm_head_weight.pt", weights_only=True).shape == (n_rows, 64)
            assert torch.load(folder / f"epoch_{epoch}_lm_head_bias.pt", weights_only=True).shape == (n_rows,)
    meta1 = json.loads((sd / "stage1" / "unictokens.json").read_text())
    assert meta1["rows"][:3] == ["<dog>", "<token_0>", "<token_1>"]
    assert meta1["base_model"] == "tiny" and meta1["train_args"]["lr"] == 1e-3
    assert "zeros" in meta1["lm_head_bias"]  # Janus's text head has no bias
    transition = json.loads((sd / "transition" / "unictokens.json").read_text())
    assert transition["rule"] == "lowest_prob" and transition["mean_prob_picked"] <= transition["mean_prob_all"]
    # Stage 3 trains only <c> and the understanding tokens: shared and generation rows stay as stage 2 left them.
    s2, _ = load_rows(sd / "stage2", None, 64)
    s3, _ = load_rows(sd / "stage3", None, 64)
    assert torch.equal(s3["embed"][1:25], s2["embed"][1:25])
    assert not torch.equal(s3["embed"][0], s2["embed"][0])


def test_personalizing_leaves_the_base_model_bit_identical(trained):
    """The concept's tokens exist only while it trains or is active: afterwards the tokenizer, the
    vocabulary size and every parameter are exactly the base model's."""
    method, concept, state = trained["method"], trained["concept"], trained["state"]
    backend = method.backend
    assert len(backend.tokenizer) == trained["base_tokens"] and "<dog>" not in backend.tokenizer.get_vocab()
    params = dict(backend.model.named_parameters())
    assert params.keys() == trained["base"].keys()
    for name, p in params.items():
        assert torch.equal(p.detach(), trained["base"][name]), name
    # Inside activate: the concept's rows, exactly as trained; every base row as it was.
    tokens = TokenGroups(concept.token).rows(STAGE_ROWS[3])
    with method.activate(concept, state):
        ids = backend.tokenizer.convert_tokens_to_ids(tokens)
        embed = backend.model.get_input_embeddings().weight.detach()
        assert torch.equal(embed[ids], state["rows"]["embed"])
        base_embed = trained["base"]["model.language_model.embed_tokens.weight"]
        assert torch.equal(embed[: base_embed.shape[0]], base_embed)
    assert backend.model.get_input_embeddings().weight.shape[0] == base_embed.shape[0]


def test_every_optimizer_step_leaves_other_rows_bit_identical(trained):
    backend = trained["method"].backend
    photo = trained["concept"].train_images[0]
    with backend.new_tokens(["<dog>", "<token_0>"]) as ids:
        snapshot = [vp.param.detach().clone() for vp in backend.vocab_row_params()]
        trainer = RowTrainer(backend, ids, lr=1e-2, weight_decay=0.01)
        try:
            for _ in range(2):
                trainer.step(backend.text_loss([TextExample("<dog> is <token_0>. Is <dog> here?", photo, "Yes.")]))
                mask = torch.ones(snapshot[0].shape[0], dtype=torch.bool)
                mask[ids] = False
                for vp, before in zip(backend.vocab_row_params(), snapshot):
                    assert torch.equal(vp.param.detach()[mask], before[mask])
                    assert not torch.equal(vp.param.detach()[ids], before[ids])
        finally:
            trainer.close()


def test_resume_skips_finished_stages(trained, tmp_path, caplog):
    state_dir = tmp_path / "dog"
    shutil.copytree(trained["state_dir"], state_dir)
    shutil.rmtree(state_dir / "stage3")
    stage1_json = (state_dir / "stage1" / "unictokens.json").read_text()
    with caplog.at_level("INFO", logger="unifybench.method.unictokens"):
        trained["method"].personalize(trained["concept"], state_dir)
    log = caplog.text
    assert "stage 1:" not in log and "stage 2:" not in log and "transition:" not in log
    assert "stage 3:" in log
    assert (state_dir / "stage1" / "unictokens.json").read_text() == stage1_json
    assert json.loads((state_dir / "stage3" / "unictokens.json").read_text())["finished"]


def test_checkpoints_round_trip_and_load(trained, tmp_path):
    rows = trained["state"]["rows"]
    save_rows(tmp_path / "rt", 7, rows)
    loaded, epoch = load_rows(tmp_path / "rt", None, 64, map_location="cpu")
    assert epoch == 7 and all(torch.equal(loaded[k], rows[k].float()) for k in ("embed", "head_weight", "head_bias"))

    ckpt = tmp_path / "ckpt"
    shutil.copytree(trained["state_dir"], ckpt / "dog")
    method = UniCTokens({"backend": "janus", "model": "tiny", "checkpoint": str(ckpt), "max_new_tokens": "4"}, seed=0)
    state = method.personalize(trained["concept"], tmp_path / "state")
    assert state["n_rows"] == 33 and torch.equal(state["rows"]["embed"], rows["embed"])
    first = UniCTokens({"backend": "janus", "model": "tiny", "checkpoint": str(ckpt), "epoch": "1"}, seed=0)
    s1 = first.load_state(trained["concept"], tmp_path / "state")
    assert not torch.equal(s1["rows"]["embed"], rows["embed"])
    # A stage-2 checkpoint (25 rows) loads too: generation phrase without understanding tokens.
    only2 = tmp_path / "only2"
    shutil.copytree(trained["state_dir"] / "stage2", only2)
    s2 = UniCTokens({"backend": "janus", "model": "tiny", "checkpoint": str(only2)}, seed=0).personalize(trained["concept"], tmp_path / "s2")
    assert s2["n_rows"] == 25


def test_checkpoint_mismatch_is_one_line_error(trained, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    torch.save(torch.zeros(33, 2048), bad / "epoch_1_embed.pt")
    method = UniCTokens({"backend": "janus", "model": "tiny", "checkpoint": str(bad)}, seed=0)
    with pytest.raises(BenchError) as err:
        method.personalize(trained["concept"], tmp_path / "s")
    assert "width 64" in err.value.one_line() and "[33, 2048]" in err.value.one_line()
    torch.save(torch.zeros(20, 64), bad / "epoch_1_embed.pt")
    with pytest.raises(BenchError, match="expected 17, 25 or 33 rows"):
        method.personalize(trained["concept"], tmp_path / "s")
    with pytest.raises(BenchError, match="no epoch 5"):
        UniCTokens({"backend": "janus", "model": "tiny", "checkpoint": str(bad), "epoch": "5"}, seed=0).personalize(
            trained["concept"], tmp_path / "s")


def test_answers_and_images_are_batched_and_seeded(trained):
    method, concept, state = trained["method"], trained["concept"], trained["state"]
    reqs = [AnswerRequest("dog", "rec", i, "Is <dog> in this image?", concept.test_images[i % 2]) for i in range(3)]
    replies = predict(method, concept, state, reqs)
    assert len(replies) == 3 and all(isinstance(r, str) for r in replies)
    a = GenRequest("dog", "gen", 0, "a <dog> in the jungle", 2, 0)
    b = GenRequest("dog", "gen", 1, "a <dog> on the beach", 3, 0)
    both = predict(method, concept, state, [a, b])
    alone = predict(method, concept, state, [b])
    assert [len(x) for x in both] == [2, 3]
    assert [im.tobytes() for im in both[1]] == [im.tobytes() for im in alone[0]]  # independent of batching
    other_seed = predict(method, concept, state, [GenRequest("dog", "gen", 1, "a <dog> on the beach", 3, 1)])
    assert [im.tobytes() for im in other_seed[0]] != [im.tobytes() for im in alone[0]]
    assert method._gen_prompt(concept, state, "a <dog> in the jungle").startswith("a <token_0>")


def test_every_decoding_call_holds_one_request_in_fixed_slots(trained, monkeypatch):
    """Issue 25: kernels may round a row differently in another slot, so each call is one request's
    images in index order, padded with its last to the run's one call size."""
    method, concept, state = trained["method"], trained["concept"], trained["state"]
    calls = []
    real = method.backend.generate_codes

    def recording(prompts, seeds, **kw):
        calls.append(list(seeds))
        return real(prompts, seeds, **kw)

    monkeypatch.setattr(method.backend, "generate_codes", recording)
    monkeypatch.setattr(method, "gen_batch", 2)
    reqs = [GenRequest("dog", "gen", 0, "a <dog> in the jungle", 3, 0), GenRequest("dog", "gen", 1, "a <dog>", 1, 0)]
    predict(method, concept, state, reqs)
    s0 = [image_seed(0, reqs[0].key, i) for i in range(3)]
    assert calls == [s0[:2], [s0[2], s0[2]], [image_seed(0, reqs[1].key, 0)]]


def test_kmeans_is_seeded_and_finds_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(20, 2, generator=g) for c in centres])
    found = kmeans(x, 3, seed=1)
    assert torch.equal(found, kmeans(x, 3, seed=1))
    assert torch.cdist(centres, found).min(1).values.max() < 0.2
    assert kmeans(x[:2], 4, seed=0).shape == (4, 2)  # fewer points than clusters


def test_text_prompt_baseline_names_the_concept_by_its_description(bench):
    cls = load_method_class("text-prompt")
    method = cls({"backend": "janus", "model": "tiny"}, seed=0)
    concept = bench.concept("dog")
    q = method._question(concept, None, "Is <dog> in this image?")
    assert "<dog>" not in q and q.startswith("dog is a")
    assert "<dog>" not in method._gen_prompt(concept, None, "a <dog> in the jungle")
    out = predict(method, concept, None, [GenRequest("dog", "gen", 0, "a <dog> in the jungle", 1, 0)])
    assert len(out[0]) == 1


def test_generation_bench_checks_logits_and_prints_json(capsys):
    from unifybench.bench.generation import main

    assert main(["--method", "unictokens", "--backend", "janus", "--model", "tiny", "--batch", "2",
                 "--check-steps", "4"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["logits_ok"] and result["greedy_prefix_match_eager"] == 1.0
    assert result["eager_images_per_s"] > 0 and result["ours_images_per_s"] > 0
    assert result["ratio"] == pytest.approx(result["ours_images_per_s"] / result["eager_images_per_s"], rel=0.01)


def test_cli_run_completes_every_task_and_reaches_the_leaderboard(tmp_path):
    args = ["run", "--method", "unictokens", "--method-arg", "backend=janus", "--method-arg", "model=tiny", "--method-arg", "epochs=1",
            "--method-arg", "transition_images=1", "--method-arg", "max_new_tokens=4", "--backbones", "tiny",
            "--limit", "1", "--images-per-prompt", "1", "--concepts", "dog", "--out", str(tmp_path / "runs")]
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / "runs")
    results = read_results(run_dir)
    assert set(results["tasks"]) == {"rec", "vqa", "text_only", "choice", "gen", "attr_gen"}
    assert isinstance(results["tasks"]["gen"]["clip_i"], float)
    assert isinstance(results["tasks"]["choice"]["accuracy"], float)
    assert all(not str(v).startswith("not scored: method") for m in results["tasks"].values() for v in m.values())
    assert (run_dir / "state" / "dog" / "stage3" / "epoch_1_embed.pt").is_file()
    details = json.loads((run_dir / "run.json").read_text())["method_details"]
    assert details["random_init"] is True
    board = cli("leaderboard", str(tmp_path / "runs"))
    assert board.returncode == 0, board.stderr
    row = next(line for line in board.stdout.splitlines() if line.startswith("| unictokens"))
    assert "model=tiny" in row

    bad = tmp_path / "bad" / "dog"
    bad.mkdir(parents=True)
    torch.save(torch.zeros(17, 2048), bad / "epoch_1_embed.pt")
    proc = cli("run", "--method", "unictokens", "--method-arg", "backend=janus", "--method-arg", "model=tiny", "--method-arg",
                   f"checkpoint={bad.parent}", "--tasks", "rec", "--limit", "1", "--concepts", "dog",
                   "--out", str(tmp_path / "runs2"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "width 64" in proc.stderr


def test_human_concepts_start_generation_tokens_from_the_face_embedding(trained, monkeypatch):
    import dataclasses

    from unifybench_unictokens.stages import Personalizer

    human = dataclasses.replace(trained["concept"], kind="human")
    method = UniCTokens({**SHORT, "face_init": "tiny"}, seed=0)
    data = method.concept_data(human)
    assert data.face_embedding is not None and abs(float(data.face_embedding.norm()) - 1) < 1e-5
    pers = Personalizer(method.backend, method.cfg, "tiny")
    codes = method.backend.encode_images(data.cropped_images)
    gen, note = pers._generation_init(data, codes)
    # As the authors' stage 2: the identity embedding viewed as 8 rows, each interpolated to the width.
    face = data.face_embedding.float().flatten()
    expected = torch.nn.functional.interpolate(face.view(8, -1)[None], size=64, mode="linear")[0]
    assert gen.shape == (8, 64) and torch.allclose(gen, expected) and "face identity" in note
    import importlib.util

    real_find_spec = importlib.util.find_spec  # the face extra made absent, wherever the test runs
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "insightface"
                        else real_find_spec(name, *a))
    auto = UniCTokens(SHORT, seed=0).concept_data(human)
    assert auto.face_embedding is None and "face extra not installed" in auto.face_note
    gen, note = pers._generation_init(auto, codes)
    assert "k-means" in note and "without a face embedding" in note


def test_static_decoding_matches_a_cache_free_forward(trained):
    """Each step of our static-cache decoding reproduces the logits of one plain forward over the whole
    sequence. (A cache passed under the wrong keyword is swallowed by transformers' **kwargs: every step
    would then see its own token alone, and these logits would differ.)"""
    backend = trained["method"].backend
    prompts = ["A photo of a dog.", "A cat on a mat in the sun, seen from above."]
    ours = backend.generate_codes(prompts, [0, 1], guidance=1.0, greedy=True, keep_logits=6)
    ref = backend.reference_guided_logits(prompts, ours.codes[:, :6], guidance=1.0)
    torch.testing.assert_close(torch.stack(ours.logits[:6]), ref, atol=1e-5, rtol=1e-4)


def test_cache_keyword_follows_the_transformers_version():
    from unifybench.kit.models import cache_kwarg_name

    class New(torch.nn.Module):
        def forward(self, inputs_embeds=None, cache=None, **kwargs):
            return inputs_embeds

    class Old(torch.nn.Module):
        def forward(self, inputs_embeds=None, past_key_values=None, **kwargs):
            return inputs_embeds

    class Neither(torch.nn.Module):
        def forward(self, inputs_embeds=None, **kwargs):
            return inputs_embeds

    assert cache_kwarg_name(New()) == "cache"
    assert cache_kwarg_name(Old()) == "past_key_values"
    with pytest.raises(BenchError, match="neither"):
        cache_kwarg_name(Neither())


def test_stage_costs_read_what_each_stage_recorded(trained):
    from unifybench_unictokens.speed import stage_costs

    costs = stage_costs(trained["state_dir"])
    assert list(costs) == ["stage1", "stage2", "transition", "stage3"]
    # mini-bench dog: 4 QA and 3 cropped photos; the authors' batches 4, 1, 1: 1, 4 and 4 steps an epoch
    for stage, per_epoch in (("stage1", 1), ("stage2", 4), ("stage3", 4)):
        meta = json.loads((trained["state_dir"] / stage / "unictokens.json").read_text())
        assert len(meta["losses"]) == 2 and costs[stage]["steps"] == 2 * per_epoch == meta["steps"]
        assert costs[stage]["loss_first_epoch"] == round(meta["losses"][0]["loss"], 4)
        assert costs[stage]["seconds_per_step"] == pytest.approx(meta["seconds"] / meta["steps"], abs=1e-4)
    assert costs["transition"]["seconds"] >= 0


def test_personalize_bench_runs_from_the_command_line():
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "unifybench.bench", "personalize", "--method", "unictokens", "--backend", "janus",
           "--model", "tiny", "--epochs", "1", "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["random_init"] and result["concept"] == "<dog>"
    assert set(result["stages"]) == {"stage1", "stage2", "transition", "stage3"}
    assert [result["stages"][s]["steps"] for s in ("stage1", "stage2", "stage3")] == [1, 4, 4]
    assert result["method"] == "unictokens" and result["model"] == "tiny"
    assert sum(s["seconds"] for s in result["stages"].values()) <= result["total_s"] + 0.01

    bad = subprocess.run(cmd + ["--concept", "unicorn"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "unicorn" in bad.stderr


def test_bf16_model_trains_float32_master_rows():
    """On a bf16 model the trained rows follow float32 masters: updates far below bf16's spacing
    accumulate instead of rounding away, and the model holds each master rounded to bf16."""
    from unifybench_unictokens.janus_backend import JanusBackend

    backend = JanusBackend("tiny", dtype=torch.bfloat16)
    init = torch.randn(2, backend.hidden_size, generator=torch.Generator().manual_seed(0)) * 0.02
    with backend.new_tokens(["<dog>", "<token_0>"], {"embed": init, "head_weight": init.clone()}) as ids:
        params = backend.vocab_row_params()
        others = torch.ones(params[0].param.shape[0], dtype=torch.bool)
        others[ids] = False
        before = [vp.param.detach().clone() for vp in params]
        lr = 1e-5  # far below bf16's spacing (2^-8 relative) for most of these weights
        trainer = RowTrainer(backend, ids, lr=lr, weight_decay=0.0)
        start = [m.detach().clone() for m in trainer.masters]
        example = TextExample("<dog> is <token_0>. What is <dog>?", None, "A dog.")
        try:
            for _ in range(4):
                trainer.step(backend.text_loss([example]))
            for vp, master, first, old in zip(params, trainer.masters, start, before):
                assert master.dtype == torch.float32
                moved = (master.detach() - first).abs()
                assert moved.max() > 3 * lr  # Adam moves each weight by ~lr per step
                torch.testing.assert_close(vp.param.detach()[ids], master.detach().to(torch.bfloat16),
                                           atol=0, rtol=0)
                assert torch.equal(vp.param.detach()[others], old[others])
        finally:
            trainer.close()


def test_one_compiled_step_serves_greedy_and_sampled_decoding(monkeypatch):
    """The decoding step compiles to one graph, without graph breaks, that serves greedy and sampled
    decoding at any guidance (each compile of the Janus-Pro-1B-sized step costs a minute or more on a
    GPU), and computes exactly what the uncompiled step does. Traced with a counting backend, so no
    code is generated here."""
    from torch._dynamo.testing import CompileCounter

    from unifybench_unictokens.janus_backend import JanusBackend

    counter = CompileCounter()
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend=counter, fullgraph=True,
                                                                      dynamic=False))
    torch._dynamo.reset()
    try:
        compiled = JanusBackend("tiny", compile_decode=True)
        plain = JanusBackend("tiny", compile_decode=False)
        prompts = ["A photo of a dog.", "A cat on a mat in the sun."]
        for kwargs in ({"greedy": True}, {"greedy": False}, {"greedy": False, "guidance": 3.0}):
            got = compiled.generate_codes(prompts, [0, 1], **kwargs)
            want = plain.generate_codes(prompts, [0, 1], **kwargs)
            assert torch.equal(got.codes, want.codes), kwargs
            torch.testing.assert_close(got.probs, want.probs)
        assert counter.frame_count == 1
    finally:
        torch._dynamo.reset()


def test_text_only_and_mixed_batches_are_answered(bench):
    """Questions without an image (Yo'LLaVA's text-only QA) alone and mixed with image questions in
    one batch: each gets the answer it gets when asked alone."""
    from unifybench_unictokens.janus_backend import JanusBackend

    backend = JanusBackend("tiny")
    photo = bench.concept("dog").train_images[0]
    asked = [TextExample("Is it a dog?", None), TextExample("What is in this photo?", photo),
             TextExample("What colour is its fur?", None)]
    alone = [backend.answer([ex], max_new_tokens=5)[0] for ex in asked]
    assert backend.answer(asked, max_new_tokens=5) == alone
    assert backend.answer([asked[0], asked[2]], max_new_tokens=5) == [alone[0], alone[2]]


def test_a_local_janus_folder_loads_like_the_model_it_was_saved_from(tmp_path):
    """model=LOCAL_FOLDER goes through from_pretrained (model, tokenizer, image processor): the
    special tokens resolve to the same ids and decoding gives the same codes."""
    from unifybench_unictokens.janus_backend import JanusBackend, build_tiny

    model, tokenizer, processor = build_tiny(0)
    for part in (model, tokenizer, processor):
        part.save_pretrained(tmp_path)
    built, loaded = JanusBackend("tiny"), JanusBackend(str(tmp_path))
    for attr in ("bos", "eos", "pad", "boi", "eoi", "image_id", "n_codes", "hidden_size"):
        assert getattr(loaded, attr) == getattr(built, attr), attr
    prompts = ["A photo of a dog.", "A cat on a mat."]
    assert torch.equal(loaded.generate_codes(prompts, [3, 4]).codes, built.generate_codes(prompts, [3, 4]).codes)

    with pytest.raises(BenchError, match="cannot load Janus checkpoint"):
        JanusBackend(str(tmp_path / "missing"))


def test_cli_run_on_yollava_text_only_questions(tmp_path):
    """Yo'LLaVA's text-only multiple choice has no image: with --batch-size 1 a batch holds no image
    at all, which crashed transformers 5.24's generate() before the backend left pixel_values out."""
    from unifybench.testing.benches import make_yollava

    bench = make_yollava(tmp_path / "yollava")
    proc = cli("run", "--method", "unictokens", "--method-arg", "backend=janus", "--method-arg", "model=tiny", "--method-arg", "epochs=1",
                   "--method-arg", "transition_images=1", "--method-arg", "max_new_tokens=4", "--bench", str(bench),
                   "--tasks", "choice", "--batch-size", "1", "--out", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = read_results(only_run_dir(tmp_path / "runs"))
    assert isinstance(results["tasks"]["choice"]["accuracy"], float)


def test_bf16_checkpoints_keep_the_float32_rows(bench, tmp_path):
    """On a bf16 model the checkpoints hold the float32 masters (the model holds them rounded), and a
    stage starts from the previous stage's saved rows, not from the model's rounded copy: the shared
    rows, which stage 3 does not train, come out of stage 3 exactly as stage 2 saved them."""
    method = UniCTokens({**SHORT, "epochs": "1", "transition_images": "1", "dtype": "bfloat16"}, seed=0)
    concept = bench.concept("dog")
    state = method.personalize(concept, tmp_path)
    width = method.backend.hidden_size
    stage2, _ = load_rows(tmp_path / "stage2", 1, width)
    stage3, _ = load_rows(tmp_path / "stage3", 1, width)
    embed = stage3["embed"]
    assert not torch.equal(embed, embed.bfloat16().float())  # more precision than bf16 holds
    with method.activate(concept, state):
        ids = method.backend.tokenizer.convert_tokens_to_ids(TokenGroups(concept.token).rows(STAGE_ROWS[3]))
        in_model = method.backend.model.get_input_embeddings().weight.detach()[ids]
    assert in_model.dtype == torch.bfloat16 and torch.equal(in_model, embed.bfloat16())
    shared = slice(1, 17)  # rows 1-16: the shared tokens, trained in stages 1 and 2 only
    assert torch.equal(stage3["embed"][shared], stage2["embed"][shared])
    assert not torch.equal(stage2["embed"][shared], stage2["embed"][shared].bfloat16().float())
