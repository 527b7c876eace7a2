"""`torchrun --nproc-per-node 2 -m unifybench run ...` on the CPU (gloo): the same results as one
process, a killed launch resumed by the same command, and a failing rank stopping the launch with
one line naming it."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, cli_env, kill_once, make_plugin, only_run_dir

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
UNICTOKENS = ["--method", "unictokens", "--method-arg", "model=tiny", "--method-arg", "epochs=1",
              "--method-arg", "transition_images=1", "--method-arg", "max_new_tokens=6", "--limit", "2",
              "--tasks", "rec,vqa,gen", "--images-per-prompt", "1", "--backbones", "tiny",
              "--concepts", "dog,cat,clock"]


def _env(pythonpath=None, threads: str | None = "1") -> dict:
    env = cli_env(pythonpath)
    # torchrun gives each worker one OpenMP thread; CPU float reductions depend on the thread
    # count, so the single-process reference gets the same.
    if threads:
        env["OMP_NUM_THREADS"] = threads
    else:  # the run's own choice (free cores), not the one `make test` sets for its workers
        env.pop("OMP_NUM_THREADS", None)
    return env


def _torchrun(out: Path, *args: str, pythonpath=None) -> subprocess.CompletedProcess:
    return subprocess.run([*TORCHRUN, "-m", "unifybench", "run", *args, "--out", str(out)], capture_output=True,
                          text=True, env=_env(pythonpath), cwd=REPO, timeout=600)


def _single(out: Path, *args: str, threads="1") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unifybench", "run", *args, "--out", str(out)], capture_output=True,
                          text=True, env=_env(threads=threads), cwd=REPO, timeout=600)


def _results(out: Path) -> dict:
    return json.loads((only_run_dir(out) / "results.json").read_text())


def _predictions(run_dir: Path) -> dict[str, object]:
    """Per key, the reply or the bytes of the images."""
    found = {}
    for line in (run_dir / "predictions.jsonl").read_text().splitlines():
        record = json.loads(line)
        found[record["key"]] = record.get("answer") or [(run_dir / p).read_bytes() for p in record["images"]]
    return found


@pytest.fixture(scope="module")
def unictokens_pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("torchrun")
    ran = _torchrun(tmp / "two", *UNICTOKENS)
    assert ran.returncode == 0, ran.stderr[-3000:]
    single = _single(tmp / "one", *UNICTOKENS)
    assert single.returncode == 0, single.stderr[-3000:]
    return tmp


def test_two_ranks_give_the_results_of_one_process(unictokens_pair):
    two, one = only_run_dir(unictokens_pair / "two"), only_run_dir(unictokens_pair / "one")
    assert two.name == one.name  # the same run directory name: the launch is not part of the run
    assert _results(unictokens_pair / "two") == _results(unictokens_pair / "one")
    assert _predictions(two) == _predictions(one)
    assert not list(two.glob("predictions.rank*.jsonl"))  # merged into predictions.jsonl
    (attempt,) = (two / "ranks").iterdir()
    done = [json.loads((attempt / f"done.{r}.json").read_text())["concepts"] for r in (0, 1)]
    assert sorted(done[0] + done[1]) == ["cat", "clock", "dog"] and done[0] and done[1]
    assert json.loads((two / "run.json").read_text())["method_details"]["backend_name"] == "showo"


def test_predictions_do_not_depend_on_the_thread_count_only_float_scores_might(unictokens_pair, tmp_path):
    default_threads = _single(tmp_path / "default", *UNICTOKENS, threads=None)
    assert default_threads.returncode == 0, default_threads.stderr[-2000:]
    assert _predictions(only_run_dir(tmp_path / "default")) == _predictions(only_run_dir(unictokens_pair / "two"))


def test_real_images_on_two_ranks(tmp_path):
    args = ["--method", "real-images", "--tasks", "gen", "--limit", "2", "--images-per-prompt", "2",
            "--backbones", "tiny"]
    assert _torchrun(tmp_path / "two", *args).returncode == 0
    assert _single(tmp_path / "one", *args).returncode == 0
    assert _results(tmp_path / "two") == _results(tmp_path / "one")


def test_a_killed_launch_resumes_from_every_ranks_files(unictokens_pair, tmp_path):
    out = tmp_path / "killed"
    kill_once([*TORCHRUN, "-m", "unifybench", "run", *UNICTOKENS, "--out", str(out)], _env(), out, "*/state/*/.done")
    run_dir = only_run_dir(out)
    finished = {p.parent.name: {f.name: f.stat().st_mtime_ns for f in p.parent.rglob("*.pt")}
                for p in run_dir.glob("state/*/.done")}
    assert finished and not (run_dir / "results.json").exists()

    again = _torchrun(out, *UNICTOKENS)
    assert again.returncode == 0, again.stderr[-3000:]
    for concept, stamps in finished.items():  # a finished personalization is loaded, not redone
        assert {f.name: f.stat().st_mtime_ns for f in (run_dir / "state" / concept).rglob("*.pt")} == stamps
    keys = [json.loads(line)["key"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(keys) == len(set(keys))  # no duplicates
    assert _predictions(run_dir) == _predictions(only_run_dir(unictokens_pair / "two"))
    assert _results(out)["tasks"] == _results(unictokens_pair / "two")["tasks"]


FAILING = '''
from unifybench.errors import BenchError
from unifybench.methods import Method

class FailsOnCat(Method):
    name = "fails-on-cat"
    tasks = frozenset({"rec"})

    def answer(self, concept, state, requests):
        if concept.name == "cat":
            raise BenchError("this photo cannot be answered", where="concept cat")
        return ["Yes." for _ in requests]
'''


def test_a_failing_rank_stops_the_launch_with_one_line_naming_it(tmp_path):
    plugin = make_plugin(tmp_path / "plugin", "fails_on_cat", "fails_on_cat", FAILING,
                         {"fails-on-cat": "fails_on_cat:FailsOnCat"})
    ran = _torchrun(tmp_path / "runs", "--method", "fails-on-cat", "--tasks", "rec", "--concepts", "dog,cat,clock",
                    pythonpath=[plugin])
    assert ran.returncode != 0
    ours = [line for line in ran.stderr.splitlines() if line.startswith("unifybench: error:")]
    assert ours, ran.stderr[-3000:]
    assert len(ours) == 1 and "this photo cannot be answered" in ours[0] and "[rank " in ours[0], ran.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / "runs")
    failed = list(run_dir.glob("ranks/*/failed.*.txt"))
    assert len(failed) == 1 and "this photo cannot be answered" in failed[0].read_text()
    assert not (run_dir / "results.json").exists()


def test_bad_input_found_before_the_rendezvous_is_printed_once(tmp_path):
    ran = _torchrun(tmp_path / "runs", "--method", "real-images", "--bench", str(tmp_path / "missing"))
    assert ran.returncode != 0
    ours = [line for line in ran.stderr.splitlines() if line.startswith("unifybench: error:")]
    assert ours == [f"unifybench: error: {tmp_path / 'missing'}: no such benchmark folder"], ran.stderr[-3000:]


def test_a_device_that_would_put_every_rank_on_one_gpu_is_refused_once(tmp_path):
    ran = _torchrun(tmp_path / "runs", "--method", "always-yes", "--device", "cuda:0")
    ours = [line for line in ran.stderr.splitlines() if line.startswith("unifybench: error:")]
    assert ran.returncode != 0 and len(ours) == 1 and "every rank on one GPU" in ours[0], ran.stderr[-3000:]


def test_a_plain_run_is_refused_while_a_rank_still_holds_the_directory(tmp_path):
    import fcntl

    from conftest import run_cli

    args = ["run", "--method", "always-yes", "--tasks", "rec", "--limit", "2", "--out", str(tmp_path / "runs")]
    assert run_cli(*args).returncode == 0
    run_dir = only_run_dir(tmp_path / "runs")
    with open(run_dir / ".lock.rank1", "a+") as lock:  # as a surviving rank of a launch would hold it
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        refused = run_cli(*args)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert ".lock.rank1" in refused.stderr and "in use by" in refused.stderr
    assert run_cli(*args).returncode == 0  # released: it runs


# cat (rank 1) fails, or its process dies, once clock (rank 0) has begun; clock lasts long enough
# for the failure to be on disk before rank 0 looks at its next concept.
SLOW_OR_FAILING = '''
import os, signal, time
from pathlib import Path
from unifybench.errors import BenchError
from unifybench.methods import Method

MARKER = Path(os.environ["CLOCK_STARTED"])

class SlowOrFailing(Method):
    name = "slow-or-failing"
    tasks = frozenset({"rec"})

    def answer(self, concept, state, requests):
        if concept.name == "cat":
            deadline = time.time() + 120
            while not MARKER.exists() and time.time() < deadline:
                time.sleep(0.05)
            if os.environ.get("CAT_DIES"):
                os.kill(os.getpid(), signal.SIGKILL)  # no word: as the out-of-memory killer would
            raise BenchError("this photo cannot be answered", where="concept cat")
        if concept.name == "clock":
            MARKER.touch()
            time.sleep(3)
        return ["Yes." for _ in requests]
'''


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _two_nodes(tmp_path: Path, **env_extra: str) -> tuple[list[str], Path]:
    """Two torchrun agents, as two nodes would be (node ranks and the master's address: the static
    rendezvous), one rank each; our error lines from both, and the run directory."""
    plugin = make_plugin(tmp_path / "plugin", "slow_or_failing", "slow_or_failing", SLOW_OR_FAILING,
                         {"slow-or-failing": "slow_or_failing:SlowOrFailing"})
    port = _free_port()

    def node(node_rank: int) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                "--node-rank", str(node_rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
                "-m", "unifybench", "run", "--method", "slow-or-failing", "--tasks", "rec",
                "--concepts", "dog,cat,clock,backpack", "--out", str(tmp_path / "runs")]

    env = {**_env([plugin]), "CLOCK_STARTED": str(tmp_path / "clock-started"), **env_extra}
    nodes = [subprocess.Popen(node(r), env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for r in range(2)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert all(node.returncode != 0 for node in nodes)
    ours = [line for _, err in outputs for line in err.splitlines() if line.startswith("unifybench: error:")]
    assert distributed_shares() == {0: ["backpack", "clock"], 1: ["cat", "dog"]}
    return ours, only_run_dir(tmp_path / "runs")


def _concepts_of_rank_0(run_dir: Path) -> set[str]:
    return {json.loads(line)["concept"] for line in (run_dir / "predictions.rank0.jsonl").read_text().splitlines()}


def test_two_nodes_a_failure_on_one_stops_the_other_before_its_next_concept(tmp_path):
    """torchrun does not stop the workers of another node: they read the failure from the run directory."""
    ours, run_dir = _two_nodes(tmp_path)
    assert ours == ["unifybench: error: [rank 1/2]: [concept cat]: this photo cannot be answered"]
    assert _concepts_of_rank_0(run_dir) == {"clock"}  # its first concept finished and is kept; backpack never began
    assert [p.name for p in run_dir.glob("ranks/*/failed.*.txt")] == ["failed.1.txt"]


def test_two_nodes_a_rank_killed_without_a_word_is_named_by_rank_0(tmp_path):
    ours, run_dir = _two_nodes(tmp_path, CAT_DIES="1", UNIFYBENCH_RANK_STALE_S="2")
    assert len(ours) == 1 and ours[0].startswith("unifybench: error: [rank 0/2]: rank 1 stopped without a word")
    assert _concepts_of_rank_0(run_dir) == {"clock"}  # it noticed before backpack
    assert not list(run_dir.glob("ranks/*/failed.1.txt"))


def distributed_shares() -> dict[int, list[str]]:
    """The split the tests above rely on: four concepts of equal work on two ranks."""
    from unifybench.distributed import shard

    return shard({"dog": 14, "cat": 14, "clock": 14, "backpack": 14}, 2)


def test_only_rank_0_judges_and_a_shared_cache_keeps_every_finished_judgment(tmp_path):
    """The path for thousands of judgments: an OpenAI-compatible server (vLLM's role, played by a
    local one), many requests in flight, one cache file shared across runs, under torchrun."""
    from _judge_server import JudgeServer

    cache = tmp_path / "judge-cache.sqlite"

    def launch(server: JudgeServer, out: str) -> subprocess.CompletedProcess:
        return _torchrun(tmp_path / out, "--method", "random-answer", "--tasks", "vqa,text_only",
                         "--concepts", "dog,cat,clock", "--judge", "openai:test-judge",
                         "--judge-base-url", server.base_url, "--judge-concurrency", "16", "--judge-cache", str(cache),
                         "--judge-retries", "1", "--judge-backoff", "0.01", "--judge-timeout", "5")

    def cached() -> int:
        return sqlite3.connect(cache).execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    with JudgeServer("fail-on") as server:
        server.fail_marker = "favourite"  # some of dog's questions fail for good, the others are answered
        failed = launch(server, "runs")
        assert failed.returncode != 0
        ours = [line for line in failed.stderr.splitlines() if line.startswith("unifybench: error:")]
        assert len(ours) == 1 and "HTTP 500" in ours[0] and "rerun resumes" in ours[0], failed.stderr[-3000:]
        run_dir = only_run_dir(tmp_path / "runs")
        predictions = (run_dir / "predictions.jsonl").read_text()  # merged before scoring began
        assert len(predictions.splitlines()) == 18
        kept = cached()
        assert kept > 0

        server.mode, server.delay_s = "normal", 0.05
        asked_before = len(server.requests)
        ok = launch(server, "runs")
        assert ok.returncode == 0, ok.stderr[-3000:]
        assert (run_dir / "predictions.jsonl").read_text() == predictions
        results = _results(tmp_path / "runs")
        assert results["judge"]["cache_hits"] == kept
        asked = server.requests[asked_before:]
        assert len(asked) == results["judge"]["judgments"] - kept  # only the missing ones, by one rank
        assert len({server.digest(r["body"]) for r in asked}) == len(asked)
        assert 1 < server.max_inflight <= 16

        asked_before = len(server.requests)
        again = launch(server, "elsewhere")  # another run directory, the same cache: no call at all
        assert again.returncode == 0, again.stderr[-3000:]
        assert len(server.requests) == asked_before
        assert _results(tmp_path / "elsewhere")["tasks"] == results["tasks"]


def test_ranks_launched_with_different_settings_are_told_at_once(tmp_path):
    """Two nodes whose commands differ (here --seed) would name two run directories and each wait
    for the other's concepts: the rendezvous says so in one line instead, before anything is made."""
    port = _free_port()

    def node(node_rank: int) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                "--node-rank", str(node_rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
                "-m", "unifybench", "run", "--method", "always-yes", "--tasks", "rec", "--seed", str(node_rank),
                "--out", str(tmp_path / "runs")]

    started = time.monotonic()
    nodes = [subprocess.Popen(node(r), env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for r in range(2)]
    outputs = [n.communicate(timeout=300) for n in nodes]
    assert all(n.returncode != 0 for n in nodes)
    ours = [line for _, err in outputs for line in err.splitlines() if line.startswith("unifybench: error:")]
    assert len(ours) == 1, outputs
    assert "launched with different settings" in ours[0] and "rank 0: always-yes__mini__" in ours[0]
    assert "rank 1: always-yes__mini__" in ours[0]
    assert time.monotonic() - started < 120  # not the 600 s a rank waits for a silent one
    assert not list((tmp_path / "runs").glob("*/predictions*"))  # no concept was begun
