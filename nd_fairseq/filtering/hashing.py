"""Hashing the grouping keys to 64 bits, a whole block of lines at a time.

A vectorised MurmurHash64A-style hash: a few numpy passes over a block instead of one Python
object and one ``hash()`` call per line, and the same values in every process (no salt), so the
scores do not depend on how the work is split. A span of L bytes mixes 4 * ceil(L / 32) 8-byte
words (at least 4), the last ones zero-padded; the length is mixed into the seed, so the padding
is unambiguous. Words are taken in tiers of 4: all spans take the first 4 together, the longer
ones the next 4, and so on, so each numpy pass works on a contiguous array.

:func:`block_hashes` hashes the keys of a block of lines without building them (see
:mod:`nd_fairseq.filtering.keys`); :func:`hash_keys` hashes keys that are already built.
"""

from typing import Iterable, Optional

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .keys import BLOCK_PATH_SHARE, _normalized_block_str, _prefix, _special_lines, line_bounds, parse_key

_MUL = np.uint64(0xC6A4A7935BD1E995)
_SEED = np.uint64(0x8445D61A4E774912)
_R47 = np.uint64(47)
_TIER_WORDS = 4


def hash_spans(buf, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """64-bit hash of each byte span ``buf[starts[i]:ends[i]]`` (a function of its bytes only)."""
    n = starts.size
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    arr = np.frombuffer(buf, dtype=np.uint8)
    padded = np.zeros(arr.size + 8 * _TIER_WORDS + 8, dtype=np.uint8)
    padded[:arr.size] = arr
    # words[p] = the 8 bytes at offset p, little-endian (an unaligned, overlapping view)
    words = as_strided(padded, shape=(padded.size - 7, 8), strides=(1, 1)).view("<u8")[:, 0]
    length = np.asarray(ends, dtype=np.intp) - starts
    h = length.astype(np.uint64)
    h *= _MUL
    h ^= _SEED
    pos = np.array(starts, dtype=np.intp)
    rest = length.copy()
    out = None
    idx = None  # the spans still being hashed (None: all)
    while True:
        for _ in range(_TIER_WORDS):
            h = _mix_word(h, words[pos], rest)
            pos += 8
            rest -= 8
        more = np.flatnonzero(rest > 0)
        if more.size == h.size:
            continue
        if out is None:
            out = h
        else:
            out[idx] = h
        if more.size == 0:
            break
        idx = more if idx is None else idx[more]
        h, pos, rest = h[more], pos[more], rest[more]
    out ^= out >> _R47
    out *= _MUL
    out ^= out >> _R47
    return out


# _KEEP[r]: the low r bytes of a word (r = 0..8)
_KEEP = np.array([(1 << (8 * r)) - 1 for r in range(9)], dtype=np.uint64)


def _mix_word(h: np.ndarray, w: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """One MurmurHash64A round with the word's bytes past the span's end (``rest`` < 8) zeroed."""
    w &= _KEEP.take(np.clip(rest, 0, 8))
    w *= _MUL
    w ^= w >> _R47
    w *= _MUL
    h ^= w
    h *= _MUL
    return h


def hash_keys(keys: Iterable) -> np.ndarray:
    """Hashes of a sequence of keys (bytes, or str hashed as UTF-8), as :func:`hash_spans`."""
    enc = [k.encode("utf-8") if isinstance(k, str) else bytes(k) for k in keys]
    lengths = np.fromiter(map(len, enc), dtype=np.intp, count=len(enc))
    ends = np.cumsum(lengths)
    return hash_spans(b"".join(enc), ends - lengths, ends)


def _prefix_ends(arr: np.ndarray, starts: np.ndarray, ends: np.ndarray, k: int) -> np.ndarray:
    """End of the first ``k`` words of each normalised line (single spaces between words)."""
    spaces = np.flatnonzero(arr == 32)
    kth = np.searchsorted(spaces, starts) + (k - 1)  # index of the k-th space from the start
    cut = ends.copy()
    ok = np.flatnonzero(kth < spaces.size)
    at = spaces[kth[ok]]
    inside = at < ends[ok]
    cut[ok[inside]] = at[inside]
    return cut


def block_hashes(data: bytes, key: str, size: Optional[int] = None) -> np.ndarray:
    """Hash of the grouping key of every line of a block: ``data[:size]``, UTF-8 lines joined
    by ``\\n`` (bytes after ``size`` are ignored).

    Equal to :func:`hash_keys` of the lines' keys (for ``normalized``, the
    :func:`~nd_fairseq.filtering.keys.normalize_line` of each line; for ``prefix:K``, its first K
    words), without making the keys: the lines whose key is their lowercased text are hashed in
    place, the few others (non-ASCII, odd whitespace) are normalised as str and hashed separately.
    """
    kind, k = parse_key(key)
    size = len(data) if size is None else size
    if kind == "exact":
        starts, ends, _ = line_bounds(np.frombuffer(data, dtype=np.uint8, count=size))
        return hash_spans(data, starts, ends)
    low = data.lower()  # ASCII letters only; lines with other letters are redone below
    arr = np.frombuffer(low, dtype=np.uint8, count=size)
    starts, ends, nl = line_bounds(arr)
    lines = _special_lines(low, arr, nl)
    if lines.size > BLOCK_PATH_SHARE * starts.size:  # mostly special: all of it as str
        keys = _normalized_block_str(data[:size])
        return hash_keys(_prefix(k, b" ")(keys) if kind == "prefix" else keys)
    h = hash_spans(low, starts, _prefix_ends(arr, starts, ends, k) if kind == "prefix" else ends)
    if lines.size:
        spans = zip(starts[lines].tolist(), ends[lines].tolist())
        fixed = _normalized_block_str(b"\n".join([data[a:b] for a, b in spans]))
        h[lines] = hash_keys(_prefix(k, b" ")(fixed) if kind == "prefix" else fixed)
    return h

