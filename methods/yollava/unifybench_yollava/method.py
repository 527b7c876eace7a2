"""The ``yollava`` method and its two reference rows, ``llava`` and ``llava-prompt``, on one LLaVA.

Yo'LLaVA (Nguyen et al., NeurIPS 2024; ``WisconsinAIVision/YoLLaVA``, ``train-multi-token.py``)
learns a concept as ``<c>`` plus 16 latent tokens: the concept prompt ``<c> is <token0>…<token15>.``
goes before the user's text, and only the 17 new rows of the input embedding and of ``lm_head`` are
trained, on recognition (positives over the training photos, hard and easy negatives) and text-only
questions about the concept. See ``methods/yollava/README.md`` for what is faithful and what differs.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import torch

from unifybench.kit import rows as kit_rows
from unifybench.bench.hooks import SpeedBenchHooks
from unifybench.errors import BenchError
from unifybench.logs import get_logger
from unifybench.kit.args import Arg, Auto
from unifybench.kit.checkpoints import concept_folder
from unifybench.kit.epochs import load_token_rows, save_token_rows, token_row_epochs, training_costs
from unifybench.kit.files import read_json, write_json_atomic
from unifybench.kit.models import check_available, random_init, shared, torch_dtype
from unifybench.kit.rows import EpochLoop
from unifybench.methods import ConceptLayers, Method
from unifybench.records import Concept
from unifybench.seeding import derive_seed

from .llava import DEFAULT_MODEL, LlavaHost

TASKS = frozenset({"rec", "vqa", "text_only", "choice", "caption"})
N_LATENT = 16
# The recognition question of the authors' test script (test-sks-acc.py), after the concept prompt.
REC_QUESTION = "Can you see {c} in this photo? Answer with a single word or phrase."
# ... and of the per-epoch check of their training script (PersonalizedDataset), for best_epoch.
CHECK_QUESTION = "Can you see {c} in this photo? Answer the question using a single word or phrase."

# Recognition phrasings in the style of the authors' generated training data (their files hold
# GPT-written variants of these; the repository does not include the generator).
POSITIVE_QUESTIONS = [
    "Can you tell me if {c} is in this photo?", "Is {c} in this photo?", "Can you see {c} in this photo?",
    "Hey, can you tell me if you see {c} in this photo?", "Can you tell me if you recognize {c} in this photo?",
    "Is {c} visible in this photo?", "Can you check if {c} is in this photo?", "Do you see {c} in this image?",
]
POSITIVE_ANSWERS = [
    "Yes, {c} is indeed in the photo.", "Yes, I can confirm that {c} is indeed in the photo.",
    "Yes, I can confirm that {c} is in the photo.", "Yes, {c} is in this photo.", "Yes, I can see {c} in the photo.",
]
NEGATIVE_QUESTIONS = [
    "Can you check if {c} is in this photo?", "Can you recognize if {c} is in this photo?",
    "Can you tell me if {c} is in this photo?", "Can you see if {c} is in this photo?", "Is {c} in this photo?",
    "Do you see {c} in this image?",
]
NEGATIVE_ANSWERS = [
    "I have analyzed the image, and {c} is not present in the photo.",
    "I have analyzed the image, and I can confirm that {c} is not present in the photo.",
    "I've analyzed the image, and {c} is not present in the photo.", "No, {c} is not in this photo.",
    "I can't see {c} in this photo.",
]

_ARGS = {
    "model": Arg(str, DEFAULT_MODEL, "LLaVA in transformers format: a hub name or local folder, or 'tiny' (a tiny "
                 "random-init LLaVA built in code: tests, smoke runs)"),
    "dtype": Arg(str, Auto("bfloat16 on CUDA, float32 on CPU"), "model weights", choices=("bfloat16", "float32")),
    "max_new_tokens": Arg(int, 512, "longest reply in tokens (the authors' scripts')", low=1),
    "temperature": Arg(float, 0.0, "0: greedy; > 0 samples at that temperature, each request from its own seed "
                       "(0.2 reproduces the authors' sampling)", low=0),
    "rec_prompt": Arg(str, "authors", "recognition items: 'authors' (their test question, 'Can you see <c> in this "
                      "photo? Answer with a single word or phrase.') or 'bench' (the benchmark's own question)",
                      choices=("authors", "bench")),
}
_TRAIN_ARGS = {
    "epochs": Arg(int, 15, "training epochs (train.sh's)", low=1),
    "lr": Arg(float, 1e-3, "AdamW learning rate", above=0),
    "weight_decay": Arg(float, 1e-2, "AdamW weight decay", low=0),
    "train_batch": Arg(int, 1, "examples per optimizer step (the authors')", low=1),
    "flip_p": Arg(float, 0.5, "probability of a horizontal flip of each training image", low=0, high=1),
    "latent_tokens": Arg(int, N_LATENT, "latent tokens after <c>", low=0),
    "positives_per_photo": Arg(int, 10, "recognition questions asked of each training photo", low=1),
    "max_hard": Arg(int, None, "hard negatives at most (negative_example/ or retrieved ones; none: all of "
                    "them, as the authors: 115 for bo)", low=0),
    "max_easy": Arg(int, 100, "easy negatives at most (random images, then other concepts' photos)", low=0),
    "best_epoch": Arg(bool, False, "true: keep the epoch of highest training recognition accuracy after epoch 4 "
                      "(the authors' 'best' rule; one recognition pass per epoch); false: the last"),
    "checkpoint": Arg(Path, None, "folder of Yo'LLaVA rows to load instead of training: <epoch>-token.pt and "
                      "<epoch>-lmhead.pt (the authors' files), per concept DIR/<concept>/, DIR/<token>/ or DIR",
                      exists="dir"),
    "epoch": Arg(str, Auto("the highest numbered epoch"), "which epoch of checkpoint=DIR to load: a number or "
                 "'best'"),
}

_LOG = get_logger("method.yollava")


def get_host(model: str, device: str, seed: int, dtype: str | None) -> LlavaHost:
    """One LLaVA per (model, device, dtype) in a process: concepts share the weights."""
    return shared(("llava", model, device, dtype, seed if model == "tiny" else None),
                  lambda: LlavaHost(model, device=device, seed=seed, dtype=torch_dtype(dtype, device) if dtype else None))


def request_seed(seed: int, key: str) -> int:
    return derive_seed(seed, key) & 0x7FFFFFFF


class _LlavaMethod(ConceptLayers, Method):
    tasks = TASKS
    arguments = dict(_ARGS)

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        a = self.args
        self.model_name, self.max_new_tokens, self.temperature = a.model, a.max_new_tokens, a.temperature
        self.rec_prompt = a.rec_prompt
        self._host: LlavaHost | None = None

    @classmethod
    def check_available(cls, args):
        check_available(args.model, builtins=("tiny",), what="LLaVA checkpoint")

    @property
    def host(self) -> LlavaHost:
        if self._host is None:
            self._host = get_host(self.model_name, self.device, self.seed, self.args.dtype)
        return self._host

    def describe(self):
        return {"base_model": self.model_name, "random_init": random_init(self.model_name, ("tiny",)), "backend": self.host.describe(),
                "decoding": "greedy" if self.temperature == 0 else f"sampled, temperature {self.temperature:g}"}

    def isolation_fingerprint(self):
        return kit_rows.fingerprint(self.host)

    # Subclasses say how a question names the concept, and which rows exist while it is active
    # (concept_layers, entered by ConceptLayers.activate).
    def _user_text(self, concept: Concept, state, request) -> str:
        raise NotImplementedError

    def concept_layers(self, concept: Concept, state):
        return contextlib.nullcontext()

    def _question(self, concept: Concept, request) -> str:
        if request.task == "rec" and self.rec_prompt == "authors":
            return REC_QUESTION.format(c=concept.token)
        return request.question

    def answer(self, concept, state, requests):
        self.require_active(concept)
        examples = [(self._user_text(concept, state, r), r.image) for r in requests]
        replies: list[str | None] = []
        for i in range(0, len(examples), self.batch_size):
            chunk = requests[i:i + self.batch_size]
            replies += self.host.answer(examples[i:i + self.batch_size], self.max_new_tokens, self.temperature,
                                        [request_seed(self.seed, r.key) for r in chunk])
        return replies


class LLaVA(_LlavaMethod):
    """The base model without personalization: the concept is named by its token only ("<bo>")."""

    name = "llava"

    def _user_text(self, concept, state, request):
        return self._question(concept, request)


class LLaVAPrompt(_LlavaMethod):
    """The base model with the concept's text description in place of the token (the "+ prompt" row)."""

    name = "llava-prompt"
    arguments = {**_ARGS, "descriptions": Arg(Path, None, "a JSON file {concept: description} used instead of the "
                                                      "benchmark's (needed where a layout has none, as Yo'LLaVA's)",
                                              exists="file")}

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        self.descriptions = _read_descriptions(self.args)

    @classmethod
    def check_arguments(cls, args):
        _read_descriptions(args)

    @classmethod
    def check_run(cls, args, concepts, tasks):
        given = _read_descriptions(args)
        bare = [c.name for c in concepts if not (given.get(c.name) or c.description).strip()]
        if bare:
            # Without one the row is the plain "llava" row under another name.
            raise BenchError(f"no description for concept(s) {', '.join(bare)}: the benchmark has none for them; "
                             f"give them with --method-arg descriptions=FILE ({{concept: description}})",
                             where=f"method {cls.name}")

    def describe(self):
        given = self.args.descriptions
        source = {"file": str(given), "sha256": hashlib.sha256(given.read_bytes()).hexdigest()} if given else "benchmark"
        return {**super().describe(), "descriptions": source}

    def _user_text(self, concept, state, request):
        # As the paper's "LLaVA + Prompt": the description names the concept by its token, so the
        # question that follows is about the described subject.
        description = self.descriptions.get(concept.name) or concept.description
        return f"{description.strip()} {self._question(concept, request)}".strip()


