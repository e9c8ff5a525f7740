"""``nd-prepare``: turn a dialogue corpus into aligned ``{train,valid,test}.{query,response}`` text.

Sources (``--format``):

* ``chitchat`` (default, no path needed): the Chit-Chat Challenge corpus shipped inside the
  ``chitchat-dataset`` package (7,168 English conversations). Consecutive messages of one sender
  form a turn; every two adjacent turns form a (query, response) pair.
* ``dailydialog``: DailyDialog's ``dialogues_text.txt`` (one dialogue per line, turns separated by
  ``__eou__``).
* ``eou-pairs``: one ``query __eou__ response`` pair per line.
* ``tsv``: one ``query<TAB>response`` pair per line.
* ``parallel``: two aligned files (``--input QUERY_FILE --response-input RESPONSE_FILE``).

Conversational sources are split by conversation (no conversation straddles two splits) with a
seeded shuffle; pair sources are split by pair. Pre-split corpora are given as ``--input`` plus
``--valid-input``/``--test-input``.
"""

import argparse
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..io_utils import UTF8_BOM, AtomicFiles, InputError, check_aligned, check_output_dir, read_lines, require_file
from .tokenize import make_tokenizer

Pair = Tuple[str, str]
Conversation = List[str]  # turns
SPLITS = ("train", "valid", "test")
FORMATS = ("chitchat", "dailydialog", "eou-pairs", "tsv", "parallel")


# Readers ------------------------------------------------------------------------------------------


def read_chitchat(path: Optional[str] = None) -> List[Conversation]:
    """Conversations of the chitchat-dataset package: consecutive messages of a sender are one turn."""
    if path is None:
        try:
            import chitchat_dataset
        except ImportError:
            raise InputError("the chitchat-dataset package is not installed; pip install chitchat-dataset "
                             "or give --format/--input for another corpus") from None
        path = os.path.join(os.path.dirname(chitchat_dataset.__file__), "dataset.json")
    require_file(path, "chitchat dataset")
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith(UTF8_BOM):  # no part of the JSON text
        raw = raw[len(UTF8_BOM):]
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: byte {err.start} is not valid UTF-8; re-encode the file as UTF-8") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not a chitchat JSON file ({err.msg} at line {err.lineno})") from None
    conversations = []
    # sorted ids: the order does not depend on how the JSON was written
    for conv_id in sorted(data):
        turns = [" ".join(m["text"] for m in group) for group in data[conv_id]["messages"]]
        conversations.append(turns)
    return conversations


def read_dailydialog(path: str) -> List[Conversation]:
    """DailyDialog ``dialogues_text.txt``: one dialogue a line, turns ending in ``__eou__``."""
    require_file(path, "DailyDialog file", "give the path of dialogues_text.txt with --input")
    conversations = []
    for line in read_lines(path):
        turns = [t for t in (t.strip() for t in line.split("__eou__")) if t]
        if turns:
            conversations.append(turns)
    return conversations


def read_eou_pairs(path: str) -> List[Pair]:
    require_file(path, "pair file", "give a file of 'query __eou__ response' lines with --input")
    pairs = []
    for no, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        parts = line.split("__eou__")
        parts = [p.strip() for p in parts if p.strip()]
        if len(parts) != 2:
            raise InputError(f"{path}: line {no} has {len(parts)} utterances; each line must be "
                             f"'query __eou__ response'")
        pairs.append((parts[0], parts[1]))
    return pairs


def read_tsv(path: str) -> List[Pair]:
    require_file(path, "TSV file", "give a file of 'query<TAB>response' lines with --input")
    pairs = []
    for no, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise InputError(f"{path}: line {no} has {len(parts)} tab-separated fields; each line "
                             f"must be 'query<TAB>response'")
        pairs.append((parts[0], parts[1]))
    return pairs


def read_parallel(query_path: str, response_path: Optional[str], query_option: str = "--input",
                  response_option: str = "--response-input") -> List[Pair]:
    require_file(query_path, "query file", f"give the query side with {query_option}")
    if response_path is None:
        raise InputError(f"--format parallel needs {response_option} RESPONSE_FILE beside {query_option} QUERY_FILE")
    require_file(response_path, "response file", f"give the response side with {response_option}")
    check_aligned([query_path, response_path])
    return list(zip(read_lines(query_path), read_lines(response_path)))


def conversation_pairs(conversation: Conversation) -> List[Pair]:
    """Adjacent turns (t_i, t_{i+1}) of a conversation."""
    return list(zip(conversation[:-1], conversation[1:]))


