"""Reading a run specification given with ``--config``: JSON or YAML (no aliases), a run.json's
``spec`` or the spec itself, its keys checked against RunSpec's and JudgeConfig's fields."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import BenchError


def yaml_without_aliases(text: str, path: Path):
    """YAML with no anchors or aliases: a run specification needs none, and nested aliases make a
    700-byte file expand to gigabytes (a "billion laughs")."""
    import yaml

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise BenchError(f"YAML aliases (*name) are not accepted in a run specification (line {mark.line + 1})",
                                 path, "--config")
            return super().compose_node(parent, index)

    return yaml.load(text, Loader=NoAliases)  # noqa: S506 - a SafeLoader subclass


def read_config(path: Path) -> dict:
    """A run specification from a JSON or YAML file: a run.json (its 'spec') or the spec itself."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BenchError(f"cannot read ({exc.strerror or exc.__class__.__name__})", path, "--config") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            data = yaml_without_aliases(text, path)
        else:
            data = json.loads(text)
    except BenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - json's and yaml's errors: a file that does not parse
        raise BenchError(f"not a readable {path.suffix.lstrip('.') or 'JSON'} file ({exc.__class__.__name__})",
                         path, "--config") from None
    if isinstance(data, dict) and isinstance(data.get("spec"), dict):
        spec = dict(data["spec"])
        if isinstance(spec.get("method_args_given"), dict):  # as typed: parsing refills the defaults
            spec["method_args"] = spec["method_args_given"]
        spec.pop("method_args_given", None)
        data = spec
    if not isinstance(data, dict):
        raise BenchError("expected a run specification (a JSON or YAML object)", path, "--config")
    return data


def spec_from_config(args, config: dict):
    """RunSpec from a --config file, then the flags given on the command line over it."""
    from dataclasses import fields

    from ..errors import did_you_mean
    from ..spec import RunSpec
    from ..scoring.judges.config import JudgeConfig

    known = {f.name for f in fields(RunSpec)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise BenchError(f"unknown key(s) {', '.join(unknown)}; {did_you_mean(unknown[0], known)}known: "
                         f"{', '.join(sorted(known))}", args.config, "--config")
    values = dict(config)
    judge_keys = {f.name for f in fields(JudgeConfig)}
    if isinstance(values.get("judge"), str):  # as the flag and evaluate() take it
        values["judge"] = {"spec": values["judge"]}
    if isinstance(values.get("judge"), dict):
        wrong = sorted(map(str, set(values["judge"]) - judge_keys))
        if wrong:
            raise BenchError(f"judge: unknown key(s) {', '.join(wrong)}; {did_you_mean(wrong[0], judge_keys)}"
                             f"known: {', '.join(sorted(judge_keys))}", args.config, "--config")
        if "spec" not in values["judge"]:
            raise BenchError("judge: 'spec' (such as openai:MODEL) is required", args.config, "--config")
        values["judge"] = JudgeConfig(**values["judge"])
    if isinstance(values.get("method_args"), dict):
        values["method_args"] = {str(k): str(v) for k, v in values["method_args"].items() if v is not None}
    return values
