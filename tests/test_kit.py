"""The method kit: arguments declared once (and the run directory hashed over their parsed values),
the method's code in the run's identity, the registry, the lifecycle's one owner, and the shared
checkpoint rule."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import cli, make_plugin, only_run_dir
from unifybench.errors import BenchError
from unifybench.kit.args import Arg, Auto, Derived, parse_arguments, restates_default
from unifybench.methods import Method, providers, registered_methods, resolve_method

THRESHOLD = '''
from unifybench.errors import BenchError
from unifybench.kit.args import Arg
from unifybench.methods import Method

class Threshold(Method):
    name = "threshold"
    tasks = frozenset({"rec"})
    arguments = {"threshold": Arg(float, DEFAULT, "similarity above which the answer is yes", low=0, high=1),
                 "fail_on": Arg(str, None, "a concept whose questions raise (tests)")}

    def answer(self, concept, state, requests):
        if concept.name == self.args.fail_on:
            raise BenchError("stopped on purpose", where="concept " + concept.name)
        return ["Yes." if self.args.threshold < 0.875 else "No." for r in requests]
'''


def threshold_plugin(root: Path, default: str = "0.85", extra: str = "") -> Path:
    return make_plugin(root, "threshold-plugin", "threshold_method", THRESHOLD.replace("DEFAULT", default) + extra,
                       {"threshold": "threshold_method:Threshold"})


def run(plugin: Path, out: Path, *args: str):
    return cli("run", "--method", "threshold", "--tasks", "rec", "--concepts", "dog,cat", "--limit", "2",
               "--out", str(out), *args, pythonpath=[plugin])


# ----------------------------------------------------------------------------- arguments


def test_equal_values_and_the_default_share_one_run_directory_and_a_changed_default_makes_another(tmp_path):
    plugin = threshold_plugin(tmp_path / "plugin")
    out = tmp_path / "runs"
    for given in ([], ["--method-arg", "threshold=0.85"], ["--method-arg", "threshold=0.850"],
                  ["--method-arg", "threshold= 8.5e-1"]):
        ran = run(plugin, out, *given)
        assert ran.returncode == 0, ran.stderr
    run_dir = only_run_dir(out)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["identity"]["method_args"] == {"fail_on": None, "threshold": 0.85}
    assert record["spec"]["method_args"] == {"fail_on": None, "threshold": 0.85}

    changed = threshold_plugin(tmp_path / "plugin2", default="0.9")
    assert run(changed, out).returncode == 0
    assert len([p for p in out.iterdir() if p.is_dir()]) == 2  # the new default is another run


@pytest.mark.parametrize("value, message", [
    ("threshold=abc", "expected a number >= 0, <= 1, got 'abc'"),
    ("threshold=1.5", "expected a number >= 0, <= 1, got '1.5'"),
    ("threshold=nan", "expected a finite number"),
    ("threshold=inf", "expected a finite number"),
    ("treshold=0.5", "unknown argument(s) treshold; did you mean threshold? accepted: fail_on, threshold"),
])
def test_bad_values_are_one_line_naming_the_argument_before_anything_is_made(tmp_path, value, message):
    ran = run(threshold_plugin(tmp_path / "plugin"), tmp_path / "runs", "--method-arg", value)
    assert ran.returncode == 2 and message in ran.stderr and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
    assert not (tmp_path / "runs").exists()


def test_parsing_reads_each_type_and_fills_every_default():
    spec = {"n": Arg(int, 3, "count", low=1), "x": Arg(float, 0.5, "weight", above=0), "flag": Arg(bool, False, "on"),
            "word": Arg(str, "a", "choice", choices=("a", "b")), "where": Arg(Path, None, "a file"),
            "dtype": Arg(str, Auto("bfloat16 on CUDA"), "weights", choices=("bfloat16", "float32")),
            "twice": Arg(int, Derived(lambda a: 2 * a.n, "twice n"), "derived")}
    args = parse_arguments(spec, {"n": " 4 ", "flag": "YES", "where": "~/x", "dtype": "auto"})
    assert args.to_json() == {"dtype": None, "flag": True, "n": 4, "twice": 8, "where": str(Path("~/x").expanduser()),
                              "word": "a", "x": 0.5}
    assert args.given == {"n", "flag", "where", "dtype"}
    assert parse_arguments(spec, {"twice": "5"}).twice == 5
    for bad, text in (({"n": "0"}, "expected an integer >= 1"), ({"n": "1.5"}, "expected an integer"),
                      ({"x": "0"}, "expected a number > 0"), ({"flag": "maybe"}, "expected true or false"),
                      ({"word": "c"}, "expected one of a, b"), ({"where": ""}, "expected a path")):
        with pytest.raises(BenchError, match=text):
            parse_arguments(spec, bad)
    with pytest.raises(AttributeError, match="no argument 'm'"):
        _ = args.m
    assert math.isclose(parse_arguments(spec, {"x": "1e-3"}).x, 0.001)


def test_no_built_in_argument_help_restates_its_default_and_every_default_is_declared():
    for name in registered_methods():
        cls, _ = resolve_method(name)
        for key, arg in cls.arguments.items():
            assert isinstance(arg, Arg), f"{name}.{key} is not declared with Arg"
            assert not restates_default(arg.help), (name, key, arg.help)
        cls.parse_arguments({})  # every default parses together (the Derived ones too)


def test_methods_and_run_help_show_types_defaults_and_ranges(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    listed = cli("methods", "textual-inversion")
    assert listed.returncode == 0
    line = next(ln for ln in listed.stdout.splitlines() if ln.strip().startswith("flip_p"))
    assert "float" in line and "0.5" in line and ">= 0, <= 1" in line
    helped = cli("run", "--method", "dreambooth-lora", "--help")
    assert helped.returncode == 0 and "dreambooth-lora: --method-arg KEY=VALUE" in helped.stdout
    assert any(ln.strip().startswith("train_steps") and "500" in ln for ln in helped.stdout.splitlines())
    assert cli("methods", "nonesuch").returncode == 2


# ----------------------------------------------------------------------------- the method's code


def test_a_resume_into_predictions_of_other_code_is_refused_in_one_line_unless_asked(tmp_path):
    plugin = threshold_plugin(tmp_path / "plugin")
    out = tmp_path / "runs"
    stopped = run(plugin, out, "--method-arg", "fail_on=cat")  # dog predicted, then cat fails
    assert stopped.returncode != 0
    run_dir = only_run_dir(out)
    recorded = json.loads((run_dir / "run.json").read_text())
    assert recorded["method_code"]["files"] and recorded["method_provider"]["distribution"] == "threshold-plugin"

    module = plugin / "threshold_method.py"
    module.write_text(module.read_text().replace('raise BenchError("stopped on purpose", where="concept " + concept.name)',
                                                 "pass"))
    refused = run(plugin, out, "--method-arg", "fail_on=cat")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "method's code changed since predictions were made here" in refused.stderr
    assert "changed threshold_method.py" in refused.stderr and "--resume-changed-code" in refused.stderr

    resumed = run(plugin, out, "--method-arg", "fail_on=cat", "--resume-changed-code")
    assert resumed.returncode == 0, resumed.stderr
    record = json.loads((run_dir / "run.json").read_text())
    assert record["resumed_with_changed_code"][0]["changes"] == "changed threshold_method.py"
    assert record["method_code"]["sha256"] != recorded["method_code"]["sha256"]

    module.write_text(module.read_text() + "\n# another edit\n")  # every prediction exists: scoring only
    rescored = run(plugin, out, "--method-arg", "fail_on=cat")
    assert rescored.returncode == 0
    # The numbers shown are the old code's: one line says so, and results.json records it.
    said = [ln for ln in rescored.stdout.splitlines() if "method's code changed since these predictions" in ln]
    assert len(said) == 1 and "changed threshold_method.py" in said[0], rescored.stdout
    results = json.loads((run_dir / "results.json").read_text())
    assert results["method_code_changed"]["changes"] == "changed threshold_method.py"
    assert results["resumed_with_changed_code"][0]["changes"] == "changed threshold_method.py"
    # ... and the leaderboard and the gallery mark the run.
    board = cli("leaderboard", str(out))
    assert "[resumed with changed code]" in board.stdout and "[code changed since]" in board.stdout, board.stdout
    page = tmp_path / "gallery.html"
    assert cli("gallery", str(run_dir), "--out", str(page)).returncode == 0
    html = page.read_text()
    assert "resumed with changed method code (changed threshold_method.py)" in html
    assert "code changed since these samples were made" in html


def test_evaluate_runs_a_class_typed_into_python_stdin(tmp_path):
    import subprocess
    import sys

    from conftest import REPO, cli_env

    script = ("import unifybench\nfrom unifybench.builtin_methods import AlwaysYes\n"
              "class Mine(AlwaysYes):\n    name = 'mine'\n"
              f"unifybench.evaluate(Mine, tasks=['rec'], concepts=['cat'], limit=1, out={str(tmp_path)!r})\n")
    ran = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, env=cli_env(), cwd=REPO,
                         timeout=300)
    assert ran.returncode == 0, ran.stderr
    recorded = json.loads((only_run_dir(tmp_path) / "run.json").read_text())["method_code"]
    assert recorded == {"package": "__main__", "sha256": None, "files": {}}


def test_the_method_code_hash_covers_the_package_data_files(tmp_path):
    import importlib
    import sys

    from unifybench.methods import code_changes, method_code

    package = tmp_path / "vocab_plugin"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "method.py").write_text("from unifybench.builtin_methods import AlwaysYes\n"
                                       "class Vocab(AlwaysYes):\n    name = 'vocab'\n")
    (package / "words.txt").write_text("sks\n")
    sys.path.insert(0, str(tmp_path))
    try:
        cls = importlib.import_module("vocab_plugin.method").Vocab
        before = method_code(cls)
        (package / "words.txt").write_text("bo\n")
        after = method_code(cls)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("vocab_plugin")]:
            del sys.modules[name]
    assert "words.txt" in before["files"] and before["sha256"] != after["sha256"]
    assert code_changes(before, after) == "changed words.txt"


# ----------------------------------------------------------------------------- the registry


def test_a_second_plugin_under_one_name_is_refused_naming_both_packages(tmp_path):
    source = "from unifybench.builtin_methods import AlwaysYes\nclass Twin(AlwaysYes):\n    name = 'twin'\n"
    alpha = make_plugin(tmp_path / "a", "alpha-plugin", "alpha_twin", source, {"twin": "alpha_twin:Twin"})
    beta = make_plugin(tmp_path / "b", "beta-plugin", "beta_twin", source, {"twin": "beta_twin:Twin",
                                                                            "always-yes": "beta_twin:Twin"})
    for method in ("twin", "always-yes"):
        ran = cli("run", "--method", method, "--tasks", "rec", "--out", str(tmp_path / "runs"), pythonpath=[alpha, beta])
        assert ran.returncode == 2 and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
        assert "registered twice" in ran.stderr and "beta-plugin" in ran.stderr
    assert "alpha-plugin" in cli("run", "--method", "twin", "--out", str(tmp_path / "r"),
                                 pythonpath=[alpha, beta]).stderr
    assert not (tmp_path / "runs").exists()
    alone = cli("run", "--method", "twin", "--tasks", "rec", "--limit", "1", "--out", str(tmp_path / "ok"),
                pythonpath=[alpha])
    assert alone.returncode == 0, alone.stderr
    record = json.loads((only_run_dir(tmp_path / "ok") / "run.json").read_text())
    assert record["method_provider"] == {"target": "alpha_twin:Twin", "distribution": "alpha-plugin", "version": "0.1"}


def test_the_built_in_adapters_are_registered_by_this_package_alone():
    found = providers()
    for name in ("unictokens", "yollava", "textual-inversion", "real-images"):
        assert [p.distribution for p in found[name]] == ["unifybench"], found[name]


# ----------------------------------------------------------------------------- the lifecycle


class _Half(Method):
    name = "half"
    tasks = frozenset({"rec"})

    def personalize(self, concept, state_dir):
        return {}


class _PlainHelp(Method):
    name = "plain-help"
    tasks = frozenset({"rec"})
    arguments = {"delay": "seconds to sleep per batch"}  # a help string where an Arg belongs


def test_a_lifecycle_mismatch_is_refused_not_run_silently(tmp_path):
    import unifybench

    with pytest.raises(BenchError, match="overrides personalize but not load_state"):
        unifybench.evaluate(_Half, out=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_an_argument_declared_without_arg_is_refused_before_anything_is_made(tmp_path):
    import unifybench

    with pytest.raises(BenchError, match=r"declares argument\(s\) delay without Arg"):
        unifybench.evaluate(_PlainHelp, out=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


class _Counting(Method):
    """Personalizes, and counts who calls which step."""
    name = "counting"
    tasks = frozenset({"rec"})
    calls: list = []

    def personalize(self, concept, state_dir):
        self.calls.append(("personalize", concept.name))
        (Path(state_dir) / "learned.json").write_text(json.dumps({"concept": concept.name}))
        return {"concept": concept.name}

    def load_state(self, concept, state_dir):
        self.calls.append(("load_state", concept.name))
        return json.loads((Path(state_dir) / "learned.json").read_text())

    def answer(self, concept, state, requests):
        assert state == {"concept": concept.name}
        return ["Yes." for _ in requests]


def test_the_runner_alone_personalizes_once_and_reloads_a_finished_concept(tmp_path):
    import unifybench

    _Counting.calls = []
    first = unifybench.evaluate(_Counting, tasks=["rec"], concepts=["dog", "cat"], limit=1, out=tmp_path / "runs")
    assert _Counting.calls == [("personalize", "dog"), ("personalize", "cat")]
    run_dir = Path(first["run_dir"])
    assert sorted(p.parent.name for p in run_dir.glob("state/*/.done")) == ["cat", "dog"]
    (run_dir / "predictions.jsonl").unlink()
    unifybench.evaluate(_Counting, tasks=["rec"], concepts=["dog", "cat"], limit=1, out=tmp_path / "runs")
    assert _Counting.calls[2:] == [("load_state", "dog"), ("load_state", "cat")]


def test_predicting_outside_activate_or_activating_twice_raises():
    from unifybench.data import load_benchmark
    from unifybench.methods import AnswerRequest, ConceptLayers

    class Layered(ConceptLayers, Method):
        name = "layered"
        tasks = frozenset({"rec"})

        def answer(self, concept, state, requests):
            self.require_active(concept)
            return ["Yes." for _ in requests]

    bench = load_benchmark("mini")
    dog, cat = bench.concept("dog"), bench.concept("cat")
    method = Layered()
    request = [AnswerRequest("dog", "rec", 0, "Is <dog> here?", None)]
    with pytest.raises(RuntimeError, match="outside activate"):
        method.answer(dog, None, request)
    with method.activate(dog, None):
        assert method.answer(dog, None, request) == ["Yes."]
        with pytest.raises(RuntimeError, match="still active"):
            with method.activate(cat, None):
                pass


def test_evaluate_takes_a_method_class_and_records_where_it_comes_from(tmp_path):
    import unifybench

    class Shy(Method):
        name = "shy"
        tasks = frozenset({"rec"})

        def answer(self, concept, state, requests):
            return ["No." for _ in requests]

    results = unifybench.evaluate(Shy, tasks=["rec"], concepts=["dog"], limit=2, out=tmp_path / "runs")
    assert results["tasks"]["rec"]["neg_acc"] == 1.0
    record = json.loads((Path(results["run_dir"]) / "run.json").read_text())
    assert record["method_provider"]["target"].endswith(":test_evaluate_takes_a_method_class_and_records_where_it_comes_from.<locals>.Shy")
    assert record["method_code"]["files"] == {"test_kit.py": record["method_code"]["files"]["test_kit.py"]}


# ----------------------------------------------------------------------------- the checkpoint rule


def test_files_trained_elsewhere_are_found_per_concept_and_never_lent_to_another(tmp_path):
    from unifybench.kit.checkpoints import concept_folder, has_file
    from unifybench.records import Concept

    dog = Concept(name="dog", token="<dog>", class_noun="dog")
    single = tmp_path / "single"
    (single / "stage3").mkdir(parents=True)
    (single / "w.bin").write_bytes(b"one concept's")
    with pytest.raises(BenchError, match="also the subfolder"):  # stage3/ is not this layout's
        concept_folder(single, dog, has_file("w.bin"), "w.bin")
    assert concept_folder(single, dog, has_file("w.bin"), "w.bin", layout_subfolders=("stage3",)) == single

    several = tmp_path / "several"
    (several / "cat").mkdir(parents=True)
    (several / "cat" / "w.bin").write_bytes(b"cat's")
    (several / "w.bin").write_bytes(b"a stray file")
    with pytest.raises(BenchError, match="no w.bin for concept 'dog'"):
        concept_folder(several, dog, has_file("w.bin"), "w.bin")
    (several / "<dog>").mkdir()
    (several / "<dog>" / "w.bin").write_bytes(b"dog's")
    assert concept_folder(several, dog, has_file("w.bin"), "w.bin") == several / "<dog>"


@pytest.mark.parametrize("method, args, message", [
    ("yollava", [], "LLaVA checkpoint 'llava-hf/llava-1.5-13b-hf' is not in the local Hugging Face cache and "
                    "HF_HUB_OFFLINE is set"),
    ("sd-prompt", ["--method-arg", "model=/nowhere/sd"], "/nowhere/sd [--method-arg model]: Stable Diffusion "
                                                         "pipeline folder not found"),
    ("unictokens", [], "showo model 'showlab/show-o-512x512' is not in the local Hugging Face cache"),
    ("yochameleon", [], "Chameleon checkpoint 'leloy/Anole-7b-v0.1-hf' is not in the local Hugging Face cache"),
])
def test_a_model_that_cannot_be_loaded_is_refused_in_seconds_before_the_run_directory(tmp_path, method, args,
                                                                                     message):
    ran = cli("run", "--method", method, *args, "--out", str(tmp_path / "runs"))
    assert ran.returncode == 2 and len(ran.stderr.strip().splitlines()) == 1 and message in ran.stderr, ran.stderr
    assert not (tmp_path / "runs").exists()


def test_weights_load_strictly_or_name_what_differs_in_one_line(tmp_path, monkeypatch):
    import torch

    from unifybench.kit.weights import hub_snapshot, load_strict, read_state_dict

    module = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    folder = tmp_path / "weights"
    folder.mkdir()
    from safetensors.torch import save_file

    state = {k: torch.full_like(v, 0.5) for k, v in module.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    load_strict(module, read_state_dict(folder, "--method-arg x"), folder, "--method-arg x")
    assert all(bool((v == 0.5).all()) for v in module.state_dict().values())
    state["1.weight"] = torch.zeros(2, 3)
    state["2.bias"] = state.pop("1.bias")
    with pytest.raises(BenchError) as err:
        load_strict(module, state, folder, "--method-arg x", what="decoder weights")
    line = err.value.one_line()
    assert line.startswith(f"{folder} [--method-arg x]: decoder weights do not fit: 1 missing (e.g. 1.bias); "
                           "1 unexpected (e.g. 2.bias); 1 of another shape (e.g. 1.weight: (2, 3) for (1, 3))"), line
    with pytest.raises(BenchError) as err:
        read_state_dict(tmp_path, "--method-arg x")
    assert "no weights" in err.value.one_line()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BenchError) as err:
        hub_snapshot("nobody/nothing-here", "model", local_only=True, hint="pass model=tiny")
    line = err.value.one_line()
    assert "cannot load 'nobody/nothing-here'" in line and line.endswith("pass model=tiny") and "--method-arg model" in line


def test_every_model_that_cannot_be_loaded_is_named_in_the_one_line(tmp_path):
    """Show-o needs three checkpoints and the scorer its own: offline, one line names all of them
    (not one per attempt)."""
    ran = cli("run", "--method", "unictokens", "--out", str(tmp_path / "runs"))
    line = ran.stderr.strip()
    assert ran.returncode == 2 and len(line.splitlines()) == 1, ran.stderr
    assert "3 models cannot be loaded" in line
    for where in ("--method-arg model", "--method-arg vq_model", "--method-arg tokenizer"):
        assert where in line
    assert line.count("hf download") == 3 and not (tmp_path / "runs").exists()
    assert "[backbones]: cannot load CLIP" in line  # the scorer's checkpoints, in the same line
    assert "cannot load DINO" in line and line.count("run once with network access") == 1
