"""The bench builders of unifybench.testing.benches, and a DreamBench copy from ../shared/data."""
from __future__ import annotations

import shutil
from pathlib import Path

from unifybench.testing.benches import (UNIFYBENCH_IMAGES, make_unifybench, make_yollava, photo,  # noqa: F401
                                        write_json)

# ../shared/data beside the checkout (where the CI clone may lack it, the workplace's copy).
DREAMBENCH = next((p for p in (Path(__file__).resolve().parents[2] / "shared" / "data" / "dreambench",
                               Path("/work/shared/data/dreambench")) if p.is_dir()),
                  Path("/work/shared/data/dreambench"))


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
