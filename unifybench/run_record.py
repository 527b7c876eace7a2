"""``run.json``: the full specification that made a run directory, in one place.

It is written when a run starts (so an interrupted run has it), and again when the method has
described itself (``method_details``: its checkpoints, dtypes, what an Auto default chose), before
anything is predicted. The description is handed on as a value from there (scoring and
``results.json`` take it as an argument), never read back from the file within a run.

It also records the method's provenance: the distribution (pip package) and version that provide
it, and a content hash of its source files (:func:`unifybench.methods.method_code`). A run that
would add predictions to a directory whose recorded code differs from the installed code is
refused (:func:`check_same_code`): a changed default or a fixed bug must not mix with old
predictions unnoticed.
"""
from __future__ import annotations

import functools
import json
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .errors import BenchError
from .kit.files import write_json_atomic
from .store import RUN_JSON

RANDOM_INIT_LABEL = "random-init weights: plumbing and speed only, not a result"
BACKBONES_UNUSED = "not used"


@dataclass(frozen=True)
class MethodDetails:
    """A method's ``describe()``, checked where the core reads it: ``random_init`` a bool (it labels
    every score), the rest recorded as given in ``run.json``'s ``method_details``."""
    random_init: bool
    recorded: dict

    @classmethod
    def from_describe(cls, details, method: str) -> "MethodDetails":
        """What the runner takes from ``describe()``: a dict whose ``random_init``, when given, is True
        or False; anything else is one line naming the method."""
        if not isinstance(details, dict):
            raise BenchError(f"describe() returned a {type(details).__name__}, not a dict", where=f"method {method}")
        random_init = details.get("random_init", False)
        if not isinstance(random_init, bool):
            raise BenchError(f"describe()['random_init'] is {random_init!r}: expected True or False (it labels "
                             f"every score)", where=f"method {method}")
        return cls(random_init, details)

    @classmethod
    def from_record(cls, method_details: dict | None) -> "MethodDetails":
        """What a run's record says (None: nothing described, as when every prediction existed)."""
        details = method_details if isinstance(method_details, dict) else {}
        return cls(bool(details.get("random_init")), details)


def is_random_init(method_details: dict | None) -> bool:
    """Whether a method's predictions come from random-init weights: the recorded ``describe()``'s
    ``random_init``. The one place every label and table asks."""
    return MethodDetails.from_record(method_details).random_init


