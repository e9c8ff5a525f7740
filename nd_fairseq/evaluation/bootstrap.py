"""How sure is a BLEU-4 ratio? A paired bootstrap over the test sentences, and the brevity penalty
taken apart from the n-gram precisions.

At the CPU scale BLEU-4 is about 0.01, and one seed's ratio of two systems moves by ±15% when the
1,000 test sentences are resampled; a reader of "BLEU-4 x0.96" needs that interval beside it. Sentence
BLEU-4 (nd-eval's smoothed one) is the brevity penalty exp(1 - |r|/|h|) times the geometric mean of
the smoothed precisions, so a system whose replies are shorter loses BLEU-4 to the penalty alone: the
same bootstrap on the precisions without the penalty says how much of a gap is length.
"""

from typing import Dict, List, Sequence, Tuple

import numpy as np

from .metrics import brevity_penalty, sentence_bleu, tokenize

Interval = Tuple[float, float, float]  # (ratio, 2.5th percentile, 97.5th percentile)


def bootstrap_ratio(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], samples: int = 2000,
                    seed: int = 1, margin: float = 0.10) -> Tuple[float, float, float, float]:
    """Sentence scores of systems A and B, one row per training seed, aligned by test sentence.
    Returns (ratio, low, high, share): the ratio of B's to A's seed-averaged mean score, the 2.5 and
    97.5 percentiles of that ratio over ``samples`` paired resamples of the sentences (the same
    indices for both systems and every seed), and the share of resamples with ratio >= 1 - ``margin``.
    The seeds' own spread is not resampled."""
    a_arr, b_arr = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_arr.shape != b_arr.shape or a_arr.ndim != 2 or a_arr.shape[1] == 0:
        raise ValueError(f"need two equal (seeds x sentences) score arrays, got {a_arr.shape} and {b_arr.shape}")
    n = a_arr.shape[1]
    ratio = b_arr.mean() / a_arr.mean()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(samples, n))
    # the mean over seeds of each seed's mean over the resampled sentences = mean over both
    a_means = a_arr[:, idx].mean(axis=(0, 2))
    b_means = b_arr[:, idx].mean(axis=(0, 2))
    with np.errstate(divide="ignore", invalid="ignore"):  # a resample where A scores 0 has no ratio: inf
        ratios = b_means / a_means
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(ratio), float(low), float(high), float(np.mean(ratios >= 1 - margin))


def without_brevity_penalty(scores: Sequence[float], penalties: Sequence[float]) -> List[float]:
    """Sentence BLEU divided by its brevity penalty: the smoothed precisions' geometric mean alone
    (0 where the score is 0, e.g. an empty reply, whose penalty is 0 too)."""
    return [s / bp if bp > 0 else 0.0 for s, bp in zip(scores, penalties)]


def sentence_bleu4(hypotheses: Sequence[str], references: Sequence[str]) -> Tuple[List[float], List[float]]:
    """Each reply's sentence BLEU-4 against its reference, and its brevity penalty."""
    hyps, refs = [tokenize(h) for h in hypotheses], [tokenize(r) for r in references]
    scores = [sentence_bleu(h, r, 4) for h, r in zip(hyps, refs)]
    penalties = [brevity_penalty(len(h), len(r)) for h, r in zip(hyps, refs)]
    return scores, penalties


SentenceRows = Tuple[List[List[float]], List[List[float]]]  # per seed: sentence BLEU-4; the same without the penalty


def sentence_rows(runs: Sequence[Tuple[Sequence[str], Sequence[str]]]) -> SentenceRows:
    """One system's sentence BLEU-4 and its precisions without the brevity penalty, one row per
    training seed; ``runs``: one (hypotheses, references) pair per seed."""
    scored = [sentence_bleu4(hyps, refs) for hyps, refs in runs]
    return [s for s, _ in scored], [without_brevity_penalty(s, p) for s, p in scored]


def ratio_intervals(a: SentenceRows, b: SentenceRows, samples: int = 2000, seed: int = 1) -> Dict[str, Interval]:
    """B's BLEU-4 over A's, with its 95% paired-bootstrap interval, for BLEU-4 (``"bleu-4"``) and for
    the precisions without the brevity penalty (``"precisions"``), from ``sentence_rows`` of the
    same seeds in the same order. A system whose mean score is 0 has no ratio: ValueError."""
    out = {}
    for i, what in enumerate(("bleu-4", "precisions")):
        if not np.asarray(a[i], dtype=np.float64).any():
            raise ValueError(f"system A's {what} are 0 on every sentence: no ratio")
        ratio, low, high, _ = bootstrap_ratio(a[i], b[i], samples, seed)
        out[what] = (ratio, low, high)
    return out


def bleu4_ratio_intervals(a: Sequence[Tuple[Sequence[str], Sequence[str]]],
                          b: Sequence[Tuple[Sequence[str], Sequence[str]]],
                          samples: int = 2000, seed: int = 1) -> Dict[str, Interval]:
    """``ratio_intervals`` from the decodes: ``a`` and ``b``, one (hypotheses, references) pair per
    training seed, the same seeds in the same order and the same sentences."""
    return ratio_intervals(sentence_rows(a), sentence_rows(b), samples, seed)
