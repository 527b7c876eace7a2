"""The contract-test kit: what every method must keep, as tests a plugin author runs with pytest.

Subclass :class:`MethodContract` in a test module of your package, say which method and which
quick arguments, and pytest runs the contract against it through the real runner::

    from unifybench.testing import MethodContract
    from my_package.method import MyMethod

    class TestMyMethod(MethodContract):
        method = MyMethod                   # the class (no install needed) or a registered name
        args = {"model": "tiny"}            # quick arguments: a few seconds per concept
        bad_args = [({"threshold": "abc"}, "expected a number")]

The contract (each a test; every failure names the requests, keys or tensors that differ):

- every declared argument parses from its own default, and its help does not restate the default;
- bad arguments (``bad_args``, and an unknown name) are refused in one line before anything is made;
- ``describe()`` is JSON-able, and its ``random_init``, when given, is True or False;
- every request gets one reply, every generation request ``n_images`` images (or None);
- a concept's predictions are the same alone at batch size 1 as after another concept at batch size N;
- a run interrupted after personalization and after each prediction step, then resumed, ends with
  the same predictions as one run straight through;
- a run interrupted inside personalization (at its first progress step, through ``self.progress``,
  then at its first step after it saved something) and resumed ends with the same state (tensors
  bit for bit) and predictions as one run straight through;
- the state ``load_state`` returns is the one ``personalize`` returned, bit for bit, and predicts
  the same;
- predicted again with the global generators (``random``, NumPy, torch) seeded differently, every
  prediction is the same: the method draws from generators of its own;
- the tensors of every torch module the method holds are the same before and after every concept,
  and so is the isolation fingerprint.

Runs use the bundled mini bench (two concepts, ``limit`` items per task, three images per prompt,
batches of six requests) and tiny scorer backbones.
The helpers below (:func:`cli`, :func:`predict`, :func:`predictions`, ...) and the tiny builders of
:mod:`unifybench.testing.tiny` serve a package's own tests.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

from ..errors import BenchError
from ..prediction import Prediction
from ..run_record import MethodDetails
from ..store import PREDICTIONS_JSONL
from .tiny import bundled_concept, small_bench, tiny_clip, tiny_llava

__all__ = ["MethodContract", "RowsContract", "Ran", "cli", "predict", "predictions", "only_run_dir", "read_results",
           "evaluate_quietly", "prediction_differences", "assert_same_predictions", "state_differences",
           "module_snapshot", "changed_tensors", "bundled_concept", "small_bench", "tiny_clip", "tiny_llava"]


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
    path = run_dir / PREDICTIONS_JSONL
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        record = Prediction.from_json(line, path, f"line {line_no}", run_dir)
        if concepts is not None and record.concept not in concepts:
            continue
        found[record.key] = (record.answer if record.answer is not None
                             else [(run_dir / rel).read_bytes() for rel in record.images])
    return found


def evaluate_quietly(method, out: Path, **options) -> dict:
    from .. import evaluate

    return evaluate(method, out=str(out), **options)


class _Interrupted(Exception):
    """Stands for a kill: raised inside the method, caught by the test."""


@contextlib.contextmanager
def _patched(owner, name: str, function):
    """``owner.name`` (a class's or a module's) replaced for the block, then exactly as it was
    (inherited or its own)."""
    own = name in vars(owner)
    saved = vars(owner).get(name)
    setattr(owner, name, function)
    try:
        yield
    finally:
        if own:
            setattr(owner, name, saved)
        else:
            delattr(owner, name)


# ----------------------------------------------------------------------------- what differs, by name

_NAMED = 8  # differences named in one failure message


def _short(value: Any, width: int = 70) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _listed(lines: list[str]) -> str:
    more = f"\n  ... and {len(lines) - _NAMED} more" if len(lines) > _NAMED else ""
    return "".join(f"\n  {line}" for line in lines[:_NAMED]) + more


def prediction_differences(got: dict, expected: dict) -> list[str]:
    """One line per request whose prediction differs (the keys of :func:`predictions`): missing,
    extra, another reply (both shown), or which images differ (and whether only their order did)."""
    lines = []
    for key in sorted(got.keys() | expected.keys()):
        if key not in got:
            lines.append(f"{key}: no prediction (expected {_shown_prediction(expected[key])})")
        elif key not in expected:
            lines.append(f"{key}: {_shown_prediction(got[key])}, where the run compared with has none")
        elif got[key] != expected[key]:
            a, b = got[key], expected[key]
            if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
                at = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
                order = " (the same images in another order)" if sorted(a) == sorted(b) else ""
                lines.append(f"{key}: image(s) {at} of {len(a)} differ{order}")
            else:
                lines.append(f"{key}: {_shown_prediction(a)} instead of {_shown_prediction(b)}")
    return lines


def _shown_prediction(value: Any) -> str:
    return f"{len(value)} image(s)" if isinstance(value, list) else _short(value)


def assert_same_predictions(got: dict, expected: dict, what: str) -> None:
    """Fail naming every request whose prediction differs, after ``what`` (the situation)."""
    lines = prediction_differences(got, expected)
    if lines:
        raise AssertionError(f"{what}: {len(lines)} request(s) predicted differently:{_listed(lines)}")


def state_differences(got: Any, expected: Any, where: str = "state", roots: tuple[str, str] = ("", "")) -> list[str]:
    """Where two states differ, one line each: missing and extra keys named, tensors and arrays
    bit for bit (dtype, shape, then how many values differ), modules by their state dict, numbers
    exactly. ``roots``: the two run directories; a path inside one compares by its place in it."""
    out: list[str] = []
    _compare(got, expected, where, roots, out, set())
    return out


def _compare(a: Any, b: Any, where: str, roots: tuple[str, str], out: list[str], seen: set) -> None:
    torch = sys.modules.get("torch")
    np = sys.modules.get("numpy")
    if (id(a), id(b)) in seen:
        return
    seen.add((id(a), id(b)))
    if torch is not None and isinstance(a, torch.nn.Module) and isinstance(b, torch.nn.Module):
        a, b = a.state_dict(), b.state_dict()
    if torch is not None and (isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor)):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            out.append(f"{where}: a {type(a).__name__} instead of a {type(b).__name__}")
        elif a.dtype != b.dtype or a.shape != b.shape:
            out.append(f"{where}: {a.dtype} {list(a.shape)} instead of {b.dtype} {list(b.shape)}")
        else:
            x, y = a.detach().cpu().contiguous(), b.detach().cpu().contiguous()
            # bytes, flattened first: a 0-d tensor (BatchNorm's num_batches_tracked) has no byte view
            if not torch.equal(x.reshape(-1).view(torch.uint8) if x.dtype != torch.bool else x,
                               y.reshape(-1).view(torch.uint8) if y.dtype != torch.bool else y):
                differ = int((x != y).sum()) if x.dtype != torch.bool else int((x ^ y).sum())
                largest = float((x.double() - y.double()).abs().max()) if x.is_floating_point() else None
                out.append(f"{where}: {differ} of {x.numel()} values differ bit for bit"
                           + (f" (largest difference {largest:.3g})" if largest is not None else ""))
        return
    if np is not None and (isinstance(a, np.ndarray) or isinstance(b, np.ndarray)):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            out.append(f"{where}: a {type(a).__name__} instead of a {type(b).__name__}")
        elif a.dtype != b.dtype or a.shape != b.shape:
            out.append(f"{where}: {a.dtype} {list(a.shape)} instead of {b.dtype} {list(b.shape)}")
        elif a.tobytes() != b.tobytes():
            out.append(f"{where}: {int((a != b).sum())} of {a.size} values differ bit for bit")
        return
    if isinstance(a, dict) and isinstance(b, dict):
        missing, extra = [k for k in b if k not in a], [k for k in a if k not in b]
        if missing or extra:
            out.append(f"{where}: keys {', '.join(map(repr, missing)) or 'none'} missing, "
                       f"{', '.join(map(repr, extra)) or 'none'} extra")
        for k in a:
            if k in b:
                _compare(a[k], b[k], f"{where}[{k!r}]", roots, out, seen)
        return
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and type(a) is type(b):
        if len(a) != len(b):
            out.append(f"{where}: {len(a)} items instead of {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            _compare(x, y, f"{where}[{i}]", roots, out, seen)
        return
    if isinstance(a, (str, Path)) and isinstance(b, (str, Path)) and type(a) is type(b):
        a, b = (_in_run(str(v), root) for v, root in zip((a, b), roots))
    elif isinstance(a, float) and isinstance(b, float):
        if not (a == b or (a != a and b != b)) or repr(a) != repr(b):
            out.append(f"{where}: {a!r} instead of {b!r}")
        return
    elif (type(a) is type(b) and hasattr(a, "__dict__") and not isinstance(a, type)
          and (type(a).__eq__ is object.__eq__ or dataclasses.is_dataclass(a))):
        _compare(vars(a), vars(b), where, roots, out, seen)  # a plain object: its attributes
        return
    try:
        same = bool(a == b) and type(a) is type(b)
    except Exception:  # noqa: BLE001 - an object that cannot say: compare what it shows
        same = repr(a) == repr(b)
    if not same:
        out.append(f"{where}: {_short(a)} instead of {_short(b)}")


def _in_run(text: str, root: str) -> str:
    return "<run dir>" + text[len(root):] if root and text.startswith(root) else text


def _modules_of(obj: Any, where: str, found: dict, seen: set, depth: int = 0) -> None:
    """The torch modules reachable from ``obj`` through attributes, dicts and lists (a method's
    shared models), each by the first path that reaches it."""
    torch = sys.modules.get("torch")
    if torch is None or depth > 6 or id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.nn.Module):
        found.setdefault(id(obj), (where, obj))
        return
    if isinstance(obj, dict):
        items = list(obj.items()) if len(obj) <= 256 else []  # a vocabulary, not a holder of models
    elif isinstance(obj, (list, tuple)):
        items = list(enumerate(obj)) if len(obj) <= 256 else []
    elif hasattr(obj, "__dict__") and not isinstance(obj, (type, types.ModuleType, types.FunctionType,
                                                            types.MethodType)):
        items = list(vars(obj).items())
    else:
        return
    for key, value in items:
        if not isinstance(value, (str, bytes, int, float, bool, Path, type(None))):
            _modules_of(value, f"{where}.{key}" if isinstance(key, str) else f"{where}[{key!r}]", found, seen,
                        depth + 1)


def module_snapshot(method: Any) -> dict[str, tuple[int, str]]:
    """A content hash of every tensor of every torch module reachable from ``method``, by name (the
    module's identity is part of the value: a module replaced by another is not one that changed,
    but compares unequal only where the same object's tensors changed, see :func:`changed_tensors`)."""
    import hashlib

    found: dict = {}
    _modules_of(method, "method", found, set())
    snapshot = {}
    for where, module in found.values():
        import torch

        for name, tensor in module.state_dict(keep_vars=True).items():
            t = tensor.detach().cpu().contiguous()
            data = t.view(-1).view(torch.uint8) if t.dtype != torch.bool else t
            snapshot[f"{where}.{name}"] = (id(module), f"{hashlib.sha1(data.numpy().tobytes()).hexdigest()} "
                                                      f"{t.dtype} {list(t.shape)}")
    return snapshot


def changed_tensors(before: dict, after: dict) -> list[str]:
    """The tensors of one module object, held before and after, whose content changed."""
    return [name for name, (module, digest) in before.items()
            if name in after and after[name][0] == module and after[name][1] != digest]


def _folder_contents(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): hash(p.read_bytes()) for p in sorted(Path(folder).rglob("*"))
            if p.is_file()}


