"""Reader for Yo'LLaVA (docs/formats.md section 3): visual and text-only multiple choice, recognition."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import BenchError
from ..records import Benchmark, Concept, QAItem
from .common import attach_negatives, list_dirs, list_images, load_json, replace_sks, resolve_image, token_for

VISUAL_NAME = "yollava-visual-qa.json"
TEXT_NAME = "yollava-text-only-qa.json"
CLASS_NOUN = "subject"
# The authors' repository keeps each subject's training material in example_training_data/<s>/:
# laion/ (retrieved hard negatives), text-only-conversation.json ({photo: [{"Human", "AI"}, ...]}),
# recognition_negative-cc12m.json (random easy negatives, by path under training_data/).
AUTHORS_TRAINING_DIRS = ("example_training_data", "training_data")
TEXT_CONVERSATIONS = "text-only-conversation.json"
RANDOM_NEGATIVES = "recognition_negative-cc12m.json"


def _find(root: Path, exact: str, marker: str) -> Path | None:
    if (root / exact).is_file():
        return root / exact
    found = sorted(p for p in root.glob("*.json") if marker in p.name.lower() and p.is_file())
    return found[0] if found else None


def find_qa_files(root: Path) -> tuple[Path | None, Path | None]:
    return _find(root, VISUAL_NAME, "visual-qa"), _find(root, TEXT_NAME, "text-only-qa")


def _options(entry: dict, key: str, path: Path, where: str) -> tuple[tuple[str, str], ...]:
    opts = entry.get(key)
    if not isinstance(opts, dict) or not opts:
        raise BenchError(f"missing {key!r} object", path, where)
    out = []
    for letter, text in opts.items():
        if not isinstance(text, (str, int, float)) or isinstance(text, bool):
            raise BenchError(f"option {letter!r} must be a string", path, where)
        out.append((str(letter).strip(), str(text).strip()))
    return tuple(sorted(out))


def _mc_entry(entry: Any, key: str, path: Path, where: str, token: str) -> tuple[str, tuple, str]:
    if not isinstance(entry, dict):
        raise BenchError(f"question must be a JSON object, got {type(entry).__name__}", path, where)
    q = entry.get("question")
    if not isinstance(q, str):
        raise BenchError("missing 'question' string", path, where)
    options = _options(entry, key, path, where)
    ans = entry.get("correct_answer")
    if not isinstance(ans, str) or not ans.strip():
        raise BenchError("missing 'correct_answer' string", path, where)
    ans = ans.strip()
    letters = [k for k, _ in options]
    if ans not in letters:
        # accept the option text as the answer
        match = [k for k, v in options if v.strip().lower() == ans.lower()]
        if not match:
            raise BenchError(f"correct_answer {ans!r} is none of the options {letters}", path, where)
        ans = match[0]
    return replace_sks(q, token).strip(), options, ans


def _load_mapping(path: Path) -> dict:
    data = load_json(path)
    if not isinstance(data, dict):
        raise BenchError("expected a JSON object {subject: {...}}", path)
    for subject, qs in data.items():
        if not isinstance(qs, dict):
            raise BenchError("expected a JSON object of questions", path, subject)
        if not subject or "/" in subject or "\\" in subject or subject in (".", ".."):
            raise BenchError(f"invalid subject name {subject!r}", path)
    return data


def _authors_training(root: Path, subject: str, token: str) -> tuple[list[Path], list[Path], list[dict]]:
    """A subject's hard negatives, easy negatives that resolve under ``root``, and text-only
    conversations (as LLaVA-style records without an image) from the authors' training folder."""
    folder = next((root / d / subject for d in AUTHORS_TRAINING_DIRS if (root / d / subject).is_dir()), None)
    if folder is None:
        return [], [], []
    hard = list_images(folder / "laion")
    easy: list[Path] = []
    if (folder / RANDOM_NEGATIVES).is_file():
        listed = load_json(folder / RANDOM_NEGATIVES)
        if not isinstance(listed, dict):
            raise BenchError("expected a JSON object {image path: [...]}", folder / RANDOM_NEGATIVES)
        # Their cc12m photos are not in the repository: those present under the root are used.
        easy = [p for p in (resolve_image(key, root) for key in listed) if p is not None]
    conversations: list[dict] = []
    path = folder / TEXT_CONVERSATIONS
    if path.is_file():
        by_photo = load_json(path)
        if not isinstance(by_photo, dict):
            raise BenchError("expected a JSON object {photo: [{\"Human\", \"AI\"}, ...]}", path)
        for photo, turns in by_photo.items():
            if not isinstance(turns, list):
                raise BenchError("expected a list of {\"Human\", \"AI\"} turns", path, photo)
            for i, turn in enumerate(turns):
                if not (isinstance(turn, dict) and isinstance(turn.get("Human"), str)
                        and isinstance(turn.get("AI"), str)):
                    raise BenchError("expected {\"Human\": question, \"AI\": answer}", path, f"{photo} turn {i}")
                # Trained without the photo (their --text_only), so no image is attached.
                conversations.append({"conversations": [
                    {"from": "human", "value": replace_sks(turn["Human"], token)},
                    {"from": "gpt", "value": replace_sks(turn["AI"], token)}]})
    return hard, easy, conversations


