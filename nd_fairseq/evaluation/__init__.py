"""Evaluation of generated responses: the automatic metrics of Negative Distillation's Table 3.

``metrics`` holds the metric definitions as pure functions (:func:`evaluate` computes them all),
``readers`` reads fairseq-generate output and plain text, ``cli`` is the ``nd-eval`` tool. Nothing
here imports fairseq or torch.
"""

from .metrics import DIRECTIONS, bleu_scores, distinct_n, evaluate, kl_divergence, low_frequency_ratio
from .readers import read_generate, read_references, read_responses, read_train_counts, undo_subwords

__all__ = [
    "DIRECTIONS", "bleu_scores", "distinct_n", "evaluate", "kl_divergence", "low_frequency_ratio",
    "read_generate", "read_references", "read_responses", "read_train_counts", "undo_subwords",
]
