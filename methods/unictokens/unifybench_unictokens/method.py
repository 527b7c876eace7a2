"""The ``unictokens`` and ``text-prompt`` methods: UniCTokens through the harness's Method interface."""
from __future__ import annotations

import contextlib
from pathlib import Path


import torch

from unifybench.kit import rows as kit_rows
from unifybench.bench.hooks import SpeedBenchHooks
from unifybench.errors import BenchError
from unifybench.kit.batching import call_size, padded_calls
from unifybench.logs import get_logger
from unifybench.kit.args import Arg, Auto, Derived
from unifybench.kit.checkpoints import concept_folder
from unifybench.kit.files import write_json_atomic
from unifybench.kit.models import check_all_available, on_cuda, random_init, shared
from unifybench.methods import ConceptLayers, Method
from unifybench.records import TASKS, Concept
from unifybench.data.common import concept_phrase

from .backend import TextExample
from .magvit import DEFAULT_VQ
from .showo_backend import DEFAULT_TOKENIZER
from .stages import (TRANSITION_RULES, ConceptData, Personalizer, TokenGroups, TrainConfig, checkpoint_epochs,
                     load_rows, read_meta)

BACKEND_DEFAULTS = {
    # backend: (default model, reply length, transition rule, transition images)
    "showo": ("showlab/show-o-512x512", 100, "late_change", 20),
    "janus": ("deepseek-community/Janus-Pro-1B", 64, "lowest_prob", 8),
}
RANDOM_MODELS = {"showo": "random", "janus": "random-1b"}

_SHOWO_ONLY = ("vq_model", "tokenizer", "llm_config", "steps")
_STAGES = TrainConfig()  # the authors' settings: the defaults below are read from it


def _by_backend(index: int, what: str) -> Derived:
    """A default that depends on the backend, read from BACKEND_DEFAULTS."""
    return Derived(lambda a: BACKEND_DEFAULTS[a.backend][index],
                   ", ".join(f"{BACKEND_DEFAULTS[b][index]} on {b}" for b in BACKEND_DEFAULTS) + what)


def _showo_only(value, text: str) -> Derived:
    return Derived(lambda a: value if a.backend == "showo" else None, f"{text} on showo")


def _per_stage(values: tuple) -> str:
    return "the authors' " + ", ".join(f"{v:g}" for v in values) + " for stages 1, 2, 3"


_COMMON_ARGS = {
    "backend": Arg(str, "showo", "the unified model: showo (Show-o, the paper's backbone) or janus (Janus-Pro)",
                   choices=tuple(BACKEND_DEFAULTS)),
    "model": Arg(str, _by_backend(0, ""), "base model: a hub name or local folder in the hub's layout, 'tiny' (a "
                 "tiny random-init model built in code: tests, smoke runs), or 'random' on showo / 'random-1b' on "
                 "janus (full-size, random init: speed only)"),
    "vq_model": Arg(str, _showo_only(DEFAULT_VQ, DEFAULT_VQ), "showo: MAGVIT-v2, a hub name or local folder"),
    "tokenizer": Arg(str, _showo_only(DEFAULT_TOKENIZER, DEFAULT_TOKENIZER),
                     "showo: the Phi tokenizer, a hub name or local folder"),
    "llm_config": Arg(Path, Auto("Phi-1.5's sizes, or those the model folder's config.json names"),
                      "showo: a folder with the Phi config.json of a Show-o of other sizes", exists="dir"),
    "steps": Arg(int, _showo_only(50, "50"), "showo: MaskGIT steps per image", low=1),
    "guidance": Arg(float, 5.0, "classifier-free guidance scale for image generation", low=0),
    "temperature": Arg(float, 1.0, "sampling temperature for image codes", above=0),
    "max_new_tokens": Arg(int, _by_backend(1, " (showo: the authors' eval)"), "longest text reply in tokens",
                          low=1),
    "gen_batch": Arg(int, Auto("32 on CUDA, 4 on CPU"), "most images of one request drawn in one call (a call never "
                     "mixes requests, so no image depends on what it is requested with)", low=1),
    "dtype": Arg(str, Auto("bfloat16 on CUDA, float32 on CPU"), "model weights (MAGVIT-v2 stays float32)",
                 choices=("bfloat16", "float32")),
}

