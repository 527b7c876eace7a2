"""Superseded: the vocabulary-row classes are public in :mod:`unifybench.kit.rows` (implemented in
:mod:`unifybench.kit.vocab_rows`). Importing from here keeps working, with a warning."""
import warnings

from .kit.vocab_rows import *  # noqa: F401,F403
from .kit.vocab_rows import (ROW_FILES, NewTokens, RowTrainer, VocabRowParam, checkpoint_epochs,  # noqa: F401
                             fingerprint, get_rows, load_rows, save_rows, set_rows, vocabulary_size)

warnings.warn("unifybench.newrows is now unifybench.kit.rows", DeprecationWarning, stacklevel=2)
