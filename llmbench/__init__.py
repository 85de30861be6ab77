"""llmbench: benchmark, profile and plan DeepSpeed training of large language models."""

__version__ = "0.1.0"
