"""The ``unictokens`` and ``text-prompt`` methods: UniCTokens through the harness's Method interface."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch

from unifybench import newrows
from unifybench.errors import BenchError
from unifybench.kit.batching import call_size, padded_calls
from unifybench.logs import get_logger
from unifybench.methods import ConceptLayers, Method, flag_arg, float_arg, int_arg
from unifybench.records import TASKS, Concept
from unifybench.data.common import concept_phrase
from unifybench.seeding import image_seed

from .backend import TextExample
from .stages import (TRANSITION_RULES, ConceptData, Personalizer, TokenGroups, TrainConfig, checkpoint_epochs,
                     load_rows, read_meta)

BACKEND_DEFAULTS = {
    # backend: (default model, reply length, transition rule, transition images)
    "showo": ("showlab/show-o-512x512", 100, "late_change", 20),
    "janus": ("deepseek-community/Janus-Pro-1B", 64, "lowest_prob", 8),
}
RANDOM_MODELS = {"showo": "random", "janus": "random-1b"}

_COMMON_ARGS = {
    "backend": "the unified model: showo (default: Show-o, the paper's backbone) or janus (Janus-Pro)",
    "model": "base model: a hub name or local folder in the hub's layout (default showlab/show-o-512x512 on "
             "showo, deepseek-community/Janus-Pro-1B on janus), 'tiny' (a tiny random-init model built in "
             "code: tests, smoke runs), or 'random' on showo / 'random-1b' on janus (full-size, random init: "
             "speed only)",
    "vq_model": "showo: MAGVIT-v2, a hub name or local folder (default showlab/magvitv2)",
    "tokenizer": "showo: the Phi tokenizer, a hub name or local folder (default microsoft/phi-1_5)",
    "llm_config": "showo: a folder with the Phi config.json of a Show-o of other sizes (default: Phi-1.5's, "
                  "or the sizes the model folder's config.json names)",
    "steps": "showo: MaskGIT steps per image (default 50)",
    "guidance": "classifier-free guidance scale for image generation (default 5.0)",
    "temperature": "sampling temperature for image codes (default 1.0)",
    "max_new_tokens": "longest text reply in tokens (default 100 on showo, as the authors' eval; 64 on janus)",
    "gen_batch": "most images of one request drawn in one call (default 32 on CUDA, 4 on CPU)",
    "dtype": "model weights: bfloat16 or float32 (default bfloat16 on CUDA, float32 on CPU)",
}

_TRAIN_ARGS = {
    "checkpoint": "folder of public-format rows (epoch_<N>_embed.pt, ...) to load instead of training, such "
                  "as the authors' saves/<concept>/<name>/; per concept DIR/<concept>/ or DIR itself",
    "epoch": "which epoch of checkpoint=DIR to load (default: the highest)",
    "lr": "AdamW learning rate (default 1e-3)",
    "weight_decay": "AdamW weight decay of every stage (default: the authors' 1e-4, 1e-3, 1e-3)",
    "epochs": "epochs of every stage (default 20); epochs_stage1/2/3 override one stage",
    "epochs_stage1": "epochs of stage 1 (default 20)",
    "epochs_stage2": "epochs of stage 2 (default 20)",
    "epochs_stage3": "epochs of stage 3 (default 20)",
    "stage2_init_epoch": "stage 1 epoch that stage 2 starts from (default 15; clamped to stage 1's epochs)",
    "image_weight": "weight of the image-token loss in stages 2 and 3 (default 0.8)",
    "text_weight": "weight of the text loss in stages 2 and 3 (default 0.2)",
    "train_batch": "examples per optimizer step in every stage (default: the authors' 4, 1, 1)",
    "augment": "stages 2 and 3 draw the authors' random crop and flip of the generation photos each epoch "
               "(true/false; default true; Show-o only)",
    "kmeans_seed": "seed of the k-means initialisations (default 0)",
    "transition_images": "images generated for the transition (default 20 on showo, as the authors; 8 on janus)",
    "transition_rule": "how the transition picks uncertain positions: late_change (the paper's: where the "
                       "MaskGIT prediction at transition_step differs from the final code; showo's default) or "
                       "lowest_prob (the least probable codes; janus's default, the only one autoregressive "
                       "decoding supports)",
    "transition_step": "late_change: the MaskGIT step compared with the final codes (default 35)",
    "transition_fraction": "lowest_prob: share of each image's positions taken as least sure (default 0.25)",
    "face_init": "human concepts' generation-token init from the face identity embedding: auto (default: "
                 "InsightFace when the face extra is installed, else k-means), off, or random/tiny (stand-ins, tests)",
}

_BACKENDS: dict[tuple, Any] = {}
_LOG = get_logger("method.unictokens")


def get_backend(backend: str, model: str, device: str, seed: int, dtype: str | None = None, **extra):
    """One backend per (backend, model, its files, device, dtype) in a process: concepts share the weights."""
    if dtype not in (None, "bfloat16", "float32"):
        raise BenchError(f"expected bfloat16 or float32, got {dtype!r}", where="--method-arg dtype")
    random_init = model in ("tiny", RANDOM_MODELS[backend])
    key = (backend, model, tuple(sorted(extra.items())), device, dtype, seed if random_init else None)
    if key not in _BACKENDS:
        torch_dtype = getattr(torch, dtype) if dtype else None
        if backend == "showo":
            from .showo_backend import ShowoBackend

            _BACKENDS[key] = ShowoBackend(model, device=device, seed=seed, dtype=torch_dtype, **extra)
        else:
            from .janus_backend import JanusBackend

            _BACKENDS[key] = JanusBackend(model, device=device, seed=seed, dtype=torch_dtype)
    return _BACKENDS[key]


class _UnifiedMethod(ConceptLayers, Method):
    tasks = frozenset(TASKS)

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        self.backend_name = self.args.get("backend", "showo")
        if self.backend_name not in BACKEND_DEFAULTS:
            raise BenchError(f"unknown backend {self.backend_name!r} (showo or janus)", where="--method-arg backend")
        default_model, default_reply, _, _ = BACKEND_DEFAULTS[self.backend_name]
        self.model_name = self.args.get("model", default_model)
        self.backend_extra: dict = {}
        for key in ("vq_model", "tokenizer", "llm_config"):
            if key in self.args:
                if self.backend_name != "showo":
                    raise BenchError("only the showo backend takes it", where=f"--method-arg {key}")
                self.backend_extra[key] = self.args[key]
        if "steps" in self.args:
            if self.backend_name != "showo":
                raise BenchError("only the showo backend takes it", where="--method-arg steps")
            self.backend_extra["steps"] = int_arg(self.args, "steps", 50) or 1
        self.guidance = float_arg(self.args, "guidance", 5.0)
        self.temperature = float_arg(self.args, "temperature", 1.0)
        self.max_new_tokens = int_arg(self.args, "max_new_tokens", default_reply) or 1
        self.gen_batch = int_arg(self.args, "gen_batch", None) or (32 if str(self.device).startswith("cuda") else 4)
        if self.args.get("dtype", "bfloat16") not in ("bfloat16", "float32"):
            raise BenchError(f"expected bfloat16 or float32, got {self.args['dtype']!r}", where="--method-arg dtype")
        self._backend = None

    @classmethod
    def validate_arguments(cls, args):
        cls(args)  # parsing every value loads nothing: the model loads on first use

    @property
    def backend(self):
        if self._backend is None:
            self._backend = get_backend(self.backend_name, self.model_name, self.device, self.seed,
                                        self.args.get("dtype"), **self.backend_extra)
        return self._backend

    def describe(self):
        return {"base_model": self.model_name, "backend_name": self.backend_name,
                "random_init": self.model_name in ("tiny", RANDOM_MODELS[self.backend_name]),
                "backend": self.backend.describe()}

    # Subclasses say how the concept is named in questions and prompts.
    def _question(self, concept: Concept, state, question: str) -> str:
        raise NotImplementedError

    def _gen_prompt(self, concept: Concept, state, prompt: str) -> str:
        raise NotImplementedError

    def concept_layers(self, concept: Concept, state):
        """A context in which the concept's learned rows exist (none for an untrained method)."""
        return contextlib.nullcontext()

    def isolation_fingerprint(self):
        return newrows.fingerprint(self.backend)

    def answer(self, concept, state, requests):
        with self.activate(concept, state):
            return self._answer(concept, state, requests)

    def generate(self, concept, state, requests):
        with self.activate(concept, state):
            return self._generate(concept, state, requests)

    def _answer(self, concept, state, requests):
        examples = [TextExample(self._question(concept, state, r.question), r.image) for r in requests]
        replies: list[str | None] = []
        for i in range(0, len(examples), self.batch_size):
            replies.extend(self.backend.answer(examples[i:i + self.batch_size], self.max_new_tokens))
        return replies

    def _generate(self, concept, state, requests):
        # One request's images per call, padded to one shape (kit.batching): no image depends on
        # the requests it is asked with, and a compiled decoding step sees a single batch shape.
        result = []
        for r in requests:
            prompt = self._gen_prompt(concept, state, r.prompt)
            seeds = [image_seed(r.seed, r.key, i) for i in range(r.n_images)]
            images = []
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
    needs_personalization = True
    arguments = {**_COMMON_ARGS, **_TRAIN_ARGS}

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        a = self.args
        epochs = int_arg(a, "epochs", 20)
        _, _, default_rule, default_images = BACKEND_DEFAULTS[self.backend_name]
        defaults = TrainConfig()
        wd = (float_arg(a, "weight_decay", 0.0),) * 3 if "weight_decay" in a else defaults.weight_decay
        batch = ((int_arg(a, "train_batch", 1) or 1),) * 3 if "train_batch" in a else defaults.train_batch
        self.cfg = TrainConfig(
            lr=float_arg(a, "lr", 1e-3), weight_decay=wd,
            epochs_stage1=int_arg(a, "epochs_stage1", epochs), epochs_stage2=int_arg(a, "epochs_stage2", epochs),
            epochs_stage3=int_arg(a, "epochs_stage3", epochs), stage2_init_epoch=int_arg(a, "stage2_init_epoch", 15),
            image_weight=float_arg(a, "image_weight", 0.8), text_weight=float_arg(a, "text_weight", 0.2),
            train_batch=batch, augment=flag_arg(a, "augment", True), kmeans_seed=int_arg(a, "kmeans_seed", 0),
            transition_images=int_arg(a, "transition_images", default_images) or 1,
            transition_rule=a.get("transition_rule", default_rule),
            transition_step=int_arg(a, "transition_step", 35) or 1,
            transition_fraction=float_arg(a, "transition_fraction", 0.25),
            guidance=self.guidance, temperature=self.temperature, seed=self.seed)
        if min(self.cfg.epochs_stage1, self.cfg.epochs_stage2, self.cfg.epochs_stage3) < 1:
            raise BenchError("every stage needs at least 1 epoch", where="--method-arg epochs")
        if self.cfg.transition_rule not in TRANSITION_RULES:
            raise BenchError(f"unknown rule {self.cfg.transition_rule!r} (known: {', '.join(TRANSITION_RULES)})",
                             where="--method-arg transition_rule")
        if self.cfg.transition_rule == "late_change" and self.backend_name != "showo":
            raise BenchError("late_change needs an iterative (MaskGIT) sampler: backend=showo; janus uses "
                             "lowest_prob", where="--method-arg transition_rule")
        self.checkpoint = Path(a["checkpoint"]) if "checkpoint" in a else None
        if self.checkpoint is not None and not self.checkpoint.is_dir():
            raise BenchError("checkpoint folder not found", self.checkpoint)
        self.face_init = a.get("face_init", "auto")
        if self.face_init not in ("auto", "off", "default", "random", "tiny"):
            raise BenchError(f"expected auto, off, default, random or tiny, got {self.face_init!r}",
                             where="--method-arg face_init")
        self.epoch = int_arg(a, "epoch", None)
        if self.epoch is not None and self.checkpoint is None:
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
        for path in concept.train_images:
            from PIL import Image

            with Image.open(path) as im:
                emb = backend.embed(to_rgb_array(im.convert("RGB")))
            if emb is not None:
                found.append(torch.as_tensor(emb, dtype=torch.float32))
        if not found:
            return None, f"no face found in {len(concept.train_images)} training photos ({backend.name})"
        mean = torch.stack(found).mean(0)
        return mean / mean.norm().clamp(min=1e-8), f"{backend.name}; {len(found)} of {len(concept.train_images)} photos"

    def _from_checkpoint(self, concept: Concept) -> dict:
        candidates = [self.checkpoint / concept.name, self.checkpoint / concept.token, self.checkpoint]
        for base in candidates:
            if not base.is_dir():
                continue
            for folder in (base / "stage3", base / "stage2", base / "stage1", base):
                if folder.is_dir() and checkpoint_epochs(folder):
                    rows, epoch = load_rows(folder, self.epoch, self.backend.hidden_size)
                    meta = read_meta(folder) or {}
                    made_on = meta.get("base_model", "unknown (no unictokens.json: e.g. the authors' Show-o files)")
                    if made_on != self.model_name:
                        self._log(f"checkpoint {folder} was trained on base model {made_on}, loading it onto "
                                  f"{self.model_name}: the widths fit, but rows only mean something on the model "
                                  f"that trained them")
                    return {"rows": rows, "source": str(folder), "epoch": epoch, "base_model": made_on}
        raise BenchError(f"no epoch_<N>_embed.pt files for concept {concept.name!r} "
                         f"(looked in DIR/{concept.name}/, DIR/{concept.token}/ and DIR)", self.checkpoint)

    def personalize(self, concept, state_dir):
        if self.checkpoint is not None:
            loaded = self._from_checkpoint(concept)
            state = self._state(concept, loaded["rows"])
            Path(state_dir).mkdir(parents=True, exist_ok=True)
            (Path(state_dir) / "checkpoint.json").write_text(json.dumps(
                {"source": loaded["source"], "epoch": loaded["epoch"], "rows": len(loaded["rows"]["embed"]),
                 "trained_on": loaded["base_model"], "loaded_onto": self.model_name}))
            return state
        pers = Personalizer(self.backend, self.cfg, self.model_name, log=self._log, progress=self.progress)
        groups, rows = pers.run(self.concept_data(concept), Path(state_dir))
        return self._state(concept, rows)

    def load_state(self, concept, state_dir):
        if self.checkpoint is not None:
            return self._state(concept, self._from_checkpoint(concept)["rows"])
        folder = Path(state_dir) / "stage3"
        meta = read_meta(folder)
        if not meta or not meta.get("finished"):  # marked done but incomplete: finish the stages
            return self.personalize(concept, state_dir)
        rows, _ = load_rows(folder, meta.get("epochs"), self.backend.hidden_size)
        return self._state(concept, rows)

    def _state(self, concept: Concept, rows: dict[str, torch.Tensor]) -> dict:
        return {"groups": TokenGroups(concept.token), "rows": rows, "n_rows": rows["embed"].shape[0]}

    def concept_layers(self, concept, state):
        return self.backend.new_tokens(state["groups"].rows(state["n_rows"]), state["rows"])

    def _question(self, concept, state, question):
        return self.backend.understanding_prompt(state["groups"].understanding_prefix(state["n_rows"]), question,
                                                 training=False)

    def _gen_prompt(self, concept, state, prompt):
        return prompt.replace(concept.token, state["groups"].generation_phrase(state["n_rows"]))
