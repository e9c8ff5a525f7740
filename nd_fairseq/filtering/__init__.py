"""Source-entropy scoring and the negative-set cut (script side and in-fairseq dataset filter)."""

from .source_entropy import (  # noqa: F401
    group_entropy,
    select_indices,
    source_entropy,
    target_entropy,
)
