"""Source entropy (Csáky et al. 2019; ND paper Eq. 4) and the top/bottom cut that defines D_N.

    H_src(r) = - sum_{(q_i, r) in D} p(q_i | r) log p(q_i | r)

with p(q | r) the relative frequency of query q among the pairs whose response is r. The target
entropy H_tgt(q) is the same quantity with the roles of query and response swapped.

Utterances are compared through a grouping key (exact string, normalised text, or the first k
normalised words) and the keys are hashed to 64 bits, so nothing of the text is kept. Scoring a
file pair (:func:`score_files`) streams the files and runs in bounded memory:

1. each file is read as bytes and its keys hashed block by block (one process per file, a
   vectorised hash over the whole block: no Python object per line), the hashes going to
   scratch files (8 bytes a line);
2. the pairs are partitioned by the hash of their group (the response, for H_src) into buckets
   of about ``BUCKET_LINES`` pairs, each counted in memory with radix and composite sorts (a
   bucket made large by one very frequent response is counted chunk by chunk instead);
3. each line gets the index of its score among the distinct scores (4 bytes a line, in a
   scratch file that the writers of nd-filter stream).

The hash is a fixed function of the key's bytes (no per-process salt), so results do not depend
on how the work is split over processes.
"""

import math
import os
import tempfile
import unicodedata
from dataclasses import dataclass, field
from operator import itemgetter, methodcaller
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..io_utils import NO_SPACE_ERRNOS, InputError, ScratchDir, default_jobs, iter_line_buffers, run_parallel

# Keys ----------------------------------------------------------------------------------------
#
# The normalised key of a line is " ".join(NFKC(line).lower().split()) (str.split: every Unicode
# whitespace). The block functions below compute exactly that, fast, for whole blocks of lines.

_SENTINEL = "\x00"

# Whitespace that str.split() breaks on besides " " and "\n" and that NFKC keeps (NFKC maps the
# other Unicode spaces, U+00A0, U+2000-U+200A, U+202F, U+205F, U+3000, to " ").
_ODD_SPACE = ("\t", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\u1680",
              "\u2028", "\u2029")

# A block with more special lines than this share of its lines is normalised as one str.
BLOCK_PATH_SHARE = 0.25


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


def normalize_line(line: bytes) -> bytes:
    """The normalised key of one UTF-8 line (the reference the block functions agree with)."""
    text = line.decode("utf-8")
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return " ".join(text.lower().split()).encode("utf-8")


_REGULAR_BYTES = bytes(range(0x20, 0x80)) + b"\n"  # bytes.lower already normalises these
_HIGH_BYTES = bytes(range(0x80, 0x100))


