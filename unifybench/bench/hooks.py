"""The speed benchmarks' optional interface, apart from the method lifecycle (``unifybench.methods``).

An adapter that offers ``python -m unifybench.bench generation|personalize`` inherits
:class:`SpeedBenchHooks` beside ``Method`` and overrides the hooks it has. The benchmarks look each
hook up by name (:func:`offers`), so a Method subclass that defines one without the mixin (as
before the mixin existed) is found the same. This module imports nothing heavy: an adapter's
method module imports it at load time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

HOOKS = ("bench_arguments", "bench_generation", "bench_personalize_costs")


class SpeedBenchHooks:
    """The hooks of the speed benchmarks; each default stands for "not offered"."""

    @classmethod
    def bench_arguments(cls, device_type: str, given: Mapping[str, str]) -> dict[str, str]:
        """``--method-arg`` defaults of the speed benchmarks on ``device_type`` ("cpu", "cuda"), given
        what the user set (``given``): e.g. a tiny model on the CPU, full-size random weights on CUDA."""
        return {}

    def bench_generation(self, options) -> dict | None:
        """``python -m unifybench.bench generation``: time the method's generation against a baseline
        on the same weights, in this process (``unifybench.bench.common.timed``), and return a JSON-able
        dict: ``baseline``, ``ours``, their throughputs, ``ratio``, and ``ok`` (False when the two
        disagree); None after printing one line of why not. ``options``: the benchmark's parsed
        options (``batch``, ``steps``, ``repeats``, ...)."""
        raise NotImplementedError

    def bench_personalize_costs(self, state_dir: Path) -> dict:
        """``python -m unifybench.bench personalize``: per stage, what the finished personalization in
        ``state_dir`` recorded (steps, seconds, first and last loss). Default: nothing beyond the total."""
        return {}


def _function(attribute):
    return getattr(attribute, "__func__", attribute)  # a class method's function, to compare by identity


def offers(method_or_class, hook: str) -> bool:
    """Whether a method (or its class) defines ``hook`` itself, through the mixin or by name alone."""
    cls = method_or_class if isinstance(method_or_class, type) else type(method_or_class)
    own = getattr(cls, hook, None)
    return callable(own) and _function(own) is not _function(getattr(SpeedBenchHooks, hook))


def bench_arguments(cls: type, device_type: str, given: Mapping[str, str]) -> dict[str, str]:
    """``cls``'s bench defaults, or none where it offers no ``bench_arguments``."""
    return dict(cls.bench_arguments(device_type, given)) if offers(cls, "bench_arguments") else {}


def personalize_costs(method, state_dir: Path) -> dict:
    """``method``'s per-stage personalization costs, or none where it offers no such hook."""
    return method.bench_personalize_costs(Path(state_dir)) if offers(method, "bench_personalize_costs") else {}
