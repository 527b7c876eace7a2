"""Run and judge options, each declared once on its dataclass field: flag, help, range, choices.

``RunSpec`` (:mod:`.spec`) and ``JudgeConfig`` (:mod:`.scoring.judges.config`) declare their fields with
:func:`option`; the command line's options are generated from those declarations (:mod:`.cli.options`)
and :func:`check_declared` checks a spec the same way whether it came from flags, a ``--config`` file or
``unifybench.evaluate()``. Light on purpose: ``unifybench --help`` reads it without importing torch.

A method's own arguments are declared with :class:`unifybench.kit.args.Arg` instead: they are a
plugin's public API, arrive as ``KEY=VALUE`` text (``--method-arg``, a config's ``method_args``,
``evaluate()``), and have what run options never need (``Auto``/``Derived`` defaults, a path that
must exist); the harness's flags are no plugin's business.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .errors import BenchError, did_you_mean

_MISSING = dataclasses.MISSING


@dataclass(frozen=True)
class Option:
    """How one field is typed on the command line and which values it accepts."""

    flag: str
    help: str
    type: type | None = None  # int, float or str: the field's values (None: checked by its owner)
    low: float | None = None
    high: float | None = None
    above_low: bool = False  # the lowest value itself is refused (a timeout of 0)
    choices: tuple[str, ...] | None = None
    optional: bool = False  # None is accepted (and means "not set")
    metavar: str | None = None
    noun: str | None = None  # how a wrong value is described: "an integer" (int), "a number" (float)
    default_text: str | None = None  # shown in --help instead of the field's default ("" for none)
    action: str | None = None  # "store_true" or "append" (otherwise one value)

    @property
    def expected(self) -> str:
        return self.noun or ("an integer" if self.type is int else "a number")

    def range_text(self) -> str:
        low = f"> {self.low}" if self.above_low else f">= {self.low}"
        return f"{low}, <= {self.high}"

    def check(self, value):
        """``value`` if this option accepts it, else a one-line BenchError naming the flag."""
        if value is None and self.optional:
            return value
        if self.choices is not None:
            if value not in self.choices:
                raise BenchError(f"expected one of {', '.join(self.choices)}, got {value!r}; "
                                 f"{did_you_mean(str(value), self.choices)}", where=self.flag)
        elif self.type in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float) if self.type is float else int):
                raise BenchError(f"expected {self.expected}, got {value!r}", where=self.flag)
            if self.low is not None and (not math.isfinite(value) or value < self.low or value > self.high
                                         or (self.above_low and value == self.low)):
                raise BenchError(f"expected {self.expected} {self.range_text()}, got {value!r}", where=self.flag)
        elif self.type is str and (not isinstance(value, str) or not value.strip()):
            raise BenchError(f"expected a non-empty text, got {value!r}", where=self.flag)
        return value

    def from_text(self, text: str):
        """The flag's text as the field's value, checked (the converter argparse is given)."""
        if self.type in (int, float):
            try:
                value = self.type(text)
            except ValueError:
                raise BenchError(f"expected {self.expected}, got {text!r}", where=self.flag) from None
            return self.check(value)
        return self.check(text)


def option(default=_MISSING, *, factory=_MISSING, **declaration) -> dataclasses.Field:
    """A dataclass field with its :class:`Option` (``flag``, ``help`` and the rest as keywords)."""
    return dataclasses.field(default=default, default_factory=factory,
                             metadata={"option": Option(**declaration)})


def declared(cls) -> dict[str, Option]:
    """Field name -> its Option, in the class's field order (fields without one are left out)."""
    return {f.name: f.metadata["option"] for f in dataclasses.fields(cls) if "option" in f.metadata}


def field_default(cls, name: str):
    found = {f.name: f for f in dataclasses.fields(cls)}[name]
    if found.default_factory is not _MISSING:
        return found.default_factory()
    return None if found.default is _MISSING else found.default


def check_declared(obj, names=None) -> None:
    """Each declared field of ``obj`` (or those in ``names``) checked against its Option."""
    for name, opt in declared(type(obj)).items():
        if names is None or name in names:
            opt.check(getattr(obj, name))
