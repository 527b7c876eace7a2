"""What a run is asked to do (:class:`RunSpec`), each field declared once with its flag, help and range.

The command line's ``run`` options are generated from these declarations (:mod:`.cli.options`) and
:func:`unifybench.runner.check_spec` checks a spec against them, so flags, a ``--config`` file and
``unifybench.evaluate()`` meet one rule. Light on purpose (no torch, no PIL): ``--help`` reads it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .data import FORMATS
from .data.myvlm import SPLITS
from .options import option
from .records import DEFAULT_TASKS
from .seeding import MAX_SEED

if TYPE_CHECKING:
    from .scoring.judges.config import JudgeConfig

# scoring.encoders.CLIP_MODELS (tested equal), repeated so that --help does not import torch.
CLIP_CHOICES = ("ViT-B-32", "ViT-L-14")
# Multiple choice: each item asked once, or once per rotation of its options (MMBench's CircularEval).
CHOICE_EVALS = ("plain", "circular")
BACKBONE_KINDS = ("default", "auto", "random", "tiny")
FORMAT_CHOICES = ("auto", *FORMATS)  # a benchmark folder's layout: auto-detected, or one of the readers
PROTOCOLS = ("default", "reference")


@dataclass
class RunSpec:
    method: str = option(flag="--method", type=str, default_text="",
                         help="a name from `unifybench methods` (required, here or in --config)")
    bench: str = option("mini", flag="--bench", type=str,
                        help="'mini' (bundled), a benchmark folder, or a Hugging Face dataset name "
                             "(owner/name[@revision]) fetched into its cache")
    format: str = option("auto", flag="--format", choices=FORMAT_CHOICES,
                         help="the benchmark folder's layout (auto: detected)")
    # Checked by check_spec (known names, each once, canonical order); the flag's text is parsed by the CLI.
    tasks: list[str] = option(factory=lambda: list(DEFAULT_TASKS), flag="--tasks", default_text="",
                              help="comma-separated tasks (`unifybench tasks`; default: all but caption)")
    concepts: list[str] | None = option(None, flag="--concepts", optional=True,
                                        help="comma-separated concept names (default: all)")
    seed: int = option(0, flag="--seed", type=int, low=0, high=MAX_SEED,
                       help="seed of every random draw (training, sampling, judging)")
    batch_size: int = option(16, flag="--batch-size", type=int, low=1, high=4096,
                             help="requests per method call; images per scorer batch")
    device: str = option("cpu", flag="--device", type=str, help="cpu, cuda, cuda:N or mps")
    backbones: str = option("default", flag="--backbones", choices=BACKBONE_KINDS,
                            help="scorer weights: default (real checkpoints), auto (default, else random), "
                                 "random (real architectures, seeded random weights), tiny (tests)")
    clip_model: str = option(CLIP_CHOICES[0], flag="--clip", choices=CLIP_CHOICES,
                             help="CLIP for CLIP-I and CLIP-T (OpenAI weights; ignored by tiny backbones)")
    protocol: str = option("default", flag="--protocol", choices=PROTOCOLS,
                           help="'default' (our corrected rules) or 'reference' (the UniCTokens evaluation's, "
                                "bugs included)")
    choice_eval: str = option("plain", flag="--choice-eval", choices=CHOICE_EVALS,
                              help="multiple choice: 'plain' (each item once; metric choice.accuracy) or 'circular' "
                                   "(once per rotation of its options, right only if every rotation is: "
                                   "choice.circular_accuracy)")
    images_per_prompt: int = option(4, flag="--images-per-prompt", type=int, low=1, high=256,
                                    help="images drawn per generation prompt")
    limit: int | None = option(None, flag="--limit", type=int, low=1, high=10**9, optional=True,
                               help="at most N items and prompts per concept and task (a partial run; default: all)")
    # Its photos are in the bench fingerprint (data/myvlm.py).
    split: int = option(0, flag="--split", type=int, low=0, high=SPLITS - 1,
                        help=f"MyVLM's layout: which of its five seeded training splits (0-{SPLITS - 1}; 4 photos a "
                             f"concept to learn from, the rest captioned)")
    method_args: dict[str, str] = option(factory=dict, flag="--method-arg", action="append", metavar="KEY=VALUE",
                                         help="an argument of the method (repeatable; `unifybench methods` lists them)")
    # Scoring only: recorded in run.json, not part of the run directory's hash (scoring/judges).
    # Its options are JudgeConfig's own (--judge, --judge-*). Scoring only: recorded in run.json, not part
    # of the run directory's hash.
    judge: JudgeConfig | None = None
    resume_changed_code: bool = option(False, flag="--resume-changed-code", action="store_true",
                                       help="add predictions to a run directory although the method's code changed "
                                            "since its predictions were made (refused otherwise; recorded in run.json)")
    # Scoring only: 0 turns the intervals off (the concept jackknife draws no resamples).
    bootstrap: int = option(1000, flag="--bootstrap", type=int, low=0, high=100000,
                            help="0: no intervals; otherwise every mean gets its 95%% interval over the concepts (a "
                                 "concept jackknife, which draws no resamples: README 'Uncertainty')")
    threads: int | None = option(None, flag="--threads", type=int, low=1, high=1024, optional=True,
                                 help="torch's threads (default: the free cores: this process's cores minus the load "
                                      "already on them; OMP_NUM_THREADS also sets it); recorded in run.json")
