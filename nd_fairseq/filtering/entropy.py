"""The entropy of groups: Eq. 4 of the ND paper, H_src(r), and Csáky et al.'s H_tgt(q).

    H_src(r) = - sum_{(q_i, r) in D} p(q_i | r) log p(q_i | r)

with p(q | r) the relative frequency of query q among the pairs whose response is r; H_tgt(q) is
the same quantity with the roles swapped. Both are :func:`conditional_entropy`: the pairs come as
(group, member) hashes (see :mod:`nd_fairseq.filtering.hashing`), counted with sorts, never with a
dict of strings. :func:`group_entropy` gives the same per distinct group, :func:`line_entropy`
per pair; ``--base`` is read by :func:`log_base`.
"""

import math
from typing import NamedTuple, Tuple

import numpy as np

from ..io_utils import InputError


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


class GroupEntropy(NamedTuple):
    """What :func:`conditional_entropy` returns; n pairs, u group ids."""

    order: np.ndarray  # (n,) intp: the pair indices, grouped (the pairs of a group are adjacent)
    group_id: np.ndarray  # (n,) intp: the group id of pair ``order[i]``, dense in [0, u)
    size: np.ndarray  # (u,) int64: the pairs of each id, N_g (0 for the ids left empty, see _group_ids)
    entropy: np.ndarray  # (u,) float64: H(member | group) of each id, in the base of ln_base (0 where size 0)


def conditional_entropy(group: np.ndarray, member: np.ndarray, ln_base: float = math.log(2.0)) -> GroupEntropy:
    """Eq. 4: the entropy of the members of every group, counted from (group, member) pairs.

        H(g) = - sum_m p(m | g) log p(m | g) = log N_g - (1/N_g) sum_m c_gm log c_gm

    with c_gm the number of pairs (g, m) and N_g = sum_m c_gm. ``group`` and ``member``: (n,)
    uint64, one element per pair (n >= 1), the hashes of the grouping keys; ``ln_base``: the
    natural log of the base (:func:`log_base`). For H_src(r) the groups are the responses and the
    members the queries; for H_tgt(q) the other way round.

    The decision where the paper is vague: both sides are hashed with one grouping key, so with
    ``prefix:K`` two queries that share their first K words count as one query, not only two
    responses as one response; merging queries inside a group can only lower H_src (``docs/method.md``
    gives the figures). The entropies are rounded to :data:`SNAP_DECIMALS` decimals so that equal
    values reached through different counts tie exactly.

    The pairs are ordered by group with :func:`_group_ids`, then counted with one more sort, of
    (group id, member hash) composites; see :class:`GroupEntropy` for what comes back.
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
    return GroupEntropy(perm, rid, sizes, entropy_of_counts(sizes, pg, pc, ln_base))




def entropy_of_counts(sizes: np.ndarray, pair_group: np.ndarray, pair_count: np.ndarray,
                      ln_base: float) -> np.ndarray:
    """The last step of Eq. 4: H(g) = log N_g - (1/N_g) sum_m c_gm log c_gm from the counts.

    ``sizes``: (u,) N_g of each group id; ``pair_group``, ``pair_count``: (p,) the group id and the
    count c_gm (float64) of every (group, member) pair seen more than once (a pair seen once adds
    1 log 1 = 0), sorted by group id and, within a group, by increasing count, so that the sum
    depends only on the counts and not on the order of the member hashes. Returns (u,) float64,
    rounded by :func:`_snap`.
    """
    s = np.bincount(pair_group, weights=pair_count * np.log(pair_count), minlength=sizes.size)
    nf = np.maximum(sizes, 1).astype(np.float64)
    return _snap(np.log(nf) - s / nf, ln_base)


def group_entropy(group: np.ndarray, member: np.ndarray, ln_base: float = math.log(2.0)
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entropy of the member distribution of every group (:func:`conditional_entropy`, Eq. 4).

    ``group`` and ``member`` are equal-length uint64 arrays (one element per pair). Returns the
    sorted distinct groups, the number of pairs in each, and H(member | group) for each:
    ``H(g) = log N_g - (1/N_g) sum_m c_gm log c_gm`` where c_gm counts pair (g, m).
    """
    group = np.asarray(group, dtype=np.uint64)
    member = np.asarray(member, dtype=np.uint64)
    if group.size == 0:
        empty = np.zeros(0, dtype=np.uint64)
        return empty, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    perm, rid, sizes, h = conditional_entropy(group, member, ln_base)
    groups = np.zeros(sizes.size, dtype=np.uint64)
    groups[rid] = group[perm]
    live = np.flatnonzero(sizes)
    order = live[np.argsort(groups[live])]
    return groups[order], sizes[order].astype(np.int64), h[order]


def line_entropy(group: np.ndarray, member: np.ndarray, ln_base: float) -> np.ndarray:
    """H of each line's group (:func:`conditional_entropy`), in line order: (n,) float64."""
    if group.size == 0:
        return np.zeros(0, dtype=np.float64)
    perm, rid, _, h = conditional_entropy(group, member, ln_base)
    out = np.empty(group.size, dtype=np.float64)
    out[perm] = h[rid]
    return out
