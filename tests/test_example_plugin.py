"""The example plugin in examples/retrieval, as a researcher would use it: built and installed with
pip (into a temporary folder), run through the command line, and its own tests (the contract-test
kit) run with pytest."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, cli_env, run_cli

EXAMPLE = REPO / "examples" / "retrieval"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources it builds.
    source = tmp_path_factory.mktemp("source") / "retrieval"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(target), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return target


def test_the_installed_plugin_is_listed_and_runs_from_the_command_line(installed, tmp_path):
    listed = run_cli("methods", "retrieval", pythonpath=[installed])
    assert listed.returncode == 0 and "unifybench-retrieval 0.1.0" in listed.stdout and "threshold" in listed.stdout
    ran = run_cli("run", "--method", "retrieval", "--limit", "2", "--backbones", "tiny", "--images-per-prompt", "1",
                  "--out", str(tmp_path / "runs"), "--json", pythonpath=[installed])
    assert ran.returncode == 0, ran.stderr[-2000:]
    results = json.loads(ran.stdout)
    assert isinstance(results["tasks"]["rec"]["weighted_acc"], float)
    record = json.loads((tmp_path / "runs" / results["run"] / "run.json").read_text())
    assert record["method_provider"]["distribution"] == "unifybench-retrieval"
    assert record["method_code"]["package"] == "unifybench_retrieval"


def test_the_plugins_own_tests_pass_the_contract_kit(installed, tmp_path):
    tests = shutil.copytree(EXAMPLE / "tests", tmp_path / "tests")  # away from the sources: the installed copy is tested
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
                          capture_output=True, text=True, env=cli_env([installed]), cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    # skipped: no shared base model (nothing to fingerprint), no progress step inside personalize (it
    # trains nothing: no place to interrupt)
    assert "8 passed, 2 skipped" in done.stdout, done.stdout[-3000:]
