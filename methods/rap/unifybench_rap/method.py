"""The ``rap`` method: RAP-LLaVA (Retrieval-Augmented Personalization, Hao et al., CVPR 2025;
``Hoar012/RAP-MLLM``) as its evaluation scripts run it on one concept at a time.

RAP trains nothing per concept: a concept is an entry of its database, ``{name, image, info,
category}`` (one photo and a description). Its understanding scripts retrieve by name
(:mod:`.prompts`), so ``personalize`` writes that one entry and the questions are asked of the
released model with the entry's photo and text before them. The model is LLaVA-1.5-13B in the
original LLaVA format, converted once for transformers (:mod:`.convert`); the host is Yo'LLaVA's
(``unifybench_yollava.llava.LlavaHost``). What differs from the authors' scripts: README.md.
"""
from __future__ import annotations

import json
from pathlib import Path

from unifybench.bench.hooks import SpeedBenchHooks
from unifybench.errors import BenchError
from unifybench.kit.args import Arg, Auto
from unifybench.kit.files import write_json_atomic
from unifybench.kit.models import check_available, kind_of, on_cuda, random_init, shared, torch_dtype
from unifybench.kit.weights import hub_snapshot
from unifybench.logs import get_logger
from unifybench.methods import Method
from unifybench.seeding import derive_seed
from unifybench_yollava.llava import RANDOM_MODELS, LlavaHost

from . import prompts
from .convert import ensure_converted, is_original

DEFAULT_MODEL = "Hoar012/RAP-LLaVA-13b"
DEFAULT_VISION_TOWER = "openai/clip-vit-large-patch14-336"
DATABASE = "database.json"
_LOG = get_logger("method.rap")


