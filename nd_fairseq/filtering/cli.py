"""``nd-filter``: score (query, response) pairs by source entropy and cut the negative set D_N.

    nd-filter --query train.query --response train.response --out-dir filtered/

writes ``filtered/scores.txt`` (one H_src per input line), ``filtered/top.query`` and
``filtered/top.response`` (the top ``--ratio`` of pairs by H_src, input order kept),
``filtered/summary.json``, and with ``--bottom`` also ``filtered/bottom.{query,response}``.
All outputs appear together or not at all.
"""

import argparse
import json
import math
import signal
import sys
import threading
import time
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..io_utils import (AtomicFiles, InputError, check_output_dir, default_jobs, iter_line_buffers, require_file,
                        run_parallel)
from .auto_key import MOSTLY_ZEROS, choose_key, default_bound, zeros_in_top
from .cut import Selector, selectors_for
from .file_scoring import score_files
from .keys import KEY_CHOICES, line_bounds
from .scored_corpus import ScoredCorpus


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nd-filter",
        description="Source-entropy filter (Csáky et al. 2019; Negative Distillation Eq. 4): "
                    "scores each pair by the entropy of the queries its response answers and writes "
                    "the top fraction as the negative set.")
    p.add_argument("--query", required=True, help="query text, one utterance per line (UTF-8)")
    p.add_argument("--response", required=True, help="response text aligned with --query")
    p.add_argument("--out-dir", required=True, help="directory for scores.txt, top.*, bottom.*, summary.json")
    p.add_argument("--key", default="normalized",
                   help=f"how utterances are grouped: {', '.join(KEY_CHOICES)} or auto (default: normalized = "
                        f"NFKC, lowercase, whitespace collapsed; prefix:K = first K normalised words; auto = "
                        f"the finest key whose share of zero-entropy pairs is at most --auto-max-zero-share)")
    p.add_argument("--auto-max-zero-share", type=float, default=None,
                   help="with --key auto: the largest share of pairs at H = 0 a key may leave "
                        "(default 1 - ratio, so no zero-entropy pair enters the top set; 0.5 with --threshold)")
    p.add_argument("--base", default="2", help="log base of the entropy: 2 (bits, default), e (nats) or 10")
    p.add_argument("--entropy", default="source", choices=("source", "target"),
                   help="source: H_src of each pair's response (the paper); target: Csáky's H_tgt of "
                        "each pair's query")
    cut = p.add_mutually_exclusive_group()
    cut.add_argument("--ratio", type=float, default=None,
                     help="fraction of pairs in the top (negative) set, by descending entropy (default 0.5)")
    cut.add_argument("--threshold", type=float, default=None,
                     help="entropy cut instead of a ratio: top = score > T, bottom = score <= T")
    p.add_argument("--bottom", action="store_true", help="also write bottom.query/bottom.response")
    p.add_argument("--bottom-ratio", type=float, default=None,
                   help="fraction in the bottom set (default 1 - ratio: the complement of the top set)")
    p.add_argument("--no-top", action="store_true", help="write scores (and bottom) only")
    p.add_argument("--scratch-dir", default=None, help="where the hash scratch files go (default: system temp)")
    p.add_argument("--jobs", type=int, default=None,
                   help="processes to use (default: 2, or 1 on a single core); the query and response "
                        "files are read and written in parallel")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return p


WRITE_BLOCK_BYTES = 1 << 22  # bytes of input read at a time when writing the selections


# scores.txt holds this many decimals, and the cut ranks exactly those values: the in-fairseq filter
# (--entropy-subset), which reads scores.txt, then selects the very pairs nd-filter selected.
SCORE_DECIMALS = 6


