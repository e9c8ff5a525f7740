"""The cut: which pairs form the negative set D_N (top) and the bottom set, given their scores.

The order that defines "top" is: score descending, ties by line number ascending (a stable
sort). ``top r`` takes the first ceil(r n) pairs of that order and ``bottom 1 - r`` the rest, so
the two sets are complementary; ``--threshold T`` is the alternative (top: score > T, bottom:
score <= T). A :class:`Selector` applies a cut chunk by chunk in input order, from the distinct
scores and their line counts only, so nd-filter needs no per-line sort;
:func:`select_indices` applies the same rules to an in-memory array (the in-fairseq filter).
"""

import math
from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np

from ..io_utils import InputError


@dataclass
class Selector:
    """Selects lines by score, chunk by chunk, in input order.

    The order that defines "top" is: score descending, ties by line number ascending (a stable
    sort). ``top k`` takes the first k lines of that order and ``bottom m`` the last m, so with
    ratios r and 1 - r the two sets are complementary. In threshold mode, top is ``score > T`` and
    bottom ``score <= T``.
    """

    cut: float
    descending: bool
    tie_skip: int = 0  # lines with score == cut to pass over before taking any
    tie_take: float = math.inf  # lines with score == cut to take after that
    _seen_ties: int = field(default=0, repr=False)

    def mask(self, scores: np.ndarray) -> np.ndarray:
        beyond = scores > self.cut if self.descending else scores < self.cut
        eq = scores == self.cut
        n_eq = int(np.count_nonzero(eq))
        if n_eq:
            if self.tie_skip <= self._seen_ties and self._seen_ties + n_eq <= self.tie_skip + self.tie_take:
                beyond |= eq  # every tie in this chunk is taken
            elif self._seen_ties < self.tie_skip + self.tie_take and self._seen_ties + n_eq > self.tie_skip:
                ordinal = np.cumsum(eq) - 1 + self._seen_ties
                beyond |= eq & (ordinal >= self.tie_skip) & (ordinal < self.tie_skip + self.tie_take)
            self._seen_ties += n_eq
        return beyond

    def reset(self) -> "Selector":
        self._seen_ties = 0
        return self


def top_selector(values: np.ndarray, counts: np.ndarray, k: int) -> Selector:
    """Selector of the k highest-scoring lines, from the distinct scores and their line counts."""
    if k <= 0:
        return Selector(cut=math.inf, descending=True, tie_take=0)
    order = np.argsort(-values, kind="stable")
    cum = np.cumsum(counts[order])
    pos = int(np.searchsorted(cum, k))
    pos = min(pos, len(order) - 1)
    cut = float(values[order[pos]])
    strictly = int(cum[pos] - counts[order[pos]])
    return Selector(cut=cut, descending=True, tie_skip=0, tie_take=k - strictly)


def bottom_selector(values: np.ndarray, counts: np.ndarray, m: int) -> Selector:
    """Selector of the m lowest-scoring lines: the last m of the top order (ties: later lines)."""
    if m <= 0:
        return Selector(cut=-math.inf, descending=False, tie_take=0)
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(counts[order])
    pos = min(int(np.searchsorted(cum, m)), len(order) - 1)
    cut = float(values[order[pos]])
    n_cut = int(counts[order[pos]])
    take = m - int(cum[pos] - n_cut)
    return Selector(cut=cut, descending=False, tie_skip=n_cut - take, tie_take=take)


def threshold_selectors(threshold: float) -> Tuple[Selector, Selector]:
    """(top, bottom) selectors of the threshold mode: top = score > T, bottom = score <= T."""
    return (Selector(cut=threshold, descending=True, tie_take=0),
            Selector(cut=threshold, descending=False, tie_take=math.inf))


def top_count(n: int, ratio: float) -> int:
    """Lines in the top ``ratio`` of n: ceil, so that top(r) and bottom(1 - r) partition n."""
    return min(n, int(math.ceil(ratio * n - 1e-9)))


def bottom_count(n: int, ratio: float) -> int:
    return n - top_count(n, 1.0 - ratio)


def check_ratio(ratio: float, option: str = "--ratio") -> None:
    if not 0.0 <= ratio <= 1.0:
        raise InputError(f"{option} {ratio} is outside [0, 1]; give the fraction of pairs to keep, e.g. 0.5")


def selectors_for(scores_values: np.ndarray, counts: np.ndarray, n: int, ratio: Optional[float],
                  bottom_ratio: Optional[float], threshold: Optional[float]) -> Tuple[Selector, Selector]:
    """(top, bottom) selectors for a ratio cut or a threshold cut."""
    if threshold is not None:
        return threshold_selectors(threshold)
    ratio = 0.5 if ratio is None else ratio
    check_ratio(ratio)
    bottom_ratio = 1.0 - ratio if bottom_ratio is None else bottom_ratio
    check_ratio(bottom_ratio, "--bottom-ratio")
    return (top_selector(scores_values, counts, top_count(n, ratio)),
            bottom_selector(scores_values, counts, bottom_count(n, bottom_ratio)))


def select_indices(scores: np.ndarray, subset: str, ratio: float = 0.5,
                   threshold: Optional[float] = None) -> np.ndarray:
    """Indices (ascending) of the ``top`` or ``bottom`` lines of an in-memory score array.

    For ``bottom`` ``ratio`` is the fraction kept from the bottom (so ``top 0.5`` and ``bottom
    0.5`` are complementary). Used by the in-fairseq dataset filter; same rules as ``nd-filter``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    values, counts = np.unique(scores, return_counts=True)
    if subset == "top":
        sel, _ = selectors_for(values, counts, scores.size, ratio, None, threshold)
    elif subset == "bottom":
        _, sel = selectors_for(values, counts, scores.size, 1.0 - ratio if threshold is None else None,
                               ratio if threshold is None else None, threshold)
    else:
        raise InputError(f"unknown entropy subset {subset!r}: use top, bottom or all")
    return np.flatnonzero(sel.reset().mask(scores))

