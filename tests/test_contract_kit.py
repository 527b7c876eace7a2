"""The contract kit (unifybench.testing) against a small trained method of our own, and eight copies
of it each with one bug planted: the kit, at its default settings, fails on every one, with a
message naming the requests, keys or tensors that differ; the method without a bug passes."""
from __future__ import annotations

import inspect
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unifybench.errors import BenchError
from unifybench.kit.args import Arg
from unifybench.kit.epochs import drop_resume, read_resume, write_resume
from unifybench.kit.files import atomic_write
from unifybench.methods import ConceptLayers, Method, resolve_method
from unifybench.testing import MethodContract


def features(path) -> torch.Tensor:
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB").resize((2, 2)), dtype=np.float32).reshape(-1)[:8] / 255)


class TinyRows(ConceptLayers, Method):
    """A trained method in miniature, as the guide builds one: a frozen base model (a vocabulary of
    four rows and an MLP) and one learned row per concept, trained for ``epochs`` epochs with a
    resume file after each, put in vocabulary row 2 inside ``activate`` only."""

    name = "tiny-rows"
    tasks = frozenset({"rec", "text_only", "gen"})
    arguments = {"epochs": Arg(int, 3, "training epochs", low=1)}
    # planted bugs (each copy below turns one on)
    shuffles_with_global_random = rounds_saved_row = resume_restarts = keeps_photos = False
    reply_short = image_short = leaks_vocab_row = leaks_mlp = False

    def _base(self) -> torch.nn.Module:
        if getattr(self, "base", None) is None:
            g = torch.Generator().manual_seed(0)
            base = torch.nn.Module()
            base.vocab, base.mlp = torch.nn.Embedding(4, 8), torch.nn.Linear(8, 8)
            with torch.no_grad():
                for p in base.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            self.base = base.requires_grad_(False)
            self.photos_seen: list = []
        return self.base

    def personalize(self, concept, state_dir):
        base = self._base()
        photos = torch.stack([features(p) for p in concept.train_images])
        if self.keeps_photos:  # bug: every concept so far trains this one
            self.photos_seen.append(photos)
            photos = torch.cat(self.photos_seen)
        key = {"epochs": self.args.epochs, "photos": len(photos)}
        row, first = torch.zeros(8), 0
        saved = read_resume(state_dir, key)
        if saved is not None:
            first = saved["epoch"] + 1
            row = torch.zeros(8) if self.resume_restarts else saved["row"]  # bug: counts, but restarts
        for epoch in range(first, self.args.epochs):
            for photo in photos:
                row.requires_grad_(True)
                loss = ((base.mlp(row + base.vocab.weight[1]) - photo) ** 2).mean()
                row = (row - 0.5 * torch.autograd.grad(loss, row)[0]).detach()
            write_resume(state_dir, {**key, "epoch": epoch, "row": row})
            self.progress(f"epoch {epoch + 1}/{self.args.epochs}", epoch + 1, self.args.epochs)
        if self.leaks_mlp:  # bug: the learned row written into the shared MLP
            base.mlp.weight.data[0] += row
        atomic_write(Path(state_dir) / "row.pt", lambda tmp: torch.save(row, tmp))
        drop_resume(state_dir)
        return {"row": row}

    def load_state(self, concept, state_dir):
        self._base()
        row = torch.load(Path(state_dir) / "row.pt", weights_only=True)
        return {"row": row.half().float() if self.rounds_saved_row else row}  # bug: float16 on the way

    def concept_layers(self, concept, state):
        import contextlib

        @contextlib.contextmanager
        def layers():
            vocab = self.base.vocab.weight.data
            saved = vocab[2].clone()
            vocab[2] = state["row"]
            try:
                yield
            finally:
                if not self.leaks_vocab_row:  # bug: the concept's row stays in the vocabulary
                    vocab[2] = saved
        return layers()

    def _hidden(self) -> torch.Tensor:
        return self.base.mlp(self.base.vocab.weight[2])

    def answer(self, concept, state, requests):
        self.require_active(concept)
        h = self._hidden()
        replies = []
        for r in requests:
            if r.task == "rec":
                score = float(torch.cosine_similarity(h, features(r.image), dim=0))
                replies.append(f"{'Yes' if score > 0 else 'No'} ({score:.6f}).")
            else:
                replies.append(f"{concept.token} is {float(h.sum()):.6f}.")
        return replies[:-1] if self.reply_short else replies

    def generate(self, concept, state, requests):
        self.require_active(concept)
        tint = torch.sigmoid(self._hidden()[:3])
        out = []
        for r in requests:
            images = []
            for s in r.image_seeds():
                noise = torch.rand(8, 8, 3, generator=torch.Generator().manual_seed(s))
                images.append(Image.fromarray(((noise + tint) * 127).to(torch.uint8).numpy()))
            if self.shuffles_with_global_random:
                random.shuffle(images)
            out.append(images[:-1] if self.image_short else images)
        return out


class TestTinyRows(MethodContract):
    """The method without a bug passes the whole contract."""

    method = TinyRows
    bad_args = [({"epochs": "0"}, "expected an integer >= 1")]


def _planted(bug: str) -> type:
    return type(f"TinyRows_{bug}", (TinyRows,), {bug: True, "__module__": __name__})


