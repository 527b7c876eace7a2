"""The bench builders of unifybench.testing.benches, and the repository's small DreamBench copy
(tests/data/dreambench: 4 subjects at 256 px, see data_cards/tests-dreambench.md)."""
from __future__ import annotations

import shutil
from pathlib import Path

from unifybench.testing.benches import (UNIFYBENCH_IMAGES, make_unifybench, make_yollava, photo,  # noqa: F401
                                        write_json)

DREAMBENCH = Path(__file__).resolve().parent / "data" / "dreambench"


def make_dreambench(root: Path, subjects=("dog", "can"), nested: bool = True) -> Path:
    """A DreamBench copy with a trimmed class list; ``nested`` puts it under root/dataset/."""
    base = root / "dataset" if nested else root
    base.mkdir(parents=True, exist_ok=True)
    text = (DREAMBENCH / "prompts_and_classes.txt").read_text(encoding="utf-8")
    head, _, rest = text.partition("subject_name,class\n")
    block, _, tail = rest.partition("\n\n")
    keep = [ln for ln in block.splitlines() if ln.split(",")[0] in subjects]
    (base / "prompts_and_classes.txt").write_text(head + "subject_name,class\n" + "\n".join(keep) + "\n\n" + tail,
                                                   encoding="utf-8")
    for s in subjects:
        shutil.copytree(DREAMBENCH / s, base / s)
    return root


def questions_only_yollava(root: Path) -> Path:
    """Yo'LLaVA's two question files without the photo folder, as the questions are published apart."""
    yl = make_yollava(root / "yollava")
    shutil.rmtree(yl / "yollava-data")
    return yl
