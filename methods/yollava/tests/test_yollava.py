"""Yo'LLaVA on a tiny LLaVA built in code (no downloads): only its rows train, the base model comes
back bit-identical, its prompts are the authors', its training set is built as theirs, their files
load, and the real command line runs it and its two reference rows on the bundled bench and on a
Yo'LLaVA-format folder."""
from __future__ import annotations

import json

import pytest
import torch

from unifybench.testing.benches import make_unifybench, make_yollava, photo, write_json
from unifybench.testing import cli, only_run_dir, read_results, predict
from unifybench.kit import rows as kit_rows
from unifybench.data import load_benchmark
from unifybench.errors import BenchError
from unifybench.methods import AnswerRequest

from unifybench_yollava.llava import SYSTEM, save_folder
from unifybench_yollava.method import LLaVA, LLaVAPrompt, YoLLaVA, load_yollava_rows, save_yollava_rows

FAST = {"model": "tiny", "epochs": "1", "max_new_tokens": "4", "positives_per_photo": "2"}
BASE = {"model": "tiny", "max_new_tokens": "4"}  # the reference rows train nothing


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The UnifyBench-layout fixture with three hard negatives for bo."""
    root = make_unifybench(tmp_path_factory.mktemp("ub") / "bench")
    for i in range(3):
        photo(root / "concept" / "train" / "bo" / "negative_example" / f"{i}.png")
    return load_benchmark(root)


def _vocab_params(host):
    return {vp.name: vp.param.detach().clone() for vp in host.vocab_row_params()}


def test_only_the_new_rows_train_and_the_base_model_is_bit_identical_after(bench, tmp_path):
    method = YoLLaVA(FAST, seed=3)
    host = method.host
    concept = bench.concept("bo")
    before = {name: p.detach().clone() for name, p in host.model.named_parameters()}
    n_tokenizer, n_rows = len(host.tokenizer), before["lm_head.weight"].shape[0]
    assert n_rows == n_tokenizer + 16  # the tiny model's text vocabulary is padded, as llava-1.5's

    state = method.personalize(concept, tmp_path / "bo")

    after = dict(host.model.named_parameters())
    assert after.keys() == before.keys()
    for name, value in before.items():
        assert torch.equal(after[name], value), name  # every weight, every row, bit for bit
    assert len(host.tokenizer) == n_tokenizer
    rows = state["rows"]
    assert rows["embed"].shape == (17, host.hidden_size) and rows["head_weight"].shape == (17, host.hidden_size)
    init = method._init_rows(concept)
    assert not torch.equal(rows["embed"], init["embed"]) and not torch.equal(rows["head_weight"], init["head_weight"])

    with method.activate(concept, state):
        ids = [host.tokenizer.convert_tokens_to_ids(t) for t in method.tokens(concept)]
        assert ids == list(range(n_tokenizer, n_tokenizer + 17))  # 16 padding rows, then one grown
        inside = dict(host.model.named_parameters())
        for name, value in before.items():
            if name in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
                assert torch.equal(inside[name][:n_tokenizer], value[:n_tokenizer]), name
            else:
                assert torch.equal(inside[name], value), name
        assert torch.equal(inside["lm_head.weight"][ids].float(), rows["head_weight"])
        assert torch.equal(inside["model.language_model.embed_tokens.weight"][ids].float(), rows["embed"])
    assert all(torch.equal(v, before[k]) for k, v in host.model.named_parameters())


def test_a_local_folder_loads_and_train_batch_batches_the_same_loss(bench, tmp_path):
    tiny = YoLLaVA(FAST, seed=0)
    save_folder(tiny.host, tmp_path / "llava")  # a folder in the hub's layout, as a user's download
    local = YoLLaVA({**FAST, "model": str(tmp_path / "llava"), "train_batch": "3"}, seed=0)
    assert local.describe()["random_init"] is False and local.describe()["base_model"] == str(tmp_path / "llava")
    theirs, ours = dict(tiny.host.model.named_parameters()), dict(local.host.model.named_parameters())
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in theirs)

    host, concept = local.host, bench.concept("bo")
    examples, counts = local.training_set(concept)
    with_image = [e for e in examples if e[1] is not None]
    batch = [with_image[0], next(e for e in examples if e[1] is None), with_image[-1]]  # sequences of 3 lengths
    with kit_rows.NewTokens(host, local.tokens(concept), local._init_rows(concept)), torch.no_grad():
        batched = host.loss(batch, [False, False, True])
        singles = [host.loss([e], [f]) for e, f in zip(batch, [False, False, True])]
        answer_tokens = [len(host.ids(host.prompt_text(q, image is not None) + " " + a))
                         - len(host.ids(host.prompt_text(q, image is not None))) for q, image, a in batch]
    expected = sum(loss * n for loss, n in zip(singles, answer_tokens)) / sum(answer_tokens)
    assert torch.allclose(batched, expected, atol=1e-5)  # padding changes nothing: a mean over answer tokens

    local.personalize(concept, tmp_path / "bo")
    meta = json.loads((tmp_path / "bo" / "yollava.json").read_text())
    assert meta["losses"][0]["steps"] == -(-counts["total"] // 3) and meta["train_args"]["train_batch"] == 3


def test_the_padded_vocabulary_is_never_shrunk(bench):
    """With fewer new tokens than padding rows no row is added, and none is taken away (resizing to
    len(tokenizer) would cut llava-1.5's 32,064 rows to 32,019)."""
    method = YoLLaVA({**FAST, "latent_tokens": "3"}, seed=0)
    host = method.host
    rows_before = host.model.get_input_embeddings().weight.shape[0]
    state = {"rows": method._init_rows(bench.concept("bo"))}
    with method.activate(bench.concept("bo"), state):
        assert host.model.get_input_embeddings().weight.shape[0] == rows_before
    assert host.model.get_input_embeddings().weight.shape[0] == rows_before


def test_the_recognition_prompt_is_the_authors_text(bench, monkeypatch):
    method = YoLLaVA(FAST, seed=0)
    concept = bench.concept("bo")
    seen = []
    monkeypatch.setattr(method.host, "answer", lambda examples, *a, **k: seen.extend(examples) or ["Yes"] * len(examples))
    request = AnswerRequest("bo", "rec", 0, "Is <bo> in this image?", concept.test_images[0])
    state = {"rows": method._init_rows(concept)}
    assert predict(method, concept, state, [request]) == ["Yes"]
    (user, image), = seen
    latent = "".join(f"<token{i}>" for i in range(16))
    assert user == f"<bo> is {latent} Can you see <bo> in this photo? Answer with a single word or phrase."
    assert image == concept.test_images[0]
    assert method.host.prompt_text(user, True) == (
        f"{SYSTEM} USER: <image>\n<bo> is {latent} Can you see <bo> in this photo? Answer with a single word "
        f"or phrase. ASSISTANT:")
    # The benchmark's own question on request, and non-recognition items keep theirs.
    assert YoLLaVA({**FAST, "rec_prompt": "bench"}, seed=0)._user_text(concept, state, request) == \
        f"<bo> is {latent} Is <bo> in this image?"
    # Other questions as test-sks-qa.py: the concept prompt keeps its full stop.
    vqa = AnswerRequest("bo", "vqa", 1, "What is <bo> wearing?", concept.test_images[0])
    assert method._user_text(concept, state, vqa) == f"<bo> is {latent}. What is <bo> wearing?"
    # The reference rows: the token alone, and the description in its place before the question.
    assert LLaVA(BASE)._user_text(concept, state, request) == \
        "Can you see <bo> in this photo? Answer with a single word or phrase."
    assert LLaVAPrompt(BASE)._user_text(concept, state, request) == \
        "<bo> is a shiba inu with orange fur. Can you see <bo> in this photo? Answer with a single word or phrase."


def test_image_tokens_and_new_tokens_are_single_ids_in_the_prompt(bench):
    method = YoLLaVA(FAST, seed=0)
    host, concept = method.host, bench.concept("bo")
    with method.activate(concept, {"rows": method._init_rows(concept)}):
        user = method._user_text(concept, None, AnswerRequest("bo", "rec", 0, "?", None))
        ids = host.ids(host.prompt_text(user, True))
        new = [host.tokenizer.convert_tokens_to_ids(t) for t in method.tokens(concept)]
        assert ids[0] == host.bos and ids.count(host.image_token) == host.n_image_tokens == 16
        assert ids.count(new[0]) == 2 and all(ids.count(t) == 1 for t in new[1:])  # <bo> twice, each latent once


def test_the_training_set_is_the_authors_mixture_and_is_recorded(bench, tmp_path):
    method = YoLLaVA({**FAST, "positives_per_photo": "5"}, seed=0)
    concept = bench.concept("bo")
    examples, counts = method.training_set(concept)
    train = set(concept.train_images)
    hard = set(concept.hard_negatives)
    positives = [e for e in examples if e[1] in train]
    negatives = [e for e in examples if e[1] is not None and e[1] not in train]
    text_only = [e for e in examples if e[1] is None]
    assert len(concept.train_images) == 3 and len(positives) == 15  # 5 questions of each training photo
    assert all("<bo>" in q and a.startswith("Yes") for q, _, a in positives)
    assert {e[1] for e in negatives if e[1] in hard} == hard  # all 3 negative_example/ photos
    easy = {e[1] for e in negatives if e[1] not in hard}
    pg = set(bench.concept("pg").train_images)
    randoms = {p for p in concept.easy_negatives if p not in pg}
    assert len(randoms) == 2 and easy == randoms | pg  # the 2 random images, then pg's 2 training photos
    assert all("not" in a or "can't" in a for _, _, a in negatives)
    # Text-only: the description, the extra fact; the conversation about a photo is not asked without it.
    assert ("What does <bo> look like?", None, "<bo> is a shiba inu with orange fur.") in text_only
    assert ("Tell me something about <bo>.", None, "<bo> has a red hat.") in text_only
    assert counts == {"positives": 15, "positive_photos": 3, "hard_negatives": 3, "hard_available": 3,
                      "easy_negatives": 4, "easy_available": 4, "text_only": 2, "image_conversations_skipped": 1,
                      "total": 24}
    # Every hard negative and 100 easy ones by default, fewer on request, drawn from the seed and the concept.
    few = YoLLaVA({**FAST, "max_hard": "1", "max_easy": "2"}, seed=0).training_set(concept)[1]
    assert (few["hard_negatives"], few["easy_negatives"]) == (1, 2)
    assert method.training_set(concept) == (examples, counts)

    method.personalize(concept, tmp_path / "bo")
    meta = json.loads((tmp_path / "bo" / "yollava.json").read_text())
    assert meta["training_set"] == counts and meta["concept_prompt"] == "<bo> is " + "".join(
        f"<token{i}>" for i in range(16)) + "."
    assert meta["train_args"]["lr"] == 1e-3 and meta["train_args"]["weight_decay"] == 1e-2
    assert meta["losses"][0]["steps"] == counts["total"]  # batch 1: one step per example


def test_the_authors_training_folder_gives_hard_and_random_negatives_and_text_only_qa(tmp_path):
    """The layout of the authors' repository: example_training_data/<s>/ beside yollava-data/."""
    root = make_yollava(tmp_path / "yl")
    folder = root / "example_training_data" / "bo"
    for i in range(3):
        photo(folder / "laion" / f"{i}.png")
    photo(root / "training_data" / "cc12m_images" / "random-images" / "7.png")
    no = [{"Human": "Can you check if <bo> is in this photo?", "AI": "<bo> is not present in the photo."}]
    write_json(folder / "recognition_negative-cc12m.json", {
        "./training_data/cc12m_images/random-images/7.png": no,
        "./training_data/cc12m_images/random-images/8.png": no})  # not in this copy: left out
    write_json(folder / "text-only-conversation.json", {
        "./data/train/bo/3.png": [{"Human": "What color is <bo>?", "AI": "<bo> is brown and white."},
                                  {"Human": "What size is <bo>?", "AI": "<bo> appears to be small."}],
        "./data/train/bo/1.png": [{"Human": "What color is <bo>?", "AI": "<bo> is brown."}]})
    bench = load_benchmark(root)
    bo = bench.concept("bo")
    assert bo.hard_negatives == [folder / "laion" / f"{i}.png" for i in range(3)]
    # The authors' random photos alone: no other subject's photo (mam has no list: its stand-in).
    assert bo.easy_negatives == [root / "training_data" / "cc12m_images" / "random-images" / "7.png"]
    assert bench.concept("mam").easy_negatives == bench.concept("bo").train_images
    examples, counts = YoLLaVA(FAST, seed=0).training_set(bo)
    assert [(q, a) for q, image, a in examples if image is None] == [
        ("What color is <bo>?", "<bo> is brown and white."), ("What size is <bo>?", "<bo> appears to be small."),
        ("What color is <bo>?", "<bo> is brown.")]  # trained without their photo, as --text_only
    assert (counts["hard_negatives"], counts["easy_negatives"], counts["text_only"]) == (3, 1, 3)
    assert bench.concept("mam").training_conversations == [] and bench.concept("mam").hard_negatives == []

    (folder / "text-only-conversation.json").write_text('{"./data/train/bo/3.png": [{"Human": 1}]}')
    with pytest.raises(BenchError) as exc:
        load_benchmark(root)
    assert exc.value.path.endswith("text-only-conversation.json") and "turn 0" in exc.value.one_line()


def test_the_authors_bo_folder_gives_their_negatives_and_text_only_part(tmp_path):
    """Their example_training_data/bo/ as the repository lists it (WisconsinAIVision/YoLLaVA): 115 LAION
    photos in laion/, 99 random images named by recognition_negative-cc12m.json, 40 text-only turns
    over 4 photos in text-only-conversation.json. dataset.py with --recog_only --text_only
    --random_image trains on exactly those negatives and that text-only part."""
    root = make_yollava(tmp_path / "yl")
    folder = root / "example_training_data" / "bo"
    no = [{"Human": "Is <bo> in this photo?", "AI": "No, <bo> is not in this photo."}]
    for i in range(115):
        photo(folder / "laion" / f"{100000 + i}.png", size=8)
    randoms = {}
    for i in range(99):
        photo(root / "example_training_data" / "random-images" / f"{i}.png", size=8)
        randoms[f"./example_training_data/random-images/{i}.png"] = no
    write_json(folder / "recognition_negative-cc12m.json", randoms)
    write_json(folder / "text-only-conversation.json", {
        f"./data/train/bo/{k}.png": [{"Human": f"Question {k}.{t} about <sks>?", "AI": f"Answer {k}.{t}."}
                                     for t in range(10)] for k in range(4)})
    bench = load_benchmark(root)
    bo = bench.concept("bo")
    examples, counts = YoLLaVA(FAST, seed=0).training_set(bo)
    assert (counts["hard_negatives"], counts["easy_negatives"], counts["text_only"]) == (115, 99, 40)
    others = {p for c in bench.concepts if c.name != "bo" for p in c.train_images + c.test_images}
    negatives = {image for _, image, a in examples if image is not None and image not in set(bo.train_images)}
    assert not negatives & others and len(negatives) == 214
    assert {p.parent.name for p in negatives} == {"laion", "random-images"}


def test_epochs_are_saved_in_the_authors_files_and_a_finished_state_is_reloaded(bench, tmp_path):
    method = YoLLaVA({**FAST, "epochs": "2"}, seed=0)
    concept = bench.concept("pg")
    state = method.personalize(concept, tmp_path / "pg")
    files = sorted(p.name for p in (tmp_path / "pg").glob("*.pt"))
    assert files == ["0-lmhead.pt", "0-token.pt", "1-lmhead.pt", "1-token.pt"]
    last = torch.load(tmp_path / "pg" / "1-token.pt", weights_only=True)
    assert last.dtype == torch.float32 and torch.equal(last, state["rows"]["embed"])
    stamp = (tmp_path / "pg" / "yollava.json").stat().st_mtime_ns
    again = YoLLaVA({**FAST, "epochs": "2"}, seed=0).personalize(concept, tmp_path / "pg")
    assert (tmp_path / "pg" / "yollava.json").stat().st_mtime_ns == stamp  # loaded, not retrained
    assert all(torch.equal(again["rows"][k], state["rows"][k]) for k in state["rows"])


class _Interrupted(Exception):
    pass


def test_an_interrupted_concept_resumes_after_its_last_epoch_bit_for_bit(bench, tmp_path):
    args = {**FAST, "epochs": "3", "best_epoch": "true", "positives_per_photo": "1"}
    concept = bench.concept("bo")
    whole = YoLLaVA(args, seed=5).personalize(concept, tmp_path / "whole")["rows"]

    stopped = YoLLaVA(args, seed=5)

    def stop_in_the_third_epoch(what, done, total):
        if what.startswith("epoch 3/"):
            raise _Interrupted
    stopped.progress = stop_in_the_third_epoch
    with pytest.raises(_Interrupted):
        stopped.personalize(concept, tmp_path / "resumed")
    assert sorted(p.name for p in (tmp_path / "resumed").glob("[0-9]-token.pt")) == ["0-token.pt", "1-token.pt"]

    again = YoLLaVA(args, seed=5)
    epochs_run = []
    again.progress = lambda what, done, total: epochs_run.append(what)
    rows = again.personalize(concept, tmp_path / "resumed")["rows"]  # as the runner resumes an unfinished one
    assert set(epochs_run) == {"epoch 3/3"}  # epochs 1 and 2 were not trained again
    assert all(torch.equal(rows[k], whole[k]) for k in whole)
    meta_whole, meta = (json.loads((tmp_path / d / "yollava.json").read_text()) for d in ("whole", "resumed"))
    assert meta["losses"] == meta_whole["losses"] and meta["recognition_checks"] == meta_whole["recognition_checks"]

    assert not (tmp_path / "resumed" / "resume.pt").exists()  # finished: the epoch files are the record

    # A resume file from other training arguments is ignored: training starts over.
    with pytest.raises(_Interrupted):
        stopped.personalize(concept, tmp_path / "other")
    assert (tmp_path / "other" / "resume.pt").is_file()
    other = YoLLaVA({**args, "lr": "2e-3"}, seed=5)
    epochs_run.clear()
    other.progress = lambda what, done, total: epochs_run.append(what)
    other.personalize(concept, tmp_path / "other")
    assert {"epoch 1/3", "epoch 2/3", "epoch 3/3"} <= set(epochs_run)


def test_the_best_epoch_rule_keeps_the_best_check_after_epoch_4(bench, tmp_path):
    method = YoLLaVA({**FAST, "epochs": "6", "best_epoch": "true", "positives_per_photo": "1"}, seed=0)
    concept = bench.concept("pg")
    state = method.personalize(concept, tmp_path / "pg")
    meta = json.loads((tmp_path / "pg" / "yollava.json").read_text())
    checks = meta["recognition_checks"]
    assert [c["epoch"] for c in checks] == list(range(6)) and meta["best_epoch"] == 5  # only epoch 5 is after 4
    assert meta["selected_epoch"] == "best"
    assert torch.equal(torch.load(tmp_path / "pg" / "best-token.pt", weights_only=True),
                       torch.load(tmp_path / "pg" / "5-token.pt", weights_only=True))
    assert torch.equal(state["rows"]["embed"], torch.load(tmp_path / "pg" / "5-token.pt", weights_only=True))


def test_the_authors_files_load_with_checkpoint_dir_and_bad_ones_are_one_line(bench, tmp_path):
    concept = bench.concept("bo")
    width = YoLLaVA(FAST).host.hidden_size
    g = torch.Generator().manual_seed(0)
    rows = {"embed": torch.randn(17, width, generator=g), "head_weight": torch.randn(17, width, generator=g)}
    save_yollava_rows(tmp_path / "ckpt" / "bo", "14", rows)
    save_yollava_rows(tmp_path / "ckpt" / "bo", "3", {k: v * 0 for k, v in rows.items()})
    loaded = YoLLaVA({**FAST, "checkpoint": str(tmp_path / "ckpt")}).personalize(concept, tmp_path / "state")
    assert torch.equal(loaded["rows"]["embed"], rows["embed"]) and torch.equal(loaded["rows"]["head_weight"], rows["head_weight"])
    assert json.loads((tmp_path / "state" / "checkpoint.json").read_text())["epoch"] == "14"  # the highest
    early = YoLLaVA({**FAST, "checkpoint": str(tmp_path / "ckpt"), "epoch": "3"}).personalize(concept, tmp_path / "s3")
    assert not early["rows"]["embed"].any()

    torch.save(torch.zeros(17, width + 1), tmp_path / "ckpt" / "bo" / "14-token.pt")
    with pytest.raises(BenchError, match=r"expected rows of shape \[17, 64\].*found \[17, 65\]"):
        YoLLaVA({**FAST, "checkpoint": str(tmp_path / "ckpt")}).personalize(concept, tmp_path / "s4")
    with pytest.raises(BenchError, match="no <epoch>-token.pt files for concept 'pg'"):
        YoLLaVA({**FAST, "checkpoint": str(tmp_path / "ckpt")}).personalize(bench.concept("pg"), tmp_path / "s5")
    (tmp_path / "ckpt" / "bo" / "14-token.pt").write_bytes(b"not a tensor")
    with pytest.raises(BenchError, match="cannot load"):
        load_yollava_rows(tmp_path / "ckpt" / "bo", "14", width, 17)
    with pytest.raises(BenchError, match=r"\[--method-arg checkpoint\]: folder not found"):
        YoLLaVA({**FAST, "checkpoint": str(tmp_path / "nowhere")})


def test_sampling_is_seeded_per_request_and_independent_of_batching(bench):
    concept = bench.concept("bo")
    requests = [AnswerRequest("bo", "vqa", i, f"What is {i}?", concept.test_images[i % 2]) for i in range(3)]
    one = LLaVA({**BASE, "temperature": "0.9", "max_new_tokens": "6"}, seed=1, batch_size=1)
    three = LLaVA({**BASE, "temperature": "0.9", "max_new_tokens": "6"}, seed=1, batch_size=3)
    alone = predict(one, concept, None, requests[2:])
    together = predict(three, concept, None, requests)
    assert together[2] == alone[0]
    greedy = predict(LLaVA({**BASE, "max_new_tokens": "6"}, seed=1, batch_size=3), concept, None, requests)
    assert greedy == predict(LLaVA({**BASE, "max_new_tokens": "6"}, seed=1, batch_size=1), concept, None, requests)


@pytest.mark.parametrize("value, message", [("epochs=0", "expected an integer >= 1, got '0'"),
                                            ("rec_prompt=mine", "expected one of authors, bench"),
                                            ("best_epoch=maybe", "expected true or false"),
                                            ("epoch=3", "epoch=N needs checkpoint=DIR"),
                                            ("flip_p=2", "expected a number >= 0, <= 1"),
                                            ("temperature=-1", "expected a number >= 0"),
                                            ("max_hard=few", "expected an integer")])
def test_bad_arguments_are_one_line_before_anything_runs(tmp_path, value, message):
    ran = cli("run", "--method", "yollava", "--method-arg", "model=tiny", "--method-arg", value,
              "--out", str(tmp_path / "runs"))
    assert ran.returncode != 0 and message in ran.stderr and len(ran.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_run_yollava_and_the_reference_rows_on_the_bundled_bench(tmp_path):
    common = ["--concepts", "dog", "--limit", "2", "--out", str(tmp_path / "runs")]
    ran = cli("run", "--method", "yollava", *[x for k, v in FAST.items() for x in ("--method-arg", f"{k}={v}")],
              *common)
    assert ran.returncode == 0, ran.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / "runs")
    results = read_results(run_dir)
    assert set(results["tasks"]) >= {"rec", "vqa", "text_only", "choice"}
    assert isinstance(results["tasks"]["rec"]["accuracy"], float)
    assert "every score" in results["label"] and results["method_details"]["random_init"] is True
    assert json.loads((run_dir / "state" / "dog" / "yollava.json").read_text())["finished"] is True
    for method in ("llava", "llava-prompt"):
        ref = cli("run", "--method", method, "--method-arg", "model=tiny", "--method-arg", "max_new_tokens=4",
                  *common)
        assert ref.returncode == 0, ref.stderr[-3000:]
    board = cli("leaderboard", str(tmp_path / "runs"))
    assert board.returncode == 0, board.stderr
    # Random-init runs sit in a table of their own, flagged, beside no published row.
    section = board.stdout.split("random-init method model")[1].split("###")[0]
    for label in ("| yollava (", "| llava (", "| llava-prompt ("):
        assert label in section
    assert "[published]" not in section


def test_run_yollava_on_a_yollava_format_folder(tmp_path):
    root = make_yollava(tmp_path / "yl")
    for i in range(2):  # the retrieved hard negatives of the Yo'LLaVA layout
        photo(root / "yollava-data" / "train" / "bo" / "negative_example" / f"{i}.png")
    ran = cli("run", "--method", "yollava", *[x for k, v in FAST.items() for x in ("--method-arg", f"{k}={v}")],
              "--bench", str(root), "--out", str(tmp_path / "runs"))
    assert ran.returncode == 0, ran.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / "runs")
    results = read_results(run_dir)
    assert results["bench"]["format"] == "yollava" and "rec" in results["tasks"]
    bo = json.loads((run_dir / "state" / "bo" / "yollava.json").read_text())["training_set"]
    assert bo["hard_negatives"] == 2 and bo["easy_negatives"] == 2  # mam's two training photos
    assert bo["positives"] == 2 * 2

    # The reference rows on the same folder. Yo'LLaVA's layout has no descriptions: llava-prompt
    # asks for them in one line, before anything is made, rather than pass for the llava row.
    base = [x for k, v in BASE.items() for x in ("--method-arg", f"{k}={v}")]
    common = ["--bench", str(root), "--out", str(tmp_path / "refs")]
    assert cli("run", "--method", "llava", *base, *common).returncode == 0
    bare = cli("run", "--method", "llava-prompt", *base, *common)
    assert bare.returncode == 2 and len(bare.stderr.strip().splitlines()) == 1
    assert "no description for concept(s) bo, mam" in bare.stderr and "descriptions=FILE" in bare.stderr
    assert len(list((tmp_path / "refs").iterdir())) == 1  # llava's run directory only
    described = write_json(tmp_path / "descriptions.json", {"bo": "<bo> is a shiba inu.", "mam": "<mam> is a cat."})
    ran = cli("run", "--method", "llava-prompt", *base, "--method-arg", f"descriptions={described}", *common)
    assert ran.returncode == 0, ran.stderr[-3000:]
    run_json = json.loads(next((tmp_path / "refs").glob("llava-prompt__*/run.json")).read_text())
    assert run_json["method_details"]["descriptions"]["file"] == str(described)


def test_llava_prompt_puts_the_given_description_before_the_question(bench, tmp_path):
    concept = bench.concept("bo")
    request = AnswerRequest("bo", "vqa", 0, "What is <bo> wearing?", None)
    assert LLaVAPrompt(BASE)._user_text(concept, None, request) == (
        f"{concept.description.strip()} What is <bo> wearing?")
    given = write_json(tmp_path / "d.json", {"bo": "<bo> is a small dog."})
    assert LLaVAPrompt({**BASE, "descriptions": str(given)})._user_text(concept, None, request) == (
        "<bo> is a small dog. What is <bo> wearing?")
    (tmp_path / "bad.json").write_text('["not an object"]')
    with pytest.raises(BenchError, match="expected a JSON object"):
        LLaVAPrompt.parse_arguments({"descriptions": str(tmp_path / "bad.json")})


def test_personalize_bench_times_yollava(capsys):
    from unifybench.bench.personalize import main

    assert main(["--method", "yollava", "--epochs", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    train = result["stages"]["train"]
    assert result["random_init"] is True and train["epochs"] == 1
    assert train["steps"] == train["training_set"]["total"] and train["seconds"] > 0