def read_yollava(root: Path, name: str) -> Benchmark:
    root = Path(root)
    visual_path, text_path = find_qa_files(root)
    if visual_path is None and text_path is None:
        raise BenchError(f"no {VISUAL_NAME} or {TEXT_NAME}", root)
    visual = _load_mapping(visual_path) if visual_path else {}
    text = _load_mapping(text_path) if text_path else {}
    data_dir = root / "yollava-data"
    subjects = sorted(set(visual) | set(text) | {d.name for d in list_dirs(data_dir / "train")}
                      | {d.name for d in list_dirs(data_dir / "test")})

    concepts: list[Concept] = []
    test_photos: dict[str, list[Path]] = {}
    random_negatives: dict[str, list[Path]] = {}
    for s in subjects:
        train_dir = data_dir / "train" / s
        train = list_images(train_dir)
        if not train:
            raise BenchError(f"subject {s!r} has no training photos (yollava-data/train/{s}/*.png)", train_dir)
        test = list_images(data_dir / "test" / s)
        test_photos[s] = test
        hard, random_negatives[s], conversations = _authors_training(root, s, token_for(s))
        concepts.append(Concept(name=s, token=token_for(s), class_noun=CLASS_NOUN, kind="object",
                                generation_type=None, train_images=train, reference_images=list(train),
                                test_images=test, training_conversations=conversations,
                                hard_negatives=list_images(train_dir / "negative_example") + hard))

    items: dict[str, list[QAItem]] = {}
    for c in concepts:
        s, token = c.name, c.token
        out: list[QAItem] = []
        for image_key, entry in visual.get(s, {}).items():
            where = f"{s}/{image_key}"
            q, options, ans = _mc_entry(entry, "options", visual_path, where, token)
            image = resolve_image(image_key, root)
            if image is None:
                raise BenchError(f"image {image_key!r} not found (tried under the root and by its tail)",
                                 visual_path, where)
            out.append(QAItem(s, len(out), "choice", q, ans, image, options, ans, "visual_choice"))
        for key, entry in text.get(s, {}).items():
            where = f"{s}/{key}"
            q, options, ans = _mc_entry(entry, "option", text_path, where, token)
            out.append(QAItem(s, len(out), "choice", q, ans, None, options, ans, "text_only_choice"))
        if test_photos[s]:
            question = f"Is {token} in this image? Answer with yes or no."
            for p in test_photos[s]:
                out.append(QAItem(s, len(out), "rec", question, "Yes.", p, raw_type="rec"))
            for other in subjects:
                if other == s:
                    continue
                for p in test_photos[other]:
                    out.append(QAItem(s, len(out), "rec", question, "No.", p, raw_type="rec"))
        items[s] = out
    attach_negatives(concepts, [])
    for c in concepts:
        # The authors' composition where their training folder lists random photos: those alone.
        # Other subjects' photos are the identities of the recognition test's negatives, which they
        # never trained on. Without the folder, the other subjects' training photos stand in.
        if random_negatives[c.name]:
            c.easy_negatives = random_negatives[c.name]
    return Benchmark(name=name, format="yollava", root=root, concepts=concepts, items=items,
                     prompts={c.name: [] for c in concepts})