_TRAIN_ARGS = {
    "checkpoint": Arg(Path, None, "folder of public-format rows (epoch_<N>_embed.pt, ...) to load instead of "
                      "training, such as the authors' saves/<concept>/<name>/; per concept DIR/<concept>/ or DIR "
                      "itself, each optionally with stage3/, stage2/, stage1/", exists="dir"),
    "epoch": Arg(int, Auto("the highest found"), "which epoch of checkpoint=DIR to load", low=0),
    "lr": Arg(float, _STAGES.lr, "AdamW learning rate", above=0),
    "weight_decay": Arg(float, Derived(lambda a: _STAGES.weight_decay, _per_stage(_STAGES.weight_decay)),
                        "AdamW weight decay of every stage", low=0),
    "epochs": Arg(int, _STAGES.epochs_stage1, "epochs of every stage; epochs_stage1/2/3 override one stage", low=1),
    "epochs_stage1": Arg(int, Derived(lambda a: a.epochs, "epochs"), "epochs of stage 1", low=1),
    "epochs_stage2": Arg(int, Derived(lambda a: a.epochs, "epochs"), "epochs of stage 2", low=1),
    "epochs_stage3": Arg(int, Derived(lambda a: a.epochs, "epochs"), "epochs of stage 3", low=1),
    "stage2_init_epoch": Arg(int, _STAGES.stage2_init_epoch, "stage 1 epoch that stage 2 starts from (clamped to "
                             "stage 1's epochs)", low=0),
    "image_weight": Arg(float, _STAGES.image_weight, "weight of the image-token loss in stages 2 and 3", low=0),
    "text_weight": Arg(float, _STAGES.text_weight, "weight of the text loss in stages 2 and 3", low=0),
    "train_batch": Arg(int, Derived(lambda a: _STAGES.train_batch, _per_stage(_STAGES.train_batch)),
                       "examples per optimizer step in every stage", low=1),
    "augment": Arg(bool, _STAGES.augment, "stages 2 and 3 draw the authors' random crop and flip of the generation "
                   "photos each epoch (Show-o only)"),
    "kmeans_seed": Arg(int, _STAGES.kmeans_seed, "seed of the k-means initialisations", low=0),
    "transition_images": Arg(int, _by_backend(3, " (showo: the authors')"), "images generated for the transition",
                             low=1),
    "transition_rule": Arg(str, _by_backend(2, ""), "how the transition picks uncertain positions: late_change (the "
                           "paper's: where the MaskGIT prediction at transition_step differs from the final code) or "
                           "lowest_prob (the least probable codes, the only one autoregressive decoding supports)",
                           choices=tuple(TRANSITION_RULES)),
    "transition_step": Arg(int, _STAGES.transition_step, "late_change: the MaskGIT step compared with the final codes",
                           low=1),
    "transition_fraction": Arg(float, _STAGES.transition_fraction, "lowest_prob: share of each image's positions "
                               "taken as least sure", above=0, high=1),
    "face_init": Arg(str, "auto", "human concepts' generation-token init from the face identity embedding: auto "
                     "(InsightFace when the face extra is installed, else k-means), off, or random/tiny (stand-ins, "
                     "tests)", choices=("auto", "off", "default", "random", "tiny")),
}

_LOG = get_logger("method.unictokens")


def get_backend(backend: str, model: str, device: str, seed: int, dtype: str | None = None, **extra):
    """One backend per (backend, model, its files, device, dtype) in a process: concepts share the weights."""
    random_weights = random_init(model, ("tiny", RANDOM_MODELS[backend]))
    key = ("unictokens", backend, model, tuple(sorted(extra.items())), device, dtype, seed if random_weights else None)

    def load():
        torch_dtype = getattr(torch, dtype) if dtype else None
        if backend == "showo":
            from .showo_backend import ShowoBackend

            return ShowoBackend(model, device=device, seed=seed, dtype=torch_dtype, **extra)
        from .janus_backend import JanusBackend

        return JanusBackend(model, device=device, seed=seed, dtype=torch_dtype)
    return shared(key, load)


