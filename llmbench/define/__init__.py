"""Define: the scenario schema, its YAML loader and the expansion into cases.

Pure and torch-free: ``llmbench validate`` and ``--dry-run`` run on a laptop.
"""
