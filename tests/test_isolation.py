"""A concept's predictions depend on that concept alone: not on which other concepts share the run,
their order, or an interruption and resume. Checked byte for byte through the command line on the
tiny UniCTokens model and on test methods that would leak if the harness let them."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import cli_env, kill_once, make_plugin, cli

UNICTOKENS = ["--method", "unictokens", "--method-arg", "model=tiny", "--method-arg", "epochs=2",
              "--method-arg", "transition_images=1", "--method-arg", "max_new_tokens=8",
              "--limit", "3", "--tasks", "rec,vqa,text_only,gen", "--images-per-prompt", "1",
              "--seed", "5", "--backbones", "tiny"]

LEAKY = '''
import random
import torch
from unifybench.methods import Method

# A "base model" shared by every concept, as a real method's weights are.
BASE = {"rows": []}

class GlobalRandom(Method):
    """Draws from the global random state in personalize and answer, as careless code does."""
    name = "global-random"
    tasks = frozenset({"rec", "vqa", "text_only", "choice"})

    def personalize(self, concept, state_dir):
        return {"bias": random.random() + float(torch.rand(()))}

    def load_state(self, concept, state_dir):
        return self.personalize(concept, state_dir)

    def answer(self, concept, state, requests):
        return [f"{r.key} {state['bias']:.12f} {random.random():.12f} {int(torch.randint(0, 10**9, ())):d}"
                for r in requests]

class Mutating(Method):
    """Leaves a row of its concept in the shared base model, and says what its base model is."""
    name = "mutating"
    tasks = frozenset({"rec"})

    def isolation_fingerprint(self):
        return str(len(BASE["rows"]))

    def answer(self, concept, state, requests):
        BASE["rows"].append(concept.name)
        return [f"Yes, seen {len(BASE['rows'])}." for r in requests]
'''


def _predictions(run_dir: Path, concept: str) -> dict[str, str]:
    out = {}
    for line in (run_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["concept"] == concept:
            answer = record.get("answer")
            images = [(run_dir / p).read_bytes() for p in record.get("images", [])]
            out[record["key"]] = answer if answer is not None else images
    return out


def _run(out: Path, *args: str, pythonpath=None) -> Path:
    proc = cli("run", *args, "--out", str(out), pythonpath=pythonpath)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dirs = [d for d in out.iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def _state_files(run_dir: Path, concept: str) -> dict[str, bytes]:
    base = run_dir / "state" / concept
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*.pt"))}


@pytest.fixture(scope="module")
def unictokens_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("iso")
    alone = _run(tmp / "alone", *UNICTOKENS, "--concepts", "dog")
    after = _run(tmp / "after", *UNICTOKENS, "--concepts", "cat,dog")
    return tmp, alone, after


def test_unictokens_concept_gives_the_same_predictions_alone_and_after_another(unictokens_runs):
    _, alone, after = unictokens_runs
    dog_alone, dog_after = _predictions(alone, "dog"), _predictions(after, "dog")
    assert dog_alone and dog_alone.keys() == dog_after.keys()
    assert dog_alone == dog_after  # replies and image bytes
    assert _state_files(alone, "dog") == _state_files(after, "dog")  # and the trained rows
    # No reply names another concept's token.
    replies = " ".join(v for v in _predictions(after, "dog").values() if isinstance(v, str))
    assert "<cat>" not in replies


def test_unictokens_interrupted_and_resumed_equals_uninterrupted(unictokens_runs):
    tmp, _, after = unictokens_runs
    out = tmp / "killed"
    cmd = [sys.executable, "-m", "unifybench", "run", *UNICTOKENS, "--concepts", "cat,dog", "--out", str(out)]
    kill_once(cmd, cli_env(), out, "*/state/cat/.done", timeout=240)  # during cat's predictions or dog's training
    resumed = _run(out, *UNICTOKENS, "--concepts", "cat,dog")
    for concept in ("cat", "dog"):
        assert _predictions(resumed, concept) == _predictions(after, concept), concept
        assert _state_files(resumed, concept) == _state_files(after, concept), concept


def test_unictokens_leaves_no_state_behind_across_concepts_in_process(tmp_path):
    """Two concepts in one process: the vocabulary after each is the base model's (the harness checks
    the fingerprint after every concept; this is its direct form)."""
    from unifybench.data import load_benchmark
    from unifybench_unictokens.method import UniCTokens

    bench = load_benchmark("mini")
    method = UniCTokens({"model": "tiny", "epochs": "1", "transition_images": "1"}, seed=0)
    base = method.isolation_fingerprint()
    for name in ("cat", "dog"):
        state = method.personalize(bench.concept(name), tmp_path / name)
        assert method.isolation_fingerprint() == base
        with method.activate(bench.concept(name), state):
            assert method.isolation_fingerprint() != base
        assert method.isolation_fingerprint() == base


def test_a_method_drawing_from_the_global_random_state_is_isolated_by_the_harness(tmp_path):
    plugin = make_plugin(tmp_path / "plugin", "leaky-plugin", "leaky", LEAKY,
                         {"global-random": "leaky:GlobalRandom", "mutating": "leaky:Mutating"})
    args = ["--method", "global-random", "--tasks", "rec,choice", "--batch-size", "4"]
    alone = _run(tmp_path / "alone", *args, "--concepts", "dog", pythonpath=[plugin])
    both = _run(tmp_path / "both", *args, "--concepts", "cat,dog", pythonpath=[plugin])
    order = _run(tmp_path / "order", *args, "--concepts", "dog,cat", pythonpath=[plugin])
    reference = _predictions(alone, "dog")
    assert reference == _predictions(both, "dog") == _predictions(order, "dog")
    assert _predictions(both, "cat") == _predictions(order, "cat")
    # Interrupted in the middle of a batch: the rerun asks the same batches again.
    path = both / "predictions.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [ln for ln in lines if json.loads(ln)["concept"] == "cat"][:5]
    path.write_text("".join(kept), encoding="utf-8")
    for marker in (both / "state").rglob(".done"):
        marker.unlink()
    resumed = _run(tmp_path / "both", *args, "--concepts", "cat,dog", pythonpath=[plugin])
    assert _predictions(resumed, "dog") == reference
    assert _predictions(resumed, "cat") == _predictions(order, "cat")


def test_a_method_that_changes_its_base_model_is_stopped_with_one_line(tmp_path):
    plugin = make_plugin(tmp_path / "plugin", "leaky-plugin", "leaky", LEAKY,
                         {"global-random": "leaky:GlobalRandom", "mutating": "leaky:Mutating"})
    proc = cli("run", "--method", "mutating", "--tasks", "rec", "--concepts", "cat,dog",
                   "--out", str(tmp_path / "runs"), pythonpath=[plugin])
    assert proc.returncode == 2
    message = proc.stderr.strip()
    assert "\n" not in message and "base model changed while concept cat" in message
    assert "Traceback" not in proc.stderr
    # cat's predictions were stored before the check stopped the run
    run_dir = next((tmp_path / "runs").iterdir())
    assert _predictions(run_dir, "cat") and not _predictions(run_dir, "dog")


def test_yollava_concept_gives_the_same_rows_and_replies_alone_and_after_another(tmp_path):
    """Yo'LLaVA's easy negatives are other concepts' photos of the *benchmark*, not of the run: the
    concepts sharing a run change nothing."""
    args = ["--method", "yollava", "--method-arg", "model=tiny", "--method-arg", "epochs=1",
            "--method-arg", "positives_per_photo=2", "--method-arg", "max_new_tokens=6", "--limit", "3", "--seed", "5"]
    alone = _run(tmp_path / "alone", *args, "--concepts", "dog")
    after = _run(tmp_path / "after", *args, "--concepts", "cat,dog", "--batch-size", "3")
    assert _predictions(alone, "dog") and _predictions(alone, "dog") == _predictions(after, "dog")
    assert _state_files(alone, "dog") == _state_files(after, "dog")
