"""The Method interface and the registry.

A method personalizes on one concept's training data, answers batches of questions and draws
batches of prompts. It sees requests only, never a ground-truth answer. Methods register under the
entry-point group ``unifybench.methods`` as lazy ``module:Class`` targets, imported only when
selected; the built-in reference rows live in :mod:`unifybench.builtin_methods` and are registered
the same way. docs/writing-a-method.md is the guide.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, ContextManager, Mapping, Sequence

from PIL import Image

from .errors import BenchError, did_you_mean
from .kit.args import Arg, Arguments, parse_arguments
from .records import ANSWER_TASKS, GEN_KINDS, TASKS, Concept
from .version import __version__

ENTRY_POINT_GROUP = "unifybench.methods"


@dataclass(frozen=True)
class AnswerRequest:
    """A question put to a method: everything about the item except its answer."""

    concept: str
    task: str  # rec | vqa | text_only | choice | caption
    index: int
    question: str
    image: Path | None
    options: tuple[tuple[str, str], ...] = ()
    # --choice-eval circular: the item asked again with its options rotated this many places (0: as written)
    rotation: int = 0

    @property
    def key(self) -> str:
        return f"{self.task}/{self.concept}/{self.index}" + (f"/r{self.rotation}" if self.rotation else "")


@dataclass(frozen=True)
class GenRequest:
    """A prompt to draw ``n_images`` times, reproducibly from ``seed``."""

    concept: str
    task: str  # gen | attr_gen
    index: int
    prompt: str  # names the concept by its token, e.g. "a <bo> in the jungle"
    n_images: int
    seed: int

    @property
    def key(self) -> str:
        return f"{self.task}/{self.concept}/{self.index}"

    def image_seeds(self) -> list[int]:
        """Each image's seed, from (seed, request, position) alone (:func:`unifybench.seeding.image_seed`)."""
        from .seeding import image_seed

        return [image_seed(self.seed, self.key, i) for i in range(self.n_images)]


GeneratedImage = Image.Image | Path


