"""Which format a benchmark folder is in. Its own module so that :mod:`.hub` (which looks for a
benchmark inside a downloaded snapshot) and the readers' entry point in the package both use it
without importing each other."""
from __future__ import annotations

from pathlib import Path

from ..errors import BenchError
from .dreambench import find_prompts_file
from .dreambench_plus import looks_like_dreambench_plus
from .myvlm import is_myvlm
from .yollava import find_qa_files

FORMATS = ("unifybench", "dreambench", "yollava", "myvlm", "dreambench_plus")


def check_root(path: Path) -> Path:
    if not path.exists():
        raise BenchError("no such benchmark folder", path)
    if not path.is_dir():
        raise BenchError("not a folder", path)
    return path


def detect_format(path: str | Path) -> str:
    """``unifybench`` if test_data/ or concept/ exists; ``dreambench`` if prompts_and_classes.txt
    exists (in the root or dataset/); ``dreambench_plus`` if images/ and captions/<category>/ exist;
    ``yollava`` if a *visual-qa*.json or *text-only-qa*.json exists;
    ``myvlm`` if a subfolder holds a captions.json."""
    root = check_root(Path(path))
    if (root / "test_data").is_dir() or (root / "concept").is_dir():
        return "unifybench"
    if find_prompts_file(root) is not None:
        return "dreambench"
    if looks_like_dreambench_plus(root):
        return "dreambench_plus"
    if any(p is not None for p in find_qa_files(root)):
        return "yollava"
    if is_myvlm(root):
        return "myvlm"
    raise BenchError("cannot detect the format; pass --format (unifybench, dreambench, yollava, myvlm or "
                     "dreambench_plus)", root)
