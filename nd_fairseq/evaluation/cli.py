"""``nd-eval``: the Table 3 metrics (Dist-1/2/3, LF, KL-1/2, BLEU-3/4) of one or more systems.

    nd-eval --hyp gen.out --ref test.response --train-responses train.response --json scores.json
    nd-eval --system Standard=std.out --system ND=nd.out --ref test.response \\
            --train-responses train.response --json table3.json

A system file is ``fairseq-generate`` output (recognised by its ``H-``/``T-`` lines; hypotheses are
re-ordered by sentence id and subword pieces undone) or plain text, one response per line. Without
``--ref`` the references are the ``T-`` lines of the generate output.

Prints a Markdown table, one row per system; with several systems the best value of each metric is
in bold (↑ higher is better, ↓ lower is better). ``--json`` writes (atomically) one object with the
metrics as fractions for a single system (keys ``dist-1 dist-2 dist-3 lf kl-1 kl-2 bleu-3 bleu-4``
and more), or ``{"systems": {NAME: {...}}, "best": {metric: [NAME, ...]}}`` for several. The
definitions are in :mod:`nd_fairseq.evaluation.metrics`.
"""

import argparse
import json
import os
import sys
import time
from typing import Dict, List, Optional, Tuple

from ..io_utils import InputError, write_lines_atomic
from .metrics import BLEU_SMOOTHING_METHODS, DIRECTIONS, best_systems, evaluate
from .readers import FORMATS, HYPOTHESIS_FIELDS, SUBWORD_MODES, read_references, read_responses, read_train_counts

#: (key, header, digits) of the table columns, in Table 3 order, then the generic-response gauges.
COLUMNS: List[Tuple[str, str, int]] = [
    ("dist-1", "Dist-1", 4), ("dist-2", "Dist-2", 4), ("dist-3", "Dist-3", 4), ("lf", "LF", 4),
    ("kl-1", "KL-1", 3), ("kl-2", "KL-2", 3), ("bleu-3", "BLEU-3", 4), ("bleu-4", "BLEU-4", 4),
    ("length", "Len", 2), ("unique", "Unique", 4), ("top_share", "Top-{k}", 4), ("rep-3", "Rep-3", 4),
]


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give a count >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nd-eval",
        description="Automatic metrics of Negative Distillation's Table 3: Dist-1/2/3, LF, KL-1/2 "
                    "(Csáky et al. 2019, as dialog-eval), BLEU-3/4 (sentence BLEU, Chen & Cherry "
                    "smoothing, averaged), plus length, unique and top-10 response shares.")
    p.add_argument("--hyp", default=None,
                   help="system output: fairseq-generate output or plain text, one response per line")
    p.add_argument("--system", action="append", default=[], metavar="NAME=FILE",
                   help="a named system output (repeat to compare systems in one table)")
    p.add_argument("--ref", default=None,
                   help="reference responses, one per line, aligned with the hypotheses "
                        "(default: the T- lines of generate output)")
    p.add_argument("--train-responses", required=True,
                   help="training responses (e.g. train.response from nd-prepare), for LF")
    p.add_argument("--lf-threshold", type=_count, default=100,
                   help="a token is low-frequency when its training count is below this (default 100)")
    p.add_argument("--bleu-smoothing", type=int, default=4, choices=BLEU_SMOOTHING_METHODS,
                   help="Chen & Cherry (2014) smoothing method as numbered in NLTK (default 4, dialog-eval's)")
    p.add_argument("--lowercase", action="store_true",
                   help="lowercase hypotheses, references and training responses (nd-prepare's data "
                        "already is)")
    p.add_argument("--format", default="auto", choices=FORMATS,
                   help="format of the system files (default auto: generate output when it has H-/T- lines)")
    p.add_argument("--hyp-field", default="H", choices=HYPOTHESIS_FIELDS,
                   help="generate output line to evaluate: H (post-processed, tokenised; default) or D "
                        "(detokenised by --bpe/--tokenizer)")
    p.add_argument("--subwords", default="auto", choices=SUBWORD_MODES,
                   help="undo subword units: auto (sentencepiece '▁' pieces or '@@ ' BPE when present; "
                        "default), none, sentencepiece, bpe")
    p.add_argument("--top-k", type=_count, default=10,
                   help="how many most frequent responses to report (default 10)")
    p.add_argument("--allow-partial", action="store_true",
                   help="score the complete sentences of a generate output that was cut off (a cut last "
                        "line, S- lines without H-, missing ids), with a warning giving the counts; "
                        "without it such a file is an error")
    p.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON to OUT")
    p.add_argument("--quiet", action="store_true", help="print nothing (use with --json)")
    return p


