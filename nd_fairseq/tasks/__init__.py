"""Tasks registered with fairseq: negative_distillation."""

from . import negative_distillation  # noqa: F401
