"""UnifyBench: an evaluation harness for personalized understanding-and-generation models."""

__version__ = "0.1.0"