@functools.cache  # once per process: run.json is written more than once per run
def versions() -> dict[str, str | None]:
    found = {}
    for package in ("unifybench", "torch", "torchvision", "transformers", "open_clip_torch", "pillow", "openai",
                    "pandas"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    found["python"] = platform.python_version()
    return found


@functools.cache
def git_commit() -> str | None:
    source = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def clip_model(kind: str, clip: str) -> str | None:
    """The CLIP architecture a run's scores use: None without backbones, "tiny" for the test models."""
    if kind == BACKBONES_UNUSED:
        return None
    return "tiny" if kind == "tiny" else clip


def backbone_names(kind: str, clip: str = "ViT-B-32") -> dict[str, str]:
    """The checkpoints a backbone kind stands for, written into run.json before any is loaded."""
    arch, _, patch = clip.rpartition("-")  # open_clip's ViT-B-32 is OpenAI's ViT-B/32
    clip_text = f"OpenAI CLIP {arch}/{patch} (open_clip {clip}, pretrained=openai)"
    dino = "facebook/dino-vits16 ([CLS] of the last layer)"
    if kind == BACKBONES_UNUSED:
        return {}
    names = {"clip_model": clip_model(kind, clip)}
    if kind == "random":
        return {**names, "clip": f"{clip_text} architecture, random init (seeded)",
                "dino": f"{dino} architecture, random init (seeded)"}
    if kind == "tiny":
        return {**names, "clip": "tiny CLIP config, random init (tests)", "dino": "tiny ViT config, random init (tests)"}
    return {**names, "clip": clip_text, "dino": dino}


def read_previous(run_dir: Path) -> dict:
    """The run.json an earlier run left here, or {} when there is none."""
    path = run_dir / RUN_JSON
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchError(f"unreadable run record ({exc.__class__.__name__}); move the run directory aside to "
                         f"start it again", path) from None
    if not isinstance(data, dict):
        raise BenchError("not a run record (expected a JSON object); move the run directory aside", path)
    check_shape(data, path)
    return data


# What a run.json must hold, field by field (what write() makes): a record that parses but lacks
# one would lose the random-init label or the changed-code check on a resume.
RECORD_FIELDS = {"spec": dict, "identity": dict, "benchmark": dict, "backbones": dict, "method_details": dict,
                 "method_code": dict, "created": str}
# Absent from records written before the harness kept them; when present, of their type.
OPTIONAL_FIELDS = ("method_code", "created")


def check_shape(data: dict, path: Path) -> None:
    """Refuse a run.json that parses but is not what :func:`write` makes, naming the first wrong field."""
    for name, kind in RECORD_FIELDS.items():
        if name in OPTIONAL_FIELDS and name not in data:
            continue
        if not isinstance(data.get(name), kind):
            found = "missing" if name not in data else f"a {type(data[name]).__name__}"
            raise BenchError(f"not a run record: '{name}' should be a JSON {_JSON_NAMES[kind]}, found {found}; move "
                             f"the run directory aside to start it again", path)
    if not isinstance(data.get("method_code", {}).get("sha256"), (str, type(None))):
        raise BenchError("not a run record: 'method_code.sha256' should be a string; move the run directory aside",
                         path)


_JSON_NAMES = {dict: "object", str: "string"}


def code_differs(previous: dict, method_code: dict) -> str | None:
    """What changed between the code that made a run directory's predictions and ``method_code``
    (one line), or None when they are the same or nothing was recorded."""
    from .methods import code_changes

    recorded = previous.get("method_code")
    if not recorded or not recorded.get("sha256") or recorded.get("sha256") == method_code.get("sha256"):
        return None
    return code_changes(recorded, method_code)


def check_same_code(previous: dict, method_code: dict, allow: bool, run_dir: Path) -> dict | None:
    """Refuse to add predictions to a run directory made by other method code; with ``allow``
    (``--resume-changed-code``) return the note that run.json keeps of it. Nothing to compare (a
    new directory, or one from before code was recorded) passes."""
    recorded = previous.get("method_code")
    what = code_differs(previous, method_code)
    if what is None:
        return None
    if not allow:
        raise BenchError(f"the method's code changed since predictions were made here ({recorded.get('package')}: "
                         f"{what}); resuming would mix predictions of two versions: give another --out, or pass "
                         f"--resume-changed-code to resume anyway (recorded in run.json)", run_dir)
    return {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "from": recorded.get("sha256"), "to": method_code.get("sha256"),
            "changes": what}


def write(run_dir: Path, spec, identity: dict, bench, backbones: str, *, previous: dict, provider: dict,
          method_code: dict, method_details: dict | None, resumed_with_changed_code: dict | None,
          threads: dict | None = None) -> dict:
    """Write run.json and return what was written."""
    spec_json = asdict(spec)
    spec_json["method_args"] = identity["method_args"]  # parsed, every default filled
    spec_json["method_args_given"] = dict(spec.method_args)  # as typed
    notes = list(previous.get("resumed_with_changed_code", []))
    if resumed_with_changed_code:
        notes.append(resumed_with_changed_code)
    record = {
        "spec": spec_json,
        "identity": identity,
        "benchmark": {"name": bench.name, "format": bench.format, "root": str(bench.root),
                      "fingerprint": identity["bench"]["fingerprint"],
                      **({"source": bench.source} if bench.source else {})},
        "dtype": "bfloat16" if spec.device.startswith("cuda") else "float32",
        "backbones": {"kind": backbones, **backbone_names(backbones, spec.clip_model)},
        "versions": versions(),
        "threads": threads,
        "git_commit": git_commit(),
        "created": previous.get("created", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
        "method_provider": provider,
        # The code of the predictions already here: kept from the first run unless a resume was
        # explicitly allowed to go on with other code (then both are in resumed_with_changed_code).
        "method_code": previous.get("method_code") if previous.get("method_code") and not resumed_with_changed_code
        else method_code,
        "method_details": method_details if method_details is not None else previous.get("method_details", {}),
    }
    if notes:
        record["resumed_with_changed_code"] = notes
    write_json_atomic(run_dir / RUN_JSON, record)
    return record
