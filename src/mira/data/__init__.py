"""MIRA-Editing, the training-set builder: sources -> aggregate -> rewrite -> synthesize -> rank -> annotate ->
export, as a resumable, sharded job (``mira data build CONFIG.yaml``; :func:`mira.data.build.build` in Python).

Each stage is a module with a plain function at its core and a shard worker around it; nothing heavy is imported
here.
"""
