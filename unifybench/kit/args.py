"""A method's arguments, declared once.

Each ``--method-arg`` a method accepts is one :class:`Arg` in the method's ``arguments`` dict: its
type, default, help, and the choices or range it takes. From that one declaration come the parsing
and checking of ``KEY=VALUE`` strings before anything is made (one line naming the argument, the
value and what is accepted), the help of ``unifybench methods``, the parsed values with every
default filled in ``run.json``, and the run directory's hash over those parsed values (so ``0.85``,
``0.850`` and leaving the default out are one run directory, and changing a default is another).

Defaults come in four kinds:

- a value (``Arg(float, 1e-3, ...)``);
- ``None``: no value unless one is given (an optional file, say);
- :class:`Derived`: computed from the other parsed arguments (``Derived(lambda a: 100 if a.backend
  == "showo" else 64, "100 on showo, 64 on janus")``), so it is a value in the hash too;
- :class:`Auto`: chosen by the method on the machine it runs on (``Auto("bfloat16 on CUDA, float32
  on CPU")``); the parsed value is ``None`` (also when ``KEY=auto`` is given), ``run.json``'s
  ``method_details`` records what was chosen, and the run directory does not depend on the machine.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ..errors import BenchError

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_TYPE_NAMES = {int: "int", float: "float", bool: "bool", str: "str", Path: "path"}


@dataclass(frozen=True)
class Auto:
    """A default the method chooses at run time from the machine (device, dtype support)."""

    text: str  # what is chosen, for the help: "8 on CUDA, 4 on CPU"


@dataclass(frozen=True)
class Derived:
    """A default computed from the other parsed arguments; ``text`` says how, for the help."""

    compute: Callable[["Arguments"], Any]
    text: str


@dataclass(frozen=True)
class Arg:
    """One ``--method-arg``. ``low``/``high`` bound numbers inclusively, ``above`` exclusively
    (``above=0``: positive); ``exists`` ("file" or "dir") checks a path before anything is made."""

    type: type
    default: Any
    help: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    above: float | None = None
    exists: str | None = None

    def __post_init__(self):
        if self.type not in _TYPE_NAMES:
            raise TypeError(f"Arg type must be one of {', '.join(_TYPE_NAMES.values())}, got {self.type!r}")

    @property
    def type_name(self) -> str:
        if self.choices:
            return "|".join(map(str, self.choices))
        return _TYPE_NAMES[self.type]

    def default_text(self) -> str:
        """The default as ``unifybench methods`` shows it."""
        if isinstance(self.default, (Auto, Derived)):
            return self.default.text
        if self.default is None:
            return "none"
        return _show(self.default)

    def range_text(self) -> str:
        parts = []
        if self.above is not None:
            parts.append(f"> {_show(self.above)}")
        if self.low is not None:
            parts.append(f">= {_show(self.low)}")
        if self.high is not None:
            parts.append(f"<= {_show(self.high)}")
        return ", ".join(parts)

    def parse(self, key: str, raw: str) -> Any:
        where = f"--method-arg {key}"
        text = str(raw).strip()
        if isinstance(self.default, Auto) and text.lower() == "auto":
            return None
        if self.type is bool:
            if text.lower() not in _TRUE + _FALSE:
                raise BenchError(f"expected true or false, got {raw!r}", where=where)
            return text.lower() in _TRUE
        if self.type is int:
            try:
                value: Any = int(text)
            except ValueError:
                raise BenchError(f"expected an integer{self._accepted()}, got {raw!r}", where=where) from None
        elif self.type is float:
            try:
                value = float(text)
            except ValueError:
                raise BenchError(f"expected a number{self._accepted()}, got {raw!r}", where=where) from None
            if not math.isfinite(value):
                raise BenchError(f"expected a finite number{self._accepted()}, got {raw!r}", where=where)
        elif self.type is Path:
            if not text:
                raise BenchError("expected a path, got an empty value", where=where)
            value = Path(text).expanduser()
            if self.exists == "dir" and not value.is_dir():
                raise BenchError("folder not found" if not value.exists() else "not a folder", value, where)
            if self.exists == "file" and not value.is_file():
                raise BenchError("file not found" if not value.exists() else "not a file", value, where)
        else:
            value = str(raw)
            if self.choices:
                value = text
        if self.choices and value not in self.choices:
            raise BenchError(f"expected one of {', '.join(map(str, self.choices))}, got {raw!r}", where=where)
        self._check_range(value, raw, where)
        return value

    def _check_range(self, value, raw, where) -> None:
        if self.type not in (int, float):
            return
        if ((self.above is not None and not value > self.above) or (self.low is not None and value < self.low)
                or (self.high is not None and value > self.high)):
            raise BenchError(f"expected {'an integer' if self.type is int else 'a number'} {self.range_text()}, "
                             f"got {raw!r}", where=where)

    def _accepted(self) -> str:
        rng = self.range_text()
        return f" {rng}" if rng else ""


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def as_json(value: Any) -> Any:
    """A parsed value as run.json records it and the run directory's hash reads it."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [as_json(v) for v in value]
    return value