class Method:
    """Base class of every method adapter (docs/writing-a-method.md is the guide).

    A subclass sets ``name``, ``tasks`` and ``arguments`` (``{key: Arg(...)}``, see
    :mod:`unifybench.kit.args`), and overrides what its tasks need. The runner owns the lifecycle:
    for each concept it calls :meth:`personalize` once (or :meth:`load_state` when a previous run
    finished it), enters :meth:`activate`, then asks :meth:`answer` and :meth:`generate` in batches.
    A method never calls its own lifecycle steps.
    """

    name: ClassVar[str] = ""
    tasks: ClassVar[frozenset[str]] = frozenset()
    arguments: ClassVar[dict[str, Arg]] = {}

    def __init__(self, args: Mapping[str, str] | Arguments | None = None, *, seed: int = 0, device: str = "cpu",
                 batch_size: int = 8):
        parsed = args if isinstance(args, Arguments) else type(self).parse_arguments(args or {})
        self.args: Arguments = parsed
        self.seed = seed
        self.device = device
        self.batch_size = batch_size

    # ------------------------------------------------------------------ checks before anything is made
    @classmethod
    def parse_arguments(cls, raw: Mapping[str, str]) -> Arguments:
        """The ``--method-arg`` strings parsed against :attr:`arguments`, then :meth:`check_arguments`."""
        args = parse_arguments(cls.arguments, raw, cls.name)
        cls.check_arguments(args)
        return args

    @classmethod
    def check_arguments(cls, args: Arguments) -> None:
        """Rules between arguments (``epoch`` needs ``checkpoint``): raise a BenchError naming the
        argument. Cheap: load nothing."""

    @classmethod
    def check_run(cls, args: Arguments, concepts: Sequence[Concept], tasks: Sequence[str]) -> None:
        """Refuse concepts or tasks this method cannot run with these arguments (a BenchError naming
        them); cheap. Called before the run directory is made."""

    @classmethod
    def check_available(cls, args: Arguments) -> None:
        """Refuse, in seconds, a run whose model cannot be loaded here (``kit.models.check_available``).
        Called before the run directory is made; may look in the cache or ask the hub, never load."""

    @classmethod
    def personalizes(cls) -> bool:
        """Whether the runner personalizes each concept: the method overrides :meth:`personalize`."""
        return cls.personalize is not Method.personalize

    # ------------------------------------------------------------------ the lifecycle
    def progress(self, what: str, done: int, total: int) -> None:
        """Called by a method while it personalizes (``"stage 2 epoch 3/20"``, 23, 61): the runner
        replaces it with one that moves the terminal's progress bar. Default: nothing."""

    def describe(self) -> dict[str, Any]:
        """What made this method's predictions (checkpoints, dtypes, what an Auto default chose),
        recorded in run.json's ``method_details``."""
        return {}

    def personalize(self, concept: Concept, state_dir: Path) -> Any:
        """Learn the concept, saving what :meth:`load_state` needs into ``state_dir``; return the
        state :meth:`activate`, :meth:`answer` and :meth:`generate` receive. The runner calls it
        once per concept; when a run was interrupted inside it, it is called again on the same
        ``state_dir``, and may continue from what it saved there (epochs done). Overriding it is
        what makes a method personalized; override :meth:`load_state` with it."""
        return None

    def load_state(self, concept: Concept, state_dir: Path) -> Any:
        """The state of a concept that :meth:`personalize` finished in an earlier run, from ``state_dir``."""
        return None

    def activate(self, concept: Concept, state: Any) -> ContextManager:
        """A context in which ``concept`` is the one the method answers and draws: what it learned
        (new tokens, adapters) exists inside and nowhere else. The runner predicts each concept
        inside its own ``activate``; on leaving it the method must be as it was before, so that a
        concept's predictions never depend on which concepts came before it. :class:`ConceptLayers`
        gives the guard every adapter with layers needs."""
        return contextlib.nullcontext()

    def isolation_fingerprint(self) -> str | None:
        """A cheap content hash of what must not change between concepts (the base model's
        vocabulary and rows), or None. The runner compares it before and after every concept."""
        return None

    def answer(self, concept: Concept, state: Any, requests: Sequence[AnswerRequest]) -> list[str | None]:
        """One reply per request; ``None`` where the method has no answer (recorded as missing)."""
        raise NotImplementedError

    def generate(self, concept: Concept, state: Any,
                 requests: Sequence[GenRequest]) -> list[list[GeneratedImage] | None]:
        """``n_images`` images (PIL images or existing files) per request; ``None`` if it has none."""
        raise NotImplementedError

    # The speed benchmarks' hooks are a separate, optional interface: unifybench.bench.hooks.


# ----------------------------------------------------------------------------- registry

BUILTIN_METHODS: dict[str, str] = {
    "real-images": "unifybench.builtin_methods:RealImages",
    "always-yes": "unifybench.builtin_methods:AlwaysYes",
    "always-first": "unifybench.builtin_methods:AlwaysFirst",
    "random-answer": "unifybench.builtin_methods:RandomAnswer",
    "precomputed": "unifybench.builtin_methods:Precomputed",
}


class ConceptLayers:
    """``activate`` for adapters whose concept adds something to a shared base model (token rows,
    LoRA layers): :meth:`concept_layers` is entered once per concept, by the runner. Activating a
    second concept inside the first, or predicting outside any activation (:meth:`require_active`),
    is a programming error and raises, so a forgotten step cannot silently predict with the base
    model. Mix in before :class:`Method`."""

    _active_concept: str | None = None

    def concept_layers(self, concept: Concept, state: Any) -> ContextManager:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def activate(self, concept, state):
        if self._active_concept is not None:
            raise RuntimeError(f"{concept.name} activated while {self._active_concept} is still active: the runner "
                               f"enters activate once per concept, a method never does")
        with self.concept_layers(concept, state):
            self._active_concept = concept.name
            try:
                yield
            finally:
                self._active_concept = None

    def require_active(self, concept: Concept) -> None:
        """Call first in ``answer`` and ``generate``."""
        if self._active_concept != concept.name:
            raise RuntimeError(f"{type(self).__name__} asked about {concept.name} outside activate({concept.name}); "
                               f"predict inside `with method.activate(concept, state):` (unifybench.testing.predict)")


