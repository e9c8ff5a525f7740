"""Source entropy (Csáky et al. 2019; ND paper Eq. 4) and the top/bottom cut that defines D_N.

    H_src(r) = - sum_{(q_i, r) in D} p(q_i | r) log p(q_i | r)

with p(q | r) the relative frequency of query q among the pairs whose response is r. The target
entropy H_tgt(q) is the same quantity with the roles of query and response swapped.

Utterances are compared through a grouping key (exact string, normalised text, or the first k
normalised words) and the keys are hashed to 64-bit integers, so the state kept per corpus grows
with the number of distinct utterances, not with the number of lines; the per-line hashes and
scores live in memory-mapped scratch files.

Everything here is vectorised: a block of lines is keyed and hashed by C-level calls
(``str.split``/``str.join``/``hash`` mapped over the block), and the counting is ``np.unique`` +
``np.bincount``. Python's ``hash`` is salted per process; the hashes never leave the process, so
results do not depend on the salt.
"""

import math
import os
import tempfile
import unicodedata
from dataclasses import dataclass, field
from operator import itemgetter, methodcaller
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..io_utils import InputError, iter_line_blocks

# Keys ----------------------------------------------------------------------------------------

_SENTINEL = "\x00"


# Whitespace that str.split() breaks on besides " " and "\n"; NFKC already maps the Unicode
# space characters (U+00A0, U+2000-U+200A, ...) to " ".
_ODD_SPACE = ("\t", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\u2028", "\u2029")


def _needs_collapse(text: str) -> bool:
    return ("  " in text or " \n" in text or "\n " in text or text.startswith(" ")
            or text.endswith(" ") or any(c in text for c in _ODD_SPACE))


def normalize_block(lines: Sequence[str]) -> List[str]:
    """NFKC, lowercase and collapse runs of whitespace, for a whole block of lines at once."""
    text = "\n".join(lines)
    if text.isascii():
        text = text.lower()
    else:
        text = unicodedata.normalize("NFKC", text).lower()
    if not _needs_collapse(text):  # the common case for tokenised corpora: a few C-level scans
        return text.split("\n")
    if _SENTINEL in text:  # pragma: no cover - NUL inside dialogue text is exotic
        return [" ".join(line.split()) for line in text.split("\n")]
    # str.split() with no argument splits on every Unicode whitespace, including the newline we
    # turn into a sentinel token, so one split/join collapses whitespace for the whole block.
    parts = " ".join(text.replace("\n", " \x00 ").split()).split(_SENTINEL)
    return list(map(str.strip, parts))


def _prefix_keys(k: int) -> Callable[[Sequence[str]], Iterable[str]]:
    split_k = methodcaller("split", " ", k)
    take_k = itemgetter(slice(0, k))

    def keys(lines: Sequence[str]) -> Iterable[str]:
        return map(" ".join, map(take_k, map(split_k, normalize_block(lines))))

    return keys


KEY_CHOICES = ("exact", "normalized", "prefix:K")


def key_function(key: str) -> Callable[[Sequence[str]], Iterable[str]]:
    """Map a ``--key`` value to a function from a block of lines to their grouping keys.

    ``exact``: the line itself (Csáky et al.'s "identity" grouping). ``normalized``: NFKC,
    lowercase, whitespace collapsed. ``prefix:K``: the first K normalised words, a coarser key
    that groups "yeah i know" with "yeah i know right" (see method.md §1).
    """
    if key == "exact":
        return lambda lines: lines
    if key in ("normalized", "normalised"):
        return normalize_block
    if key.startswith("prefix:"):
        try:
            k = int(key.split(":", 1)[1])
        except ValueError:
            k = 0
        if k >= 1:
            return _prefix_keys(k)
    raise InputError(f"unknown grouping key {key!r}: use one of exact, normalized, prefix:K (K >= 1)")


def hash_keys(keys: Iterable[str], count: int) -> np.ndarray:
    return np.fromiter(map(hash, keys), dtype=np.int64, count=count).view(np.uint64)


def log_base(base: str) -> float:
    """Natural log of the ``--base`` value (``2``, ``e`` or ``10``, or any number > 1)."""
    if base in ("e", "nat", "nats"):
        return 1.0
    try:
        b = float(base)
    except ValueError:
        b = 0.0
    if b <= 1.0:
        raise InputError(f"unknown log base {base!r}: use 2 (bits), e (nats) or 10")
    return math.log(b)


# Entropy of groups ------------------------------------------------------------------------------

_MIX = np.uint64(0x9E3779B97F4A7C15)


def group_entropy(group: np.ndarray, member: np.ndarray, ln_base: float = math.log(2.0)
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entropy of the member distribution of every group.

    ``group`` and ``member`` are equal-length uint64 arrays (one element per pair). Returns the
    sorted distinct groups, the number of pairs in each, and H(member | group) for each:
    ``H(g) = log N_g - (1/N_g) sum_m c_gm log c_gm`` where c_gm counts pair (g, m).
    """
    if group.size == 0:
        empty = np.zeros(0, dtype=np.uint64)
        return empty, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    # One 64-bit key per (group, member) pair: a collision needs two distinct pairs to agree
    # on 64 bits, about n^2 / 2^65 expected for n pairs.
    with np.errstate(over="ignore"):
        pair = group ^ (member * _MIX + (group >> np.uint64(29)))
    _, first, c_pair = np.unique(pair, return_index=True, return_counts=True)
    groups, inverse = np.unique(group[first], return_inverse=True)
    c_pair = c_pair.astype(np.float64)
    n = np.bincount(inverse, weights=c_pair)
    s = np.bincount(inverse, weights=c_pair * np.log(c_pair))
    h = np.log(n) - s / n
    np.maximum(h, 0.0, out=h)  # exact zero for singleton groups, no -0.0 / -1e-16
    if ln_base != 1.0:
        h /= ln_base
    return groups, n.astype(np.int64), h


# The cut ----------------------------------------------------------------------------------------


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
        n_eq = int(eq.sum())
        if n_eq:
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


def weighted_median(values: np.ndarray, counts: np.ndarray) -> float:
    if values.size == 0:
        return float("nan")
    order = np.argsort(values, kind="stable")
    v, cum = values[order], np.cumsum(counts[order])
    n = int(cum[-1])
    lo = v[np.searchsorted(cum, (n - 1) // 2 + 1)]
    hi = v[np.searchsorted(cum, n // 2 + 1)]
    return float((lo + hi) / 2.0)


# Scoring ----------------------------------------------------------------------------------------


def source_entropy(queries: Sequence[str], responses: Sequence[str], key: str = "normalized",
                   base: str = "2") -> np.ndarray:
    """H_src of each pair's response (Eq. 4), for in-memory lists of equal length."""
    if len(queries) != len(responses):
        raise InputError(f"misaligned inputs: {len(queries)} queries and {len(responses)} responses")
    keys = key_function(key)
    q = hash_keys(keys(list(queries)), len(queries))
    r = hash_keys(keys(list(responses)), len(responses))
    groups, _, h = group_entropy(r, q, log_base(base))
    return h[np.searchsorted(groups, r)] if r.size else h


def target_entropy(queries: Sequence[str], responses: Sequence[str], key: str = "normalized",
                   base: str = "2") -> np.ndarray:
    """H_tgt of each pair's query (Csáky et al. 2019): the entropy of p(r | q)."""
    return source_entropy(responses, queries, key, base)


class ScoredCorpus:
    """Per-line scores of an aligned corpus, kept in a memory-mapped scratch file.

    Use as a context manager (or call :meth:`close`) so the scratch directory is removed.
    ``values``/``counts`` give the distribution of scores over lines without a per-line pass.
    """

    def __init__(self, scratch: tempfile.TemporaryDirectory, n: int, values: np.ndarray,
                 counts: np.ndarray, n_unique: int):
        self._scratch = scratch
        self.n_pairs = n
        self.values = values
        self.counts = counts
        self.n_unique = n_unique
        path = os.path.join(scratch.name, "scores.f64")
        self.scores = np.memmap(path, dtype=np.float64, mode="r", shape=(n,)) if n else np.zeros(0)

    def __enter__(self) -> "ScoredCorpus":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.scores = None
        self._scratch.cleanup()

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


CHUNK_LINES = 1 << 22


def _spill_hashes(path: str, keys, out_path: str, bar) -> int:
    """Hash the grouping key of every line of ``path`` into the raw uint64 file ``out_path``."""
    n = 0
    with open(out_path, "wb") as out:
        for block in iter_line_blocks(path):
            hash_keys(keys(block), len(block)).tofile(out)
            n += len(block)
            if bar is not None:
                bar.update(len(block))
    return n


def score_files(query_path: str, response_path: str, key: str = "normalized", base: str = "2",
                entropy: str = "source", scratch_dir: Optional[str] = None,
                partition_pairs: int = 1 << 25, progress: bool = False) -> ScoredCorpus:
    """Score every line of an aligned (query, response) file pair; streams both files.

    Resident memory: one block of lines, one hash partition of at most ``partition_pairs`` pairs
    during counting, and one entry per distinct scored utterance. The per-line hashes (16 bytes a
    line) and scores (8 bytes a line) go to memory-mapped files in a scratch directory.
    """
    if entropy not in ("source", "target"):
        raise InputError(f"unknown entropy {entropy!r}: use source (H_src of responses) or "
                         f"target (H_tgt of queries)")
    keys = key_function(key)
    ln_base = log_base(base)
    scratch = tempfile.TemporaryDirectory(prefix="nd-filter-", dir=scratch_dir)
    try:
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(desc="hashing", unit=" lines", unit_scale=True, leave=False)
        qfile, rfile = (os.path.join(scratch.name, f) for f in ("q.u64", "r.u64"))
        try:
            nq = _spill_hashes(query_path, keys, qfile, bar)
            nr = _spill_hashes(response_path, keys, rfile, bar)
        finally:
            if bar is not None:
                bar.close()
        if nq != nr:
            raise InputError(
                f"misaligned inputs: {query_path} has {nq} lines, {response_path} has {nr} lines; "
                f"each query line must pair with the same response line")
        n = nq
        if entropy == "source":
            gfile, mfile = rfile, qfile
        else:
            gfile, mfile = qfile, rfile
        group = np.memmap(gfile, dtype=np.uint64, mode="r", shape=(n,)) if n else np.zeros(0, np.uint64)
        member = np.memmap(mfile, dtype=np.uint64, mode="r", shape=(n,)) if n else np.zeros(0, np.uint64)

        # Entropy per distinct group, one hash partition at a time.
        parts = max(1, -(-n // partition_pairs))
        groups_l, sizes_l, h_l = [], [], []
        for p in range(parts):
            gs, ms = [], []
            for a in range(0, n, CHUNK_LINES):
                g = np.asarray(group[a:a + CHUNK_LINES])
                m = np.asarray(member[a:a + CHUNK_LINES])
                if parts > 1:
                    keep = g % np.uint64(parts) == np.uint64(p)
                    g, m = g[keep], m[keep]
                gs.append(g)
                ms.append(m)
            g_p, n_p, h_p = group_entropy(np.concatenate(gs) if gs else np.zeros(0, np.uint64),
                                          np.concatenate(ms) if ms else np.zeros(0, np.uint64), ln_base)
            groups_l.append(g_p)
            sizes_l.append(n_p)
            h_l.append(h_p)
        groups = np.concatenate(groups_l)
        sizes = np.concatenate(sizes_l)
        h = np.concatenate(h_l)
        order = np.argsort(groups)
        groups, sizes, h = groups[order], sizes[order], h[order]
        values, inverse = np.unique(h, return_inverse=True)
        counts = np.bincount(inverse, weights=sizes, minlength=values.size).astype(np.int64)

        # Per-line scores.
        if n:
            scores = np.memmap(os.path.join(scratch.name, "scores.f64"), dtype=np.float64,
                               mode="w+", shape=(n,))
            for a in range(0, n, CHUNK_LINES):
                scores[a:a + CHUNK_LINES] = h[np.searchsorted(groups, np.asarray(group[a:a + CHUNK_LINES]))]
            scores.flush()
            del scores
        del group, member
        os.remove(qfile)
        os.remove(rfile)
        return ScoredCorpus(scratch, n, values, counts, int(groups.size))
    except BaseException:
        scratch.cleanup()
        raise
