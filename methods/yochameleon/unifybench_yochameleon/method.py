"""The ``yochameleon`` method: Yo'Chameleon (Nguyen et al., CVPR 2025; ``thaoshibe/YoChameleon``) on
Chameleon / Anole-7B through transformers.

A concept is an identifier (``<reserved16200>``) and latent tokens from ``<reserved16201>``: with
"self-prompting" (their configuration), 16 generation tokens then 16 understanding tokens, and the
concept prompt ``<sks> is <gen…><und…>.`` before every question and prompt. Understanding answers
are trained to begin with the understanding tokens; image answers follow ``A photo of <sks>.``; when
drawing, the generation tokens are written after the end of turn. Only the identifier's and the latent
tokens' rows of the input embedding and of ``lm_head`` train (AdamW 1e-3, weight decay 1e-4, eps 1e-6,
batches of 4, 16 epochs). ``methods/yochameleon/README.md`` says what is faithful and what differs.
"""
from __future__ import annotations

import random
from pathlib import Path

import torch

from unifybench.kit import rows as kit_rows
from unifybench.bench.hooks import SpeedBenchHooks
from unifybench.errors import BenchError
from unifybench.kit.args import Arg, Auto
from unifybench.kit.batching import draw_in_calls
from unifybench.kit.epochs import load_token_rows, save_token_rows, training_costs
from unifybench.kit.files import read_json
from unifybench.kit.models import check_available, kind_of, random_init, shared, torch_dtype
from unifybench.kit.rows import EpochLoop
from unifybench.logs import get_logger
from unifybench.methods import ConceptLayers, Method
from unifybench.records import Concept
from unifybench.seeding import derive_seed

from .chameleon import (DEFAULT_MODEL, END_OF_TURN, IDENTIFIER, IMAGE, LATENT_START, RANDOM_MODELS, ChameleonHost,
                        reserved)

# Recognition phrasings in the style of their template (create_training_data/conversation_data/
# template-answer/recognition-chameleon.json holds 30 of each; these are ours, not copied).
POSITIVE_QUESTIONS = [
    "Is {c} in this photo?", "Can you tell if {c} appears in this picture?", "Do you see {c} in this image?",
    "Could you check whether {c} is in the image?", "Can you see {c} in this photo?", "Is {c} visible in this photo?",
    "Does this photo include {c}?", "Is {c} present in this particular photo?",
]
POSITIVE_ANSWERS = [
    "Yes, {c} is in this photo.", "Yes, {c} is in the picture.", "Yes, I can see {c} in the image.",
    "Yes, {c} appears in this photo.", "Yes, this photo includes {c}.",
]
NEGATIVE_QUESTIONS = POSITIVE_QUESTIONS
NEGATIVE_ANSWERS = [
    "No, {c} is not in this photo.", "No, {c} is not in the picture.", "No, I cannot see {c} in the image.",
    "No, I have analyzed the image, and {c} is not present in the photo.", "No, this photo does not include {c}.",
]
# The recognition question of their evaluation: RecognitionData_SelfPrompting's, and RecognitionData's
# without self-prompting (which also writes an end of turn before the processor's own).
REC_QUESTION = "Is {c} in this photo?"
REC_QUESTION_ONE_SET = "Can you see {c} in this photo?"