class _UnifiedMethod(ConceptLayers, Method, SpeedBenchHooks):
    tasks = frozenset(TASKS)

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        a = self.args
        self.backend_name, self.model_name = a.backend, a.model
        self.backend_extra: dict = {k: (str(a[k]) if k == "llm_config" else a[k]) for k in _SHOWO_ONLY
                                    if a[k] is not None}
        self.guidance, self.temperature, self.max_new_tokens = a.guidance, a.temperature, a.max_new_tokens
        self.gen_batch = a.gen_batch or (32 if on_cuda(self.device) else 4)
        self._backend = None

    @classmethod
    def check_arguments(cls, args):
        for key in _SHOWO_ONLY:
            if key in args.given and args.backend != "showo":
                raise BenchError("only the showo backend takes it", where=f"--method-arg {key}")

    @classmethod
    def check_available(cls, args):
        builtins = ("tiny", RANDOM_MODELS[args.backend])
        checks = [dict(name=args.model, builtins=builtins, what=f"{args.backend} model")]
        if args.backend == "showo" and args.model not in builtins:
            checks += [dict(name=args.vq_model, builtins=("tiny", "random"), argument="vq_model", what="MAGVIT-v2"),
                       dict(name=args.tokenizer, argument="tokenizer", what="tokenizer")]
        check_all_available(*checks)

    @property
    def backend(self):
        if self._backend is None:
            self._backend = get_backend(self.backend_name, self.model_name, self.device, self.seed,
                                        self.args.dtype, **self.backend_extra)
        return self._backend

    def describe(self):
        return {"base_model": self.model_name, "backend_name": self.backend_name,
                "random_init": random_init(self.model_name, ("tiny", RANDOM_MODELS[self.backend_name])),
                "backend": self.backend.describe(), "gen_batch": self.gen_batch}

    # ------------------------------------------------------------------ speed hooks (SpeedBenchHooks)
    @classmethod
    def bench_arguments(cls, device_type, given):
        backend = given.get("backend", "showo")
        return {"model": RANDOM_MODELS.get(backend, "random") if device_type == "cuda" else "tiny"}

    def bench_generation(self, options):
        from .speed import bench_janus, bench_showo

        return bench_showo(self, options) if self.backend_name == "showo" else bench_janus(self, options)

    # Subclasses say how the concept is named in questions and prompts.
    def _question(self, concept: Concept, state, question: str) -> str:
        raise NotImplementedError

    def _gen_prompt(self, concept: Concept, state, prompt: str) -> str:
        raise NotImplementedError

    def concept_layers(self, concept: Concept, state):
        """A context in which the concept's learned rows exist (none for an untrained method)."""
        return contextlib.nullcontext()

    def isolation_fingerprint(self):
        return kit_rows.fingerprint(self.backend)

    def answer(self, concept, state, requests):
        self.require_active(concept)
        examples = [TextExample(self._question(concept, state, r.question), r.image) for r in requests]
        replies: list[str | None] = []
        for i in range(0, len(examples), self.batch_size):
            replies.extend(self.backend.answer(examples[i:i + self.batch_size], self.max_new_tokens))
        return replies

    def generate(self, concept, state, requests):
        self.require_active(concept)
        # One request's images per call, padded to one shape (kit.batching): no image depends on
        # the requests it is asked with, and a compiled decoding step sees a single batch shape.
        result = []
        for r in requests:
            prompt = self._gen_prompt(concept, state, r.prompt)
            seeds = r.image_seeds()
            images = []  # only the real rows are decoded (not kit.batching.draw_in_calls: it decodes the padding too)
            for call, n in padded_calls(seeds, call_size(self.gen_batch, len(seeds))):
                out = self.backend.generate_codes([prompt] * len(call), call, guidance=self.guidance,
                                                  temperature=self.temperature)
                images.extend(self.backend.decode_codes(out.codes[:n]))
            result.append(images)
        return result


