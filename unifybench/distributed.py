"""Runs across processes, GPUs and nodes under ``torchrun`` (or ``accelerate launch``, ``srun
torchrun``): each rank personalizes and predicts its share of the concepts; rank 0 scores.

Concepts are independent (a concept's predictions depend on it alone), so the work splits by
concept. What a rank writes into the shared run directory:

```
predictions.rank<R>.jsonl     its finished requests (merged into predictions.jsonl by rank 0 at the end)
images/<concept>/..., state/<concept>/   for its concepts only
.lock.rank<R> (rank 0: .lock), log.rank<R>.txt (rank 0: log.txt)
ranks/<attempt>/alive.<R>     touched every few seconds while it works (its heartbeat)
ranks/<attempt>/done.<R>.json its concepts, once they are all predicted
ranks/<attempt>/failed.<R>.txt   the one line that stopped it
```

``torch.distributed`` (always gloo: a few small objects, no GPU memory, no NCCL watchdog) is used
once, at the start: every rank reports whether it is ready (its checks passed, its lock taken) and
rank 0 hands out the attempt's id. Bad input found by then stops every rank there, and each distinct
line is printed once, by the lowest rank that met it. Later, waiting is a check on the files above,
so no collective can time out while a rank trains for hours. A rank that fails records its line
and prints it; torchrun ends the other workers of its node, and a rank on another node reads the
failure before its next concept (rank 0 also while it waits). A rank that dies without a word
(killed, out of memory) stops touching its heartbeat; after ``UNIFYBENCH_RANK_STALE_S`` seconds
(default 600) of silence rank 0 says so.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from .errors import BenchError, error_line


def _env_seconds(name: str, default: float) -> float:
    value = os.environ.get(name)
    try:
        return float(value) if value else default
    except ValueError:
        raise BenchError(f"expected a number of seconds, got {value!r}", where=f"environment {name}") from None


class OtherRankFailed(BenchError):
    """This rank stops because another one failed; that rank has printed the reason."""

    def __init__(self, message: str, where: str):
        super().__init__(message, where=where)
        self.quiet = True


@dataclass(frozen=True)
class Rank:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str) -> str:
        """``cuda`` becomes this rank's ``cuda:LOCAL_RANK``; anything else is kept."""
        if self.active and requested == "cuda":
            return f"cuda:{self.local_rank}"
        return requested

    def label(self) -> str:
        return f"rank {self.rank}/{self.world}"

    def lock_name(self) -> str:
        return ".lock" if self.is_main else f".lock.rank{self.rank}"

    def log_name(self) -> str:
        return "log.txt" if self.is_main else f"log.rank{self.rank}.txt"


