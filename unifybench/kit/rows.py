"""The rows layer: a frozen model plus learned vocabulary rows, the family most methods here belong to
(Yo'LLaVA, Yo'Chameleon, UniCTokens' stages, textual inversion).

- New rows that exist only inside a block, and their training: :class:`NewTokens`,
  :class:`RowTrainer`, :class:`VocabRowParam`, :func:`get_rows` (the standard row lookup: float32
  CPU copies, a tied head's rows from the embedding, a missing bias as zeros), :func:`set_rows`,
  :func:`fingerprint` (for ``isolation_fingerprint``) and the UniCTokens row files
  (:func:`save_rows`, :func:`load_rows`, :func:`checkpoint_epochs`); implemented in
  :mod:`unifybench.kit.vocab_rows`, public here.
- Per-epoch files and the resume file: :func:`save_token_rows`, :func:`load_token_rows`,
  :func:`token_row_epochs`, :func:`write_resume`, :func:`read_resume`, :func:`drop_resume`,
  :func:`training_costs` (from :mod:`unifybench.kit.epochs`).
- :class:`EpochLoop`: the resumable epoch loop every row-training method writes, once: resume after
  any epoch bit for bit (the trainer, the generators and the training record so far), then one
  training record (``finished: true``) and no resume file.
- :func:`freeze`: a frozen base; :func:`finished_record`: a training record that says it finished.

A method on this layer is tested between epochs by :class:`unifybench.testing.RowsContract`.
"""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from .vocab_rows import (NewTokens, RowTrainer, VocabRowParam, checkpoint_epochs, fingerprint, get_rows, load_rows,
                       save_rows, set_rows, vocabulary_size)
from .epochs import (drop_resume, load_token_rows, read_resume, save_token_rows, token_row_epochs, training_costs,
                     write_resume)
from .files import read_json, write_json_atomic

__all__ = ["NewTokens", "RowTrainer", "VocabRowParam", "get_rows", "set_rows", "fingerprint", "vocabulary_size",
           "save_rows", "load_rows", "checkpoint_epochs", "save_token_rows", "load_token_rows", "token_row_epochs",
           "write_resume", "read_resume", "drop_resume", "training_costs", "EpochLoop", "finished_record", "freeze"]


def freeze(module):
    """Every parameter of ``module`` out of training (a frozen base); returns the module."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def finished_record(path: Path) -> dict | None:
    """The training record at ``path`` when its training finished (``finished: true``), else None."""
    record = read_json(Path(path))
    return record if isinstance(record, dict) and record.get("finished") else None


def _state_of(generator) -> Any:
    return generator.getstate() if isinstance(generator, random.Random) else generator.get_state()


def _restore(generator, state) -> None:
    if isinstance(generator, random.Random):
        generator.setstate(state)
    else:
        generator.set_state(state)


class EpochLoop:
    """``for epoch in loop:`` the epochs left of a training, resumable after any of them::

        loop = EpochLoop(state_dir, key, epochs, trainer=trainer, generators={"order": rng, "flips": g},
                         record={"losses": []})
        for epoch in loop:                     # 0, 1, ... (from the one after the last saved)
            ...                                # train; save the epoch's rows
            loop.record["losses"].append(...)
            loop.epoch_done(epoch)             # the resume file: everything needed to go on
        loop.finish(state_dir / "my.json", {...})   # the one training record; the resume file goes

    ``key``: what makes two trainings the same (arguments, training set, base model, seed); a
    resume file made with another key, or unreadable, is ignored and training starts over.
    ``trainer``: anything with ``state_dict()``/``load_state_dict()`` (a :class:`RowTrainer`);
    ``generators``: ``random.Random`` or ``torch.Generator`` objects, restored on resume;
    ``record``: the training record so far (JSON-able), restored on resume.
    """

    def __init__(self, state_dir: Path, key: Mapping, epochs: int, *, trainer=None, generators: Mapping | None = None,
                 record: dict | None = None, first: int = 0):
        self.state_dir, self.key, self.epochs = Path(state_dir), dict(key), epochs
        self.trainer, self.generators = trainer, dict(generators or {})
        self.record = record if record is not None else {}
        self.first = first  # the first epoch's number (Yo'LLaVA counts from 0, the others from 1)
        self.start = first
        self.resumed_after: int | None = None
        self._clock = time.time()
        saved = read_resume(self.state_dir, {**self.key, "format": "epoch-loop/1"})
        if saved is not None and {"epoch", "generators", "record"} <= saved.keys():
            if self.trainer is not None:
                self.trainer.load_state_dict(saved["trainer"])
            for name, generator in self.generators.items():
                _restore(generator, saved["generators"][name])
            self.record = saved["record"]
            self.resumed_after = saved["epoch"]
            self.start = saved["epoch"] + 1
            self._clock -= saved.get("seconds", 0.0)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.first + self.epochs))

    def epoch_done(self, epoch: int) -> None:
        """Save what an uninterrupted training holds after ``epoch``: a run killed later resumes here."""
        write_resume(self.state_dir, {
            **self.key, "format": "epoch-loop/1", "epoch": epoch, "seconds": time.time() - self._clock,
            "trainer": self.trainer.state_dict() if self.trainer is not None else None,
            "generators": {name: _state_of(g) for name, g in self.generators.items()}, "record": self.record})

    def seconds(self) -> float:
        """Training time so far, the interrupted runs' included."""
        return round(time.time() - self._clock, 3)

    def finish(self, path: Path, record: dict) -> dict:
        """Write the one training record (``record``, then ``finished: true``) and drop the resume file."""
        final = {**record, "finished": True}
        write_json_atomic(Path(path), final)
        drop_resume(self.state_dir)
        return final
