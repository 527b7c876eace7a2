"""DreamBench++'s judge protocol against a scripted OpenAI-compatible server on 127.0.0.1, checked
against a transcription of their code (github.com/yuangpeng/dreambench_plus at 66ca27e):
``eval_concept_preservation.py`` / ``eval_prompt_following.py`` (messages, regex, max_retry),
``utils/gpt_utils.py`` + ``utils/image_utils.py`` (image encoding) and ``benchmarking.py``
(``cal_score``, ``avg_std``)."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import random
import re
from pathlib import Path
from types import SimpleNamespace

import PIL.Image
import PIL.ImageOps
import pytest

from tests._dreambench_plus import SUBJECTS, make_dreambench_plus
from tests._judge_server import JudgeServer
from unifybench.data import load_benchmark
from unifybench.errors import BenchError
from unifybench.metrics import ScoringContext, aggregate, aggregate_intervals
from unifybench.prediction import Prediction
from unifybench.scoring.judges import JudgeConfig
from unifybench.scoring.judges import dreambench_plus as dbp
from unifybench.scoring.judges.config import JUDGE_MODES
from unifybench.tasks import build_requests

PROMPTS = Path(dbp.__file__).parent / "dreambench_plus_prompts"
# `git ls-tree 66ca27e dreambench_plus/prompts/`: the blob ids of their files.
UPSTREAM_BLOBS = {
    "gpt_prompt_style_full.txt": "c9e4402e4a3ab0a39b59dc1bc81f0dea6567579a",
    "gpt_prompt_subject_full.txt": "738bcbf0b52f9a5c09572e2a41bb738810d85f6f",
    "gpt_prompt_text_full.txt": "31256bae78260e18867d7f477f3fea45c82650eb",
    "user_prompt_style_full.txt": "cfba17aaa05b617cb04eca45eff6c9a337e6a7dd",
    "user_prompt_subject_full.txt": "610fc63706103a05082184e9ca3542c588f2312e",
    "user_prompt_text_full.txt": "8437e503a50fa8243e0a4a72c3d58c0893845997",
}


# ------------------------------------------------------------------ their code, transcribed
def their_load_image(image):  # utils/image_utils.py load_image (a path or a PIL image)
    if not isinstance(image, PIL.Image.Image):
        image = PIL.Image.open(image)
    image = PIL.ImageOps.exif_transpose(image)
    if image.mode == "RGBA":
        background = PIL.Image.new("RGBA", image.size, "white")
        image = PIL.Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def their_stored(path, tmp: Path):  # generate_images.py: save_image(img, path=".../{i}_{j}.jpg"), then load_image
    stored = tmp / f"{hashlib.sha1(str(path).encode()).hexdigest()}.jpg"
    their_load_image(path).save(stored)
    return str(stored)


def encode_image_into_base64(image):  # utils/gpt_utils.py
    image = their_load_image(image)
    buffered = io.BytesIO()
    image.save(buffered, format="JPEG")
    return base64.b64encode(buffered.getvalue()).decode("utf-8")


def their_prompt(name):  # both eval scripts: open(...).read().strip()
    with open(PROMPTS / f"{name}.txt", "r") as f:
        return f.read().strip()


def their_cp_messages(category, src_path, tgt_path):  # eval_concept_preservation.py, ablation "full"
    category = "style" if category == "style" else "subject"  # main(): subject runs every non-style collection
    user_prompt, gpt_prompt = their_prompt(f"user_prompt_{category}_full"), their_prompt(f"gpt_prompt_{category}_full")
    src_image = encode_image_into_base64(their_load_image(src_path).resize((512, 512)))
    tgt_image = encode_image_into_base64(their_load_image(tgt_path).resize((512, 512)))
    return [
        {"role": "user", "content": user_prompt},
        {"role": "assistant", "content": gpt_prompt},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{src_image}", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{tgt_image}", "detail": "high"}},
            ],
        },
    ]


def their_pf_messages(instruction, tgt_path):  # eval_prompt_following.py, ablation "full"
    user_prompt, gpt_prompt = their_prompt("user_prompt_text_full"), their_prompt("gpt_prompt_text_full")
    tgt_image = encode_image_into_base64(their_load_image(tgt_path).resize((512, 512)))
    return [
        {"role": "user", "content": user_prompt},
        {"role": "assistant", "content": gpt_prompt},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": instruction},
                {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{tgt_image}", "detail": "high"}},
            ],
        },
    ]


def their_read_score(content):  # both eval scripts; raises where theirs asserts
    pattern = r"(score|Score):\s*[a-zA-Z]*\s*(\d+)"
    score = re.findall(pattern, content)
    score = [int(s) for _, s in score]
    assert len(score) == 1
    return score[0]


def cal_score(data, filter=None):  # benchmarking.py, reading a dict instead of its json file
    if filter is not None:
        new_data = {}
        for k, v in data.items():
            if filter in k:
                new_data[k] = v
            elif filter == "photorealistic" and int(k.split("-")[-1]) >= 0 and int(k.split("-")[-1]) <= 3:
                new_data[k] = v
            elif filter == "style_transfer" and int(k.split("-")[-1]) >= 4 and int(k.split("-")[-1]) <= 6:
                new_data[k] = v
            elif filter == "imaginative" and int(k.split("-")[-1]) >= 7 and int(k.split("-")[-1]) <= 8:
                new_data[k] = v
        data = new_data
    return sum(data.values()) / len(data) / 4


def avg_std(data):  # utils/misc.py
    avg = sum(data) / len(data)
    std = math.sqrt(sum([(x - avg) ** 2 for x in data]) / (len(data) - 1))
    return round(avg, 3), round(std, 3)


def their_collection_id(category, index, subject):  # dreambench_plus_dataset.py
    _category = f"live_subject_{category}" if category in ("animal", "human") else category
    return "_".join([_category, index, subject.lower().replace(" ", "_")])


# ------------------------------------------------------------------ helpers
def _git_blob(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _judged_run(tmp_path, limit=1):
    """A DreamBench++ bench, its gen requests, and a store whose first images are small photos."""
    from unifybench.testing.benches import photo

    bench = load_benchmark(str(make_dreambench_plus(tmp_path / "bench")))
    names = [c.name for c in bench.concepts]
    work = build_requests(bench, ["gen"], names, seed=0, images_per_prompt=2, limit=limit)
    run_dir = tmp_path / "run"
    predictions = {}
    for ws in work.values():
        for w in ws:
            rels = [f"images/{w.request.concept}/{w.request.index}/{i}.png" for i in range(2)]
            for rel in rels:
                photo(run_dir / rel, size=40)
            predictions[w.request.key] = Prediction(w.request.key, "gen", w.request.concept, w.request.index,
                                                    images=rels)
    return bench, work, SimpleNamespace(run_dir=run_dir, predictions=predictions)


def _config(server, **kw):
    return JudgeConfig(spec="openai:gpt-4o-2024-05-13", base_url=server.base_url, retries=2, backoff=0.0, **kw)


# ------------------------------------------------------------------ tests
def test_prompt_files_are_theirs_byte_for_byte():
    assert {p.name: _git_blob(p) for p in sorted(PROMPTS.glob("*.txt"))} == UPSTREAM_BLOBS


def test_modes_are_the_configs():
    assert JUDGE_MODES == tuple(dbp.MODES)
    assert (dbp.MODES["reference"].temperature, dbp.MODES["reference"].runs) == (1.0, 3)
    assert (dbp.MODES["deterministic"].temperature, dbp.MODES["deterministic"].runs) == (0.0, 1)


@pytest.mark.parametrize("reply", ["Score: 3", "score: 0", "### Score: 1\nfine", "Analysis: x\nScore:  4",
                                   "Score: very 2", "Score: 2\nScore: 3", "no score here", "Score: 2, score: 2",
                                   "SCORE: 3", "Score:\n3", "I'm sorry, I can't help with that."])
def test_score_reading_is_their_regex_exactly_one_match(reply):
    try:
        theirs = their_read_score(reply)
    except AssertionError:
        theirs = None
    assert dbp.parse_score(reply) == theirs


def test_messages_retries_unparsed_and_refusals_against_a_scripted_server(tmp_path):
    bench, work, store = _judged_run(tmp_path)
    their_dir = tmp_path / "theirs"
    their_dir.mkdir()
    # What they would send for each judgment, and which category a CP request is about (its reference).
    expected, category_of_ref = [], {}
    for name, ws in work.items():
        concept = bench.concept(name)
        ref = their_stored(concept.reference_images[0], their_dir)
        category_of_ref[their_cp_messages(concept.kind, ref, ref)[2]["content"][0]["image_url"]["url"]] = concept.kind
        for w in ws:
            if w.purpose != "prompt":
                continue
            tgt = their_stored(store.run_dir / store.predictions[w.request.key].images[0], their_dir)
            expected.append(their_cp_messages(concept.kind, ref, tgt))
            expected.append(their_pf_messages(w.record.class_prompt, tgt))
    calls: dict[str, int] = {}

    def responder(body):
        last = body["messages"][-1]["content"]
        if last[0]["type"] == "text":
            return "Analysis: the scene matches.\nScore: 3"
        category = category_of_ref[last[0]["image_url"]["url"]]
        calls[category] = calls.get(category, 0) + 1
        return {"human": "I'm sorry, I can't help with identifying people in images.",
                "object": "Score: 2\nOn reflection, Score: 3",  # two matches: theirs asserts, so never readable
                "animal": "Analysis: similar fur." if calls[category] == 1 else "Analysis: same cat.\nScore: 4",
                "style": "Score: 1"}[category]

    with JudgeServer() as server:
        server.responder = responder
        server.plan = ["500"]  # the transport retries this one, as any call
        rows, info = dbp.dreambench_plus_rows(bench, work, store, config=_config(server))
        bodies = [r["body"] for r in server.requests]
        sent = [json.dumps(b["messages"]) for b in bodies]
        for messages in expected:
            assert json.dumps(messages) in sent  # byte for byte, images included
        assert all(b["temperature"] == 0 and b["seed"] == dbp.call_seed(0, 0, 0) for b in bodies
                   if b["messages"][-1]["content"][0]["type"] == "text")
        assert len(server.requests) == 1 + 4 + (1 + 2 + 3 + 3)  # the 500; PF 4; CP style, animal, human, object
        assert calls == {"style": 1, "animal": 2, "human": 3, "object": 3}  # their max_retry: 3 calls at most

        by = {(r["category"], r["criterion"]): r for r in rows}
        assert by["animal", "cp"]["score"] == 4 and by["animal", "cp"]["attempts"] == 2
        assert by["human", "cp"]["status"] == "refused" and by["human", "cp"]["score"] is None
        assert by["object", "cp"]["status"] == "unparsed" and len(by["object", "cp"]["replies"]) == 3
        assert {by[c, "pf"]["score"] for c in ("animal", "human", "object", "style")} == {3}
        assert info["mode"] == "deterministic" and info["retries"] == 1

        n = len(server.requests)
        again, _ = dbp.dreambench_plus_rows(bench, work, store, config=_config(server))
        assert len(server.requests) == n and again == rows  # everything from the cache

    ctx = ScoringContext(requested={c: ["gen"] for c in work}, judge=True, dreambench_plus=True)
    overall, per_concept = aggregate(rows, ctx, ["gen"])
    gen = overall["gen"]
    assert gen["cp"] == pytest.approx((4 + 1) / 2 / 4) and gen["pf"] == pytest.approx(3 / 4)
    assert gen["cp_pf"] == pytest.approx(gen["cp"] * gen["pf"])
    assert gen["unparsed"] == 1 and gen["refused"] == 1  # counted, not dropped silently
    assert gen["cp_human"].startswith("not scored") and gen["cp_animal"] == 1.0
    assert per_concept["style_00"]["gen"]["cp"] == 0.25


def test_reference_mode_sends_temperature_1_three_runs_with_distinct_seeds(tmp_path):
    bench, work, store = _judged_run(tmp_path)
    with JudgeServer() as server:
        server.responder = lambda body: f"Score: {len(json.dumps(body)) % 5}"
        rows, info = dbp.dreambench_plus_rows(bench, work, store, config=_config(server, mode="reference"))
        bodies = [r["body"] for r in server.requests]
    assert len(bodies) == 3 * 8 and {b["temperature"] for b in bodies} == {1}
    assert {b["seed"] for b in bodies} == {dbp.call_seed(0, run, 0) for run in range(3)}
    assert sorted({r["run"] for r in rows}) == [0, 1, 2] and info["reference_compatible"]


def test_an_hf_judge_is_refused_in_one_line_before_the_run_starts(tmp_path):
    from tests.conftest import run_cli

    bench, work, store = _judged_run(tmp_path)
    with pytest.raises(BenchError, match="OpenAI-compatible endpoint"):
        dbp.dreambench_plus_rows(bench, work, store, config=JudgeConfig(spec="hf:tiny"))
    proc = run_cli("run", "--method", "real-images", "--bench", str(bench.root), "--tasks", "gen",
                   "--judge", "hf:tiny", "--out", str(tmp_path / "runs"))
    assert proc.returncode == 2 and "OpenAI-compatible endpoint" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_aggregation_is_their_cal_score_and_avg_std(tmp_path):
    bench, work, _ = _judged_run(tmp_path, limit=None)
    phrases = {f"{cat}_{idx}": (cat, idx, subject) for cat, idx, subject in SUBJECTS}
    rng = random.Random(7)
    rows = []
    for run in range(3):
        for name, ws in work.items():
            for w in ws:
                if w.purpose != "prompt":
                    continue
                for criterion in ("cp", "pf"):
                    unparsed = rng.random() < 0.1
                    rows.append({"scorer": "dreambench_plus", "task": "gen", "concept": name, "key": w.request.key,
                                 "index": w.request.index, "image": "x.png", "criterion": criterion,
                                 "category": bench.concept(name).kind,
                                 "prompt_kind": ("photorealistic", "style_transfer", "imaginative")[
                                     0 if w.request.index <= 3 else 1 if w.request.index <= 6 else 2],
                                 "run": run, "score": None if unparsed else rng.randint(0, 4),
                                 "status": "unparsed" if unparsed else "scored"})
    ctx = ScoringContext(requested={c: ["gen"] for c in work}, judge=True, dreambench_plus=True)
    overall, per_concept = aggregate(rows, ctx, ["gen"])
    gen = overall["gen"]

    def their_file(run, criterion):  # merge_data.py: {collection_id}-{prompt_index} -> score, what was read
        return {f"{their_collection_id(*phrases[r['concept']])}-{r['index']}": r["score"] for r in rows
                if r["run"] == run and r["criterion"] == criterion and r["status"] == "scored"}

    for criterion, filters in (("cp", ("animal", "human", "object", "style")),
                               ("pf", ("photorealistic", "style_transfer", "imaginative"))):
        runs = [cal_score(their_file(run, criterion)) for run in range(3)]
        avg, std = avg_std(runs)
        assert round(gen[criterion], 3) == avg and round(gen[f"{criterion}_run_std"], 3) == std
        for f in filters:
            assert round(gen[f"{criterion}_{f}"], 3) == avg_std([cal_score(their_file(run, criterion), f)
                                                                  for run in range(3)])[0]
    assert gen["cp_pf"] == pytest.approx(gen["cp"] * gen["pf"])
    intervals, _ = aggregate_intervals(rows, ctx, ["gen"], overall, per_concept, seed=0, resamples=200)
    assert intervals["gen"]["cp"]["lo"] <= gen["cp"] <= intervals["gen"]["cp"]["hi"]
    assert "pf_imaginative" in intervals["gen"]
    # CP x PF: a delete-one-concept jackknife of the product, written out here: each concept left
    # out of both factors, the jackknife standard error, a t quantile on concepts - 1 df.
    import numpy as np
    from scipy import stats

    from unifybench.metrics import samples

    concepts = sorted(work)

    def mean_without(metric, left_out):
        kept = [r for r in rows if r["concept"] != left_out]
        parts = samples("gen", metric, kept)
        return sum(p.estimate() for p in parts) / len(parts)

    left = np.array([mean_without("cp", c) * mean_without("pf", c) for c in concepts])
    g = len(concepts)
    se = np.sqrt((g - 1) / g * np.sum((left - left.mean()) ** 2))
    half = stats.t.ppf(0.975, g - 1) * se
    lo, hi = max(gen["cp_pf"] - half, 0.0), min(gen["cp_pf"] + half, 1.0)
    assert intervals["gen"]["cp_pf"]["lo"] == pytest.approx(lo) and intervals["gen"]["cp_pf"]["hi"] == pytest.approx(hi)
    assert intervals["gen"]["cp_pf"]["lo"] <= gen["cp_pf"] <= intervals["gen"]["cp_pf"]["hi"]


def test_the_image_sent_is_their_encoding(tmp_path):
    from unifybench.testing.benches import photo

    src = photo(tmp_path / "a.png", size=90)
    stored = their_stored(src, tmp_path)
    theirs = encode_image_into_base64(their_load_image(stored).resize((512, 512)))
    assert base64.b64encode(dbp.encode_image(src)).decode() == theirs


def test_run_on_dreambench_plus_gives_cp_pf_in_both_modes_from_the_command_line(tmp_path):
    from tests.conftest import only_run_dir, run_cli

    root = make_dreambench_plus(tmp_path)
    out = tmp_path / "runs"
    results = {}
    with JudgeServer() as server:
        for mode in ("deterministic", "reference"):
            proc = run_cli("run", "--method", "sd-prompt", "--method-arg", "model=tiny", "--method-arg", "steps=1",
                           "--bench", str(root), "--backbones", "tiny", "--images-per-prompt", "1", "--limit", "1",
                           "--judge", "openai:gpt-4o-2024-05-13", "--judge-base-url", server.base_url,
                           "--judge-mode", mode, "--out", str(out))
            assert proc.returncode == 0, proc.stderr
            assert f"DreamBench++ judge mode {mode}" in proc.stdout
            results[mode] = json.loads((only_run_dir(out) / "results.json").read_text())
        assert len(server.requests) == 8 + 3 * 8  # one run, then three; the rescoring made no method call
    for mode, runs in (("deterministic", 1), ("reference", 3)):
        gen = results[mode]["tasks"]["gen"]
        assert results[mode]["dreambench_plus_judge"]["mode"] == mode
        assert results[mode]["dreambench_plus_judge"]["runs"] == runs
        for metric in ("cp", "pf", "cp_pf", "cp_animal", "cp_human", "cp_object", "cp_style", "pf_photorealistic"):
            assert isinstance(gen[metric], float), (mode, metric, gen[metric])
        intervals = results[mode]["intervals"]["gen"]
        assert {"cp", "pf", "cp_pf"} <= set(intervals)
        assert "4 concepts" in intervals["cp_pf"]["note"]  # four subjects: said wherever the number is
        # cp_style rests on one subject: any interval it has is over that subject's own items, and says so
        assert "cp_style" not in intervals or "one concept" in intervals["cp_style"]["note"]
        assert ("cp_run_std" in gen) == (runs > 1)
    scores = [json.loads(line) for line in (only_run_dir(out) / "scores.jsonl").read_text().splitlines()]
    assert sum(r["scorer"] == "dreambench_plus" for r in scores) == 3 * 8

    # The leaderboard: DreamBench++ rows in a table of their own, its judge mode in the title.
    other = tmp_path / "other"
    assert run_cli("run", "--method", "real-images", "--tasks", "gen", "--limit", "1", "--backbones", "tiny",
                   "--out", str(other)).returncode == 0
    board = run_cli("leaderboard", str(out), str(other), "--format", "md")
    assert board.returncode == 0, board.stderr
    tables = [t for t in board.stdout.split("\n#") if "| method" in t]
    ours = [t for t in tables if "sd-prompt" in t]
    assert len(ours) == 1 and "(DreamBench++)" in ours[0].splitlines()[0]
    assert "DreamBench++ judge, reference mode" in ours[0].splitlines()[0]
    assert not any("real-images" in t for t in ours)
