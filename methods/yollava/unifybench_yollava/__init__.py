"""The Yo'LLaVA adapter: personalized understanding on LLaVA-1.5 (``methods/yollava/README.md``)."""
