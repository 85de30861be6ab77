"""The sections of a case: the first part of every parameter's dotted key.

Apart from the schema so that code reading stored results can tell parameter
columns from metric columns without importing pydantic and building the
schema's models (~0.1 s of every ``report``).
"""

CASE_SECTIONS = ("model", "training", "deepspeed", "parallel", "comm")


def is_case_key(name: str) -> bool:
    """``model.hidden_size`` is a case parameter; ``tokens_per_s`` (no section) is not."""
    section, dot, rest = name.partition(".")
    return bool(dot and rest) and section in CASE_SECTIONS