class RAP(Method, SpeedBenchHooks):
    """RAP-LLaVA with a one-concept database (methods/rap/README.md)."""

    name = "rap"
    tasks = frozenset({"rec", "vqa", "text_only", "choice", "caption"})
    arguments = {
        "model": Arg(str, DEFAULT_MODEL, "RAP-LLaVA: a hub name or local folder in the original LLaVA format "
                     "(converted once into the cache) or in transformers' format, 'tiny' (a tiny random-init "
                     "LLaVA built in code: tests, smoke runs) or 'random-13b' (LLaVA-1.5-13B's sizes, random "
                     "weights built on the device: the fp16 path on a GPU without the checkpoint)"),
        "vision_tower": Arg(str, DEFAULT_VISION_TOWER, "CLIP vision tower merged into an original-format "
                            "checkpoint (its config and image processor are used too)"),
        "converted": Arg(Path, None, "folder the converted checkpoint is written to (none: "
                         "HF_HOME/unifybench/converted)"),
        "conv": Arg(str, "v1", "chat template: 'v1' (llava_v1, what RAP-LLaVA was trained with) or 'v0' "
                    "(llava_v0, what the authors' scripts pick for a model name without 'v1')", choices=prompts.CONVERSATIONS),
        "temperature": Arg(float, 0.0, "0: greedy; > 0 samples at that temperature, each request from its own "
                           "seed (0.2 with conv=v0 is the authors' scripts)", low=0),
        "max_new_tokens": Arg(int, 128, "longest reply in tokens (the authors' scripts')", low=1),
        "dtype": Arg(str, Auto("float16 on CUDA (the authors'), float32 on CPU"), "model weights",
                     choices=("float16", "bfloat16", "float32")),
        "rec_prompt": Arg(str, "authors", "recognition items: 'authors' (recognition_test.json's 'Is <c> in this "
                          "image? Answer with a single word or phrase.') or 'bench' (the benchmark's question)",
                          choices=("authors", "bench")),
    }

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        self._host: LlavaHost | None = None

    @classmethod
    def check_available(cls, args):
        kind = check_available(args.model, builtins=RANDOM_MODELS, what="RAP-LLaVA checkpoint")
        # The tower is read only to convert an original-format checkpoint (a hub one is not looked into yet).
        if kind == "hub" or (kind == "folder" and is_original(Path(args.model).expanduser())):
            check_available(args.vision_tower, argument="vision_tower", what="CLIP vision tower")

    @classmethod
    def check_run(cls, args, concepts, tasks):
        bare = [c.name for c in concepts if not (c.cropped_train_images or c.train_images)]
        if bare:
            raise BenchError(f"no training photo for concept(s) {', '.join(bare)}: RAP's database entry needs one",
                             where=f"method {cls.name}")

    def _dtype(self):
        name = self.args.dtype or ("float16" if on_cuda(self.device) else None)
        return torch_dtype(name, self.device)

    @property
    def host(self) -> LlavaHost:
        if self._host is None:
            a = self.args
            self._host = shared(("rap", a.model, a.vision_tower, str(a.converted), self.device, str(self._dtype()),
                                 self.seed if a.model in RANDOM_MODELS else None), self._load)
        return self._host

    def _load(self) -> LlavaHost:
        a = self.args
        if a.model in RANDOM_MODELS:
            return LlavaHost(a.model, device=self.device, seed=self.seed, dtype=self._dtype())
        folder = _folder(a.model, "model")
        if is_original(folder):
            folder = ensure_converted(folder, _folder(a.vision_tower, "vision_tower"), a.converted)
        return LlavaHost(str(folder), device=self.device, seed=self.seed, dtype=self._dtype())

    def describe(self):
        a = self.args
        return {"base_model": a.model, "random_init": random_init(a.model, RANDOM_MODELS), "backend": self.host.describe(),
                "conversation": f"llava_{a.conv}",
                "decoding": "greedy" if a.temperature == 0 else f"sampled, temperature {a.temperature:g}",
                "reference_compatible": a.conv == "v0" and a.temperature == 0.2,
                "retrieval": "by name, one-concept database (caption: the concept's entry given)"}

    # ------------------------------------------------------------------ the database entry
    @staticmethod
    def database_entry(concept) -> dict:
        # One photo: the cropped one where the benchmark has it (RAP's database holds crops).
        photo = Path((concept.cropped_train_images or concept.train_images)[0]).resolve()
        return {"name": concept.name, "image": str(photo), "info": concept.description.strip(),
                "category": concept.class_noun}

    def personalize(self, concept, state_dir):
        entry = self.database_entry(concept)
        if not entry["info"]:
            _LOG.info(f"{concept.name}: no description; the entry's Info is empty")
        write_json_atomic(Path(state_dir) / DATABASE, {"concept_dict": {concept.token: entry},
                                                       "path_to_concept": {entry["image"]: concept.token}})
        return {**entry, "token": concept.token}

    def load_state(self, concept, state_dir):
        path = Path(state_dir) / DATABASE
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))["concept_dict"][concept.token]
        except (OSError, ValueError, KeyError, TypeError):
            raise BenchError("unreadable RAP database entry; delete the concept's state folder to rebuild it",
                             path) from None
        # The entry is rebuilt from the concept, never taken from the run directory: a run directory may
        # come from someone else, and its image path is read and shown to the model.
        entry = self.database_entry(concept)
        if stored != entry:
            raise BenchError("the RAP database entry is not the one this concept gives (another photo, description "
                             "or bench folder); delete the concept's state folder to rebuild it", path)
        return {**entry, "token": concept.token}

    # ------------------------------------------------------------------ replies
    def prompt(self, concept, state, request) -> tuple[str, list]:
        """(the whole prompt, its images in order) for one request."""
        question = request.question
        if request.task == "rec" and self.args.rec_prompt == "authors":
            question = prompts.RECOGNITION_QUESTION.format(token=concept.token)
        user, images = prompts.build(request.task, question, request.image, state, request.options)
        return prompts.conversation(user, self.args.conv), images

    def answer(self, concept, state, requests):
        built = [self.prompt(concept, state, r) for r in requests]
        seeds = [derive_seed(self.seed, r.key) & 0x7FFFFFFF for r in requests]
        out: list[str] = []
        for i in range(0, len(built), self.batch_size):
            out += self.host.reply(built[i:i + self.batch_size], self.args.max_new_tokens, self.args.temperature,
                                   seeds[i:i + self.batch_size])
        return out

    @classmethod
    def bench_arguments(cls, device_type, given):
        return {"model": "tiny"}


def _folder(name: str, argument: str) -> Path:
    if kind_of(name) == "hub":
        return hub_snapshot(name, argument,
                            hint="pass a local folder")
    return Path(name).expanduser()
