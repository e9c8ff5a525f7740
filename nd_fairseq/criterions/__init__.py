"""Criteria registered with fairseq: negative_distillation (and the baselines)."""

from . import negative_distillation  # noqa: F401