def from_env() -> Rank:
    """The rank torchrun / accelerate / a Slurm launcher of torchrun set (RANK, WORLD_SIZE, LOCAL_RANK)."""
    def read(name: str, default: int) -> int:
        value = os.environ.get(name)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise BenchError(f"expected an integer, got {value!r}", where=f"environment {name}") from None

    world = read("WORLD_SIZE", 1)
    rank = read("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise BenchError(f"RANK {rank} does not fit WORLD_SIZE {world}", where="environment")
    if world > 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        # Left over in a shell, these would have this process wait (up to an hour) for ranks that
        # never come; torchrun (and accelerate and srun through it) always sets TORCHELASTIC_RUN_ID.
        raise BenchError(f"WORLD_SIZE={world} is set but no torchrun launched this process (TORCHELASTIC_RUN_ID "
                         f"is unset): unset RANK and WORLD_SIZE, or launch with torchrun", where="environment")
    return Rank(rank, world, read("LOCAL_RANK", rank))


def check_rank_device(rank: Rank, requested: str) -> str:
    """The device this rank uses (``cuda`` becomes ``cuda:LOCAL_RANK``), checked here: the message
    names the rank, since only this rank's GPU may be missing."""
    from .devices import check_device

    if rank.active and requested.startswith("cuda:"):
        raise BenchError(f"{requested!r} would put every rank on one GPU; under torchrun give --device cuda "
                         "(each rank takes cuda:LOCAL_RANK) and choose GPUs with CUDA_VISIBLE_DEVICES", where="--device")
    device = rank.device(requested)
    if device != requested:
        check_device(device, where=f"--device, {rank.label()} with LOCAL_RANK {rank.local_rank}")
    return device


def shard(weights: dict[str, float], world: int) -> dict[int, list[str]]:
    """Concepts per rank, balanced by their work: heaviest first onto the least loaded rank (ties:
    the lower rank, then the concept name), so every rank computes the same split."""
    loads = [0.0] * world
    shares: dict[int, list[str]] = {r: [] for r in range(world)}
    for name in sorted(weights, key=lambda n: (-weights[n], n)):
        target = min(range(world), key=lambda r: (loads[r], r))
        shares[target].append(name)
        loads[target] += weights[name]
    return shares


def rendezvous(rank: Rank, problem: BaseException | None, run_dir: Path | None = None) -> str:
    """Meet the other ranks once: each says whether it is ready (``problem``: what stopped it before
    this point, or None), rank 0 gives the attempt's id. When any rank has a problem, every rank
    stops here: a rank with bad input prints its line unless a lower rank met the same one; the
    others stop quietly. The lines are printed before any rank leaves (a barrier), since torchrun
    ends a node's workers as soon as one of them exits. Ranks whose settings give another run
    directory (``run_dir``: its name is the run's identity) are each a problem, said here at once:
    otherwise each would wait for the others' concepts in a directory they never write."""
    import torch.distributed as dist

    timeout = timedelta(seconds=_env_seconds("UNIFYBENCH_RENDEZVOUS_TIMEOUT_S", 3600.0))
    try:
        dist.init_process_group(backend="gloo", timeout=timeout)
    except (RuntimeError, ValueError) as exc:
        raise BenchError(f"cannot join the process group ({str(exc).splitlines()[0][:160]}); "
                         f"launch with torchrun, which sets MASTER_ADDR and MASTER_PORT", where=rank.label()) from None
    mine = None if problem is None else one_line(problem)
    try:
        box = [uuid.uuid4().hex[:12] if rank.is_main else None]
        dist.broadcast_object_list(box, src=0)
        problems: list[str | None] = [None] * rank.world
        dist.all_gather_object(problems, mine)
        identities: list[str | None] = [None] * rank.world
        dist.all_gather_object(identities, None if run_dir is None else Path(run_dir).name)
        differing = None if any(problems) else _differing_settings(identities)
        if differing:
            problem = BenchError(differing, where=rank.label())
            mine = one_line(problem)
            problems = [mine] * rank.world  # every rank has it: rank 0 prints it, the others stop quietly
        if isinstance(problem, BenchError):
            if mine not in problems[:rank.rank]:
                print(error_line(problem), file=sys.stderr, flush=True)
            problem.quiet = True  # printed here, or by a lower rank
        dist.barrier()
    finally:
        dist.destroy_process_group()
    if problem is not None:
        raise problem
    failed = [(r, line) for r, line in enumerate(problems) if line is not None]
    if failed:
        raise OtherRankFailed(f"stopped: rank {failed[0][0]} could not start: {failed[0][1]}", where=rank.label())
    return str(box[0])


def _differing_settings(identities: list[str | None]) -> str | None:
    """One line when the ranks would write different run directories (other arguments, benchmark or
    --out on some rank), naming each rank's; None when they agree."""
    named = [(r, name) for r, name in enumerate(identities) if name is not None]
    if len({name for _, name in named}) <= 1:
        return None
    by_name: dict[str, list[int]] = {}
    for r, name in named:
        by_name.setdefault(name, []).append(r)
    return ("the ranks were launched with different settings (they name different run directories: " +
            "; ".join(f"rank{'s' if len(rs) > 1 else ''} {', '.join(map(str, rs))}: {name}"
                      for name, rs in by_name.items()) + "); launch every rank with the same arguments")


def one_line(exc: BaseException) -> str:
    """What another rank is told of ``exc``: a BenchError's line, else the type and first line."""
    if isinstance(exc, BenchError):
        return exc.one_line()
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"


def begin(rank: Rank, problem: BaseException | None, run_dir: Path | None) -> "Attempt | SoloAttempt":
    """Where a rank's launch starts, once its checks ran (``problem``: what stopped it, or None; a
    plain run raised it already): a plain run (one rank) has no one to meet; a rank of a launch
    meets the others (:func:`rendezvous`)."""
    if not rank.active:
        return SoloAttempt()
    return Attempt(run_dir, rendezvous(rank, problem, run_dir), rank)


class SoloAttempt:
    """A plain run: the one-rank case, with no other rank to wait for, fail with or hear from."""

    def close(self) -> None: ...
    def done(self, concepts: list[str]) -> None: ...
    def failed(self, line: str) -> None: ...
    def stop_if_another_failed(self) -> None: ...
    def wait_for_all(self, poll_s: float = 1.0, on_wait=None) -> None: ...

    def save_method_details(self, details: dict) -> None: ...

    def method_details(self, earlier: bool) -> dict | None:
        return None


class Attempt:
    """The completion files of one launch of the ranks in a run directory, and this rank's heartbeat."""

    def __init__(self, run_dir: Path, attempt: str, rank: Rank):
        self.folder = Path(run_dir) / "ranks" / attempt
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rank = rank
        self.stale_s = _env_seconds("UNIFYBENCH_RANK_STALE_S", 600.0)
        # What this rank has seen of each other's heartbeat: (its mtime, local time it last changed).
        self._seen: dict[int, tuple[int | None, float]] = {}
        self._stop = threading.Event()
        self._beat()
        self._heart = threading.Thread(target=self._beating, name="unifybench-heartbeat", daemon=True)
        self._heart.start()

    # ------------------------------------------------------------------ this rank
    def _beat(self) -> None:
        (self.folder / f"alive.{self.rank.rank}").touch()

    def _beating(self) -> None:
        while not self._stop.wait(max(self.stale_s / 10, 0.05)):
            try:
                self._beat()
            except OSError:
                pass  # a shared filesystem's hiccup: the next beat tries again

    def close(self) -> None:
        self._stop.set()

    def done(self, concepts: list[str]) -> None:
        _write(self.folder / f"done.{self.rank.rank}.json",
               json.dumps({"rank": self.rank.rank, "world": self.rank.world, "concepts": concepts}))

    def failed(self, line: str) -> None:
        _write(self.folder / f"failed.{self.rank.rank}.txt", line + "\n")

    def save_method_details(self, details: dict) -> None:
        """A rank other than 0 hands rank 0 the method's description (run.json's method_details)."""
        _write(self.folder / f"method.{self.rank.rank}.json", json.dumps(details))

    def method_details(self, earlier: bool) -> dict | None:
        """The description a rank saved in this launch (the lowest rank's), or with ``earlier`` the
        newest of an earlier launch in the same run directory; None when there is none."""
        this_launch = sorted(self.folder.glob("method.*.json"), key=lambda path: int(path.name.split(".")[1]))
        found = this_launch[:1]
        if not found and earlier:
            found = sorted(self.folder.parent.glob("*/method.*.json"), key=lambda path: path.stat().st_mtime)[-1:]
        return json.loads(found[0].read_text(encoding="utf-8")) if found else None

    # ------------------------------------------------------------------ the others
    def first_failure(self) -> tuple[int, str] | None:
        """The rank that failed first in this attempt, and its line."""
        failures = []
        for path in self.folder.glob("failed.*.txt"):
            try:
                failures.append((path.stat().st_mtime_ns, int(path.name.split(".")[1]),
                                 path.read_text(encoding="utf-8").strip()))
            except (OSError, ValueError):
                continue  # replaced while read: the next look finds it
        if not failures:
            return None
        _, failed_rank, line = min(failures)
        return failed_rank, line

    def missing(self) -> list[int]:
        finished = {p.name for p in self.folder.glob("done.*.json")}
        return [r for r in range(self.rank.world) if f"done.{r}.json" not in finished]

    def silent(self) -> list[tuple[int, float]]:
        """Unfinished ranks whose heartbeat has not moved for longer than ``stale_s``, as this rank
        has watched it (its own clock only: nodes' clocks need not agree)."""
        now = time.monotonic()
        out = []
        for r in self.missing():
            if r == self.rank.rank:
                continue
            try:
                stamp: int | None = (self.folder / f"alive.{r}").stat().st_mtime_ns
            except OSError:
                stamp = None
            last_stamp, since = self._seen.get(r, (stamp, now))
            if stamp != last_stamp:
                since = now
            self._seen[r] = (stamp, since)
            if now - since > self.stale_s:
                out.append((r, now - since))
        return out

    def stop_if_another_failed(self) -> None:
        found = self.first_failure()
        if found is not None and found[0] != self.rank.rank:
            raise OtherRankFailed(f"stopped: rank {found[0]} failed: {found[1]}", where=self.rank.label())
        silent = self.silent()
        if silent:
            r, seconds = silent[0]
            # Nobody else will say it: that rank cannot. (The caller adds this rank's label.)
            raise BenchError(f"rank {r} stopped without a word: no heartbeat for {seconds:.0f} s (killed, out of "
                             f"memory, or its node lost?); its finished work is kept, and the same command resumes")

    def wait_for_all(self, poll_s: float = 1.0, on_wait=None) -> None:
        """Until every rank has said done; the first failure any rank wrote, or a silent rank, stops this one."""
        while True:
            self.stop_if_another_failed()
            missing = self.missing()
            if not missing:
                return
            if on_wait is not None:
                on_wait(missing)
            time.sleep(min(poll_s, max(self.stale_s / 10, 0.05)))


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
