"""Shared test helpers: the real command line in a subprocess (in-process: unifybench.testing.cli), and
plugin packages made on the fly."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path


from unifybench.testing import cli, only_run_dir, read_results  # noqa: F401 - the tests' helpers

# Tests never download: tiny random-init models are built from configs in code.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


def cli_env(extra_pythonpath: list[Path] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    paths = [str(p) for p in (extra_pythonpath or [])]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["COLUMNS"] = "200"
    return env


def run_cli(*args: str, pythonpath: list[Path] | None = None, cwd: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m unifybench ARGS` as a user would, capturing its output."""
    return subprocess.run([sys.executable, "-m", "unifybench", *args], capture_output=True, text=True,
                          env=cli_env(pythonpath), cwd=cwd or REPO, timeout=timeout)


def make_plugin(root: Path, dist_name: str, module_name: str, source: str, methods: dict[str, str]) -> Path:
    """An installed-looking package: a module plus a dist-info that declares unifybench.methods entry points.

    importlib.metadata finds the dist-info on sys.path, exactly as it would after `pip install`.
    Returns the folder to put on PYTHONPATH.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module_name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = root / f"{dist_name}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 0.1\n", encoding="utf-8")
    lines = ["[unifybench.methods]"] + [f"{name} = {target}" for name, target in methods.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def kill_once(command: list[str], env: dict, folder: Path, pattern: str, timeout: float = 300) -> None:
    """Start ``command`` (in a session of its own, so its children die with it) and SIGKILL the
    whole group as soon as ``folder.glob(pattern)`` finds something; it must still be running then."""
    proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            if any(folder.glob(pattern)):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the command finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
