"""Response-selection metrics: R@1 and mean reciprocal rank (PNEG §3.1, Table 1).

The positive's rank counts every negative scored *at least* as high: ties never favour the
positive, so a constant scorer gets R@1 = 0 and rank = number of candidates, not a lucky 1.
"""

from typing import Dict, Sequence


def positive_rank(scores: Sequence[float], label: int) -> int:
    """1-based rank of candidate ``label``; a tie ranks it below every tied negative."""
    if not 0 <= label < len(scores):
        raise ValueError(f"label {label} is outside the {len(scores)} candidates")
    pos = scores[label]
    if pos != pos:  # NaN: the model failed; rank it last
        return len(scores)
    return 1 + sum(1 for i, s in enumerate(scores) if i != label and not (s < pos))


def recall_at_1(ranks: Sequence[int]) -> float:
    return sum(r == 1 for r in ranks) / len(ranks) if ranks else 0.0


def mrr(ranks: Sequence[int]) -> float:
    return sum(1.0 / r for r in ranks) / len(ranks) if ranks else 0.0


def selection_metrics(all_scores: Sequence[Sequence[float]], labels: Sequence[int]) -> Dict[str, float]:
    """R@1 and MRR over contexts, from each context's candidate scores and its positive's index."""
    if len(all_scores) != len(labels):
        raise ValueError(f"{len(all_scores)} score lists for {len(labels)} labels")
    ranks = [positive_rank(s, l) for s, l in zip(all_scores, labels)]
    return {"R@1": recall_at_1(ranks), "MRR": mrr(ranks), "n": len(ranks)}
