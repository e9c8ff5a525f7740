"""Scoring a file pair out of core: :func:`score_files`, in bounded memory whatever the corpus size.

1. each file is read as bytes and its keys hashed block by block (one process per file, a
   vectorised hash over the whole block, :func:`nd_fairseq.filtering.hashing.block_hashes`: no
   Python object per line), the hashes going to scratch files (8 bytes a line);
2. the pairs are partitioned by the hash of their group (the response, for H_src) into buckets
   of about :data:`BUCKET_LINES` pairs, each counted in memory with radix and composite sorts
   (:func:`nd_fairseq.filtering.entropy.conditional_entropy`); a bucket made large by one very
   frequent response is counted chunk by chunk instead (:func:`_large_bucket_codes`);
3. each line gets the index of its score among the distinct scores (4 bytes a line, in a
   scratch file that the writers of nd-filter stream), returned as a
   :class:`~nd_fairseq.filtering.scored_corpus.ScoredCorpus`.

The hash is a fixed function of the key's bytes (no per-process salt), so results do not depend
on how the work is split over processes. A corpus of at most ``bucket_lines * jobs`` pairs is
counted in memory, one bucket per process, with the same functions.
"""

import math
import os
import tempfile
from typing import Iterator, List, Optional

import numpy as np

from ..io_utils import NO_SPACE_ERRNOS, InputError, ScratchDir, default_jobs, iter_line_buffers, run_parallel
from .entropy import conditional_entropy, entropy_of_counts, log_base
from .hashing import block_hashes
from .keys import parse_key
from .scored_corpus import ScoredCorpus

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
    perm, rid, sizes, h = conditional_entropy(group, member, ln_base)
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
    # the same sums as conditional_entropy: per group, c log c of the repeated pairs in increasing c
    rep = np.flatnonzero(pc > 1)
    order = np.lexsort((pc[rep], gid[rep]))
    h = entropy_of_counts(sizes, gid[rep][order], pc[rep][order].astype(np.float64), ln_base)
    code, vals, counts = _score_codes(sizes, h)
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