@dataclass(frozen=True)
class Provider:
    """Who provides a method: the ``module:Class`` target and the distribution (pip package) that
    registered it, with its version; recorded in run.json."""

    target: str
    distribution: str | None
    version: str | None

    def as_dict(self) -> dict:
        return {"target": self.target, "distribution": self.distribution, "version": self.version}


def _norm(dist: str | None) -> str:
    return re.sub(r"[-_.]+", "-", (dist or "").lower())


def providers() -> dict[str, list[Provider]]:
    """Every method name and who registers it: the built-ins (this package), then each installed
    distribution's ``unifybench.methods`` entry points. One distribution found twice on the path
    counts once; two distributions under one name are both listed (and refused when selected)."""
    found = {name: [Provider(target, "unifybench", __version__)] for name, target in BUILTIN_METHODS.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        provider = Provider(ep.value, dist.name if dist else None, dist.version if dist else None)
        known = found.setdefault(ep.name, [])
        if not any(_norm(p.distribution) == _norm(provider.distribution) for p in known):
            known.append(provider)
    return found


def registered_methods() -> dict[str, str]:
    """Method name -> ``module:Class`` target, built-ins first, then installed plugins."""
    return {name: found[0].target for name, found in providers().items()}


def load_method_class(name: str) -> type[Method]:
    cls, _ = resolve_method(name)
    return cls


def resolve_method(method: "str | type[Method]") -> tuple[type[Method], Provider]:
    """The class of a registered method name (or a Method subclass given as is, as
    ``unifybench.evaluate`` and the test kit take it) and who provides it; bad ones are one line."""
    if isinstance(method, type):
        provider = Provider(f"{method.__module__}:{method.__qualname__}", *_distribution_of(method.__module__))
        return _checked(method, method.__qualname__, provider.target), provider
    found = providers()
    if method not in found:
        raise BenchError(f"unknown method {method!r}; {did_you_mean(method, found)}known: {', '.join(sorted(found))}",
                         where="--method")
    if len(found[method]) > 1:
        who = " and ".join(f"{p.distribution or 'an unnamed distribution'} ({p.target})" for p in found[method])
        raise BenchError(f"registered twice, by {who}; uninstall one of them", where=f"method {method}")
    provider = found[method][0]
    module_name, _, attr = provider.target.partition(":")
    try:
        obj = import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise BenchError(f"cannot import {provider.target} ({exc})", where=f"method {method}") from exc
    return _checked(obj, method, provider.target), provider


def _checked(obj, name: str, target: str) -> type[Method]:
    where = f"method {name}"
    if not (isinstance(obj, type) and issubclass(obj, Method)):
        raise BenchError(f"{target} is not a unifybench Method subclass", where=where)
    if not obj.name:
        raise BenchError(f"{target} has no name (set the class attribute name)", where=where)
    unknown = set(obj.tasks) - set(TASKS)
    if unknown:
        raise BenchError(f"declares unknown tasks {sorted(unknown)}", where=where)
    overrides = {step: getattr(obj, step) is not getattr(Method, step) for step in ("personalize", "load_state")}
    if overrides["personalize"] != overrides["load_state"]:
        has, lacks = ("personalize", "load_state") if overrides["personalize"] else ("load_state", "personalize")
        raise BenchError(f"{target} overrides {has} but not {lacks}: a personalized method needs both (a resumed "
                         f"run reloads what personalize saved)", where=where)
    undeclared = sorted(k for k, v in obj.arguments.items() if not isinstance(v, Arg))
    if undeclared:
        raise BenchError(f"{target} declares argument(s) {', '.join(undeclared)} without Arg: declare each as "
                         f"Arg(type, default, help) (docs/writing-a-method.md, 'Arguments')", where=where)
    for step, kinds in (("answer", ANSWER_TASKS), ("generate", GEN_KINDS)):
        needing = [t for t in kinds if t in obj.tasks]
        if needing and getattr(obj, step) is getattr(Method, step):
            raise BenchError(f"{target} declares {', '.join(needing)} but does not override {step}", where=where)
    return obj


_PACKAGES_DISTRIBUTIONS: dict = {}


def _packages_distributions() -> Mapping[str, list[str]]:
    """``importlib.metadata.packages_distributions()``, kept while ``sys.path`` and the modification
    times of its folders stay the same: it reads the file list of every installed distribution (a
    second or more beside torch), and the test kit resolves a class on every run. Installing or
    removing a distribution in one of those folders adds or removes its ``.dist-info`` folder there,
    which changes the folder's time: the next call reads them again."""
    from importlib.metadata import packages_distributions

    key = []
    for entry in sys.path:
        try:
            key.append((entry, os.getcwd() if not entry else None, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            key.append((entry, None, None))
    key = tuple(key)
    if key not in _PACKAGES_DISTRIBUTIONS:
        _PACKAGES_DISTRIBUTIONS.clear()
        _PACKAGES_DISTRIBUTIONS[key] = packages_distributions()
    return _PACKAGES_DISTRIBUTIONS[key]


def _distribution_of(module: str) -> tuple[str | None, str | None]:
    from importlib.metadata import version

    names = _packages_distributions().get(module.split(".")[0]) or []
    if not names:
        return None, None
    try:
        return names[0], version(names[0])
    except Exception:  # noqa: BLE001 - metadata without a version
        return names[0], None


def method_code(cls: type) -> dict:
    """A content hash of the method's source: every file of the top-level package that defines it
    (an adapter package folder: its ``.py`` files and its data files, bytecode aside), or its
    module's file alone when that module is a single file or part of ``unifybench`` itself (the
    built-ins). Recorded in run.json; a resume into a run directory made by other code is refused
    (``--resume-changed-code`` overrides)."""
    module = sys.modules.get(cls.__module__)
    top_name = cls.__module__.split(".")[0]
    top = sys.modules.get(top_name)
    if top is not None and hasattr(top, "__path__") and top_name != "unifybench":
        roots = [Path(p) for p in top.__path__]
        # every file of the package: its code and its data (a vocabulary, a prompt file), not bytecode
        files = sorted({f for root in roots for f in root.rglob("*") if f.is_file() and "__pycache__" not in f.parts
                        and f.suffix not in (".pyc", ".pyo")})
        base = roots[0]
        package = top_name
    else:
        file = getattr(module, "__file__", None)
        if not file or not Path(file).is_file():  # no source file (a class typed into `python -`): nothing to hash
            return {"package": cls.__module__, "sha256": None, "files": {}}
        files, base, package = [Path(file)], Path(file).parent, cls.__module__
    per_file = {}
    for f in files:
        try:
            rel = f.relative_to(base).as_posix()
        except ValueError:
            rel = f.as_posix()
        per_file[rel] = hashlib.sha256(f.read_bytes()).hexdigest()[:16]
    total = hashlib.sha256(json.dumps(per_file, sort_keys=True).encode()).hexdigest()[:16]
    return {"package": package, "sha256": total, "files": per_file}


def code_changes(recorded: dict, current: dict) -> str:
    """What differs between two :func:`method_code` records, for a one-line message."""
    old, new = recorded.get("files") or {}, current.get("files") or {}
    changed = sorted(f for f in old.keys() & new.keys() if old[f] != new[f])
    added, removed = sorted(new.keys() - old.keys()), sorted(old.keys() - new.keys())
    parts = [f"{label} {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}"
             for label, names in (("changed", changed), ("added", added), ("removed", removed)) if names]
    return "; ".join(parts) or f"sha256 {recorded.get('sha256')} -> {current.get('sha256')}"