def _not_json(value: Any, where: str) -> str | None:
    """The first place in ``value`` that ``json.dumps`` refuses (or a non-finite number)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"{where}: key {k!r} is not a string"
            found = _not_json(v, f"{where}[{k!r}]")
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        return next((f for i, v in enumerate(value) if (f := _not_json(v, f"{where}[{i}]"))), None)
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return f"{where}: {value!r} is not a JSON number"
    if value is None or isinstance(value, (str, int, float, bool)):
        return None
    return f"{where}: a {type(value).__name__}"


def _check_outputs(step: str, requests: Sequence, outputs: Any) -> None:
    """One reply per request; ``n_images`` images (or None) per generation request: a failure names them."""
    keys = [r.key for r in requests]
    if not isinstance(outputs, list) or len(outputs) != len(requests):
        n = len(outputs) if isinstance(outputs, list) else type(outputs).__name__
        raise AssertionError(f"{step} returned {n} result(s) for {len(requests)} requests ({', '.join(keys)}): "
                             f"one per request, in order (None where there is none)")
    if step == "generate":
        short = [f"{r.key}: returned {len(images)} of {r.n_images} images" for r, images in zip(requests, outputs)
                 if images is not None and len(images) != r.n_images]
        if short:
            raise AssertionError(f"generate returned another number of images than asked:{_listed(short)}")


class MethodContract:
    """Subclass it in a test module (its name must start with ``Test``); set :attr:`method`."""

    method: ClassVar[Any] = None  # a Method subclass or a registered name
    args: ClassVar[dict[str, str]] = {}  # quick method arguments
    bad_args: ClassVar[list[tuple[dict[str, str], str]]] = []  # (arguments, text the one-line error holds)
    tasks: ClassVar[Sequence[str] | None] = None  # default: every task the method does
    concepts: ClassVar[tuple[str, str]] = ("cat", "dog")  # two concepts of the bench
    bench: ClassVar[str] = "mini"
    # Two items per task and batches of six requests (two prompts of three images): an answer or
    # an image in another place of its batch, or in another order, changes what is compared.
    limit: ClassVar[int] = 2
    images_per_prompt: ClassVar[int] = 3
    batch_size: ClassVar[int] = 6

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
        cls._personalized: dict = {}  # concept -> (the state personalize returned, its run dir)
        cls._described: list = []
        cls._largest_batch = {"answer": 0, "generate": 0}
        klass = cls.method_class()
        current = [""]  # the concept being personalized or predicted
        snapshots: list = []
        real_fingerprint, real_describe = klass.isolation_fingerprint, klass.describe

        def recording(self):  # the runner asks before and after each concept
            value = real_fingerprint(self)
            cls._fingerprints.append(value)
            snapshots.append(module_snapshot(self))
            if len(snapshots) % 2 == 0:
                before, after = snapshots[-2:]
                changed = changed_tensors(before, after)
                if changed:
                    raise AssertionError(f"after concept {current[0]}, tensors of the method's shared model(s) "
                                         f"are not what they were before it (a concept left a trace that later "
                                         f"concepts would see):{_listed(changed)}")
            return value

        def describing(self):
            value = real_describe(self)
            cls._described.append(value)
            try:
                MethodDetails.from_describe(value, klass.name)
            except BenchError:
                # The runner would refuse it: the describe test reports why, and the rest of the
                # contract still runs on the method with what the runner can record.
                return {**value, "random_init": bool(value.get("random_init"))} if isinstance(value, dict) else {}
            return value

        def personalizing(method, concept, state_dir, *a, **kw):
            current[0] = concept.name
            state = real_personalize(method, concept, state_dir, *a, **kw)
            cls._personalized[concept.name] = (state, str(Path(state_dir).resolve().parents[1]))
            return state

        def counting(step):
            real_step = getattr(klass, step)

            def counted(method, concept, state, requests, *a, **kw):
                current[0] = concept.name
                cls._largest_batch[step] = max(cls._largest_batch[step], len(requests))
                outputs = real_step(method, concept, state, requests, *a, **kw)
                _check_outputs(step, requests, outputs)
                return outputs
            return counted

        with contextlib.ExitStack() as patches:
            patches.enter_context(_patched(klass, "isolation_fingerprint", recording))
            patches.enter_context(_patched(klass, "describe", describing))
            if klass.personalizes():
                real_personalize = klass.personalize
                patches.enter_context(_patched(klass, "personalize", personalizing))
            for step in ("answer", "generate"):
                patches.enter_context(_patched(klass, step, counting(step)))
            cls._baseline = cls._run(cls._tmp / "baseline")  # both concepts, batch size N

    @classmethod
    def teardown_class(cls):
        shutil.rmtree(getattr(cls, "_tmp", ""), ignore_errors=True)

    def _copy_of_baseline(self, out: Path) -> Path:
        """The baseline run directory under ``out`` with its state but no prediction: a run there
        reloads every concept with ``load_state`` and predicts again."""
        copy = out / self._baseline.name
        shutil.copytree(self._baseline, copy, ignore=shutil.ignore_patterns("predictions.jsonl", "images", "*.lock*"))
        return copy

    def _same_state(self, concept: str, got: Any, run_dir: Path, what: str) -> None:
        expected, expected_dir = self._personalized[concept]
        lines = state_differences(got, expected, roots=(str(Path(run_dir).resolve()), expected_dir))
        if lines:
            raise AssertionError(f"{what}: the state of {concept} differs from the one personalize returned in a "
                                 f"run straight through:{_listed(lines)}")

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

    def test_describe_is_json_and_says_whether_the_weights_are_random(self):
        assert self._described, "the runner never called describe()"
        details = self._described[0]
        assert isinstance(details, dict), f"describe() returned a {type(details).__name__}, not a dict"
        problem = _not_json(details, "describe()")
        assert problem is None, f"describe() is not JSON-able (run.json records it): {problem}"
        try:  # the runner's own check of what it records
            MethodDetails.from_describe(details, getattr(self.method, "name", self.method))
        except BenchError as exc:
            raise AssertionError(exc.one_line()) from None

    def test_a_concept_predicts_the_same_alone_at_batch_size_1_as_after_another_at_batch_size_n(self, tmp_path):
        asked = {s: n for s, n in self._largest_batch.items() if n}
        few = [s for s, n in asked.items() if n < 2]
        assert not few, (f"the baseline never asked {', '.join(few)} for more than one request at a time: batch "
                         f"composition is not tested; raise `limit` or add tasks")
        second = self.concepts[1]
        alone = self._run(tmp_path / "alone", concepts=[second], batch_size=1)
        expected = predictions(self._baseline, [second])
        assert expected, "the baseline run predicted nothing for the second concept"
        assert_same_predictions(predictions(alone), expected,
                                f"{second} alone at batch size 1, against {second} after {self.concepts[0]} at "
                                f"batch size {self.batch_size}")

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
        assert_same_predictions(predictions(resumed), predictions(self._baseline),
                                f"a run killed after each of {', '.join(steps)} of {second}, then resumed, "
                                f"against a run straight through")

    def test_a_run_interrupted_inside_personalization_resumes_to_the_same_state(self, tmp_path):
        """Killed at personalize's first progress step, then at its first step after it saved
        something (an epoch), then resumed: the same state and predictions as straight through."""
        import pytest

        klass = self.method_class()
        if not klass.personalizes():
            pytest.skip("the method personalizes nothing")
        second = self.concepts[1]
        real = klass.personalize
        kills: list[str] = []
        finished: dict = {}

        def interrupting(method, concept, state_dir, *a, **kw):
            if concept.name != second:
                return real(method, concept, state_dir, *a, **kw)
            runner_progress, saved_before, kill = method.progress, _folder_contents(state_dir), len(kills)

            def progress(what, done, total):
                runner_progress(what, done, total)
                if kill < 2 and done > 0 and (kill == 0 or _folder_contents(state_dir) != saved_before):
                    kills.append(f"{what!r} ({done}/{total})")
                    raise _Interrupted(what)

            method.progress = progress
            state = real(method, concept, state_dir, *a, **kw)
            finished[concept.name] = (state, Path(state_dir).resolve().parents[1])
            return state

        with _patched(klass, "personalize", interrupting):
            for _ in range(3):
                try:
                    resumed = self._run(tmp_path / "inside")
                    break
                except _Interrupted:
                    continue
        if not kills:
            pytest.skip("personalize never reported a step (self.progress(what, done, total) with done > 0): "
                        "no place inside it to interrupt")
        what = f"{second} killed inside personalize at step(s) {', '.join(kills)}, then resumed"
        assert second in finished, f"{what}: personalize never finished"
        self._same_state(second, finished[second][0], finished[second][1], what)
        assert_same_predictions(predictions(resumed), predictions(self._baseline),
                                f"{what}, against a run straight through")

    def test_a_concept_reloaded_from_its_state_predicts_the_same(self, tmp_path):
        if not self.method_class().personalizes():
            import pytest

            pytest.skip("the method personalizes nothing: there is no state to reload")
        klass = self.method_class()
        real = klass.load_state
        loaded: dict = {}

        def recording(method, concept, state_dir, *a, **kw):
            state = real(method, concept, state_dir, *a, **kw)
            loaded[concept.name] = state
            return state

        copy = self._copy_of_baseline(tmp_path / "reloaded")
        with _patched(klass, "load_state", recording):
            again = self._run(tmp_path / "reloaded")
        assert again == copy
        for concept in self.concepts:
            assert concept in loaded, f"the run did not reload {concept} with load_state"
            self._same_state(concept, loaded[concept], again, "reloaded with load_state")
        assert_same_predictions(predictions(again), predictions(self._baseline),
                                "reloaded with load_state, against the run that personalized")

    def test_predictions_do_not_draw_from_the_global_generators(self, tmp_path):
        """The runner seeds Python's, NumPy's and torch's global generators per batch; a method that
        draws from them predicts something that depends on the batch a request is in. Predicted
        again under other global seeds, every prediction must be the same."""
        from .. import runner

        real = runner.seeded
        self._copy_of_baseline(tmp_path / "other-seeds")
        with _patched(runner, "seeded", lambda *parts: real("the contract's other global seeds", *parts)):
            again = self._run(tmp_path / "other-seeds")
        assert_same_predictions(
            predictions(again), predictions(self._baseline),
            "predicted again with the global generators (random, numpy.random, torch) seeded differently: the "
            "method draws from them (draw from generators of its own: unifybench.seeding.derive_seed, image_seed)")

    def test_the_isolation_fingerprint_is_the_same_before_and_after_every_concept(self):
        import pytest

        values = self._fingerprints
        if not values or values == [None] * len(values):
            pytest.skip("the method declares no isolation_fingerprint(): it has no shared base model that a "
                        "concept could leave a trace in (declare one if it has)")
        assert None not in values and len(set(values)) == 1, values


class RowsContract:
    """For a method on the rows layer (:class:`unifybench.kit.rows.EpochLoop`): mix in before
    :class:`MethodContract` (``class TestMine(RowsContract, MethodContract)``), with ``args`` that
    train at least two epochs. Its test kills the second concept's training right after each epoch
    in turn (a run per epoch) and checks the state it ends with, and its predictions, against a run
    straight through, bit for bit."""

    def test_a_training_interrupted_after_each_epoch_resumes_bit_for_bit(self, tmp_path):
        from ..kit.rows import EpochLoop

        klass = self.method_class()
        second = self.concepts[1]
        real_epoch_done, real_personalize = EpochLoop.epoch_done, klass.personalize
        kills: list[str] = []
        finished: dict = {}

        def concept_of(loop) -> str:
            parts = loop.state_dir.resolve().parts
            at = len(parts) - 1 - parts[::-1].index("state") if "state" in parts else -1
            return parts[at + 1] if 0 <= at < len(parts) - 1 else ""

        def killing(loop, epoch):
            real_epoch_done(loop, epoch)
            if concept_of(loop) == second:
                kills.append(f"{loop.state_dir.name} epoch {epoch}")
                raise _Interrupted(epoch)

        def personalizing(method, concept, state_dir, *a, **kw):
            state = real_personalize(method, concept, state_dir, *a, **kw)
            finished[concept.name] = (state, Path(state_dir).resolve().parents[1])
            return state

        with _patched(EpochLoop, "epoch_done", killing), _patched(klass, "personalize", personalizing):
            for _ in range(200):
                try:
                    resumed = self._run(tmp_path / "epochs")
                    break
                except _Interrupted:
                    continue
            else:
                raise AssertionError(f"{second} never finished training after {len(kills)} kills")
        assert len(kills) >= 2, (f"{second} trained {len(kills)} epoch(s) through kit.rows.EpochLoop: set `args` to "
                                 f"train at least two, so that a resume between epochs is tested")
        what = f"{second} killed after each epoch ({', '.join(kills)}) and resumed each time"
        self._same_state(second, finished[second][0], finished[second][1], what)
        assert_same_predictions(predictions(resumed), predictions(self._baseline),
                                f"{what}, against a run straight through")
