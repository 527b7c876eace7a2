"""RAP-LLaVA (Hao et al., CVPR 2025; Hoar012/RAP-MLLM) as the ``rap`` method: see methods/rap/README.md."""
