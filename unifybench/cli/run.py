"""``unifybench run``: a RunSpec from ``--config`` with the flags typed over it, run once per seed.

The run and judge options are generated with default ``None`` (:mod:`.options`): an option the user
typed is one that is not None, so a typed flag wins over the file and the file over a field's default."""
from __future__ import annotations

import dataclasses
import json

from ..errors import BenchError
from ..kit.args import parse_method_args
from ..options import declared
from ..scoring.judges.config import JudgeConfig
from ..spec import RunSpec
from .config import read_config, spec_from_config
from .options import judge_dest
from .render import console


def _typed(args, cls, dest=lambda name: name) -> dict:
    """The fields of ``cls`` whose options were typed on the command line, with their values."""
    return {name: getattr(args, dest(name)) for name in declared(cls) if getattr(args, dest(name), None) is not None}


def _judge(args, config: dict, seed: int) -> JudgeConfig | None:
    """The judge: --config's, with the --judge-* flags typed over it (None without a --judge spec)."""
    typed = _typed(args, JudgeConfig, judge_dest)
    if not typed:
        return config.get("judge")
    if config.get("judge") is not None:
        typed = {**dataclasses.asdict(config["judge"]), **typed}
    if "spec" not in typed:
        return None  # --judge-* options without a judge to drive: as before, nothing is judged
    typed.setdefault("seed", seed)  # the judge follows the run's seed unless --judge-seed says otherwise
    judge = JudgeConfig(**typed)
    judge.validate()
    return judge


def spec_from_args(args) -> RunSpec:
    """The run asked for: --config's values, then the options typed on the command line over them."""
    config = spec_from_config(args, read_config(args.config)) if args.config else {}
    typed = _typed(args, RunSpec)
    if "method_args" in typed:  # KEY=VALUE pairs typed over the file's
        typed["method_args"] = {**config.get("method_args", {}), **parse_method_args(typed["method_args"])}
    values = {**config, **typed}
    values["judge"] = _judge(args, config, values.get("seed", 0))
    if not values.get("method"):
        raise BenchError("no method: give --method NAME (or a --config that names one)", where="--method")
    return RunSpec(**values)


def cmd_run(args) -> int:
    from ..runner import run

    spec = spec_from_args(args)
    outcomes = []
    for seed in args.seeds or [spec.seed]:  # each seed a run of its own: each resumes on its own
        spec.seed = seed
        if spec.judge is not None and args.judge_seed is None and args.seeds:
            spec.judge.seed = seed
        outcomes.append(run(spec, args.out, console=console(stderr=args.json, quiet=args.quiet), verbose=args.verbose))
    if args.json:
        print(json.dumps(outcomes[0].results if len(outcomes) == 1 else [o.results for o in outcomes], indent=2))
    return 0
