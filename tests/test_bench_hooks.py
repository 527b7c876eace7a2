"""The speed benchmarks' hooks: an optional interface apart from Method, found by name, and a
method without them refused in one line."""
from __future__ import annotations

import subprocess
import sys

import pytest

from unifybench.bench.hooks import HOOKS, SpeedBenchHooks, bench_arguments, offers, personalize_costs
from unifybench.errors import BenchError
from unifybench.methods import Method


class Plain(Method):
    name = "plain"


class WithMixin(Method, SpeedBenchHooks):
    name = "with-mixin"

    @classmethod
    def bench_arguments(cls, device_type, given):
        return {"model": device_type}

    def bench_personalize_costs(self, state_dir):
        return {"train": {"steps": 1}}


class ByNameOnly(Method):  # a plugin written before the mixin: the hooks on its Method subclass
    name = "by-name"

    def bench_generation(self, options):
        return {"ok": True}


def test_the_hooks_are_not_part_of_the_method_lifecycle():
    assert not any(hasattr(Method, hook) for hook in HOOKS)


def test_a_hook_counts_where_the_class_defines_it_with_the_mixin_or_by_name():
    assert not any(offers(Plain, hook) for hook in HOOKS)
    assert [offers(WithMixin, h) for h in HOOKS] == [True, False, True]
    assert [offers(ByNameOnly, h) for h in HOOKS] == [False, True, False]
    assert bench_arguments(WithMixin, "cpu", {}) == {"model": "cpu"} and bench_arguments(Plain, "cpu", {}) == {}
    assert personalize_costs(WithMixin(), "unused") == {"train": {"steps": 1}}
    assert personalize_costs(Plain(), "unused") == {}


def test_the_generation_benchmark_on_a_method_without_the_hook_says_so_in_one_line():
    ran = subprocess.run([sys.executable, "-m", "unifybench.bench", "generation", "--method", "always-yes",
                          "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 2 and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
    assert ran.stderr.startswith("unifybench.bench generation: error: [method always-yes]: offers no "
                                 "bench_generation speed hook (unifybench.bench.hooks.SpeedBenchHooks")


def test_the_personalize_benchmark_refuses_a_method_that_does_not_personalize():
    from unifybench.bench.personalize import main

    with pytest.raises(BenchError, match=r"\[method always-yes\]: does not personalize"):
        main(["--method", "always-yes", "--device", "cpu"])
