"""What every method adapter needs, in one public place (see docs/writing-a-method.md).

Public modules (import them by name, ``from unifybench.kit.rows import EpochLoop``): ``args``,
``batching``, ``checkpoints``, ``epochs``, ``files``, ``models``, ``rows``, ``taming``, ``weights``.
A name that starts with an underscore is private to the harness and may change without notice.
"""
__all__ = ["args", "batching", "checkpoints", "epochs", "files", "models", "rows", "taming", "weights"]