def _systems(args: argparse.Namespace) -> List[Tuple[str, str]]:
    systems: List[Tuple[str, str]] = []
    if args.hyp is not None:
        systems.append((os.path.basename(args.hyp) or args.hyp, args.hyp))
    for spec in args.system:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--system {spec!r} is not NAME=FILE; write e.g. --system ND=nd.generate.txt")
        systems.append((name, path))
    if not systems:
        raise InputError("no system output given; pass --hyp FILE or --system NAME=FILE")
    names = [n for n, _ in systems]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"system name {dup[0]!r} is given twice; give each --system a distinct NAME")
    return systems


def _aligned(path: str, resp, refs: Optional[List[str]], ref_path: Optional[str], allow_partial: bool = False):
    """The (hypotheses, references) of one system, or an error naming the file and the fix."""
    if allow_partial and refs is not None and resp.ids is not None:
        beyond = [i for i in resp.ids if i >= len(refs)]
        if beyond:
            raise InputError(f"{path} has sentence id {beyond[0]} but {ref_path} has only {len(refs)} "
                             f"references; give the references of the test set that was generated")
        return resp.hypotheses, [refs[i] for i in resp.ids]
    if refs is None:
        if resp.references is None:
            if resp.format == "generate":
                raise InputError(f"{path} lacks T- lines for {resp.missing_references} of its "
                                 f"{len(resp.hypotheses)} sentences; pass the references with --ref")
            raise InputError(f"no references for {path}; pass the test responses with --ref "
                             f"(one per line, aligned with the hypotheses)")
        return resp.hypotheses, resp.references
    partial = " (or pass --allow-partial to score the sentences it has)" if resp.ids is not None else ""
    if len(resp.hypotheses) != len(refs):
        raise InputError(f"{path} has {len(resp.hypotheses)} hypotheses but {ref_path} has {len(refs)} "
                         f"references; each line of {ref_path} must be the reference of the same test "
                         f"sentence (generate the whole test set, or cut --ref to match){partial}")
    if resp.ids is not None and resp.ids != list(range(len(refs))):
        missing = next(i for i in range(len(refs)) if i not in set(resp.ids))
        raise InputError(f"{path} has sentence ids that are not 0..{len(refs) - 1} (first missing: "
                         f"{missing}); regenerate the whole test set so H-i pairs with line i+1 of "
                         f"{ref_path}{partial}")
    return resp.hypotheses, refs