def _read_descriptions(args) -> dict[str, str]:
    if args.descriptions is None:
        return {}
    path = args.descriptions
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError("descriptions file not found", path, "--method-arg descriptions") from None
    except (OSError, ValueError) as exc:
        raise BenchError(f"not a readable JSON file ({exc})", path, "--method-arg descriptions") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise BenchError("expected a JSON object {concept: description}", path, "--method-arg descriptions")
    return data


class YoLLaVA(_LlavaMethod, SpeedBenchHooks):
    """Yo'LLaVA: <c> + 16 latent tokens learned on LLaVA-1.5 (methods/yollava/README.md)."""

    name = "yollava"
    arguments = {**_ARGS, **_TRAIN_ARGS}

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        a = self.args
        self.epochs, self.lr, self.weight_decay, self.train_batch = a.epochs, a.lr, a.weight_decay, a.train_batch
        self.flip_p, self.n_latent, self.positives_per_photo = a.flip_p, a.latent_tokens, a.positives_per_photo
        self.max_hard, self.max_easy, self.best_epoch = a.max_hard, a.max_easy, a.best_epoch
        self.checkpoint = a.checkpoint
        self.epoch = None if a.epoch is None else a.epoch if a.epoch == "best" else str(int(a.epoch))

    @classmethod
    def check_arguments(cls, args):
        if args.epoch is not None and args.epoch != "best" and not args.epoch.strip().isdigit():
            raise BenchError(f"expected a number or 'best', got {args.epoch!r}", where="--method-arg epoch")
        if args.epoch is not None and args.checkpoint is None:
            raise BenchError("epoch=N needs checkpoint=DIR", where="--method-arg epoch")

    def describe(self):
        d = super().describe()
        d["train_args"] = None if self.checkpoint else {
            "epochs": self.epochs, "lr": self.lr, "weight_decay": self.weight_decay, "betas": [0.9, 0.999],
            "eps": 1e-8, "train_batch": self.train_batch, "flip_p": self.flip_p, "latent_tokens": self.n_latent,
            "best_epoch": self.best_epoch}
        d["checkpoint"] = str(self.checkpoint) if self.checkpoint else None
        return d

    # ------------------------------------------------------------------ tokens and prompts
    def tokens(self, concept: Concept) -> list[str]:
        return [concept.token] + [f"<token{i}>" for i in range(self.n_latent)]

    def concept_prompt(self, concept: Concept, full_stop: bool = True) -> str:
        """``<c> is <token0>…<token15>.`` as training and test-sks-qa.py write it; the recognition
        test (test-sks-acc.py) drops the final full stop."""
        tokens = self.tokens(concept)
        text = f"{tokens[0]} is {''.join(tokens[1:])}"
        return text + "." if full_stop else text

    def _user_text(self, concept, state, request):
        prompt = self.concept_prompt(concept, full_stop=request.task != "rec")
        return f"{prompt} {self._question(concept, request)}"

    def concept_layers(self, concept, state):
        return kit_rows.NewTokens(self.host, self.tokens(concept), state["rows"])

    # ------------------------------------------------------------------ training data
    def training_set(self, concept: Concept) -> tuple[list[tuple[str, Any, str]], dict]:
        """(question, image or None, answer) examples built as the authors' --recog_only --text_only
        --random_image mixture, and what went in."""
        from unifybench.data.common import training_qa

        c = concept.token
        rng = random.Random(f"{self.seed}/{concept.name}/training-set")
        examples: list[tuple[str, Any, str]] = []
        for photo in concept.train_images:
            for _ in range(self.positives_per_photo):
                examples.append((rng.choice(POSITIVE_QUESTIONS).format(c=c), photo,
                                 rng.choice(POSITIVE_ANSWERS).format(c=c)))
        n_pos = len(examples)

        def negatives(pool: list, limit: int) -> list:
            pool = sorted(dict.fromkeys(pool))
            return rng.sample(pool, limit) if len(pool) > limit else pool

        hard = negatives(concept.hard_negatives, len(concept.hard_negatives) if self.max_hard is None
                         else self.max_hard)
        easy = negatives([p for p in concept.easy_negatives if p not in set(hard)], self.max_easy)
        for photo in hard + easy:
            examples.append((rng.choice(NEGATIVE_QUESTIONS).format(c=c), photo, rng.choice(NEGATIVE_ANSWERS).format(c=c)))
        # The authors' default mixture (--recog_only --text_only) has no image conversations: a
        # conversation about a photo is skipped rather than asked without it.
        conversations = training_qa(concept)
        text_only = [(q, None, a) for q, image, a in conversations if image is None]
        if concept.description:
            text_only.append((f"What does {c} look like?", None, concept.description))
        text_only += [(f"Tell me something about {c}.", None, fact) for fact in concept.extra_facts]
        examples += text_only
        counts = {"positives": n_pos, "positive_photos": len(concept.train_images), "hard_negatives": len(hard),
                  "hard_available": len(concept.hard_negatives), "easy_negatives": len(easy),
                  "easy_available": len(concept.easy_negatives), "text_only": len(text_only),
                  "image_conversations_skipped": sum(1 for _, image, _ in conversations if image is not None),
                  "total": len(examples)}
        return examples, counts

    # ------------------------------------------------------------------ personalization
    def personalize(self, concept, state_dir):
        state_dir = Path(state_dir)
        if self.checkpoint is not None:
            rows, source, epoch = self._from_checkpoint(concept)
            write_json_atomic(state_dir / "checkpoint.json", {"source": source, "epoch": epoch,
                                                              "rows": len(rows["embed"])})
            return {"rows": rows}
        meta = _read_meta(state_dir)
        if not (meta and meta.get("finished")):  # an interrupted training resumes after its last epoch
            self._train(concept, state_dir)
        return self._saved(concept, state_dir)

    def load_state(self, concept, state_dir):
        if self.checkpoint is not None:
            return {"rows": self._from_checkpoint(concept)[0]}
        return self._saved(concept, Path(state_dir))

    # ------------------------------------------------------------------ speed hooks (SpeedBenchHooks)
    @classmethod
    def bench_arguments(cls, device_type, given):
        return {"model": "tiny"}  # a 13B LLaVA with random weights would measure nothing worth its memory

    def bench_personalize_costs(self, state_dir):
        meta = _read_meta(Path(state_dir)) or {}
        return {"train": {**training_costs(meta), "training_set": meta.get("training_set")}}

    def _saved(self, concept: Concept, state_dir: Path) -> dict:
        meta = _read_meta(state_dir) or {}
        return {"rows": load_yollava_rows(state_dir, str(meta.get("selected_epoch")), self.host.hidden_size,
                                          len(self.tokens(concept)))[0]}

    def _init_rows(self, concept: Concept) -> dict[str, torch.Tensor]:
        """New rows start as the authors' resize leaves them: drawn from N(0, initializer_range), here
        from a generator seeded by (seed, concept)."""
        g = torch.Generator().manual_seed(derive_seed(self.seed, concept.name, "init"))
        n, d = len(self.tokens(concept)), self.host.hidden_size
        std = self.host.initializer_range
        return {"embed": torch.randn(n, d, generator=g) * std, "head_weight": torch.randn(n, d, generator=g) * std,
                "head_bias": torch.zeros(n)}

    def _train(self, concept: Concept, state_dir: Path) -> None:
        host = self.host
        examples, counts = self.training_set(concept)
        prompt = self.concept_prompt(concept)
        init = self._init_rows(concept)
        rng = random.Random(f"{self.seed}/{concept.name}/order")
        flips = torch.Generator().manual_seed(derive_seed(self.seed, concept.name, "flips"))
        resume_key = {"train_args": self.describe()["train_args"], "training_set": counts, "base_model": self.model_name,
                      "seed": self.seed}
        with kit_rows.NewTokens(host, self.tokens(concept), init) as ids:
            trainer = kit_rows.RowTrainer(host, ids, lr=self.lr, weight_decay=self.weight_decay, eps=1e-8, init=init)
            try:
                loop = EpochLoop(state_dir, resume_key, self.epochs, trainer=trainer,
                                 generators={"order": rng, "flips": flips},
                                 record={"losses": [], "checks": [], "best": [-1.0, None]})
                if loop.resumed_after is not None:
                    _LOG.info(f"resuming {concept.name} after epoch {loop.start}/{self.epochs}")
                record = loop.record
                for epoch in loop:
                    order = list(range(len(examples)))
                    rng.shuffle(order)
                    total, steps = 0.0, 0
                    for k in range(0, len(order), self.train_batch):
                        batch = [examples[i] for i in order[k:k + self.train_batch]]
                        flip = (torch.rand(len(batch), generator=flips) < self.flip_p).tolist()
                        users = [(f"{prompt} {q}", image, a) for q, image, a in batch]
                        total += trainer.step(host.loss(users, flip))
                        steps += 1
                        self.progress(f"epoch {epoch + 1}/{self.epochs}", epoch * len(order) + k + len(batch),
                                      self.epochs * len(order))
                    rows = trainer.exact_rows(ids, init)
                    save_yollava_rows(state_dir, str(epoch), rows)
                    record["losses"].append({"epoch": epoch, "loss": total / max(steps, 1), "steps": steps})
                    _LOG.info(f"epoch {epoch + 1}/{self.epochs}: loss {total / max(steps, 1):.4f}")
                    if self.best_epoch:
                        acc = self._recognition_check(concept, examples)
                        record["checks"].append({"epoch": epoch, **acc})
                        if epoch > 4 and acc["weighted"] >= record["best"][0]:
                            record["best"] = [acc["weighted"], epoch]
                            save_yollava_rows(state_dir, "best", rows)
                    loop.epoch_done(epoch)
            finally:
                trainer.close()
        best = record["best"][1]
        selected = "best" if self.best_epoch and best is not None else str(self.epochs - 1)
        loop.finish(state_dir / "yollava.json", {
            "format": "yollava-rows/1", "tokens": self.tokens(concept), "base_model": self.model_name,
            "backend": host.describe(), "train_args": self.describe()["train_args"], "training_set": counts,
            "concept_prompt": prompt, "init": "N(0, initializer_range), seeded by (seed, concept)",
            "losses": record["losses"], "recognition_checks": record["checks"], "best_epoch": best,
            "selected_epoch": selected, "seconds": loop.seconds()})

    @torch.no_grad()
    def _recognition_check(self, concept: Concept, examples) -> dict:
        """The authors' per-epoch check: every training image once, their check question, the exact
        reply 'Yes' or 'No' compared with whether the image is the concept."""
        positives = set(concept.train_images)
        images = list(dict.fromkeys(img for _, img, _ in examples if img is not None))
        user = f"{self.concept_prompt(concept)} {CHECK_QUESTION.format(c=concept.token)}"
        replies = []
        for i in range(0, len(images), self.batch_size):
            replies += self.host.answer([(user, im) for im in images[i:i + self.batch_size]], 8)
        yes = [r == "Yes" for im, r in zip(images, replies) if im in positives]
        no = [r == "No" for im, r in zip(images, replies) if im not in positives]
        rates = [sum(v) / len(v) for v in (yes, no) if v]
        return {"positive": sum(yes) / len(yes) if yes else None, "negative": sum(no) / len(no) if no else None,
                "weighted": sum(rates) / len(rates) if rates else 0.0}

    def _from_checkpoint(self, concept: Concept) -> tuple[dict, str, str]:
        base = concept_folder(self.checkpoint, concept, lambda folder: bool(yollava_epochs(folder)),
                              "<epoch>-token.pt files")
        numbered = [e for e in yollava_epochs(base) if e != "best"]
        epoch = self.epoch or (str(max(numbered)) if numbered else "best")
        rows, used = load_yollava_rows(base, epoch, self.host.hidden_size, len(self.tokens(concept)))
        return rows, str(base), used


# ----------------------------------------------------------------------------- the authors' files
# ``<epoch>-token.pt`` / ``<epoch>-lmhead.pt`` (float32 ``[17, d]``, epochs from 0), as the authors'
# script saves them: the kit's format, shared with Yo'Chameleon.
save_yollava_rows = save_token_rows
yollava_epochs = token_row_epochs


def load_yollava_rows(folder: Path, epoch: str, width: int, n_rows: int) -> tuple[dict, str]:
    return load_token_rows(folder, epoch, width, n_rows, "<c> + latent tokens"), epoch


def _read_meta(folder: Path) -> dict | None:
    meta = read_json(folder / "yollava.json")
    return meta if isinstance(meta, dict) else None

