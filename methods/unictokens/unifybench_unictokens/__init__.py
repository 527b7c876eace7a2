"""UniCTokens for UnifyBench: unified concept tokens trained in three stages (see ../README.md).

Registered as the ``unictokens`` and ``text-prompt`` methods through the ``unifybench.methods``
entry point; ``method.py`` holds the Method classes, ``stages.py`` the model-independent stage
logic, ``backend.py`` the interface a base model must offer and ``janus_backend.py`` Janus.
"""
