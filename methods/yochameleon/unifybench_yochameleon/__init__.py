"""Yo'Chameleon for UnifyBench: an identifier and self-prompting latent tokens learned on Chameleon /
Anole-7B, for understanding and generation (``methods/yochameleon/README.md``).

Registered as the ``yochameleon`` method through the ``unifybench.methods`` entry point; ``method.py``
holds the Method, ``chameleon.py`` the model (sequences, loss, replies, image sampling) and
``vqgan.py`` the VQGAN decoder transformers lacks.
"""
