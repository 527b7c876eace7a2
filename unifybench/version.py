"""The package's version, in a module of its own: the registry records it beside each built-in
method, and importing it from the package's ``__init__`` (which imports the runner, which imports the
registry) would close an import cycle."""
__version__ = "0.1.0"
