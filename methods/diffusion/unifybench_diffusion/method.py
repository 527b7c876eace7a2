"""``textual-inversion``, ``dreambooth-lora`` and ``sd-prompt`` on one Stable Diffusion pipeline: each
method in its own module (as diffusers' examples are), what they share in ``base.py`` and ``training.py``.
This module keeps the names that were imported from it before the split."""
from __future__ import annotations

from .base import SAMPLING_ARGS, TASKS, DiffusionMethod, get_host
from .dreambooth_lora import DREAMBOOTH_LORA_ARGS, LORA_FILE, LORA_TARGETS, DreamBoothLoRA, save_lora
from .sd_prompt import SDPrompt
from .textual_inversion import (EMBEDS_FILES, IMAGENET_TEMPLATES_SMALL, TEXTUAL_INVERSION_ARGS, TextualInversion,
                                load_embeds, save_embeds)
from .training import read_header

__all__ = ["DREAMBOOTH_LORA_ARGS", "EMBEDS_FILES", "IMAGENET_TEMPLATES_SMALL", "LORA_FILE", "LORA_TARGETS",
           "SAMPLING_ARGS", "TASKS", "TEXTUAL_INVERSION_ARGS", "DiffusionMethod", "DreamBoothLoRA", "SDPrompt",
           "TextualInversion", "get_host", "load_embeds", "read_header", "save_embeds", "save_lora"]
