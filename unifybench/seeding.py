"""Random draws that depend only on what they are for, never on what the process did before.

The runner wraps each concept's personalization and each prediction batch in :func:`seeded`: the
global generators (Python's ``random``, NumPy's, torch's on the CPU and on every initialised CUDA
device) are seeded from (seed, concept, phase) for the block and restored afterwards. A method
should draw from generators of its own seeded by (seed, concept, stage or request); this makes
even one that uses the global state reproducible per concept, whatever ran before it.
"""
from __future__ import annotations

import contextlib
import hashlib
import random
import sys


# The largest seed a run takes (--seed, --seeds, a --config, evaluate()): numpy's legacy generators'
# bound; every draw of a run is derived from it. Negative seeds are refused before anything is made.
MAX_SEED = 2**32 - 1


def derive_seed(*parts) -> int:
    """A 63-bit seed from any parts (``derive_seed(0, "dog", "personalize")``)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)


def image_seed(seed: int, key: str, i: int) -> int:
    """Each generated image's seed: the run seed, the request and the image's position only, so
    that no image depends on the batch it was drawn in."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{key}/{i}".encode()).digest()[:4], "little") & 0x7FFFFFFF


@contextlib.contextmanager
def seeded(*parts):
    value = derive_seed(*parts)
    py_state = random.getstate()
    np = sys.modules.get("numpy")  # likewise: only where loaded
    np_state = np.random.get_state() if np is not None else None
    # torch only where it is loaded already: a method that imports it later starts from torch's
    # fixed initial seed, and a run that never needs torch does not pay seconds to import it.
    torch = sys.modules.get("torch")
    try:
        if torch is None:
            random.seed(value)
            if np is not None:
                np.random.seed(value % (2 ** 32))
            yield value
            return
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=devices):
            random.seed(value)
            if np is not None:
                np.random.seed(value % (2 ** 32))
            torch.manual_seed(value)
            yield value
    finally:
        random.setstate(py_state)
        if np is not None:
            np.random.set_state(np_state)