_ARGS = {
    "model": Arg(str, DEFAULT_MODEL, "Chameleon in transformers format with the VQGAN decoder's weights (Anole's "
                 "checkpoint keeps them): a hub name or local folder, 'tiny' (a tiny random-init Chameleon built "
                 "in code: tests, smoke runs) or 'random' (Chameleon-7B's sizes, random weights: speed figures)"),
    "vqgan": Arg(Path, Auto("the checkpoint's own decoder weights"), "Chameleon's vqgan.ckpt (or a .safetensors "
                 "with its decoder.* names), for a checkpoint without decoder weights", exists="file"),
    "dtype": Arg(str, Auto("bfloat16 on CUDA, float32 on CPU"), "model weights", choices=("bfloat16", "float32")),
    "latent_tokens": Arg(int, 16, "latent tokens per task (their prefix_token): with self-prompting that many "
                         "generation tokens and as many understanding tokens", low=1, high=32),
    "self_prompting": Arg(bool, True, "their configuration: separate generation and understanding tokens, the "
                          "understanding tokens trained into every answer and the generation tokens written "
                          "before an image; false: one set of latent tokens for both"),
    "max_new_tokens": Arg(int, 200, "longest reply in tokens to an open question (their trainer's description "
                          "prompt and test script's)", low=1),
    "rec_max_new_tokens": Arg(int, 30, "longest reply in tokens to a recognition question (their trainer's "
                              "eval_recognition)", low=1),
    "rec_prompt": Arg(str, "authors", "recognition items: 'authors' (their evaluation's question, 'Is <c> in this "
                      "photo?') or 'bench' (the benchmark's own question)", choices=("authors", "bench")),
    "top_k": Arg(int, 50, "image tokens: sample among the k most likely (transformers' default, which their "
                 "generate call keeps); 0: all", low=0),
    "temperature": Arg(float, 1.0, "image tokens: sampling temperature", above=0),
    "gen_batch": Arg(int, 4, "images per call (one request's images per call, in fixed slots)", low=1),
}
_TRAIN_ARGS = {
    "epochs": Arg(int, 16, "training epochs (their released config/basic.yaml)", low=1),
    "lr": Arg(float, 1e-3, "AdamW learning rate", above=0),
    "weight_decay": Arg(float, 1e-4, "AdamW weight decay", low=0),
    "train_batch": Arg(int, 4, "conversations per optimizer step", low=1),
    "flip_p": Arg(float, 0.5, "probability of a horizontal flip of each training image", low=0, high=1),
    "positive_photos": Arg(int, 5, "training photos asked about in recognition (their limit_positive)", low=1),
    "max_negatives": Arg(int, 100, "hard negatives at most, and easy negatives at most (their limit_negative); "
                         "the positives are repeated to twice this", low=0),
    "gen_photos": Arg(int, 4, "training photos used as image answers (their script's first 4)", low=1),
    "gen_repeats": Arg(int, 67, "image-generation conversations, the photos repeated in turn (their script gives "
                       "the real photos the size of one soft-positive part: 67)", low=1),
}

_LOG = get_logger("method.yochameleon")


def get_host(model: str, device: str, seed: int, dtype: str | None, vqgan: Path | None) -> ChameleonHost:
    """One Chameleon per (model, device, dtype, decoder) in a process: concepts share the weights."""
    return shared(("chameleon", model, device, dtype, str(vqgan), seed if model in RANDOM_MODELS else None),
                  lambda: ChameleonHost(model, device=device, seed=seed, vqgan=vqgan,
                                        dtype=torch_dtype(dtype, device) if dtype else None))


