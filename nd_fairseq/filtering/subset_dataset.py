"""The source-entropy filter inside fairseq: train on the top or bottom fraction of a binarised set.

``EntropySubsetDataset`` wraps a ``LanguagePairDataset`` and exposes only the pairs selected from a
per-pair score file (``nd-filter``'s ``scores.txt``; ``preprocess.sh`` copies it to
``data-bin/full/train.entropy``). Selection follows exactly the rules of ``nd-filter``
(:func:`~nd_fairseq.filtering.cut.select_indices`), so ``--entropy-subset top`` on the
full set trains on the same pairs as the script-built ``data-bin/negative``.
"""

import logging
import math
from typing import Optional

import numpy as np
from fairseq.data import BaseWrapperDataset

from ..io_utils import InputError, iter_numbered_lines, require_file
from .cut import select_indices

logger = logging.getLogger(__name__)


def read_scores(path: str) -> np.ndarray:
    """One float per line (nd-filter's scores.txt), with a file/line error on anything else."""
    require_file(path, "entropy score file", "create it with nd-filter (scores.txt) or preprocess.sh")
    values = []
    for line_no, line in iter_numbered_lines(path):
        try:
            value = float(line)
        except ValueError:
            raise InputError(f"{path}: line {line_no} is not a number ({line[:30]!r}); the score "
                             f"file must hold one entropy per line, as nd-filter writes it") from None
        if not math.isfinite(value):
            # a NaN compares false with everything: the pair would land in neither or both halves
            raise InputError(f"{path}: line {line_no} is {line.strip()[:30]!r}, not a finite entropy; "
                             f"rescore the training set with nd-filter (scores.txt) or preprocess.sh")
        values.append(value)
    return np.asarray(values, dtype=np.float64)


class EntropySubsetDataset(BaseWrapperDataset):
    """The pairs of ``dataset`` that the entropy cut keeps, in their original order."""

    def __init__(self, dataset, scores: np.ndarray, subset: str, ratio: float = 0.5,
                 threshold: Optional[float] = None, scores_path: str = "scores"):
        super().__init__(dataset)
        if len(scores) != len(dataset):
            raise InputError(
                f"{scores_path} has {len(scores)} scores but the training set has {len(dataset)} pairs; "
                f"use the score file written for this binarised set (preprocess.sh: data-bin/full/train.entropy)")
        self.indices = select_indices(scores, subset, ratio, threshold).astype(np.int64)
        if self.indices.size == 0:
            raise InputError(f"the entropy cut ({subset}, ratio {ratio}, threshold {threshold}) keeps no "
                             f"training pairs; raise --entropy-ratio or lower --entropy-threshold")
        self.subset = subset
        logger.info("entropy subset %s: %d of %d training pairs (ratio %s, threshold %s)",
                    subset, len(self.indices), len(dataset), ratio, threshold)

    def __getitem__(self, index):
        return self.dataset[int(self.indices[index])]

    def __len__(self):
        return len(self.indices)

    @property
    def sizes(self):
        return self.dataset.sizes[self.indices]

    def num_tokens(self, index):
        return self.dataset.num_tokens(int(self.indices[index]))

    def num_tokens_vec(self, indices):
        return self.dataset.num_tokens_vec(self.indices[indices])

    def size(self, index):
        return self.dataset.size(int(self.indices[index]))

    def ordered_indices(self):
        # LanguagePairDataset's order on the subset: shuffled, then stable-sorted by target and
        # source length
        if getattr(self.dataset, "shuffle", True):
            order = np.random.permutation(len(self))
        else:
            order = np.arange(len(self))
        inner = self.indices
        tgt = getattr(self.dataset, "tgt_sizes", None)
        if tgt is not None:
            order = order[np.argsort(tgt[inner[order]], kind="mergesort")]
        return order[np.argsort(self.dataset.src_sizes[inner[order]], kind="mergesort")]

    def filter_indices_by_size(self, indices, max_sizes):
        kept, ignored = self.dataset.filter_indices_by_size(self.indices[indices], max_sizes)
        return np.searchsorted(self.indices, kept), list(np.searchsorted(self.indices, ignored))

    @property
    def supports_prefetch(self):
        return getattr(self.dataset, "supports_prefetch", False)

    def prefetch(self, indices):
        self.dataset.prefetch(self.indices[indices])