def ranked_values(corpus: ScoredCorpus) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(per distinct score: the value ranked, i.e. as written; distinct ranked values; their counts)."""
    ranked = np.round(corpus.values, SCORE_DECIMALS)
    uniq, inverse = np.unique(ranked, return_inverse=True)
    counts = np.bincount(inverse, weights=corpus.counts, minlength=uniq.size).astype(np.int64)
    return ranked, uniq, counts


def _write_selected(path: str, corpus: ScoredCorpus, outputs: Sequence[Tuple[Selector, str]],
                    ranked: np.ndarray) -> List[int]:
    """Stream ``path`` and write the lines each selector keeps to its file; returns the counts.

    Works on bytes (the input was validated as UTF-8 while it was hashed) and never makes an
    object per line: runs of consecutive kept lines are copied as slices of the block read, or,
    when they are many, the kept bytes are picked with a byte mask.
    """
    files = [open(out, "wb") for _, out in outputs]
    sels = [sel.reset() for sel, _ in outputs]
    kept = [0] * len(outputs)
    seen = 0
    try:
        with open(corpus.codes_path, "rb") as fc:
            for block, size in iter_line_buffers(path, WRITE_BLOCK_BYTES, validate=False):
                arr = np.frombuffer(block, dtype=np.uint8, count=size)
                starts, ends, _ = line_bounds(arr)
                k = starts.size
                codes = np.fromfile(fc, dtype=np.uint32, count=k)
                if codes.size != k:
                    raise InputError(f"{path} changed while nd-filter was running (more lines than "
                                     f"scored); run it again on files that are not being written")
                seen += k
                scores = ranked[codes]
                lengths = byte_mask = last_mask = None
                for j, (sel, f) in enumerate(zip(sels, files)):
                    mask = sel.mask(scores)
                    edge = np.diff(mask.view(np.int8), prepend=np.int8(0), append=np.int8(0))
                    first = np.flatnonzero(edge == 1)  # runs of kept lines: first..last
                    if first.size == 0:
                        continue
                    last = np.flatnonzero(edge == -1) - 1
                    kept[j] += int((last - first).sum()) + first.size
                    if first.size * 8 < k:  # few runs: copy each as one slice
                        f.write(b"\n".join([block[a:b] for a, b in zip(starts[first].tolist(),
                                                                          ends[last].tolist())]))
                        f.write(b"\n")
                        continue
                    # many runs: pick the bytes of the kept lines (each with its newline)
                    if byte_mask is not None and np.array_equal(mask, ~last_mask):
                        byte_mask = ~byte_mask  # the complement of the last set (top/bottom)
                    else:
                        if lengths is None:
                            lengths = ends - starts + 1
                            lengths[-1] -= 1  # the last line has no newline in the block
                        byte_mask = np.repeat(mask, lengths)
                    last_mask = mask
                    f.write(arr[byte_mask])
                    if mask[-1]:
                        f.write(b"\n")
    finally:
        for f in files:
            f.close()
    if seen != corpus.n_pairs:
        raise InputError(f"{path} changed while nd-filter was running ({seen} lines, {corpus.n_pairs} "
                         f"scored); run it again on files that are not being written")
    return kept


def _score_strings(values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Each distinct score as its scores.txt line (``repr`` of the value rounded to 6 decimals)."""
    text = [f"{v!r}\n".encode() for v in np.round(values, SCORE_DECIMALS).tolist()]
    width = max(map(len, text))
    table = np.zeros((len(text), width), dtype=np.uint8)
    for i, t in enumerate(text):
        table[i, :len(t)] = np.frombuffer(t, dtype=np.uint8)
    return table, np.array([len(t) for t in text], dtype=np.int64)


def _write_scores(corpus: ScoredCorpus, out_path: str, chunk: int = 1 << 20) -> None:
    """scores.txt: one score per line, each distinct score formatted once."""
    table, lengths = _score_strings(corpus.values)
    columns = np.arange(table.shape[1])
    with open(out_path, "wb") as out:
        for codes in corpus.iter_codes(chunk):
            rows = table[codes]
            out.write(rows[columns < lengths[codes][:, None]].tobytes())


def _write_side(path: str, corpus: ScoredCorpus, outputs: Sequence[Tuple[Selector, str]],
                scores_path: Optional[str], ranked: np.ndarray) -> List[int]:
    if scores_path is not None:
        _write_scores(corpus, scores_path)
    return _write_selected(path, corpus, outputs, ranked) if outputs else []


def run(args: argparse.Namespace) -> dict:
    require_file(args.query, "query file", "give the query side of the training pairs with --query")
    require_file(args.response, "response file", "give the response side with --response")
    check_output_dir(args.out_dir)
    if args.bottom_ratio is not None and not args.bottom:
        args.bottom = True
    jobs = getattr(args, "jobs", None)
    jobs = default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise InputError(f"--jobs {jobs} must be at least 1")
    t0 = time.perf_counter()

    def score(key: str):
        return score_files(args.query, args.response, key=key, base=args.base, entropy=args.entropy,
                           scratch_dir=args.scratch_dir, progress=not args.quiet, jobs=jobs)

    auto = None
    if args.key == "auto":
        bound = getattr(args, "auto_max_zero_share", None)
        bound = default_bound(args.ratio, args.threshold) if bound is None else bound
        if not 0.0 <= bound <= 1.0:
            raise InputError(f"--auto-max-zero-share {bound} must be in [0, 1]")
        corpus, key, tried = choose_key(score, bound)
        auto = {"max_zero_share": bound, "tried": tried, "met": tried[-1]["zero_share"] <= bound}
    else:
        if getattr(args, "auto_max_zero_share", None) is not None:
            raise InputError("--auto-max-zero-share applies to --key auto only")
        key = args.key
        corpus = score(key)
    with corpus:
        n = corpus.n_pairs
        if n == 0:
            raise InputError(f"{args.query} and {args.response} are empty; nd-filter needs at least one pair")
        ranked, uniq, uniq_counts = ranked_values(corpus)
        top_sel, bottom_sel = selectors_for(uniq, uniq_counts, n, args.ratio, args.bottom_ratio, args.threshold)
        summary = corpus.summary()
        summary.update({
            "key": key, "key_requested": args.key, "base": args.base, "entropy": args.entropy,
            "mode": "threshold" if args.threshold is not None else "ratio",
            "ratio": None if args.threshold is not None else (0.5 if args.ratio is None else args.ratio),
            "threshold": args.threshold,
            "cut": top_sel.cut if math.isfinite(top_sel.cut) else None,
        })
        with AtomicFiles(args.out_dir) as out:
            sides = {"query": [], "response": []}
            for name, sel, wanted in (("top", top_sel, not args.no_top), ("bottom", bottom_sel, args.bottom)):
                if wanted:
                    for side in sides:
                        sides[side].append((sel, out.temp_path(f"{name}.{side}")))
            scores_path = out.temp_path("scores.txt")
            # one process per input file; scores.txt goes with the response side
            kept_r, kept_q = run_parallel([
                (_write_side, (args.response, corpus, sides["response"], scores_path, ranked)),
                (_write_side, (args.query, corpus, sides["query"], None, ranked)),
            ], jobs)
            if kept_q != kept_r:  # pragma: no cover - both sides use the same selectors
                raise RuntimeError(f"query and response selections differ: {kept_q} vs {kept_r}")
            names = [name for name, wanted in (("top", not args.no_top), ("bottom", args.bottom)) if wanted]
            summary.update(zip(names, kept_q))
            if auto is not None:
                summary["auto"] = auto
            if "top" in summary:
                zeros = (zeros_in_top(n, summary["zero_share"], summary["top"]) if args.threshold is None
                         else (int(round(summary["zero_share"] * n)) if args.threshold < 0 else 0))
                summary["top_zero_share"] = zeros / max(1, summary["top"])
            summary["seconds"] = round(time.perf_counter() - t0, 3)
            summary["pairs_per_second"] = round(n / max(summary["seconds"], 1e-9))
            json.dump(summary, out.open("summary.json"), indent=2)
    return summary


