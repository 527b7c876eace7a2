"""Run and judge options declared once (RunSpec and JudgeConfig fields): the flags generated from them,
the one check they share, and --config < typed flags without a second parse."""
from __future__ import annotations

import argparse
import contextlib
import json

import pytest

from unifybench.cli import build_parser, main
from unifybench.cli.run import spec_from_args
from unifybench.errors import BenchError
from unifybench.options import declared
from unifybench.runner import check_spec
from unifybench.scoring.judges.config import JudgeConfig
from unifybench.spec import RunSpec


def run_options() -> dict[str, argparse.Action]:
    parser = build_parser()
    run = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["run"]
    return {flag: action for action in run._actions for flag in action.option_strings}


def test_every_declared_field_is_a_flag_with_no_default_of_its_own():
    options = run_options()
    for cls in (RunSpec, JudgeConfig):
        for name, opt in declared(cls).items():
            assert opt.flag in options, (cls.__name__, name)
            assert options[opt.flag].default is None, opt.flag  # typed by the user <=> not None
            assert options[opt.flag].help.startswith(opt.help.split(" (")[0]), opt.flag
    assert "(default: 16)" in options["--batch-size"].help and "(default: 1000)" in options["--bootstrap"].help
    assert options["--judge-seed"].help.endswith("(default: --seed)")


def args_of(*argv: str):
    return build_parser().parse_args(["run", *argv])


def test_flags_typed_win_over_the_config_file_and_the_file_over_the_defaults(tmp_path):
    config = tmp_path / "spec.json"
    config.write_text(json.dumps({"method": "always-first", "seed": 3, "batch_size": 7, "limit": 2,
                                  "method_args": {"a": "1", "b": "2"},
                                  "judge": {"spec": "hf:tiny", "timeout": 5.0, "retries": 1}}))
    spec = spec_from_args(args_of("--config", str(config), "--seed", "9", "--method-arg", "b=3",
                                  "--judge-retries", "4"))
    assert (spec.method, spec.seed, spec.batch_size, spec.limit) == ("always-first", 9, 7, 2)
    assert spec.method_args == {"a": "1", "b": "3"}
    assert (spec.judge.spec, spec.judge.timeout, spec.judge.retries) == ("hf:tiny", 5.0, 4)
    # Nothing typed: the file's values; nothing in the file either: the fields' defaults.
    plain = spec_from_args(args_of("--config", str(config)))
    assert (plain.seed, plain.device, plain.bootstrap) == (3, RunSpec("m").device, RunSpec("m").bootstrap)
    # A typed flag equal to a field's default still wins over the file (it is not None).
    assert spec_from_args(args_of("--config", str(config), "--seed", "0")).seed == 0


def test_a_judge_from_the_flags_follows_the_run_seed_unless_its_own_is_typed():
    assert spec_from_args(args_of("--method", "m", "--seed", "5", "--judge", "hf:tiny")).judge.seed == 5
    typed = spec_from_args(args_of("--method", "m", "--seed", "5", "--judge", "hf:tiny", "--judge-seed", "2"))
    assert typed.judge.seed == 2


@pytest.mark.parametrize("field, value, flag, message", [
    ("seed", -1, "--seed", "expected an integer >= 0"), ("batch_size", 0, "--batch-size", "expected an integer >= 1"),
    ("images_per_prompt", 257, "--images-per-prompt", "<= 256"), ("split", 5, "--split", "<= 4, got 5"),
    ("protocol", "mine", "--protocol", "reference"),
])
def test_the_flag_and_the_spec_are_refused_with_one_line(field, value, flag, message, capsys):
    with pytest.raises(BenchError) as refused:
        check_spec(RunSpec("m", **{field: value}))
    assert refused.value.where == flag and message in refused.value.message
    # argparse's own choices end the process (exit 2); a numeric option is refused by the same check.
    with pytest.raises(SystemExit) if field == "protocol" else contextlib.nullcontext():
        assert main(["run", "--method", "m", flag, str(value)]) == 2
    err = capsys.readouterr().err
    assert message in err and flag in err and len(err.strip().splitlines()) == 1


def test_judge_ranges_come_from_the_declarations():
    with pytest.raises(BenchError) as refused:
        JudgeConfig("hf:tiny", timeout=0).validate()
    assert refused.value.where == "--judge-timeout" and "expected a number > 0, <= 3600" in refused.value.message
    with pytest.raises(BenchError) as refused:
        JudgeConfig("hf:tiny", mode="loose").validate()
    assert refused.value.where == "--judge-mode"


def test_the_command_line_and_its_declarations_import_neither_torch_nor_pil():
    """`unifybench --help` stays quick: the parser reads RunSpec and JudgeConfig without the runner."""
    import subprocess
    import sys

    code = ("import sys, unifybench.cli; unifybench.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'PIL', 'open_clip', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
