"""Scorers: each metric defined once, with its protocol variants side by side.

- :mod:`.answers`: yes/no and multiple-choice parsing and accuracy.
- :mod:`.text`: character-level BLEU for open answers.
- :mod:`.encoders`: CLIP and DINO backbones (pretrained, random-init or tiny).
- :mod:`.fidelity`: CLIP-I, CLIP-T and DINO for generated images.
"""