class Arguments(Mapping):
    """A method's parsed arguments, every default filled: ``args.lr`` or ``args["lr"]``.
    ``given`` holds the names the user gave (``"checkpoint" in args.given``)."""

    def __init__(self, values: dict[str, Any], given: frozenset[str]):
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "given", given)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no argument {name!r} (declared: {', '.join(self._values) or 'none'})") from None

    def __setattr__(self, name, value):
        raise AttributeError("parsed arguments are read-only")

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def to_json(self) -> dict[str, Any]:
        """Every argument, sorted by name: the run directory's hash and run.json's ``method_args``."""
        return {k: as_json(self._values[k]) for k in sorted(self._values)}

    def __repr__(self) -> str:
        return f"Arguments({self.to_json()})"


def declared(arguments: Mapping[str, Any]) -> dict[str, Arg]:
    """A method's ``arguments`` as :class:`Arg` objects. A plain help string (the form before typed
    declarations) stands for an optional string argument, so an older plugin still runs."""
    return {k: v if isinstance(v, Arg) else Arg(str, None, str(v)) for k, v in arguments.items()}


def parse_method_args(pairs: list[str]) -> dict[str, str]:
    """The ``--method-arg KEY=VALUE`` strings of a command line as a dict (the later of two equal
    keys wins), before :func:`parse_arguments` checks them against a declaration."""
    args: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BenchError(f"expected KEY=VALUE, got {pair!r}", where="--method-arg")
        args[key.strip()] = value
    return args


def parse_arguments(arguments: Mapping[str, Any], raw: Mapping[str, str], method: str = "") -> Arguments:
    """Parse ``KEY=VALUE`` strings against a declaration; unknown names, bad values and values out of
    range are one :class:`BenchError` each, naming the argument."""
    spec = declared(arguments)
    unknown = sorted(set(raw) - set(spec))
    if unknown:
        from ..errors import did_you_mean

        accepted = ", ".join(sorted(spec)) or "none"
        raise BenchError(f"unknown argument(s) {', '.join(unknown)}; {did_you_mean(unknown[0], spec)}accepted: {accepted}",
                         where=f"method {method}" if method else "--method-arg")
    values: dict[str, Any] = {}
    for key, arg in spec.items():
        if key in raw:
            values[key] = arg.parse(key, raw[key])
        elif isinstance(arg.default, (Auto, Derived)):
            values[key] = None
        else:
            values[key] = arg.default
    parsed = Arguments(values, frozenset(raw))
    derived = {k: a for k, a in spec.items() if isinstance(a.default, Derived) and k not in raw}
    if derived:
        for key, arg in derived.items():
            values[key] = arg.default.compute(parsed)
        parsed = Arguments(values, frozenset(raw))
    return parsed


def restates_default(help_text: str) -> bool:
    """Whether an argument's help writes its default itself: the listing shows the declared one, and
    a default written twice goes stale (the contract kit and the built-in methods' test check it)."""
    text = help_text.lower()
    return "(default" in text or "default:" in text

