"""Criteria registered with fairseq: negative_distillation (and the baselines)."""

from . import negative_distillation  # noqa: F401
from . import unlikelihood_dialog  # noqa: F401
from . import negative_training  # noqa: F401
from . import face  # noqa: F401