def run(args: argparse.Namespace) -> Dict[str, dict]:
    """Evaluate every system; returns {name: metrics}."""
    systems = _systems(args)
    refs = read_references(args.ref, args.subwords) if args.ref is not None else None
    train = read_train_counts(args.train_responses, args.lowercase, args.subwords)
    results: Dict[str, dict] = {}
    shared_refs: Optional[Tuple[str, List[str]]] = None
    allow_partial = getattr(args, "allow_partial", False)
    for name, path in systems:
        resp = read_responses(path, args.format, args.hyp_field, args.subwords, allow_partial)
        hyps, sys_refs = _aligned(path, resp, refs, args.ref, allow_partial)
        if refs is None:  # references from T- lines: all systems must share the same test set
            by_id = dict(zip(resp.ids, sys_refs)) if allow_partial else sys_refs
            if shared_refs is None:
                shared_refs = (path, by_id)
            elif (any(shared_refs[1][i] != r for i, r in by_id.items() if i in shared_refs[1])
                  if allow_partial else shared_refs[1] != by_id):
                raise InputError(f"{path} and {shared_refs[0]} have different T- lines (test sets); "
                                 f"pass the common references with --ref to compare them")
        partial = None
        if allow_partial and resp.ids is not None:
            expected = len(refs) if refs is not None else resp.expected
            tail = expected - resp.expected  # ids after the largest one seen (known from --ref)
            gaps = [g for g in (resp.gaps, f"{tail} id{'s' * (tail > 1)} absent after the last" if tail > 0 else "") if g]
            if len(hyps) < expected:
                partial = {"scored": len(hyps), "expected": expected, "incomplete": ", ".join(gaps)}
                print(f"nd-eval: warning: {path} is incomplete ({partial['incomplete']}): scoring "
                      f"{len(hyps)} of {expected} sentences", file=sys.stderr)
        t0 = time.perf_counter()
        result = evaluate(hyps, sys_refs, train, lf_threshold=args.lf_threshold,
                          bleu_smoothing=args.bleu_smoothing, lowercase=args.lowercase, top_k=args.top_k)
        result.update({"system": name, "hyp_file": path, "format": resp.format,
                       "ref_file": args.ref if args.ref is not None else path,
                       "train_responses": args.train_responses,
                       "seconds": round(time.perf_counter() - t0, 3)})
        if partial is not None:
            result["partial"] = partial
        results[name] = result
    return results


def _cell(value: Optional[float], digits: int, bold: bool) -> str:
    text = "n/a" if value is None else f"{value:.{digits}f}"
    return f"**{text}**" if bold else text


def format_table(results: Dict[str, dict]) -> str:
    """Markdown table, one row per system; best values in bold when there are several systems."""
    top_k = next(iter(results.values()))["top_k"]
    headers = ["System"]
    for key, header, _ in COLUMNS:
        arrow = {1: " ↑", -1: " ↓"}.get(DIRECTIONS.get(key, 0), "")
        headers.append(header.format(k=top_k) + arrow)
    best = {key: set(best_systems(results, key, digits)) if len(results) > 1 else set()
            for key, _, digits in COLUMNS}
    rows = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * len(COLUMNS)) + "|"]
    for name, r in results.items():
        cells = [name.replace("|", "\\|")]
        cells += [_cell(r.get(key), digits, name in best[key]) for key, _, digits in COLUMNS]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def json_payload(results: Dict[str, dict]) -> dict:
    if len(results) == 1:
        return next(iter(results.values()))
    return {
        "systems": results,
        "best": {key: best_systems(results, key) for key, _, _ in COLUMNS if DIRECTIONS.get(key)},
        "directions": {k: ("higher" if v > 0 else "lower") for k, v in DIRECTIONS.items() if v},
    }


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        results = run(args)
        if args.json is not None:
            text = json.dumps(json_payload(results), indent=2, ensure_ascii=False)
            write_lines_atomic(args.json, [text])
    except InputError as err:
        print(f"nd-eval: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        name = err.filename if err.filename is not None else "a file"
        print(f"nd-eval: error: cannot access {name}: {err.strerror or err}; check the path and its "
              f"permissions", file=sys.stderr)
        return 2
    if not args.quiet:
        print(format_table(results))
        first = next(iter(results.values()))
        print(f"\n{first['n']} responses per system; LF threshold {args.lf_threshold}; BLEU: mean sentence "
              f"BLEU, smoothing method {args.bleu_smoothing}; KL in bits (reference || generated)"
              + (f"; results in {args.json}" if args.json else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
