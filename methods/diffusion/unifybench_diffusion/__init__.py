"""Generation baselines on Stable Diffusion through diffusers: textual inversion, DreamBooth-LoRA and
the zero-shot prompt row (``methods/diffusion/README.md``)."""
