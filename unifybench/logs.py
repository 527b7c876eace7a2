"""Where a run's messages go: everything into ``<run_dir>/log.txt``; the terminal shows progress bars
and results, and log lines only with ``--verbose``.

Methods and the harness log through :func:`get_logger` (``unifybench.*`` loggers), never ``print``:
a three-stage personalization logs a line per epoch, hundreds per run, which belong in the file.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

ROOT = "unifybench"


def get_logger(name: str) -> logging.Logger:
    """``get_logger("method.unictokens")`` -> the ``unifybench.method.unictokens`` logger."""
    return logging.getLogger(f"{ROOT}.{name}" if name else ROOT)


@contextlib.contextmanager
def run_log(run_dir: Path, verbose: bool = False, name: str = "log.txt"):
    """Send ``unifybench.*`` log records to ``<run_dir>/log.txt`` (appended across resumes; under
    torchrun, ranks other than 0 write ``log.rank<R>.txt``) for the block, and to stderr too when
    ``verbose``."""
    logger = logging.getLogger(ROOT)
    handlers = [logging.FileHandler(Path(run_dir) / name, encoding="utf-8")]
    handlers[0].setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    if verbose:
        handlers.append(logging.StreamHandler(sys.stderr))
        handlers[-1].setFormatter(logging.Formatter("%(message)s"))
    saved = (logger.level, logger.propagate)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # our records are not the root logger's business
    for h in handlers:
        logger.addHandler(h)
    try:
        yield
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


@contextlib.contextmanager
def quiet_transformers():
    """transformers' warnings about arguments we pass on purpose (``max_new_tokens`` beside a model's
    ``max_length``; Janus's own ``generate`` passing ``guidance_scale`` with a config), for a block."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