# Splitting ---------------------------------------------------------------------------------------


def split_units(n_units: int, valid_fraction: float, test_fraction: float, seed: int
                ) -> Dict[str, List[int]]:
    """Deterministic seeded split of unit indices (conversations or pairs) into train/valid/test."""
    for name, frac in (("--valid-fraction", valid_fraction), ("--test-fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise InputError(f"{name} {frac} is outside [0, 1)")
    if valid_fraction + test_fraction >= 1.0:
        raise InputError("--valid-fraction + --test-fraction must leave some data for training")
    order = list(range(n_units))
    random.Random(seed).shuffle(order)
    n_valid = int(round(valid_fraction * n_units))
    n_test = int(round(test_fraction * n_units))
    return {
        "valid": sorted(order[:n_valid]),
        "test": sorted(order[n_valid:n_valid + n_test]),
        "train": sorted(order[n_valid + n_test:]),
    }


@dataclass
class Options:
    tokenize: str = "moses"
    lowercase: bool = True
    max_length: int = 0  # tokens per side; 0 = unlimited
    truncate: bool = False
    dedup: bool = False
    min_length: int = 1


def clean_pairs(pairs: Iterable[Pair], tok: Callable[[str], str], opts: Options,
                stats: Dict[str, int], dedup: bool) -> List[Pair]:
    out: List[Pair] = []
    seen = set()
    for q, r in pairs:
        q, r = tok(q), tok(r)
        qt, rt = q.split(), r.split()
        if len(qt) < opts.min_length or len(rt) < opts.min_length:
            stats["dropped_empty"] += 1
            continue
        if opts.max_length and (len(qt) > opts.max_length or len(rt) > opts.max_length):
            if not opts.truncate:
                stats["dropped_long"] += 1
                continue
            q, r = " ".join(qt[:opts.max_length]), " ".join(rt[:opts.max_length])
            stats["truncated"] += 1
        if dedup:
            if (q, r) in seen:
                stats["dropped_duplicate"] += 1
                continue
            seen.add((q, r))
        out.append((q, r))
    return out


def _cap(pairs: List[Pair], cap: Optional[int]) -> List[Pair]:
    return pairs if not cap or cap <= 0 else pairs[:cap]


def prepare(args: argparse.Namespace) -> Dict[str, object]:
    opts = Options(tokenize=args.tokenize, lowercase=args.lowercase, max_length=args.max_length,
                   truncate=args.truncate, dedup=args.dedup, min_length=args.min_length)
    tok = make_tokenizer(opts.tokenize, opts.lowercase)
    fmt = args.format
    if fmt not in FORMATS:
        raise InputError(f"unknown --format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt != "chitchat" and not args.input:
        raise InputError(f"--format {fmt} needs --input PATH")
    check_output_dir(args.out_dir)

    def read_source(path: Optional[str], response_path: Optional[str] = None, split: str = "train"):
        """Returns (units, is_conversational)."""
        if fmt == "chitchat":
            return read_chitchat(path), True
        if fmt == "dailydialog":
            return read_dailydialog(path), True
        if fmt == "eou-pairs":
            return read_eou_pairs(path), False
        if fmt == "tsv":
            return read_tsv(path), False
        prefix = "" if split == "train" else f"{split}-"
        return read_parallel(path, response_path, f"--{prefix}input", f"--{prefix}response-input"), False

    stats = {"dropped_empty": 0, "dropped_long": 0, "dropped_duplicate": 0, "truncated": 0}
    raw: Dict[str, List[Pair]] = {}
    presplit = bool(args.valid_input or args.test_input)
    if presplit:
        if not (args.valid_input and args.test_input):
            raise InputError("a pre-split corpus needs both --valid-input and --test-input beside --input")
        for split, path, rpath in (("train", args.input, args.response_input),
                                   ("valid", args.valid_input, args.valid_response_input),
                                   ("test", args.test_input, args.test_response_input)):
            units, conv = read_source(path, rpath, split)
            raw[split] = [p for c in units for p in conversation_pairs(c)] if conv else units
        n_units = {s: None for s in SPLITS}
    else:
        units, conv = read_source(args.input, args.response_input)
        if not units:
            raise InputError(f"{args.input or 'the chitchat dataset'} holds no dialogue; check --format")
        if args.max_units and args.max_units > 0:
            # a seeded sample of whole conversations (pairs), for quick experiments and tests
            keep = sorted(random.Random(args.seed + 1).sample(range(len(units)), min(args.max_units, len(units))))
            units = [units[i] for i in keep]
        parts = split_units(len(units), args.valid_fraction, args.test_fraction, args.seed)
        n_units = {s: len(parts[s]) for s in SPLITS}
        for split in SPLITS:
            chosen = [units[i] for i in parts[split]]
            raw[split] = [p for c in chosen for p in conversation_pairs(c)] if conv else chosen
    data: Dict[str, List[Pair]] = {}
    for split in SPLITS:
        data[split] = clean_pairs(raw[split], tok, opts, stats, dedup=opts.dedup and split == "train")
    data["valid"] = _cap(data["valid"], args.max_valid_pairs)
    data["test"] = _cap(data["test"], args.max_test_pairs)
    if not data["train"]:
        raise InputError("no training pairs are left after cleaning; check --format, --max-length and --min-length")

    with AtomicFiles(args.out_dir) as out:
        for split in SPLITS:
            fq, fr = out.open(f"{split}.query"), out.open(f"{split}.response")
            for q, r in data[split]:
                fq.write(q + "\n")
                fr.write(r + "\n")
        report = {
            "format": fmt,
            "input": args.input,
            "seed": args.seed,
            "units": n_units,
            "unit": "conversation" if fmt in ("chitchat", "dailydialog") else "pair",
            "pairs": {s: len(data[s]) for s in SPLITS},
            **stats,
            "options": vars(opts),
        }
        json.dump(report, out.open("prepare.json"), indent=2)
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nd-prepare", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", default="chitchat", help=f"one of {', '.join(FORMATS)} (default chitchat)")
    p.add_argument("--input", default=None,
                   help="corpus file (not needed for chitchat; for --format parallel the query file)")
    p.add_argument("--response-input", default=None, help="--format parallel: the aligned response file")
    p.add_argument("--valid-input", default=None, help="pre-split corpus: validation file (same format)")
    p.add_argument("--valid-response-input", default=None)
    p.add_argument("--test-input", default=None, help="pre-split corpus: test file (same format)")
    p.add_argument("--test-response-input", default=None)
    p.add_argument("--out-dir", required=True, help="where {train,valid,test}.{query,response} go")
    p.add_argument("--valid-fraction", type=float, default=0.05,
                   help="share of conversations (pairs for pair formats) held out for validation")
    p.add_argument("--test-fraction", type=float, default=0.05, help="share held out for test")
    p.add_argument("--max-valid-pairs", type=int, default=0, help="keep at most N validation pairs (0 = all)")
    p.add_argument("--max-test-pairs", type=int, default=0, help="keep at most N test pairs (0 = all)")
    p.add_argument("--seed", type=int, default=1, help="seed of the split shuffle")
    p.add_argument("--max-units", type=int, default=0,
                   help="use a seeded sample of at most N conversations (pairs for pair formats); 0 = all")
    p.add_argument("--tokenize", default="moses", choices=("moses", "whitespace", "none"),
                   help="moses: sacremoses English tokenizer (default); whitespace: collapse spaces only")
    p.add_argument("--lowercase", dest="lowercase", action="store_true", default=True,
                   help="lowercase the text (default)")
    p.add_argument("--no-lowercase", dest="lowercase", action="store_false")
    p.add_argument("--max-length", type=int, default=0,
                   help="drop pairs with more tokens than this on either side (0 = no limit)")
    p.add_argument("--truncate", action="store_true", help="truncate long utterances instead of dropping the pair")
    p.add_argument("--min-length", type=int, default=1, help="drop pairs with fewer tokens on a side (default 1)")
    p.add_argument("--dedup", action="store_true", help="drop repeated identical (query, response) pairs in train")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        report = prepare(args)
    except InputError as err:
        print(f"nd-prepare: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        name = err.filename if err.filename is not None else args.out_dir
        print(f"nd-prepare: error: {name}: {err.strerror or err}; check the path, its permissions and "
              f"the free space", file=sys.stderr)
        return 2
    if not args.quiet:
        units = report["units"]
        if units["train"] is not None:
            print(f"{report['unit']}s: train {units['train']}, valid {units['valid']}, test {units['test']}")
        pairs = report["pairs"]
        print(f"pairs: train {pairs['train']}, valid {pairs['valid']}, test {pairs['test']} -> {args.out_dir}")
        print(f"dropped: {report['dropped_empty']} empty, {report['dropped_long']} too long, "
              f"{report['dropped_duplicate']} duplicate; truncated {report['truncated']}; "
              f"{time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
