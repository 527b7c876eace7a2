"""Superseded: ``run.json``'s module is :mod:`unifybench.run_record` (beside :mod:`unifybench.records`,
the benchmark's data, the two names read alike). Importing from here keeps working, with a warning."""
import warnings

from .run_record import *  # noqa: F401,F403
from .run_record import MethodDetails, is_random_init  # noqa: F401  (the names the guide gave)

warnings.warn("unifybench.record is now unifybench.run_record", DeprecationWarning, stacklevel=2)
