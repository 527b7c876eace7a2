"""An example UnifyBench method plugin (docs/writing-a-method.md walks through it)."""
