"""Dispatch `python -m unifybench.bench NAME [ARGS]` to unifybench.bench.NAME:main(ARGS)."""
import sys
from importlib import import_module

BENCHMARKS = {
    "fidelity": "unifybench.bench.fidelity",  # generation scorers: per-image loop vs pipeline
    "generation": "unifybench.bench.generation",  # image generation: eager vs compiled decoding
    "personalize": "unifybench.bench.personalize",  # a method's personalization, timed per stage
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        print(f"usage: python -m unifybench.bench {{{'|'.join(BENCHMARKS)}}} [ARGS]", file=sys.stderr)
        return 2
    from unifybench.errors import BenchError

    try:
        return import_module(BENCHMARKS[argv[0]]).main(argv[1:]) or 0
    except BenchError as exc:  # bad input anywhere in a benchmark: one line, exit 2, as the CLI does
        print(f"unifybench.bench {argv[0]}: error: {exc.one_line()}", file=sys.stderr)
        return 2


sys.exit(main(sys.argv[1:]))