# (the bug, the contract test that catches it, what its message names)
PLANTED = [
    ("shuffles_with_global_random", "test_predictions_do_not_draw_from_the_global_generators",
     ["global generators", "gen/dog/", "the same images in another order"]),
    ("rounds_saved_row", "test_a_concept_reloaded_from_its_state_predicts_the_same",
     ["state['row']", "differ bit for bit"]),
    ("resume_restarts", "test_a_run_interrupted_inside_personalization_resumes_to_the_same_state",
     ["'epoch 1/3' (1/3)", "state['row']", "differ bit for bit"]),
    ("keeps_photos", "test_a_concept_predicts_the_same_alone_at_batch_size_1_as_after_another_at_batch_size_n",
     ["text_only/dog/", "instead of"]),
    ("reply_short", None, ["answer returned 3 result(s) for 4 requests", "rec/cat/0"]),
    ("image_short", None, ["gen/cat/0: returned 2 of 3 images"]),
    ("leaks_vocab_row", None, ["after concept dog", "method.base.vocab.weight"]),
    ("leaks_mlp", None, ["after concept dog", "method.base.mlp.weight"]),
]


@pytest.mark.parametrize("bug,test,named", PLANTED, ids=[p[0] for p in PLANTED])
def test_the_kit_fails_on_a_planted_bug_at_its_defaults_naming_what_differs(bug, test, named, tmp_path):
    contract = type(f"Test_{bug}", (MethodContract,), {"method": _planted(bug)})
    with pytest.raises(AssertionError) as failed:
        contract.setup_class()  # the baseline run: short outputs and leaks fail here
        try:
            check = getattr(contract(), test)
            check(**({"tmp_path": tmp_path} if "tmp_path" in inspect.signature(check).parameters else {}))
        finally:
            contract.teardown_class()
    message = str(failed.value)
    for text in named:
        assert text in message, (text, message)
    if test is None:
        contract.teardown_class()


def test_a_method_declaring_a_task_without_its_step_is_refused_at_registration():
    class DrawsNothing(Method):
        name = "draws-nothing"
        tasks = frozenset({"rec", "gen"})

        def answer(self, concept, state, requests):
            return ["Yes."] * len(requests)

    with pytest.raises(BenchError) as refused:
        resolve_method(DrawsNothing)
    assert "declares gen but does not override generate" in refused.value.one_line()


def test_describe_must_be_json_with_random_init_a_bool(tmp_path):
    class Vague(TinyRows):
        def describe(self):
            return {"random_init": "yes", "dtype": torch.float32}

    contract = type("TestVague", (MethodContract,), {"method": Vague})
    contract.setup_class()
    try:
        with pytest.raises(AssertionError, match=r"describe\(\)\['dtype'\]: a dtype"):
            contract().test_describe_is_json_and_says_whether_the_weights_are_random()
    finally:
        contract.teardown_class()


def test_a_short_image_list_is_reported_as_returned_n_of_m_images(tmp_path):
    from unifybench import evaluate

    with pytest.raises(BenchError, match=r"gen/cat/0: returned 2 of 3 images"):
        evaluate(_planted("image_short"), out=str(tmp_path), tasks=["gen"], concepts=["cat"], limit=1,
                 images_per_prompt=3, backbones="tiny")


def test_the_public_builders_make_tiny_models_and_small_benches(tmp_path):
    from unifybench.testing import bundled_concept, small_bench, tiny_clip, tiny_llava

    model, tokenizer = tiny_clip()
    with torch.no_grad():
        text = model.encode_text(tokenizer(["a photo of a dog"]))
    assert text.shape == (1, 32)
    llava, processor = tiny_llava()
    assert llava.config.model_type == "llava" and processor.tokenizer.convert_tokens_to_ids("<image>") >= 0
    dog = bundled_concept("dog")
    assert dog.token == "<dog>" and dog.train_images and all(p.is_file() for p in dog.train_images)
    bench = small_bench(tmp_path / "bench", "yollava")
    assert sorted(c.name for c in bench.concepts) == ["bo", "mam"]


def test_the_adapters_and_the_example_import_nothing_private_from_unifybench():
    import ast

    root = Path(__file__).resolve().parents[1]
    private = []
    for folder in ("methods", "examples"):
        for file in (root / folder).rglob("*.py"):
            if "tests" in file.relative_to(root).parts:
                continue
            for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("unifybench"):
                    names = [a.name for a in node.names if a.name.startswith("_")]
                    names += [p for p in node.module.split(".") if p.startswith("_")]
                    private += [f"{file.relative_to(root)}: {node.module} {name}" for name in names]
    assert not private, private


def test_state_differences_compares_0_d_tensors_bit_for_bit():
    """BatchNorm's num_batches_tracked, a scalar logit scale: 0-d tensors in a state are compared,
    not a crash of the kit on a correct method."""
    import torch

    from unifybench.testing import state_differences

    assert state_differences({"m": torch.nn.BatchNorm1d(3)}, {"m": torch.nn.BatchNorm1d(3)}) == []
    changed = torch.nn.BatchNorm1d(3)
    changed.num_batches_tracked += 1
    found = state_differences({"m": changed}, {"m": torch.nn.BatchNorm1d(3)})
    assert len(found) == 1 and "num_batches_tracked" in found[0] and "1 of 1 values differ" in found[0]
    assert state_differences(torch.tensor(2.5), torch.tensor(2.5)) == []
