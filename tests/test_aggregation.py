"""results.json is the aggregation of scores.jsonl: recomputed here independently, with pandas.

One run through the real command line covers every task and every scorer (answers, BLEU,
CLIP/DINO, face identity, the judge on open answers and on attribute images, some judge replies
unreadable), on a two-concept bench with a human concept. The expected numbers come from the rows
alone, by the protocol's definitions written out again here, never through ``unifybench.metrics``.
"""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from _data_fixtures import make_unifybench
from _judge_server import JudgeServer
from conftest import make_plugin, only_run_dir, read_results, cli

EVERYTHING = '''
import hashlib
from PIL import Image
from unifybench.methods import Method

def _h(*parts):
    return hashlib.sha256("/".join(map(str, parts)).encode()).digest()

class Everything(Method):
    name = "everything"
    tasks = frozenset({"rec", "vqa", "text_only", "choice", "gen", "attr_gen"})

    def answer(self, concept, state, requests):
        out = []
        for r in requests:
            d = _h(r.key)
            if r.task == "rec":
                out.append(["Yes.", "No.", "I cannot tell."][d[0] % 3])
            elif r.task == "choice":
                out.append(["A", "B", "A or B"][d[0] % 3])
            else:
                out.append(f"It is {concept.class_noun}, number {d[0] % 7}.")
        return out

    def generate(self, concept, state, requests):
        return [[Image.new("RGB", (40, 40), tuple(_h(r.key, i)[:3])) for i in range(r.n_images)]
                for r in requests]
'''


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agg")
    bench = make_unifybench(tmp / "ub")
    info = bench / "concept" / "train" / "bo" / "info.json"
    data = json.loads(info.read_text())
    data["conversation_type"] = "human"
    info.write_text(json.dumps(data))
    plugin = make_plugin(tmp / "plugin", "everything-plugin", "everything", EVERYTHING,
                         {"everything": "everything:Everything"})
    out = tmp / "runs"
    with JudgeServer("some-garbage") as server:
        proc = cli("run", "--method", "everything", "--bench", str(bench), "--backbones", "tiny",
                       "--limit", "3", "--images-per-prompt", "3", "--judge", "openai:test-judge",
                       "--judge-base-url", server.base_url, "--judge-samples", "2", "--judge-backoff", "0.01",
                       "--out", str(out), pythonpath=[plugin])
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = only_run_dir(out)
    return pd.read_json(run_dir / "scores.jsonl", lines=True), read_results(run_dir)


def _expected(df: pd.DataFrame) -> dict[tuple[str, str, str], float]:
    """{(scope, task, metric): value}; scope is a concept or "overall" (pooled, except attr_score)."""
    out: dict[tuple[str, str, str], float] = {}

    def put(task, metric, frame, fn):
        if len(frame):
            out[("overall", task, metric)] = fn(frame)
            for concept, part in frame.groupby("concept"):
                out[(concept, task, metric)] = fn(part)

    answers = df[df.scorer == "answer"]
    rec = answers[answers.task == "rec"]
    put("rec", "pos_acc", rec[~rec.negative.astype(bool)], lambda f: f.correct.astype(float).mean())
    put("rec", "neg_acc", rec[rec.negative.astype(bool)], lambda f: f.correct.astype(float).mean())
    put("rec", "accuracy", rec, lambda f: f.correct.astype(float).mean())
    put("rec", "unparsed", rec, lambda f: float(f.parsed.isna().sum()))
    for scope in {k[0] for k in out if k[1] == "rec"}:
        sides = [out[k] for k in ((scope, "rec", "pos_acc"), (scope, "rec", "neg_acc")) if k in out]
        if len(sides) == 2:  # the mean of the two sides, only where both exist
            out[(scope, "rec", "weighted_acc")] = sum(sides) / 2
    choice = answers[answers.task == "choice"]
    put("choice", "accuracy", choice, lambda f: f.correct.astype(float).mean())
    put("choice", "unparsed", choice, lambda f: float(f.parsed.isna().sum()))
    judged = df[df.scorer == "judge"]
    for task in ("vqa", "text_only"):
        put(task, "bleu", answers[answers.task == task], lambda f: f.bleu.mean())
        j = judged[judged.task == task]
        put(task, "judge_score", j[j.judge_parsed.astype(bool)], lambda f: f.judge_score.mean())
        put(task, "judge_unparsed", j, lambda f: float((~f.judge_parsed.astype(bool)).sum()))
    fidelity = df[df.scorer == "fidelity"]
    for metric in ("clip_i", "clip_t", "dino"):
        put("gen", metric, fidelity, lambda f, m=metric: f[m].mean())
    put("gen", "copies", fidelity, lambda f: float(f.copies_reference.notna().sum()))
    faces = df[df.scorer == "face"]
    identity = faces[faces.purpose == "identity"]
    put("gen", "face_sim", identity[identity.face_sim.notna()], lambda f: f.face_sim.mean())
    put("gen", "face_missing", identity, lambda f: float((~f.face_found.astype(bool)).sum()))
    put("gen", "face_missing_refs", faces[faces.purpose == "reference"],
        lambda f: float((~f.face_found.astype(bool)).sum()))
    attr = judged[judged.task == "attr_gen"]
    put("attr_gen", "unparsed", attr, lambda f: float((~f.judge_parsed.astype(bool)).sum()))
    parsed = attr[attr.judge_parsed.astype(bool)]
    per_concept = parsed.groupby(["concept", "key"]).judge_score.mean().groupby("concept").mean()
    for concept, value in per_concept.items():
        out[(concept, "attr_gen", "attr_score")] = value
    out[("overall", "attr_gen", "attr_score")] = per_concept.mean()
    return out


def test_results_json_is_the_aggregation_of_scores_jsonl(run):
    df, results = run
    expected = _expected(df)
    # The run exercised every scorer, and some judge replies stayed unreadable.
    assert set(df.scorer) == {"answer", "fidelity", "face", "judge"}
    assert expected[("overall", "vqa", "judge_unparsed")] + expected[("overall", "attr_gen", "unparsed")] > 0
    # ... and the attribute scores tell the reference's mean of means from a flat mean.
    attr = df[(df.scorer == "judge") & (df.task == "attr_gen") & df.judge_parsed.astype(bool)]
    assert not math.isclose(attr.judge_score.mean(), expected[("overall", "attr_gen", "attr_score")])
    seen = set()
    for scope, tasks in [("overall", results["tasks"]), *results["concepts"].items()]:
        for task, metrics in tasks.items():
            for metric, value in metrics.items():
                if isinstance(value, str):
                    assert value.startswith("not scored"), (scope, task, metric, value)
                    assert (scope, task, metric) not in expected, (scope, task, metric, value)
                    continue
                want = expected[(scope, task, metric)]
                assert math.isclose(value, want, rel_tol=1e-12, abs_tol=1e-12), (scope, task, metric, value, want)
                seen.add((scope, task, metric))
    assert seen == set(expected), set(expected) - seen  # nothing the rows support is missing from results.json


def test_rows_keep_what_a_reader_needs(run):
    df, _ = run
    answers = df[df.scorer == "answer"]
    assert answers.reply.notna().all() and answers.question.notna().all() and answers.truth.notna().all()
    assert df[df.scorer == "fidelity"].image.str.startswith("images/").all()
    judge = df[df.scorer == "judge"]
    assert judge.judge_reply.notna().all()
    # attr_gen: the judged images are marked, --judge-samples of each prompt's 3.
    assert (judge[judge.task == "attr_gen"].groupby("key").size() == 2).all()

