"""Runs across processes, GPUs and nodes under ``torchrun`` (or ``accelerate launch``, ``srun
torchrun``): each rank personalizes and predicts its share of the concepts; rank 0 scores.

Concepts are independent (a concept's predictions depend on it alone), so the work splits by
concept. What a rank writes into the shared run directory:

```
predictions.rank<R>.jsonl     its finished requests (merged into predictions.jsonl by rank 0 at the end)
images/<concept>/..., state/<concept>/   for its concepts only
ranks/<attempt>/done.<R>.json its concepts, once they are all predicted
ranks/<attempt>/failed.<R>.txt   the one line that stopped it
```

``torch.distributed`` (gloo on CPU, NCCL on GPU) is used for the rendezvous only: rank 0 draws an
attempt id and broadcasts it. Waiting for the other ranks is a check on those files, so no
collective can time out while a rank trains for hours. The same files stop the launch when a rank
fails: torchrun ends the other workers of its node, and a rank on another node reads the failure
before its next concept (rank 0 also while it waits), so one line, the failing rank's, says why.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .errors import BenchError


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
    return Rank(rank, world, read("LOCAL_RANK", rank))


QUIET_RANK_GRACE_S = 20.0


@contextlib.contextmanager
def one_report_per_node(rank: Rank):
    """Bad input found before the rendezvous is the same on every rank of a node (same files, same
    arguments): only the node's LOCAL_RANK 0 prints it, the others exit with the same code quietly.
    One line per node, not per process, and still one from each node, whose files may differ."""
    try:
        yield
    except BenchError as exc:
        if rank.active and rank.local_rank != 0:
            exc.quiet = True
            # torchrun ends a node's workers as soon as one exits with an error: leaving first would
            # have LOCAL_RANK 0 killed before its line is out. It exits within moments, and then
            # torchrun ends this process; the timeout only matters if it never meets the error.
            time.sleep(QUIET_RANK_GRACE_S)
        raise


def check_rank_device(rank: Rank, requested: str) -> str:
    """The device this rank uses (``cuda`` becomes ``cuda:LOCAL_RANK``), checked here: the message
    names the rank, since only this rank's GPU may be missing."""
    from .devices import check_device

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


def rendezvous(rank: Rank, device: str) -> str:
    """Join the process group and agree on an attempt id (rank 0's), then leave it: nothing later
    waits in a collective."""
    import torch
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(rank.local_rank)
    try:
        dist.init_process_group(backend=backend)
    except (RuntimeError, ValueError) as exc:
        raise BenchError(f"cannot join the process group ({str(exc).splitlines()[0][:160]}); "
                         f"launch with torchrun, which sets MASTER_ADDR and MASTER_PORT", where=rank.label()) from None
    try:
        box = [uuid.uuid4().hex[:12] if rank.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return str(box[0])
    finally:
        dist.destroy_process_group()


class Attempt:
    """The completion files of one launch of the ranks in a run directory."""

    def __init__(self, run_dir: Path, attempt: str, rank: Rank):
        self.folder = Path(run_dir) / "ranks" / attempt
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rank = rank

    def done(self, concepts: list[str]) -> None:
        _write(self.folder / f"done.{self.rank.rank}.json",
               json.dumps({"rank": self.rank.rank, "world": self.rank.world, "concepts": concepts}))

    def failed(self, line: str) -> None:
        _write(self.folder / f"failed.{self.rank.rank}.txt", line + "\n")

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

    def stop_if_another_failed(self) -> None:
        found = self.first_failure()
        if found is not None and found[0] != self.rank.rank:
            raise OtherRankFailed(f"stopped: rank {found[0]} failed: {found[1]}", where=self.rank.label())

    def wait_for_all(self, poll_s: float = 1.0, on_wait=None) -> None:
        """Until every rank has said done; the first failure any rank wrote stops this one."""
        while True:
            self.stop_if_another_failed()
            finished = {p.name for p in self.folder.glob("done.*.json")}
            missing = [r for r in range(self.rank.world) if f"done.{r}.json" not in finished]
            if not missing:
                return
            if on_wait is not None:
                on_wait(missing)
            time.sleep(poll_s)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
