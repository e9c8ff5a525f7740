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
import sys
import time
from typing import List, Optional

import numpy as np

from ..io_utils import AtomicFiles, InputError, iter_line_blocks, require_file
from .source_entropy import KEY_CHOICES, Selector, score_files, selectors_for


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
                   help=f"how utterances are grouped: {', '.join(KEY_CHOICES)} (default: normalized = "
                        f"NFKC, lowercase, whitespace collapsed; prefix:K = first K normalised words)")
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
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return p


def _write_selected(path: str, selector: Selector, scores: np.ndarray, out, bar=None) -> int:
    """Stream ``path`` and write the lines the selector keeps; returns how many were written."""
    selector.reset()
    start = kept = 0
    for block in iter_line_blocks(path):
        mask = selector.mask(np.asarray(scores[start:start + len(block)]))
        start += len(block)
        chosen = [line for line, keep in zip(block, mask.tolist()) if keep]
        if chosen:
            out.write("\n".join(chosen))
            out.write("\n")
        kept += len(chosen)
        if bar is not None:
            bar.update(len(block))
    return kept


def _format_scores(scores: np.ndarray, out, chunk: int = 1 << 20) -> None:
    for a in range(0, scores.shape[0], chunk):
        block = np.round(np.asarray(scores[a:a + chunk]), 6).tolist()
        out.write("\n".join(map(repr, block)))
        out.write("\n")


def run(args: argparse.Namespace) -> dict:
    require_file(args.query, "query file", "give the query side of the training pairs with --query")
    require_file(args.response, "response file", "give the response side with --response")
    if args.bottom_ratio is not None and not args.bottom:
        args.bottom = True
    t0 = time.perf_counter()
    corpus = score_files(args.query, args.response, key=args.key, base=args.base,
                         entropy=args.entropy, scratch_dir=args.scratch_dir, progress=not args.quiet)
    with corpus:
        n = corpus.n_pairs
        if n == 0:
            raise InputError(f"{args.query} and {args.response} are empty; nd-filter needs at least one pair")
        top_sel, bottom_sel = selectors_for(corpus.values, corpus.counts, n, args.ratio,
                                            args.bottom_ratio, args.threshold)
        summary = corpus.summary()
        summary.update({
            "key": args.key, "base": args.base, "entropy": args.entropy,
            "mode": "threshold" if args.threshold is not None else "ratio",
            "ratio": None if args.threshold is not None else (0.5 if args.ratio is None else args.ratio),
            "threshold": args.threshold,
            "cut": top_sel.cut if math.isfinite(top_sel.cut) else None,
        })
        bar = None
        if not args.quiet:
            from tqdm import tqdm

            outputs = (0 if args.no_top else 2) + (2 if args.bottom else 0)
            bar = tqdm(desc="writing", total=n * outputs, unit=" lines", unit_scale=True, leave=False)
        try:
            with AtomicFiles(args.out_dir) as out:
                _format_scores(corpus.scores, out.open("scores.txt"))
                if not args.no_top:
                    summary["top"] = _write_selected(args.query, top_sel, corpus.scores, out.open("top.query"), bar)
                    _write_selected(args.response, top_sel, corpus.scores, out.open("top.response"), bar)
                if args.bottom:
                    summary["bottom"] = _write_selected(args.query, bottom_sel, corpus.scores,
                                                        out.open("bottom.query"), bar)
                    _write_selected(args.response, bottom_sel, corpus.scores, out.open("bottom.response"), bar)
                summary["seconds"] = round(time.perf_counter() - t0, 3)
                summary["pairs_per_second"] = round(n / max(summary["seconds"], 1e-9))
                json.dump(summary, out.open("summary.json"), indent=2)
        finally:
            if bar is not None:
                bar.close()
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
    if "top" in summary:
        lines.append(f"top (negative set): {summary['top']} pairs -> {out_dir}/top.query, top.response")
    if "bottom" in summary:
        lines.append(f"bottom: {summary['bottom']} pairs -> {out_dir}/bottom.query, bottom.response")
    lines.append(f"time: {summary['seconds']:.2f} s ({summary['pairs_per_second']:,} pairs/s)")
    print("\n".join(lines))


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = run(args)
    except InputError as err:
        print(f"nd-filter: error: {err}", file=sys.stderr)
        return 2
    if not args.quiet:
        print_summary(summary, args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