def print_summary(summary: dict, out_dir: str) -> None:
    unit = {"2": "bits", "e": "nats", "10": "dits"}.get(str(summary["base"]), f"log{summary['base']}")
    cut = "none" if summary["cut"] is None else f"{summary['cut']:.4f}"
    lines = [
        f"pairs: {summary['pairs']}",
        f"unique {'responses' if summary['entropy'] == 'source' else 'queries'} (key {summary['key']}): "
        f"{summary['unique']}",
        f"median H_{'src' if summary['entropy'] == 'source' else 'tgt'}: {summary['median']:.4f} {unit}; "
        f"share of zeros: {summary['zero_share']:.1%}",
        f"cut ({summary['mode']}): {cut}",
    ]
    if summary.get("auto"):
        tried = ", ".join(f"{t['key']} {t['zero_share']:.1%}" for t in summary["auto"]["tried"])
        lines.insert(1, f"key auto -> {summary['key']} (zero-entropy share at most "
                        f"{summary['auto']['max_zero_share']:.0%}; tried: {tried})")
    if "top" in summary:
        lines.append(f"top (negative set): {summary['top']} pairs -> {out_dir}/top.query, top.response")
    if "bottom" in summary:
        lines.append(f"bottom: {summary['bottom']} pairs -> {out_dir}/bottom.query, bottom.response")
    lines.append(f"time: {summary['seconds']:.2f} s ({summary['pairs_per_second']:,} pairs/s)")
    print("\n".join(lines))


def _keep_freed_memory() -> None:
    """Let glibc keep freed memory instead of unmapping it at once (this process only).

    nd-filter works block by block with numpy temporaries of a few MiB; by default glibc maps
    each afresh and unmaps it when freed, so every block page-faults its memory in again, which
    costs a large share of the run time in VMs. Reusing it changes no result.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: blocks up to 32 MiB come from the heap
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: keep up to 256 MiB of free heap
    except (OSError, AttributeError):  # not glibc
        pass


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds: temporaries removed, workers stopped


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _keep_freed_memory()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main_thread else None
    try:
        summary = run(args)
    except KeyboardInterrupt:
        print(f"nd-filter: interrupted; nothing was written to {args.out_dir}", file=sys.stderr)
        return 130
    except InputError as err:
        print(f"nd-filter: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        name = err.filename if err.filename is not None else args.out_dir
        print(f"nd-filter: error: {name}: {err.strerror or err}; check the path, its permissions and "
              f"the free space", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if not args.quiet:
        print_summary(summary, args.out_dir)
    warn_mostly_zeros(summary)
    return 0


def warn_mostly_zeros(summary: dict) -> None:
    """One line on stderr when the negative set is chosen mostly by line order, not by entropy."""
    auto = summary.get("auto")
    if auto is not None and not auto["met"]:
        print(f"nd-filter: warning: no grouping key leaves at most {auto['max_zero_share']:.0%} of the pairs "
              f"at zero entropy; kept the coarsest, {summary['key']} ({summary['zero_share']:.1%} zeros)",
              file=sys.stderr)
    share = summary.get("top_zero_share")
    if share is not None and share > MOSTLY_ZEROS:
        print(f"nd-filter: warning: {share:.0%} of the negative set has entropy 0 with --key {summary['key']}, "
              f"so it is cut by line order, not by entropy; use --key auto or a coarser prefix:K",
              file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
