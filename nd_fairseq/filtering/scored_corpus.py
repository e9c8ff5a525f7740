"""The scores of a corpus scored from files, kept in scratch files (:class:`ScoredCorpus`).

Each line's score is kept as a 4-byte index into the sorted distinct scores, with the number of
lines holding each, so the distribution (:meth:`ScoredCorpus.summary`, :func:`weighted_median`)
and the cut (:mod:`nd_fairseq.filtering.cut`) need no per-line pass.
"""

import os
import tempfile
from typing import Optional

import numpy as np


def weighted_median(values: np.ndarray, counts: np.ndarray) -> float:
    """Median of the scores ``values`` held by ``counts`` lines each (mean of the middle two)."""
    if values.size == 0:
        return float("nan")
    order = np.argsort(values, kind="stable")
    v, cum = values[order], np.cumsum(counts[order])
    n = int(cum[-1])
    lo = v[np.searchsorted(cum, (n - 1) // 2 + 1)]
    hi = v[np.searchsorted(cum, n // 2 + 1)]
    return float((lo + hi) / 2.0)


class ScoredCorpus:
    """Per-line scores of an aligned corpus, kept in scratch files.

    Each line's score is stored as its index into :attr:`values` (the sorted distinct scores);
    :attr:`counts` gives the number of lines with each, so the distribution needs no per-line
    pass. :meth:`iter_codes` streams the indices; :attr:`scores` is a memory-mapped float array
    made on first use. Use as a context manager (or call :meth:`close`) so the scratch
    directory is removed.
    """

    def __init__(self, scratch: tempfile.TemporaryDirectory, n: int, values: np.ndarray,
                 counts: np.ndarray, n_unique: int, codes_path: Optional[str]):
        self._scratch = scratch
        self.n_pairs = n
        self.values = values
        self.counts = counts
        self.n_unique = n_unique
        self.codes_path = codes_path
        self._scores = None

    def __enter__(self) -> "ScoredCorpus":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._scores = None
        self._scratch.cleanup()

    def iter_codes(self, chunk: int = 1 << 22):
        """Yield the score indices of consecutive lines, ``chunk`` lines at a time."""
        if not self.n_pairs:
            return
        with open(self.codes_path, "rb") as f:
            for _ in range(0, self.n_pairs, chunk):
                yield np.fromfile(f, dtype=np.uint32, count=chunk)

    @property
    def scores(self) -> np.ndarray:
        """The score of every line (float64, memory-mapped from the scratch directory)."""
        if self._scores is None:
            if not self.n_pairs:
                self._scores = np.zeros(0)
            else:
                path = os.path.join(self._scratch.name, "scores.f64")
                with open(path, "wb") as f:
                    for codes in self.iter_codes():
                        self.values[codes].tofile(f)
                self._scores = np.memmap(path, dtype=np.float64, mode="r", shape=(self.n_pairs,))
        return self._scores

    def summary(self) -> dict:
        zeros = int(self.counts[self.values == 0.0].sum()) if self.values.size else 0
        n = max(1, self.n_pairs)
        return {
            "pairs": self.n_pairs,
            "unique": self.n_unique,
            "median": weighted_median(self.values, self.counts),
            "mean": float((self.values * self.counts).sum() / n) if self.values.size else float("nan"),
            "zero_share": zeros / n,
        }
