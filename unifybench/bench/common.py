"""What the speed benchmarks share: a method found through the registry and built with its bench
defaults, the JSON header, and :func:`timed` (which the methods' speed hooks, :mod:`.hooks`, use too)."""
from __future__ import annotations

import argparse
import time

from .hooks import bench_arguments, offers


def common_arguments(p: argparse.ArgumentParser) -> None:
    import torch

    p.add_argument("--method", required=True, help="a registered method that offers this benchmark's hook")
    p.add_argument("--method-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="an argument of the method (repeatable); overrides its bench defaults")
    p.add_argument("--model", default=None, help="the method's model= (default: the method's bench default: a "
                                                 "tiny model on the CPU, full-size random weights on CUDA)")
    p.add_argument("--backend", default=None, help="the method's backend= (UniCTokens: showo or janus)")
    p.add_argument("--dtype", default=None, help="the method's dtype= (default bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)


def build_method(args, needs: str, extra: dict[str, str] | None = None):
    """``(method, torch.device)``: the method through the registry, refused in one line when it
    cannot be timed (``needs``: "bench_generation", a speed hook of :mod:`.hooks`, or "personalize");
    its arguments: its ``bench_arguments(device)`` where it offers them, then ``--model``,
    ``--backend``, ``--dtype`` and ``extra`` where it declares them, then ``--method-arg``."""
    import torch

    from unifybench.devices import check_device

    device = torch.device(check_device(args.device))
    cls, method_args = method_arguments(args, needs, device.type, extra)
    return cls(method_args, seed=args.seed, device=str(device)), device


def method_arguments(args, needs: str, device_type: str, extra: dict[str, str] | None = None):
    """``(method class, its argument strings)`` as :func:`build_method` makes them for a device of
    ``device_type``, without checking that device or building anything (tools/device/gpu_checks.sh's
    steps are checked this way on a machine without their device)."""
    from unifybench.errors import BenchError
    from unifybench.kit.args import parse_method_args
    from unifybench.methods import resolve_method

    cls, _ = resolve_method(args.method)
    if needs == "personalize":
        if not cls.personalizes():
            raise BenchError("does not personalize: it has no personalization to time", where=f"method {cls.name}")
    elif not offers(cls, needs):
        raise BenchError(f"offers no {needs} speed hook (unifybench.bench.hooks.SpeedBenchHooks; "
                         f"docs/writing-a-method.md, 'Speed hooks')", where=f"method {cls.name}")
    given = {}
    shortcuts = {"model": args.model, "backend": args.backend, "dtype": args.dtype, **(extra or {})}
    for key, value in shortcuts.items():
        if value is None:
            continue
        if key not in cls.arguments:
            raise BenchError(f"method {cls.name} has no {key}= argument", where=f"--{key.replace('_', '-')}")
        given[key] = str(value)
    given.update(parse_method_args(args.method_arg))
    return cls, {**bench_arguments(cls, device_type, given), **given}


def header(bench: str, method, device) -> dict:
    import torch

    from ..run_record import is_random_init

    details = method.describe()
    return {"bench": bench, "method": method.name, "model": details.get("base_model"),
            "random_init": is_random_init(details), "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}


def sync(device) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device, repeats: int = 1, warm_up: bool = True) -> float:
    """Seconds per call of ``fn`` (after one untimed call, unless ``warm_up`` is off: a baseline's
    first call is timed as it comes), the device synchronised around the clock."""
    if warm_up:
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats
