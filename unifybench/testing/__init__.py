"""The contract-test kit: what every method must keep, as tests a plugin author runs with pytest.

Subclass :class:`MethodContract` in a test module of your package, say which method and which
quick arguments, and pytest runs the contract against it through the real runner::

    from unifybench.testing import MethodContract
    from my_package.method import MyMethod

    class TestMyMethod(MethodContract):
        method = MyMethod                   # the class (no install needed) or a registered name
        args = {"model": "tiny"}            # quick arguments: a few seconds per concept
        bad_args = [({"threshold": "abc"}, "expected a number")]

The contract (each a test):

- every declared argument parses from its own default, and its help does not restate the default;
- bad arguments (``bad_args``, and an unknown name) are refused in one line before anything is made;
- a concept's predictions are the same alone at batch size 1 as after another concept at batch size N;
- a run interrupted inside personalization and again inside prediction, then resumed, ends with
  the same predictions as one run straight through;
- a concept reloaded from its saved state (``load_state``) predicts what it predicted when
  personalized;
- the isolation fingerprint is the same before and after every concept.

Runs use the bundled mini bench (two concepts, ``limit`` items per task) and tiny scorer backbones.
The helpers below (:func:`cli`, :func:`predict`, :func:`predictions`, ...) serve a package's own tests.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

from ..errors import BenchError

__all__ = ["MethodContract", "Ran", "cli", "predict", "predictions", "only_run_dir", "read_results", "evaluate_quietly"]


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str, pythonpath: Sequence[Path] | None = None, cwd: Path | None = None) -> Ran:
    """``unifybench ARGS`` in this process, as the console script runs it (``cli.main``), with its
    output captured; ``pythonpath`` folders are importable for the call (a plugin made on the fly)."""
    from ..cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_path, saved_cwd, saved_modules = list(sys.path), os.getcwd(), set(sys.modules)
    roots = [str(Path(p).resolve()) for p in pythonpath or []]
    try:
        sys.path[:0] = roots
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's own errors
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        sys.path[:] = saved_path
        os.chdir(saved_cwd)
        for name in set(sys.modules) - saved_modules:  # plugins of this call: the next may reuse a name
            file = getattr(sys.modules[name], "__file__", None) or ""
            if any(file.startswith(root) for root in roots):
                del sys.modules[name]
    return Ran(code, out.getvalue(), err.getvalue())


def only_run_dir(out: Path) -> Path:
    dirs = [p for p in Path(out).iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def read_results(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "results.json").read_text())


def predict(method, concept, state, requests: Sequence) -> list:
    """Ask ``method`` as the runner does: inside ``activate(concept, state)``, answers for
    understanding requests and images for generation requests (one call each)."""
    from ..methods import GenRequest

    with method.activate(concept, state):
        if requests and isinstance(requests[0], GenRequest):
            return method.generate(concept, state, list(requests))
        return method.answer(concept, state, list(requests))


def predictions(run_dir: Path, concepts: Sequence[str] | None = None) -> dict[str, Any]:
    """A run directory's predictions by key: the reply, or the generated images' bytes."""
    run_dir = Path(run_dir)
    found = {}
    for line in (run_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if concepts is not None and record["concept"] not in concepts:
            continue
        found[record["key"]] = (record["answer"] if "answer" in record
                                else [(run_dir / rel).read_bytes() for rel in record["images"]])
    return found


def evaluate_quietly(method, out: Path, **options) -> dict:
    from .. import evaluate

    return evaluate(method, out=str(out), **options)


class _Interrupted(Exception):
    """Stands for a kill: raised inside the method, caught by the test."""


@contextlib.contextmanager
def _patched(klass, name: str, function):
    """``klass.name`` replaced for the block, then exactly as it was (inherited or its own)."""
    own = name in vars(klass)
    saved = vars(klass).get(name)
    setattr(klass, name, function)
    try:
        yield
    finally:
        if own:
            setattr(klass, name, saved)
        else:
            delattr(klass, name)


class MethodContract:
    """Subclass it in a test module (its name must start with ``Test``); set :attr:`method`."""

    method: ClassVar[Any] = None  # a Method subclass or a registered name
    args: ClassVar[dict[str, str]] = {}  # quick method arguments
    bad_args: ClassVar[list[tuple[dict[str, str], str]]] = []  # (arguments, text the one-line error holds)
    tasks: ClassVar[Sequence[str] | None] = None  # default: every task the method does
    concepts: ClassVar[tuple[str, str]] = ("cat", "dog")  # two concepts of the bench
    bench: ClassVar[str] = "mini"
    limit: ClassVar[int] = 2  # two items per task: batches of several requests, so their composition is tested
    images_per_prompt: ClassVar[int] = 2
    batch_size: ClassVar[int] = 4

    # ------------------------------------------------------------------ plumbing
    @classmethod
    def method_class(cls):
        from ..methods import resolve_method

        return resolve_method(cls.method)[0]

    @classmethod
    def _options(cls, **over) -> dict:
        klass = cls.method_class()
        tasks = list(cls.tasks) if cls.tasks is not None else [t for t in klass.tasks]
        options = dict(bench=cls.bench, tasks=tasks, concepts=list(cls.concepts), limit=cls.limit,
                       images_per_prompt=cls.images_per_prompt, batch_size=cls.batch_size, backbones="tiny",
                       method_args=dict(cls.args))
        options.update(over)
        return options

    @classmethod
    def _run(cls, out: Path, **over) -> Path:
        results = evaluate_quietly(cls.method, out, **cls._options(**over))
        return Path(results["run_dir"])

    @classmethod
    def setup_class(cls):
        if cls.method is None:
            raise TypeError(f"{cls.__name__}: set `method` to the Method subclass (or registered name) under test")
        import tempfile

        cls._tmp = Path(tempfile.mkdtemp(prefix="ub-contract-"))
        cls._fingerprints: list = []
        klass = cls.method_class()
        real = klass.isolation_fingerprint

        def recording(self):
            value = real(self)
            cls._fingerprints.append(value)
            return value

        cls._largest_batch = {"answer": 0, "generate": 0}

        def counting(step):
            real_step = getattr(klass, step)

            def counted(method, concept, state, requests, *a, **kw):
                cls._largest_batch[step] = max(cls._largest_batch[step], len(requests))
                return real_step(method, concept, state, requests, *a, **kw)
            return counted

        with contextlib.ExitStack() as patches:
            patches.enter_context(_patched(klass, "isolation_fingerprint", recording))
            for step in ("answer", "generate"):
                patches.enter_context(_patched(klass, step, counting(step)))
            cls._baseline = cls._run(cls._tmp / "baseline")  # both concepts, batch size N

    @classmethod
    def teardown_class(cls):
        shutil.rmtree(getattr(cls, "_tmp", ""), ignore_errors=True)

    # ------------------------------------------------------------------ the contract
    def test_every_argument_parses_its_own_default_and_its_help_does_not_restate_it(self):
        from ..kit.args import Auto, Derived, _show, declared, restates_default

        klass = self.method_class()
        parsed = klass.parse_arguments({})
        for key, arg in declared(klass.arguments).items():
            assert not restates_default(arg.help), f"{key}: the help restates the default: {arg.help!r}"
            if arg.default is not None and not isinstance(arg.default, (Auto, Derived)):
                assert arg.parse(key, _show(arg.default)) == arg.default, key
                assert parsed[key] == arg.default, key

    def test_bad_arguments_are_refused_in_one_line_before_anything_is_made(self, tmp_path):
        cases = list(self.bad_args) + [({"no_such_argument_here": "1"}, "no_such_argument_here")]
        for bad, text in cases:
            out = tmp_path / "out"
            try:
                evaluate_quietly(self.method, out, **self._options(method_args={**self.args, **bad}))
            except BenchError as exc:
                line = exc.one_line()
                assert text in line and "\n" not in line, (bad, line)
            else:
                raise AssertionError(f"{bad} was accepted")
            assert not out.exists(), f"{bad}: {out} was made before the refusal"

    def test_a_concept_predicts_the_same_alone_at_batch_size_1_as_after_another_at_batch_size_n(self, tmp_path):
        asked = {s: n for s, n in self._largest_batch.items() if n}
        few = [s for s, n in asked.items() if n < 2]
        assert not few, (f"the baseline never asked {', '.join(few)} for more than one request at a time: batch "
                         f"composition is not tested; raise `limit` or add tasks")
        second = self.concepts[1]
        alone = self._run(tmp_path / "alone", concepts=[second], batch_size=1)
        expected = predictions(self._baseline, [second])
        assert expected, "the baseline run predicted nothing for the second concept"
        assert predictions(alone) == expected

    def test_an_interrupted_run_resumes_to_the_same_predictions(self, tmp_path):
        from ..methods import Method
        from ..records import ANSWER_TASKS, GEN_KINDS

        klass = self.method_class()
        out = tmp_path / "interrupted"
        second = self.concepts[1]
        tasks = set(self._options()["tasks"])  # the steps this contract's runs reach
        steps = ["personalize"] if klass.personalizes() else []
        steps += [s for s, kinds in (("answer", ANSWER_TASKS), ("generate", GEN_KINDS))
                  if tasks & set(kinds) and getattr(klass, s) is not getattr(Method, s)]
        for step in steps:  # a kill right after each step in turn, on the second concept
            real = getattr(klass, step)

            def interrupting(method, concept, *a, _real=real, _step=step, **kw):
                result = _real(method, concept, *a, **kw)
                if concept.name == second:
                    raise _Interrupted(_step)
                return result

            with _patched(klass, step, interrupting):
                try:
                    self._run(out)
                except _Interrupted:
                    pass
                else:
                    raise AssertionError(f"the run never reached {step} of {second}")
        resumed = self._run(out)
        assert predictions(resumed) == predictions(self._baseline)

    def test_a_concept_reloaded_from_its_state_predicts_the_same(self, tmp_path):
        if not self.method_class().personalizes():
            import pytest

            pytest.skip("the method personalizes nothing: there is no state to reload")
        copy = tmp_path / "reloaded" / self._baseline.name
        shutil.copytree(self._baseline, copy, ignore=shutil.ignore_patterns("predictions.jsonl", "images", "*.lock*"))
        again = self._run(tmp_path / "reloaded")
        assert again == copy
        assert predictions(again) == predictions(self._baseline)

    def test_the_isolation_fingerprint_is_the_same_before_and_after_every_concept(self):
        import pytest

        values = self._fingerprints
        if not values or values == [None] * len(values):
            pytest.skip("the method declares no isolation_fingerprint(): it has no shared base model that a "
                        "concept could leave a trace in (declare one if it has)")
        assert None not in values and len(set(values)) == 1, values
