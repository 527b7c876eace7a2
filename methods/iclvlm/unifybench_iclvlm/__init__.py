"""``icl-vlm``: any vision-language model behind an OpenAI-compatible chat endpoint, personalized in
context (the concept's reference photos and/or its description in the prompt; no training)."""