def line_bounds(arr: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Starts and ends (byte offsets) of the lines of a block, and its newline positions."""
    nl = np.flatnonzero(arr == 10)
    starts = np.empty(nl.size + 1, dtype=np.intp)
    starts[0] = 0
    starts[1:] = nl + 1
    ends = np.empty_like(starts)
    ends[:-1] = nl
    ends[-1] = arr.size
    return starts, ends, nl


def _special_lines(low: bytes, arr: np.ndarray, nl: np.ndarray) -> np.ndarray:
    """Indices of the lines of an ASCII-lowercased block whose normalised key is not the line.

    Those are lines with a non-ASCII character, whitespace other than single spaces between
    words, or a space at either end (``arr`` is the block as uint8, ``nl`` its newlines).
    """
    if arr.size == 0:
        return np.zeros(0, dtype=np.intp)
    # two whitespace bytes in a row (space-space, space-newline, newline-space) other than an
    # empty line (newline-newline); the place is the space's
    blank = arr <= 32
    pair = np.flatnonzero(blank[:-1] & blank[1:])
    if pair.size:
        first = arr[pair] == 10
        pair = pair[~(first & (arr[pair + 1] == 10))]
        pair += arr[pair] == 10  # after a newline: the place is the next byte
    places = [pair, np.flatnonzero(arr[[0, -1]] == 32) * (arr.size - 1)]  # a space at an end
    if low.translate(None, _REGULAR_BYTES):  # non-ASCII bytes or odd whitespace (\t, \r, ...)
        odd = arr - np.uint8(0x20)  # wraps: bytes < 0x20 and >= 0x80 both end up >= 0x60
        odd = odd >= 0x60
        odd[nl] = False
        places.append(np.flatnonzero(odd))
    return np.unique(np.searchsorted(nl, np.concatenate(places)))  # newlines before a byte = its line


def _normalized_block_str(data: bytes) -> List[bytes]:
    text = data.decode("utf-8")
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    text = text.lower()
    if _SENTINEL in text:  # pragma: no cover - NUL inside dialogue text is exotic
        lines = [" ".join(line.split()) for line in text.split("\n")]
    else:
        lines = list(map(str.strip, " ".join(text.replace("\n", " \x00 ").split()).split(_SENTINEL)))
    return "\n".join(lines).encode("utf-8").split(b"\n")


def normalized_block_keys(data: bytes) -> List[bytes]:
    """Normalised keys of a block of UTF-8 lines joined by ``\\n`` (bytes in, bytes out)."""
    low = data.lower()  # ASCII letters only; lines with other letters are redone below
    keys = low.split(b"\n")
    arr = np.frombuffer(low, dtype=np.uint8)
    starts, ends, nl = line_bounds(arr)
    lines = _special_lines(low, arr, nl)
    if lines.size > BLOCK_PATH_SHARE * len(keys):
        return _normalized_block_str(data)
    fixed = _normalized_block_str(b"\n".join([data[a:b] for a, b in zip(starts[lines].tolist(),
                                                                         ends[lines].tolist())]))
    for i, key in zip(lines.tolist(), fixed):
        keys[i] = key
    return keys


def _prefix(k: int, sep):
    split_k = methodcaller("split", sep, k)
    take_k = itemgetter(slice(0, k))
    join = sep.join

    def keys(normalized: Iterable) -> List:
        return list(map(join, map(take_k, map(split_k, normalized))))

    return keys


KEY_CHOICES = ("exact", "normalized", "prefix:K")


def parse_key(key: str) -> Tuple[str, int]:
    """``--key`` as (kind, k): ("exact", 0), ("normalized", 0) or ("prefix", k)."""
    if key == "exact":
        return "exact", 0
    if key in ("normalized", "normalised"):
        return "normalized", 0
    if key.startswith("prefix:"):
        try:
            k = int(key.split(":", 1)[1])
        except ValueError:
            k = 0
        if k >= 1:
            return "prefix", k
    raise InputError(f"unknown grouping key {key!r}: use one of exact, normalized, prefix:K (K >= 1)")


def key_function(key: str) -> Callable[[Sequence[str]], Iterable[str]]:
    """Map a ``--key`` value to a function from a block of lines to their grouping keys.

    ``exact``: the line itself (Csáky et al.'s "identity" grouping). ``normalized``: NFKC,
    lowercase, whitespace collapsed. ``prefix:K``: the first K normalised words, a coarser key
    that groups "yeah i know" with "yeah i know right" (see ``docs/method.md`` §3).
    """
    kind, k = parse_key(key)
    if kind == "exact":
        return lambda lines: lines
    if kind == "normalized":
        return normalize_block
    prefix = _prefix(k, " ")
    return lambda lines: prefix(normalize_block(lines))


def block_key_function(key: str) -> Callable[[bytes], List[bytes]]:
    """Like :func:`key_function` for a block of UTF-8 lines joined by ``\\n``, as bytes.

    The byte keys are the UTF-8 encodings of :func:`key_function`'s keys, so both group alike.
    """
    kind, k = parse_key(key)
    if kind == "exact":
        return lambda data: data.split(b"\n")
    if kind == "normalized":
        return normalized_block_keys
    prefix = _prefix(k, b" ")
    return lambda data: prefix(normalized_block_keys(data))


# Hashing ----------------------------------------------------------------------------------------
#
# Keys are hashed to 64 bits by a vectorised MurmurHash64A-style hash over whole blocks: a few
# numpy passes instead of one Python object and one hash() call per line, and the same values in
# every process (no salt). A span of L bytes mixes 4 * ceil(L / 32) 8-byte words (at least 4),
# the last ones zero-padded; the length is mixed into the seed, so the padding is unambiguous.
# Words are taken in tiers of 4: all spans take the first 4 together, the longer ones the next
# 4, and so on, so each numpy pass works on a contiguous array.

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

    Equal to ``hash_keys(block_key_function(key)(data[:size]))``, without making the keys: the
    lines whose key is their lowercased text are hashed in place, the few others (non-ASCII, odd
    whitespace) are normalised as str and hashed separately.
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

# Entropies are rounded to this many decimals (far below the 6 that scores.txt shows) so that
# equal entropies reached through different counts (e.g. 4 queries once each, or twice each: 2
# bits) are equal floats and tie, as the ordering rule intends, instead of differing in the
# last bit by the order of a floating-point sum.
SNAP_DECIMALS = 12


def _snap(h: np.ndarray, ln_base: float) -> np.ndarray:
    np.maximum(h, 0.0, out=h)  # exact zero for singleton groups, no -1e-16
    if ln_base != 1.0:
        h /= ln_base
    h = np.round(h, SNAP_DECIMALS)
    h += 0.0  # -0.0 -> 0.0
    return h


_MIX = np.uint64(0x9E3779B97F4A7C15)
RADIX_PASSES = 2  # 16-bit radix passes that order the lines by the low 32 bits of the group hash


def _group_ids(group: np.ndarray) -> Tuple[np.ndarray, np.ndarray, int]:
    """Order the lines by group and give every line a dense group id.

    Returns ``perm`` (line indices, grouped), ``rid`` (the group id of each line in that order)
    and the number of ids. The lines are ordered by a stable LSD radix sort on the low 32 bits of
    the hash (numpy's 16-bit stable argsort is a radix sort, several times faster than a full
    64-bit argsort); groups whose 32-bit prefixes clash are then split on the full hash, so ids
    are exact. Ids of split runs are left empty (size 0).
    """
    n = group.size
    mask16 = np.uint64(0xFFFF)
    perm = np.argsort((group & mask16).astype(np.uint16), kind="stable")
    for p in range(1, RADIX_PASSES):
        digit = ((group[perm] >> np.uint64(16 * p)) & mask16).astype(np.uint16)
        perm = perm[np.argsort(digit, kind="stable")]
    gs = group[perm]
    low = (gs & np.uint64((1 << (16 * RADIX_PASSES)) - 1)) if RADIX_PASSES < 4 else gs
    start = np.empty(n, dtype=bool)
    start[0] = True
    np.not_equal(low[1:], low[:-1], out=start[1:])
    del low
    rid = np.cumsum(start)
    rid -= 1
    u = int(rid[-1]) + 1
    clash = np.not_equal(gs[1:], gs[:-1])
    clash &= ~start[1:]
    if clash.any():  # distinct hashes with the same low bits share a run: re-id those runs
        lines = np.flatnonzero(np.isin(rid, np.unique(rid[1:][clash])))
        distinct, inverse = np.unique(gs[lines], return_inverse=True)
        rid[lines] = u + inverse
        u += distinct.size
    return perm, rid, u


def _group_stats(group: np.ndarray, member: np.ndarray, ln_base: float):
    """Per-line group ids and the size and entropy of every group (Eq. 4).

    Returns ``perm`` and ``rid`` as :func:`_group_ids`, the size of each id and its entropy. The
    (group, member) pairs are counted with one more sort, of (group id, member hash) composites.
    """
    n = group.size
    perm, rid, u = _group_ids(group)
    sizes = np.bincount(rid, minlength=u)
    # the group id in the high bits, the high bits of the (remixed) member hash below: a clash
    # needs two members of one group to agree on 64 - log2(ids) bits (44 and more for buckets of
    # 1M lines); the multiplication (odd, so one-to-one) spreads members that are not hashes
    gbits = max(1, (u - 1).bit_length())
    comp = rid.astype(np.uint64)
    comp <<= np.uint64(64 - gbits)
    mixed = member[perm]
    mixed *= _MIX
    mixed >>= np.uint64(gbits)
    comp |= mixed
    del mixed
    comp.sort(kind="stable")  # mostly in order already (by group): timsort runs
    del member
    pstart = np.empty(n, dtype=bool)
    pstart[0] = True
    np.not_equal(comp[1:], comp[:-1], out=pstart[1:])
    pfirst = np.flatnonzero(pstart)
    del pstart
    c_pair = np.diff(np.append(pfirst, n))
    repeated = c_pair > 1  # pairs seen once add 1 log 1 = 0
    pg = comp[pfirst[repeated]] >> np.uint64(64 - gbits)
    del comp, pfirst
    pc = c_pair[repeated].astype(np.uint64)
    # H(g) = log N_g - (1/N_g) sum_m c_gm log c_gm, the sum taken in increasing c_gm within a
    # group so that the result depends only on the counts (not on the member hashes' order).
    order = (pg << np.uint64(32)) | pc
    order.sort()
    pg = (order >> np.uint64(32)).astype(np.intp)
    pc = (order & np.uint64(0xFFFFFFFF)).astype(np.float64)
    s = np.bincount(pg, weights=pc * np.log(pc), minlength=u)
    nf = np.maximum(sizes, 1).astype(np.float64)
    h = _snap(np.log(nf) - s / nf, ln_base)
    return perm, rid, sizes, h


def group_entropy(group: np.ndarray, member: np.ndarray, ln_base: float = math.log(2.0)
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entropy of the member distribution of every group.

    ``group`` and ``member`` are equal-length uint64 arrays (one element per pair). Returns the
    sorted distinct groups, the number of pairs in each, and H(member | group) for each:
    ``H(g) = log N_g - (1/N_g) sum_m c_gm log c_gm`` where c_gm counts pair (g, m).
    """
    group = np.asarray(group, dtype=np.uint64)
    member = np.asarray(member, dtype=np.uint64)
    if group.size == 0:
        empty = np.zeros(0, dtype=np.uint64)
        return empty, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    perm, rid, sizes, h = _group_stats(group, member, ln_base)
    groups = np.zeros(sizes.size, dtype=np.uint64)
    groups[rid] = group[perm]
    live = np.flatnonzero(sizes)
    order = live[np.argsort(groups[live])]
    return groups[order], sizes[order].astype(np.int64), h[order]


def _line_entropy(group: np.ndarray, member: np.ndarray, ln_base: float) -> np.ndarray:
    """H of each line's group, in line order."""
    if group.size == 0:
        return np.zeros(0, dtype=np.float64)
    perm, rid, _, h = _group_stats(group, member, ln_base)
    out = np.empty(group.size, dtype=np.float64)
    out[perm] = h[rid]
    return out


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


def weighted_median(values: np.ndarray, counts: np.ndarray) -> float:
    if values.size == 0:
        return float("nan")
    order = np.argsort(values, kind="stable")
    v, cum = values[order], np.cumsum(counts[order])
    n = int(cum[-1])
    lo = v[np.searchsorted(cum, (n - 1) // 2 + 1)]
    hi = v[np.searchsorted(cum, n // 2 + 1)]
    return float((lo + hi) / 2.0)


# Scoring in memory ------------------------------------------------------------------------------


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
    return _line_entropy(r, q, ln_base)


def target_entropy(queries: Sequence[str], responses: Sequence[str], key: str = "normalized",
                   base: str = "2") -> np.ndarray:
    """H_tgt of each pair's query (Csáky et al. 2019): the entropy of p(r | q)."""
    return source_entropy(responses, queries, key, base)


# Scoring files ----------------------------------------------------------------------------------


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


# Lines per hash bucket: the counting holds one bucket in memory (about 100 bytes a line).
BUCKET_LINES = 1 << 20
# Bytes of text keyed and hashed at a time (the hashing holds about 10 times this).
HASH_BLOCK_BYTES = 1 << 22
CHUNK_LINES = 1 << 18  # lines partitioned at a time
_IDX = np.dtype([("g", "<u8"), ("m", "<u8"), ("i", "<u8")])


def hash_file(path: str, key: str, out_path: str, bar=None) -> int:
    """Hash the grouping key of every line of ``path`` into the raw uint64 file ``out_path``."""
    parse_key(key)
    n = 0
    with open(out_path, "wb") as out:
        for data, size in iter_line_buffers(path, HASH_BLOCK_BYTES):
            h = block_hashes(data, key, size)
            h.tofile(out)
            n += h.size
            if bar is not None:
                bar.update(size + 1)
    return n


def _score_codes(sizes: np.ndarray, h: np.ndarray):
    """Each group's index into the sorted distinct scores, those scores and their line counts."""
    # most groups are single lines (H = 0); only the others need a search among the values
    multi = np.flatnonzero(sizes > 1)
    vals = np.unique(np.append(h[multi], 0.0))
    code = np.zeros(h.size, dtype=np.uint32)
    code[multi] = np.searchsorted(vals, h[multi])
    counts = np.bincount(code, weights=sizes, minlength=vals.size).astype(np.int64)
    return code, vals, counts


def _bucket_codes(group: np.ndarray, member: np.ndarray, ln_base: float):
    """Per-line index into the bucket's sorted distinct scores, those scores, their line counts,
    and the number of distinct groups."""
    perm, rid, sizes, h = _group_stats(group, member, ln_base)
    code, vals, counts = _score_codes(sizes, h)
    line_code = np.empty(group.size, dtype=np.uint32)
    line_code[perm] = code[rid]
    return line_code, vals, counts, int(np.count_nonzero(sizes))


def _records(parts: List[str], chunk: int) -> Iterator[np.ndarray]:
    for path in parts:
        with open(path, "rb") as f:
            while True:
                rec = np.fromfile(f, dtype=_IDX, count=chunk)
                if rec.size == 0:
                    break
                yield rec


def _large_bucket_codes(parts: List[str], ln_base: float, chunk: int, codes_path: str):
    """:func:`_bucket_codes` for a bucket too large to hold line by line (a response that
    answers a large share of the corpus, e.g. "yeah"), in memory proportional to its distinct
    (group, member) pairs: those are counted chunk by chunk, then the line codes are looked up
    chunk by chunk. Gives the same values as the in-memory path."""
    pg = np.zeros(0, dtype=np.uint64)
    pm = np.zeros(0, dtype=np.uint64)
    pc = np.zeros(0, dtype=np.int64)
    for rec in _records(parts, chunk):
        g = np.concatenate([pg, rec["g"]])
        m = np.concatenate([pm, rec["m"]])
        c = np.concatenate([pc, np.ones(rec.size, dtype=np.int64)])
        order = np.lexsort((m, g))
        g, m, c = g[order], m[order], c[order]
        new = np.empty(g.size, dtype=bool)
        new[0] = True
        new[1:] = (g[1:] != g[:-1]) | (m[1:] != m[:-1])
        first = np.flatnonzero(new)
        pg, pm, pc = g[first], m[first], np.add.reduceat(c, first)
    del pm
    start = np.empty(pg.size, dtype=bool)
    start[0] = True
    start[1:] = pg[1:] != pg[:-1]
    gid = np.cumsum(start) - 1
    first = np.flatnonzero(start)
    groups, sizes = pg[first], np.add.reduceat(pc, first)
    # the same sums as _group_stats: per group, c log c of the repeated pairs in increasing c
    rep = np.flatnonzero(pc > 1)
    order = np.lexsort((pc[rep], gid[rep]))
    c = pc[rep][order].astype(np.float64)
    s = np.bincount(gid[rep][order], weights=c * np.log(c), minlength=groups.size)
    nf = sizes.astype(np.float64)
    code, vals, counts = _score_codes(sizes, _snap(np.log(nf) - s / nf, ln_base))
    with open(codes_path, "wb") as out:
        for rec in _records(parts, chunk):
            code[np.searchsorted(groups, rec["g"])].tofile(out)
    return vals, counts, int(groups.size)


# A bucket with more lines than this many times bucket_lines is counted chunk by chunk.
LARGE_BUCKET = 2


def _score_file_buckets(buckets: List[List[str]], ln_base: float, bucket_lines: int) -> List[tuple]:
    """Count buckets (each a list of record files); each bucket's line codes go to a file
    named after its first part, with ``.codes``."""
    out = []
    for parts in buckets:
        lines = sum(os.path.getsize(p) for p in parts) // _IDX.itemsize
        if lines > LARGE_BUCKET * bucket_lines:
            out.append(_large_bucket_codes(parts, ln_base, bucket_lines, parts[0] + ".codes"))
            continue
        rec = np.concatenate([np.fromfile(p, dtype=_IDX) for p in parts])
        if rec.size == 0:
            np.zeros(0, dtype=np.uint32).tofile(parts[0] + ".codes")
            out.append((np.zeros(0), np.zeros(0, np.int64), 0))
            continue
        g, m = np.ascontiguousarray(rec["g"]), np.ascontiguousarray(rec["m"])
        del rec
        codes, vals, counts, n_unique = _bucket_codes(g, m, ln_base)
        codes.tofile(parts[0] + ".codes")
        out.append((vals, counts, n_unique))
    return out


def _score_memory_buckets(group: np.ndarray, member: np.ndarray, buckets: List[int], bits: int,
                          ln_base: float) -> List[tuple]:
    """Count in-memory buckets (the lines whose group hash starts with the bucket's bits)."""
    out = []
    top = group >> np.uint64(64 - bits) if bits else None
    for b in buckets:
        if top is None:
            out.append(_bucket_codes(group, member, ln_base))
            continue
        lines = np.flatnonzero(top == b)
        if lines.size == 0:
            out.append((np.zeros(0, np.uint32), np.zeros(0), np.zeros(0, np.int64), 0))
            continue
        out.append(_bucket_codes(group[lines], member[lines], ln_base))
    return out


def score_files(query_path: str, response_path: str, key: str = "normalized", base: str = "2",
                entropy: str = "source", scratch_dir: Optional[str] = None,
                bucket_lines: Optional[int] = None, progress: bool = False,
                jobs: Optional[int] = None) -> ScoredCorpus:
    """Score every line of an aligned (query, response) file pair; streams both files.

    Resident memory is bounded (one block of lines per process while hashing, one bucket of about
    ``bucket_lines`` pairs while counting) whatever the corpus size; per-line data (hashes, 16
    bytes a line, and score indices, 4 bytes) goes to a scratch directory. ``jobs`` processes
    (default: up to 2) hash the two files and count the buckets in parallel.
    """
    if entropy not in ("source", "target"):
        raise InputError(f"unknown entropy {entropy!r}: use source (H_src of responses) or "
                         f"target (H_tgt of queries)")
    parse_key(key)
    ln_base = log_base(base)
    jobs = default_jobs() if jobs is None else max(1, int(jobs))
    bucket_lines = BUCKET_LINES if bucket_lines is None else max(1, int(bucket_lines))
    # a killed run's scratch directory is removed by the next run that uses the same place
    scratch = ScratchDir(tempfile.gettempdir() if scratch_dir is None else scratch_dir, "nd-filter-")
    try:
        qfile, rfile = (os.path.join(scratch.name, f) for f in ("q.u64", "r.u64"))
        bar = None
        if progress:
            from tqdm import tqdm

            tqdm.monitor_interval = 0  # no monitor thread in a process that forks
            bar = tqdm(desc="hashing responses", total=os.path.getsize(response_path), unit="B",
                       unit_scale=True, leave=False, mininterval=0.5)
        try:
            nr, nq = run_parallel([(hash_file, (response_path, key, rfile, bar)),
                                   (hash_file, (query_path, key, qfile, None))], jobs)
        finally:
            if bar is not None:
                bar.close()
        if nq != nr:
            raise InputError(
                f"misaligned inputs: {query_path} has {nq} lines, {response_path} has {nr} lines; "
                f"each query line must pair with the same response line")
        n = nq
        gfile, mfile = (rfile, qfile) if entropy == "source" else (qfile, rfile)
        codes_path = os.path.join(scratch.name, "codes.u32")
        if n == 0:
            os.remove(qfile)
            os.remove(rfile)
            return ScoredCorpus(scratch, 0, np.zeros(0), np.zeros(0, np.int64), 0, None)
        if n <= bucket_lines * jobs:
            # in memory, one bucket per process (forked children share the arrays)
            bits = (jobs - 1).bit_length()
            group, member = np.fromfile(gfile, dtype=np.uint64), np.fromfile(mfile, dtype=np.uint64)
            os.remove(qfile)
            os.remove(rfile)
            shares = [list(range(j, 1 << bits, jobs)) for j in range(jobs)]
            results: List[tuple] = [()] * (1 << bits)
            for j, res in enumerate(run_parallel(
                    [(_score_memory_buckets, (group, member, share, bits, ln_base)) for share in shares], jobs)):
                for b, r in zip(shares[j], res):
                    results[b] = r
            values, counts, maps = _merge_values([r[1] for r in results], [r[2] for r in results])
            codes = np.empty(n, dtype=np.uint32)
            if bits:
                top = group >> np.uint64(64 - bits)
                for b, r in enumerate(results):
                    codes[top == b] = maps[b][r[0]]
            else:
                codes[:] = maps[0][results[0][0]]
            codes.tofile(codes_path)
            return ScoredCorpus(scratch, n, values, counts, sum(r[3] for r in results), codes_path)
        bits = max((jobs - 1).bit_length(), math.ceil(math.log2(n / bucket_lines)))
        # each process partitions a contiguous range of lines; bucket b is then the list of its
        # parts, in line order
        cuts = [n * j // jobs for j in range(jobs + 1)]
        parts = run_parallel([(_partition, (gfile, mfile, cuts[j], cuts[j + 1], bits, scratch.name, j))
                              for j in range(jobs)], jobs)
        os.remove(qfile)
        os.remove(rfile)
        buckets = [[part[b] for part in parts] for b in range(1 << bits)]
        shares = [buckets[j::jobs] for j in range(jobs)]
        results = [()] * len(buckets)
        for j, res in enumerate(run_parallel([(_score_file_buckets, (share, ln_base, bucket_lines))
                                              for share in shares], jobs)):
            results[j::jobs] = res
        values, counts, maps = _merge_values([r[0] for r in results], [r[1] for r in results])
        _merge_codes(buckets, maps, n, codes_path)
        return ScoredCorpus(scratch, n, values, counts, sum(r[2] for r in results), codes_path)
    except BaseException as err:
        where = os.path.dirname(scratch.name)
        scratch.cleanup()
        # numpy's tofile reports a short write without an errno
        if isinstance(err, OSError) and (err.errno in NO_SPACE_ERRNOS or err.errno is None):
            raise InputError(f"cannot write the scratch files in {where}: {err.strerror or 'a write was cut short'} "
                             f"(the disk is full, or a quota or file size limit was reached); free some space "
                             f"there or pass --scratch-dir on a disk with room") from None
        raise


def _partition(gfile: str, mfile: str, lo: int, hi: int, bits: int, directory: str, part: int) -> List[str]:
    """Split the (group, member, line) records of lines [lo, hi) into 2**bits files by the top
    bits of the group hash; returns the files, one per bucket."""
    nb = 1 << bits
    paths = [os.path.join(directory, f"bucket{b:05d}.{part}") for b in range(nb)]
    outs = [open(p, "wb") for p in paths]
    try:
        with open(gfile, "rb") as fg, open(mfile, "rb") as fm:
            fg.seek(8 * lo)
            fm.seek(8 * lo)
            for a in range(lo, hi, CHUNK_LINES):
                count = min(CHUNK_LINES, hi - a)
                g = np.fromfile(fg, dtype=np.uint64, count=count)
                m = np.fromfile(fm, dtype=np.uint64, count=count)
                b = (g >> np.uint64(64 - bits)).astype(np.uint16)
                order = np.argsort(b, kind="stable")  # radix sort: lines stay in order per bucket
                rec = np.empty(count, dtype=_IDX)
                rec["g"] = g[order]
                rec["m"] = m[order]
                rec["i"] = order
                rec["i"] += np.uint64(a)
                ends = np.cumsum(np.bincount(b, minlength=nb))
                start = 0
                for j, end in enumerate(ends.tolist()):
                    if end > start:
                        rec[start:end].tofile(outs[j])
                    start = end
    finally:
        for f in outs:
            f.close()
    return paths


def _merge_values(vals: List[np.ndarray], counts: List[np.ndarray]):
    """Global sorted distinct scores with line counts, and each bucket's index map into them."""
    allv = np.concatenate(vals)
    values, inverse = np.unique(allv, return_inverse=True)
    total = np.bincount(inverse, weights=np.concatenate(counts), minlength=values.size).astype(np.int64)
    used = total > 0
    new = np.cumsum(used) - 1
    maps, a = [], 0
    for v in vals:
        maps.append(new[inverse[a:a + v.size]].astype(np.uint32))
        a += v.size
    return values[used], total[used], maps


def _bucket_records(parts: List[str], chunk: int) -> Iterator[np.ndarray]:
    """The line numbers of a bucket's records, ``chunk`` at a time, from its part files in order."""
    for rec in _records(parts, chunk):
        yield rec["i"].copy()
    for path in parts:
        os.remove(path)


def _merge_codes(buckets: List[List[str]], maps: List[np.ndarray], n: int, out_path: str,
                 window: int = 1 << 20) -> None:
    """Write the global score index of every line in line order, from the buckets' codes.

    Each bucket holds its lines in line order, so a window of lines takes a prefix of every
    bucket's remaining records.
    """
    chunk = max(1 << 12, window // max(1, len(buckets)))
    records = [_bucket_records(parts, chunk) for parts in buckets]
    codes = [open(parts[0] + ".codes", "rb") for parts in buckets]
    empty = (np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint32))
    pending = [empty] * len(buckets)
    done = [False] * len(buckets)
    try:
        with open(out_path, "wb") as out:
            buf = np.empty(min(window, n), dtype=np.uint32)
            for a in range(0, n, window):
                hi = min(n, a + window)
                for j in range(len(buckets)):
                    idx, code = pending[j]
                    while not done[j] and (idx.size == 0 or idx[-1] < hi):
                        more = next(records[j], None)
                        if more is None:
                            done[j] = True
                            break
                        more_codes = maps[j][np.fromfile(codes[j], dtype=np.uint32, count=more.size)]
                        idx, code = np.concatenate([idx, more]), np.concatenate([code, more_codes])
                    cut = int(np.searchsorted(idx, hi))
                    buf[(idx[:cut] - np.uint64(a)).astype(np.intp)] = code[:cut]
                    pending[j] = (idx[cut:], code[cut:])
                buf[:hi - a].tofile(out)
    finally:
        for f in codes:
            f.close()
    for parts in buckets:
        os.remove(parts[0] + ".codes")
