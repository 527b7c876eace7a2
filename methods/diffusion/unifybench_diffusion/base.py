"""What the three diffusion methods share: the sampling arguments, one pipeline per process, prompts
drawn in calls of their own, and the ``describe`` record."""
from __future__ import annotations

import contextlib

from unifybench.bench.hooks import SpeedBenchHooks
from unifybench.errors import BenchError
from unifybench.kit.args import Arg, Auto
from unifybench.kit.batching import draw_in_calls
from unifybench.kit.models import check_available, on_cuda, random_init, shared, torch_dtype
from unifybench.logs import get_logger
from unifybench.methods import ConceptLayers, Method
from unifybench.records import Concept

from .sd import DEFAULT_MODEL, RANDOM_MODELS, SCHEDULERS, SDHost

TASKS = frozenset({"gen", "attr_gen"})
SAMPLING_ARGS = {
    "model": Arg(str, DEFAULT_MODEL, "a diffusers Stable Diffusion pipeline: hub name or local folder "
                 "(SDXL: stabilityai/stable-diffusion-xl-base-1.0), or 'tiny' / 'tiny-xl' (the tiny random-init "
                 "pipelines of diffusers' tests, built in code) or 'random' (SD 1.5's architecture, random "
                 "weights: cost only)"),
    "dtype": Arg(str, Auto("bfloat16 on CUDA, float32 on CPU"), "weights (float16: sampling-only methods)",
                 choices=("bfloat16", "float16", "float32")),
    "scheduler": Arg(str, "ddim", "sampler, built from the model's scheduler config", choices=tuple(SCHEDULERS)),
    "steps": Arg(int, 50, "sampling steps", low=1),
    "guidance": Arg(float, 7.5, "classifier-free guidance scale", low=0),
    "gen_batch": Arg(int, Auto("8 on CUDA, 4 on CPU"), "most images of one request per pipeline call (a call "
                     "never mixes requests, so no image depends on what it is drawn with)", low=1),
}

LOG = get_logger("method.diffusion")


def get_host(model: str, device: str, seed: int, dtype: str | None, scheduler: str) -> SDHost:
    """One pipeline per (model, device, dtype, scheduler) in a process: concepts share the weights."""
    return shared(("sd", model, device, dtype, scheduler, seed if model in RANDOM_MODELS else None),
                  lambda: SDHost(model, device=device, seed=seed, dtype=torch_dtype(dtype, device) if dtype else None,
                                 scheduler=scheduler))


class DiffusionMethod(ConceptLayers, Method, SpeedBenchHooks):
    tasks = TASKS
    arguments = dict(SAMPLING_ARGS)
    trains = False  # a method that trains refuses float16 weights (no loss scaling here)

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        a = self.args
        self.model_name = a.model
        self.dtype = a.dtype
        self.scheduler = a.scheduler
        self.steps = a.steps
        self.guidance = a.guidance
        self.gen_batch = a.gen_batch or (8 if on_cuda(self.device) else 4)
        self._host: SDHost | None = None

    @classmethod
    def check_arguments(cls, args):
        if cls.trains and args.dtype == "float16":
            raise BenchError("expected bfloat16 or float32 for a method that trains (no loss scaling), got "
                             "'float16'", where="--method-arg dtype")

    @classmethod
    def check_available(cls, args):
        check_available(args.model, builtins=tuple(RANDOM_MODELS), what="Stable Diffusion pipeline")

    @property
    def host(self) -> SDHost:
        if self._host is None:
            self._host = get_host(self.model_name, self.device, self.seed, self.dtype, self.scheduler)
        return self._host

    def describe(self):
        return {"base_model": self.model_name, "random_init": random_init(self.model_name, RANDOM_MODELS),
                "backend": self.host.describe(),
                "sampling": {"scheduler": self.scheduler, "steps": self.steps, "guidance": self.guidance,
                             "resolution": self.host.resolution, "gen_batch": self.gen_batch, "eta": 0.0}}

    def isolation_fingerprint(self):
        return self.host.fingerprint()

    # ------------------------------------------------------------------ speed hooks (SpeedBenchHooks)
    @classmethod
    def bench_arguments(cls, device_type, given):
        # A method that trains is personalized for one step: sampling does not cost more after more.
        return {"model": "random" if device_type == "cuda" else "tiny", **({"train_steps": "1"} if cls.trains else {})}

    def bench_generation(self, options):
        from .speed import bench_generation

        return bench_generation(self, options)

    # Subclasses: how a prompt names the concept, and what exists while it is active.
    def _prompt(self, concept: Concept, state, prompt: str) -> str:
        raise NotImplementedError

    def concept_layers(self, concept: Concept, state):
        return contextlib.nullcontext()

    def generate(self, concept, state, requests):
        self.require_active(concept)
        total, done, out = sum(r.n_images for r in requests), 0, []
        for r in requests:
            prompt = self._prompt(concept, state, r.prompt)
            out.append(self.draw(prompt, r.image_seeds()))
            done += r.n_images
            self.progress("drawing", done, total)
        return out

    def draw(self, prompt: str, seeds: list[int], size: int | None = None, **sampling) -> list:
        """One request's images in calls of their own (:mod:`unifybench.kit.batching`): ``gen_batch``
        per call, fewer when the request has fewer, so that no image depends on what else is drawn."""
        return draw_in_calls(seeds, self.gen_batch, lambda call: self.host.generate(
            [prompt] * len(call), call, steps=sampling.get("steps", self.steps),
            guidance=sampling.get("guidance", self.guidance), scheduler=sampling.get("scheduler")), size)
