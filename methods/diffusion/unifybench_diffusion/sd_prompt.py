"""``sd-prompt``: the base model untrained, the concept named in words (the zero-shot row)."""
from __future__ import annotations

import re

from unifybench.data.common import concept_phrase
from unifybench.logs import quiet_transformers

from .base import LOG, DiffusionMethod


class SDPrompt(DiffusionMethod):
    """The base model untrained: the concept named by its class noun and description (zero-shot)."""

    name = "sd-prompt"

    def _prompt(self, concept, state, prompt):
        words = concept_phrase(concept).split()  # "a fluffy corgi ...": it brings its own article
        composed = self._with_phrase(concept, prompt, " ".join(words))
        # CLIP reads 77 tokens and drops the rest, which would be the scene ("... in the jungle"):
        # the description gives up its last words instead, until the whole prompt fits.
        limit = self.host.pipe.tokenizer.model_max_length
        with quiet_transformers():  # counting tokens of a prompt too long is the point, not a warning
            while len(words) > 2 and len(self.host.pipe.tokenizer(composed).input_ids) > limit:
                words = words[:-1]
                composed = self._with_phrase(concept, prompt, " ".join(words))
        if len(words) < len(concept_phrase(concept).split()):
            LOG.info(f"description shortened to fit {limit} CLIP tokens with the scene: {composed!r}")
        return composed

    @staticmethod
    def _with_phrase(concept, prompt: str, phrase: str) -> str:
        if not re.search(rf"\b{re.escape(concept.class_noun)}\b", phrase, flags=re.IGNORECASE):
            phrase = f"{phrase}, a {concept.class_noun},"  # named by its class noun too, as CLIP-T names it
        # DreamBench writes "a <c> dog": the phrase already names the class, so it takes both words.
        subject = rf"{re.escape(concept.token)}(?:\s+{re.escape(concept.class_noun)}\b)?"
        prompt = re.sub(rf"\b(?:an?|the)\s+{subject}", lambda _: phrase, prompt, flags=re.IGNORECASE)
        return " ".join(re.sub(subject, lambda _: phrase, prompt).split())
