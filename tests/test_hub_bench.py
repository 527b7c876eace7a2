"""Benchmarks by their Hugging Face dataset names, read from a cache laid out as huggingface_hub lays
it out, under HF_HUB_OFFLINE=1 (nothing is downloaded)."""
from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import only_run_dir, run_cli
from unifybench.data import MINI_BENCH_PATH

REPO = "HankYang428/unictokens_data"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cache(home: Path, repo: str = REPO, commit: str = COMMIT, ref: str = "main") -> Path:
    """``$HF_HOME/hub/datasets--owner--name/{refs/<ref>, snapshots/<commit>/}``: an empty snapshot."""
    folder = home / "hub" / f"datasets--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / ref).write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    return snapshot


def _zip_mini(path: Path, prefix: str = "UniCTokens_Dataset/") -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for p in sorted(MINI_BENCH_PATH.rglob("*")):
            if p.is_file():
                zf.write(p, prefix + str(p.relative_to(MINI_BENCH_PATH)))


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def test_a_release_shipped_as_one_archive_is_unpacked_once_and_read(hf_home, tmp_path):
    snapshot = _cache(hf_home)
    _zip_mini(snapshot / "UniCTokens_Dataset.zip")
    (snapshot / "README.md").write_text("the dataset card")
    ran = run_cli("data", "check", REPO, "--json")
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["format"] == "unifybench" and summary["concepts"] == 6 and summary["items"]["rec"] == 36
    unpacked = hf_home / "hub" / "datasets--HankYang428--unictokens_data" / "unifybench-unpacked" / COMMIT
    assert summary["source"] == {"hub": REPO, "revision": COMMIT, "requested": "main",
                                 "path": str(unpacked / "UniCTokens_Dataset")}

    run = run_cli("run", "--method", "always-yes", "--bench", REPO, "--tasks", "rec", "--out", str(tmp_path / "runs"))
    assert run.returncode == 0, run.stderr
    run_dir = only_run_dir(tmp_path / "runs")
    assert run_dir.name.startswith("always-yes__unictokens_data__")
    source = json.loads((run_dir / "run.json").read_text())["benchmark"]["source"]
    assert source["hub"] == REPO and source["revision"] == COMMIT
    stamp = unpacked.stat().st_mtime_ns
    assert run_cli("data", "check", REPO).returncode == 0 and unpacked.stat().st_mtime_ns == stamp  # not again


def test_a_release_of_plain_files_and_a_named_revision(hf_home):
    snapshot = _cache(hf_home, commit="f" * 40, ref="v1")
    for p in MINI_BENCH_PATH.rglob("*"):
        if p.is_file():
            dst = snapshot / "data" / p.relative_to(MINI_BENCH_PATH)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(p.read_bytes())
    ran = run_cli("data", "check", f"{REPO}@v1", "--json")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["source"]["path"] == str(snapshot / "data")  # found one level down


def test_offline_and_not_cached_is_one_line_with_the_command_to_fetch_it(hf_home):
    ran = run_cli("run", "--method", "always-yes", "--bench", "someone/not-cached")
    assert ran.returncode == 2 and len(ran.stderr.strip().splitlines()) == 1
    assert "someone/not-cached" in ran.stderr and "hf download someone/not-cached --repo-type dataset" in ran.stderr


def test_a_local_folder_of_that_name_wins_and_bad_archives_are_refused(hf_home, tmp_path, monkeypatch):
    evil = _cache(hf_home, repo="someone/evil")
    with tarfile.open(evil / "data.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 1
        import io
        tf.addfile(info, io.BytesIO(b"x"))
    ran = run_cli("data", "check", "someone/evil")
    assert ran.returncode == 2 and "points outside" in ran.stderr and not (evil.parent / "outside.txt").exists()
    broken = _cache(hf_home, repo="someone/broken")
    (broken / "data.zip").write_bytes(b"PK not really")
    ran = run_cli("data", "check", "someone/broken")
    assert ran.returncode == 2 and "corrupt archive" in ran.stderr
    local = tmp_path / "someone" / "evil"  # a folder that exists is read as a folder, never fetched
    local.parent.mkdir(parents=True)
    import shutil
    shutil.copytree(MINI_BENCH_PATH, local)
    ran = run_cli("data", "check", "someone/evil", "--json", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "source" not in json.loads(ran.stdout)
