"""Scoring in memory: H_src (Eq. 4) or H_tgt of every pair of two equal-length lists of lines.

The same values as :func:`nd_fairseq.filtering.file_scoring.score_files` gives for the same
lines in files: the keys are hashed alike (:func:`nd_fairseq.filtering.hashing.block_hashes`)
and counted by :func:`nd_fairseq.filtering.entropy.conditional_entropy`.
"""

from typing import Sequence

import numpy as np

from ..io_utils import InputError
from .entropy import line_entropy, log_base
from .hashing import block_hashes, hash_keys
from .keys import _prefix, normalize_line, parse_key


def _hash_lines(lines: Sequence[str], key: str) -> np.ndarray:
    """Hashes of the keys of in-memory lines: the same values as for the same lines in a file."""
    lines = list(lines)
    if not lines:
        return np.zeros(0, dtype=np.uint64)
    data = "\n".join(lines).encode("utf-8")
    if data.count(b"\n") == len(lines) - 1:
        return block_hashes(data, key)
    # lines with a newline inside: key them one by one
    kind, k = parse_key(key)
    enc = [line.encode("utf-8") for line in lines]
    keys = enc if kind == "exact" else [normalize_line(b) for b in enc]
    return hash_keys(_prefix(k, b" ")(keys) if kind == "prefix" else keys)


def source_entropy(queries: Sequence[str], responses: Sequence[str], key: str = "normalized",
                   base: str = "2") -> np.ndarray:
    """H_src of each pair's response (Eq. 4), for in-memory lists of equal length."""
    if len(queries) != len(responses):
        raise InputError(f"misaligned inputs: {len(queries)} queries and {len(responses)} responses")
    ln_base = log_base(base)
    q = _hash_lines(queries, key)
    r = _hash_lines(responses, key)
    return line_entropy(r, q, ln_base)


def target_entropy(queries: Sequence[str], responses: Sequence[str], key: str = "normalized",
                   base: str = "2") -> np.ndarray:
    """H_tgt of each pair's query (Csáky et al. 2019): the entropy of p(r | q)."""
    return source_entropy(responses, queries, key, base)