class YoChameleon(ConceptLayers, Method, SpeedBenchHooks):
    """Yo'Chameleon: an identifier and self-prompting latent tokens learned on Anole-7B."""

    name = "yochameleon"
    tasks = frozenset({"rec", "vqa", "text_only", "choice", "caption", "gen", "attr_gen"})
    arguments = {**_ARGS, **_TRAIN_ARGS}

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        self.model_name = self.args.model
        self._host: ChameleonHost | None = None

    @classmethod
    def check_available(cls, args):
        check_available(args.model, builtins=RANDOM_MODELS, what="Chameleon checkpoint")

    @classmethod
    def check_run(cls, args, concepts, tasks):
        bare = [c.name for c in concepts if not c.train_images]
        if bare:
            raise BenchError(f"no training photos for concept(s) {', '.join(bare)}", where=f"method {cls.name}")
        if {"gen", "attr_gen"} & set(tasks) and args.vqgan is None and kind_of(args.model, RANDOM_MODELS) == "folder":
            # Found before training, not when the first image is drawn hours later.
            from .vqgan import NO_DECODER, has_checkpoint_decoder

            folder = Path(args.model).expanduser()
            if not has_checkpoint_decoder(folder):
                raise BenchError(NO_DECODER, folder, "--method-arg model")

    @property
    def host(self) -> ChameleonHost:
        if self._host is None:
            a = self.args
            self._host = get_host(self.model_name, self.device, self.seed, a.dtype, a.vqgan)
            missing = [t for t in self.tokens() if not self._host.has_token(t)]
            if missing:
                raise BenchError(f"the checkpoint's tokenizer has no {missing[0]} (Yo'Chameleon's tokens are "
                                 f"Chameleon's reserved ones)", where="--method-arg model")
        return self._host

    def describe(self):
        a = self.args
        return {"base_model": self.model_name, "random_init": random_init(self.model_name, RANDOM_MODELS),
                "backend": self.host.describe(), "tokens": self.tokens(),
                "image_sampling": {"top_k": a.top_k, "temperature": a.temperature, "gen_batch": a.gen_batch},
                "train_args": {"epochs": a.epochs, "lr": a.lr, "weight_decay": a.weight_decay, "betas": [0.9, 0.999],
                               "eps": 1e-6, "train_batch": a.train_batch, "flip_p": a.flip_p,
                               "latent_tokens": a.latent_tokens, "self_prompting": a.self_prompting}}

    def isolation_fingerprint(self):
        return kit_rows.fingerprint(self.host)

    # ------------------------------------------------------------------ tokens and prompts
    def tokens(self) -> list[str]:
        """The identifier, then the latent tokens (generation ones first with self-prompting)."""
        n = self.args.latent_tokens * (2 if self.args.self_prompting else 1)
        return [reserved(IDENTIFIER)] + [reserved(LATENT_START + i) for i in range(n)]

    def generation_prompt(self) -> str:
        return "".join(self.tokens()[1:1 + self.args.latent_tokens]) if self.args.self_prompting else ""

    def understanding_prompt(self) -> str:
        return "".join(self.tokens()[1 + self.args.latent_tokens:]) if self.args.self_prompting else ""

    def concept_prompt(self) -> str:
        tokens = self.tokens()
        return f"{tokens[0]} is {''.join(tokens[1:])}."

    def _named(self, concept: Concept, text: str) -> str:
        """Benchmark text with the concept named by the identifier; a literal ``<image>`` in it is
        text, not a photo slot, so it is dropped (the photo's place is ours to choose)."""
        return text.replace(IMAGE, "").replace(concept.token, reserved(IDENTIFIER))

    # ------------------------------------------------------------------ answers and images
    def answer(self, concept, state, requests):
        self.require_active(concept)
        replies: list[str | None] = []
        # Training teaches replies that begin with the understanding tokens and name the concept by the
        # identifier: the latent tokens are removed, the identifier is written as the concept's token.
        latent, rename = self.tokens()[1:], {reserved(IDENTIFIER): concept.token}
        for r in requests:
            theirs = r.task == "rec" and self.args.rec_prompt == "authors"
            if theirs:
                template = REC_QUESTION if self.args.self_prompting else REC_QUESTION_ONE_SET
                question = template.format(c=reserved(IDENTIFIER))
            else:
                question = self._named(concept, r.question)
            # As their training data and evaluation: the concept prompt, the question, then the photo.
            text = f"{self.concept_prompt()} {question}{IMAGE if r.image is not None else ''}"
            if theirs and not self.args.self_prompting:
                text += END_OF_TURN
            longest = self.args.rec_max_new_tokens if r.task == "rec" else self.args.max_new_tokens
            replies.append(self.host.answer(text, r.image, longest, drop=latent, rename=rename))
        return replies

    def image_prompt(self, concept: Concept, prompt: str) -> str:
        return self.drawing_text(self._named(concept, prompt))

    def drawing_text(self, body: str) -> str:
        """Their evaluation's drawing prompt: ``<sks> is <…>. {body}`` (a full stop added when it has
        none), an end of turn, then, self-prompting, the generation tokens (the processor's end of
        turn follows in both modes)."""
        body = body.strip()
        if body and body[-1] not in ".!?":
            body += "."
        return f"{self.concept_prompt()} {body}{END_OF_TURN}{self.generation_prompt()}"

    def generate(self, concept, state, requests):
        self.require_active(concept)
        a = self.args
        result = []
        for r in requests:
            text = self.image_prompt(concept, r.prompt)
            result.append(draw_in_calls(r.image_seeds(), a.gen_batch, lambda call: self.host.draw(
                text, call, top_k=a.top_k, temperature=a.temperature)[0]))
        return result

    # ------------------------------------------------------------------ training data
    def training_set(self, concept: Concept) -> tuple[list[tuple[str, str, list]], dict]:
        """(human, bot, images) conversations built as their data scripts and self-prompting dataset
        build them, and what went in."""
        from unifybench.data.common import training_qa

        a = self.args
        sks = reserved(IDENTIFIER)
        und = self.understanding_prompt()
        prompt = self.concept_prompt()
        rng = random.Random(f"{self.seed}/{concept.name}/training-set")

        def understanding(question: str, answer: str, images: list) -> tuple[str, str, list]:
            return f"{prompt} {question}", f"{und}{answer}", images

        photos = list(concept.train_images)[:a.positive_photos]
        # create_conversation.py: hard negatives, the positives repeated (2 x limit // n + 1) times, easy ones.
        positives = photos * (2 * a.max_negatives // len(photos) + 1)
        hard = list(concept.hard_negatives)[:a.max_negatives]
        easy = [p for p in concept.easy_negatives if p not in set(hard)][:a.max_negatives]
        out = []
        for photo in hard:
            out.append(understanding(rng.choice(NEGATIVE_QUESTIONS).format(c=sks) + IMAGE,
                                     rng.choice(NEGATIVE_ANSWERS).format(c=sks), [photo]))
        for photo in positives:
            out.append(understanding(rng.choice(POSITIVE_QUESTIONS).format(c=sks) + IMAGE,
                                     rng.choice(POSITIVE_ANSWERS).format(c=sks), [photo]))
        for photo in easy:
            out.append(understanding(rng.choice(NEGATIVE_QUESTIONS).format(c=sks) + IMAGE,
                                     rng.choice(NEGATIVE_ANSWERS).format(c=sks), [photo]))
        # Text conversations (their text_conversation.json): the benchmark's text-only ones.
        conversations = training_qa(concept)
        text = [(self._named(concept, q), self._named(concept, ans)) for q, image, ans in conversations if image is None]
        if concept.description:
            text.append((f"What does {sks} look like?", self._named(concept, concept.description)))
        text += [(f"Tell me something about {sks}.", self._named(concept, fact)) for fact in concept.extra_facts]
        out += [understanding(q, ans, []) for q, ans in text]
        # Image generation (1000.json's real-photo part): "A photo of <sks>." answered by the photo.
        gen_photos = list(concept.train_images)[:a.gen_photos]
        gen = [gen_photos[i % len(gen_photos)] for i in range(a.gen_repeats)]
        out += [(f"{prompt} A photo of {sks}.", IMAGE, [photo]) for photo in gen]
        counts = {"positives": len(positives), "positive_photos": len(photos), "hard_negatives": len(hard),
                  "hard_available": len(concept.hard_negatives), "easy_negatives": len(easy),
                  "easy_available": len(concept.easy_negatives), "text": len(text),
                  "image_conversations_skipped": sum(1 for _, image, _ in conversations if image is not None),
                  "image_generation": len(gen), "total": len(out)}
        return out, counts

    # ------------------------------------------------------------------ personalization
    def personalize(self, concept, state_dir):
        state_dir = Path(state_dir)
        meta = _read_meta(state_dir)
        if not (meta and meta.get("finished")):  # an interrupted training resumes after its last epoch
            self._train(concept, state_dir)
        return self.load_state(concept, state_dir)

    def load_state(self, concept, state_dir):
        meta = _read_meta(Path(state_dir)) or {}
        if not meta.get("finished"):
            raise BenchError("training did not finish here (no finished yochameleon.json)", Path(state_dir))
        return {"rows": load_token_rows(Path(state_dir), str(meta["selected_epoch"]), self.host.hidden_size,
                                        len(self.tokens()), "identifier + latent tokens")}

    def concept_layers(self, concept, state):
        return kit_rows.NewTokens(self.host, self.tokens(), state["rows"])

    def _init_rows(self, concept: Concept) -> dict[str, torch.Tensor]:
        """Reserved tokens are trained from the rows the checkpoint gives them (their code starts from
        the model's own rows), in float32."""
        ids = [self.host.tokenizer.convert_tokens_to_ids(t) for t in self.tokens()]
        return kit_rows.get_rows(self.host, ids)

    def _train(self, concept: Concept, state_dir: Path) -> None:
        a = self.args
        host = self.host
        examples, counts = self.training_set(concept)
        init = self._init_rows(concept)
        rng = random.Random(f"{self.seed}/{concept.name}/order")
        flips = torch.Generator().manual_seed(derive_seed(self.seed, concept.name, "flips"))
        resume_key = {"train_args": self.describe()["train_args"], "training_set": counts, "base_model": self.model_name,
                      "seed": self.seed}
        with kit_rows.NewTokens(host, self.tokens(), init) as ids:
            trainer = kit_rows.RowTrainer(host, ids, lr=a.lr, weight_decay=a.weight_decay, eps=1e-6, init=init)
            try:
                loop = EpochLoop(state_dir, resume_key, a.epochs, trainer=trainer,
                                 generators={"order": rng, "flips": flips}, record={"losses": []})
                if loop.resumed_after is not None:
                    _LOG.info(f"resuming {concept.name} after epoch {loop.start}/{a.epochs}")
                losses = loop.record["losses"]
                for epoch in loop:
                    order = list(range(len(examples)))
                    rng.shuffle(order)
                    total, steps = 0.0, 0
                    for k in range(0, len(order), a.train_batch):
                        batch = [examples[i] for i in order[k:k + a.train_batch]]
                        chosen = (torch.rand(len(batch), generator=flips) < a.flip_p).tolist()
                        convs = [(human, bot, images, [flip] * len(images))
                                 for (human, bot, images), flip in zip(batch, chosen)]
                        total += trainer.step(host.loss(convs))
                        steps += 1
                        self.progress(f"epoch {epoch + 1}/{a.epochs}", epoch * len(order) + k + len(batch),
                                      a.epochs * len(order))
                    save_token_rows(state_dir, str(epoch + 1), trainer.exact_rows(ids, init))
                    losses.append({"epoch": epoch + 1, "loss": total / max(steps, 1), "steps": steps})
                    _LOG.info(f"epoch {epoch + 1}/{a.epochs}: loss {total / max(steps, 1):.4f}")
                    loop.epoch_done(epoch)
            finally:
                trainer.close()
        loop.finish(state_dir / "yochameleon.json", {
            "format": "yochameleon-rows/1", "tokens": self.tokens(), "base_model": self.model_name,
            "backend": host.describe(), "train_args": self.describe()["train_args"], "training_set": counts,
            "concept_prompt": self.concept_prompt(), "init": "the checkpoint's own rows of the reserved tokens",
            "losses": losses, "selected_epoch": a.epochs, "seconds": loop.seconds()})

    # ------------------------------------------------------------------ speed hooks (SpeedBenchHooks)
    @classmethod
    def bench_arguments(cls, device_type, given):
        return {"model": "random" if device_type == "cuda" else "tiny"}

    def bench_generation(self, options):
        from .speed import bench_generation

        return bench_generation(self, options)

    def bench_personalize_costs(self, state_dir):
        meta = _read_meta(Path(state_dir)) or {}
        return {"train": {**training_costs(meta), "training_set": meta.get("training_set")}}


# ----------------------------------------------------------------------------- files
# After each epoch ``<epoch>-token.pt`` / ``<epoch>-lmhead.pt`` (float32 ``[33, d]``): the authors'
# ``save_checkpoint`` names, the kit's format.


def _read_meta(folder: Path) -> dict | None:
    meta = read_json(folder / "yochameleon.json")
    return meta if isinstance(meta, dict) else None