class TextPrompt(_UnifiedMethod):
    """The same base model with no training: the concept's name replaced by its description
    (the paper's "Show-o + prompt" row; on Show-o by default, on Janus with backend=janus)."""

    name = "text-prompt"
    arguments = dict(_COMMON_ARGS)

    @staticmethod
    def _body(concept: Concept) -> str:
        return concept_phrase(concept)

    def _question(self, concept, state, question):
        desc = concept.description.replace(concept.token, concept.name).strip()
        return self.backend.understanding_prompt(desc, question.replace(concept.token, concept.name),
                                                 training=False).strip()

    def _gen_prompt(self, concept, state, prompt):
        return prompt.replace(concept.token, self._body(concept))


class UniCTokens(_UnifiedMethod):
    """UniCTokens (three-stage unified concept tokens) on Show-o (default) or Janus; see methods/unictokens/README.md."""

    name = "unictokens"
    arguments = {**_COMMON_ARGS, **_TRAIN_ARGS}

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        a = self.args
        per_stage = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,) * 3  # noqa: E731
        self.cfg = TrainConfig(
            lr=a.lr, weight_decay=per_stage(a.weight_decay), epochs_stage1=a.epochs_stage1,
            epochs_stage2=a.epochs_stage2, epochs_stage3=a.epochs_stage3, stage2_init_epoch=a.stage2_init_epoch,
            image_weight=a.image_weight, text_weight=a.text_weight, train_batch=per_stage(a.train_batch),
            augment=a.augment, kmeans_seed=a.kmeans_seed, transition_images=a.transition_images,
            transition_rule=a.transition_rule, transition_step=a.transition_step,
            transition_fraction=a.transition_fraction, guidance=self.guidance, temperature=self.temperature,
            seed=self.seed)
        self.checkpoint, self.epoch, self.face_init = a.checkpoint, a.epoch, a.face_init

    @classmethod
    def check_arguments(cls, args):
        super().check_arguments(args)
        if args.transition_rule == "late_change" and args.backend != "showo":
            raise BenchError("late_change needs an iterative (MaskGIT) sampler: backend=showo; janus uses "
                             "lowest_prob", where="--method-arg transition_rule")
        if args.epoch is not None and args.checkpoint is None:
            raise BenchError("epoch=N needs checkpoint=DIR", where="--method-arg epoch")

    def describe(self):
        d = super().describe()
        d["checkpoint"] = str(self.checkpoint) if self.checkpoint else None
        d["train_args"] = vars(self.cfg) if self.checkpoint is None else None
        return d

    # ------------------------------------------------------------------ state
    def _log(self, msg: str) -> None:
        _LOG.info(msg)

    def concept_data(self, concept: Concept) -> ConceptData:
        from unifybench.data.common import training_qa

        triples = training_qa(concept)
        if not triples:  # no training QA: recognition of each photo and the description
            triples = [(f"Is {concept.token} in this image?", p, f"Yes, {concept.token} is in this image.")
                       for p in concept.train_images]
            if concept.description:
                triples.append((f"Tell me about {concept.token}.", None, concept.description))
        if not concept.train_images:
            raise BenchError("concept has no training photos", where=f"concept {concept.name}")
        face, face_note = self.face_embedding(concept) if concept.kind == "human" else (None, "")
        return ConceptData(identifier=concept.token, class_noun=concept.class_noun, kind=concept.kind,
                           conversations=triples, train_images=list(concept.train_images),
                           cropped_images=list(concept.cropped_train_images), face_embedding=face,
                           face_note=face_note)

    def face_embedding(self, concept: Concept) -> tuple[torch.Tensor | None, str]:
        """Mean unit identity embedding of the faces found in the training photos, or None and why."""
        import importlib.util

        kind = self.face_init
        if kind == "off":
            return None, "face_init=off"
        if kind == "auto":
            if importlib.util.find_spec("insightface") is None:
                return None, 'face extra not installed (pip install "unifybench[face]")'
            kind = "default"
        try:
            from unifybench.scoring.face import load_face_backend, to_rgb_array
        except ImportError as exc:
            return None, f"no face module ({exc})"
        backend = load_face_backend(kind, device=self.device, seed=self.seed)
        found = []
        from unifybench.images import open_rgb

        for path in concept.train_images:
            emb = backend.embed(to_rgb_array(open_rgb(path)))
            if emb is not None:
                found.append(torch.as_tensor(emb, dtype=torch.float32))
        if not found:
            return None, f"no face found in {len(concept.train_images)} training photos ({backend.name})"
        mean = torch.stack(found).mean(0)
        return mean / mean.norm().clamp(min=1e-8), f"{backend.name}; {len(found)} of {len(concept.train_images)} photos"

    def _from_checkpoint(self, concept: Concept) -> dict:
        stages = ("stage3", "stage2", "stage1")

        def rows_in(folder: Path) -> Path | None:
            for sub in [folder / s for s in stages] + [folder]:
                if sub.is_dir() and checkpoint_epochs(sub):
                    return sub
            return None

        base = concept_folder(self.checkpoint, concept, lambda f: rows_in(f) is not None, "epoch_<N>_embed.pt files",
                              layout_subfolders=stages)
        folder = rows_in(base)
        rows, epoch = load_rows(folder, self.epoch, self.backend.hidden_size)
        meta = read_meta(folder) or {}
        made_on = meta.get("base_model", "unknown (no unictokens.json: e.g. the authors' Show-o files)")
        if made_on != self.model_name:
            self._log(f"checkpoint {folder} was trained on base model {made_on}, loading it onto "
                      f"{self.model_name}: the widths fit, but rows only mean something on the model "
                      f"that trained them")
        return {"rows": rows, "source": str(folder), "epoch": epoch, "base_model": made_on}

    def personalize(self, concept, state_dir):
        if self.checkpoint is not None:
            loaded = self._from_checkpoint(concept)
            write_json_atomic(Path(state_dir) / "checkpoint.json", {
                "source": loaded["source"], "epoch": loaded["epoch"], "rows": len(loaded["rows"]["embed"]),
                "trained_on": loaded["base_model"], "loaded_onto": self.model_name})
            return self._state(concept, loaded["rows"])
        # Stages an interrupted run finished are skipped (their unictokens.json says finished).
        pers = Personalizer(self.backend, self.cfg, self.model_name, log=self._log, progress=self.progress)
        groups, rows = pers.run(self.concept_data(concept), Path(state_dir))
        return self._state(concept, rows)

    def load_state(self, concept, state_dir):
        if self.checkpoint is not None:
            return self._state(concept, self._from_checkpoint(concept)["rows"])
        folder = Path(state_dir) / "stage3"
        rows, _ = load_rows(folder, (read_meta(folder) or {}).get("epochs"), self.backend.hidden_size)
        return self._state(concept, rows)

    def bench_personalize_costs(self, state_dir):
        from .speed import stage_costs

        return stage_costs(Path(state_dir))

    def _state(self, concept: Concept, rows: dict[str, torch.Tensor]) -> dict:
        return {"groups": TokenGroups(concept.token), "rows": rows, "n_rows": rows["embed"].shape[0]}

    def concept_layers(self, concept, state):
        return self.backend.new_tokens(state["groups"].rows(state["n_rows"]), state["rows"])

    def _question(self, concept, state, question):
        return self.backend.understanding_prompt(state["groups"].understanding_prefix(state["n_rows"]), question,
                                                 training=False)

    def _gen_prompt(self, concept, state, prompt):
        return prompt.replace(concept.token, state["groups"].generation_phrase(state["n_rows"]))
