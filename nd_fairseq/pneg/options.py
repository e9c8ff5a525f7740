"""The ``nd-pneg`` command line: :func:`build_parser`, the options of every subcommand.

The commands that run on them are in :mod:`.cli`. Nothing here imports more than the data readers and the
standard-library client (whose options ``nd-humaneval judge`` shares).
"""

import argparse

from .backends import add_client_options
from .data import DEFAULT_TURN_SEPARATOR, FORMATS

POSITIVE_CHOICES = ("random", "first")  # = candidates.POSITIVE_CHOICES (kept light: no import at start-up)
VALID_PROTOCOLS = ("source", "random")  # = candidates.VALID_PROTOCOLS

PROG = "nd-pneg"


def _add_input(p: argparse.ArgumentParser, name: str = "--input", required: bool = True, help: str = "") -> None:
    p.add_argument(name, required=required,
                   help=help or "DailyDialog++ JSON-lines file, or PREFIX of PREFIX.query/PREFIX.response")


def _add_format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default="auto", choices=FORMATS, help="input format (default: auto-detect)")
    p.add_argument("--turn-separator", default=DEFAULT_TURN_SEPARATOR,
                   help=f"for pairs: the string separating turns inside a query line (default {DEFAULT_TURN_SEPARATOR})")


def _add_prompt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--examples", default=None,
                   help="DailyDialog++ JSON-lines file whose records with 5 adversarial negatives are the "
                        "demonstration pool (required unless --k 0)")
    p.add_argument("--instruction", default="dir", choices=("dir", "pos", "imp"),
                   help="task instruction (Appendix I): dir = I_dir (PNEG), pos = I_pos, imp = I_imp (zero-shot)")
    p.add_argument("--k", type=int, default=None, help="demonstrations per prompt (default 2; 0 for imp)")
    p.add_argument("--seed", type=int, default=1, help="seed of demonstration sampling and sampling seeds")


def _add_filter(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-underscores", type=int, default=1, help="reject an item with more '_' (default 1)")
    p.add_argument("--copy-ratio", type=float, default=0.85,
                   help="word-sequence similarity at which an item counts as a copy of a context turn or "
                        "positive (default 0.85)")
    p.add_argument("--allow-context-copies", action="store_true", help="do not reject copies of context turns")
    p.add_argument("--allow-positive-copies", action="store_true", help="do not reject copies of positives")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="PNEG: prompt-based adversarial negative responses "
                                "(Lee et al. 2022) and response-selection rankers trained on them.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("prompt", help="show (or write) the PNEG prompts of the input contexts")
    _add_input(s)
    _add_format(s)
    _add_prompt(s)
    s.add_argument("--index", type=int, default=0, help="print the prompt of the example at this position")
    s.add_argument("--id", default=None, help="print the prompt of the example with this id")
    s.add_argument("--output", default=None, help="write every prompt as JSON lines {id, prompt, demos} instead")

    s = sub.add_parser("generate", help="generate five adversarial negatives per context (resumable)")
    _add_input(s)
    _add_format(s)
    _add_prompt(s)
    _add_filter(s)
    s.add_argument("--output", required=True, help="results file (JSON lines; an existing one is resumed)")
    s.add_argument("--backend", default="openai", choices=("openai", "fairseq-lm"),
                   help="openai: any OpenAI-compatible /v1/completions server; fairseq-lm: a local checkpoint")
    add_client_options(s)
    s.add_argument("--send-seed", action="store_true", help="send a per-request 'seed' (vLLM, newer OpenAI)")
    s.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (PNEG: 0.8)")
    s.add_argument("--frequency-penalty", type=float, default=0.4, help="PNEG: 0.4")
    s.add_argument("--presence-penalty", type=float, default=0.4, help="PNEG: 0.4")
    s.add_argument("--max-tokens", type=int, default=256, help="completion length limit (default 256)")
    s.add_argument("--lm-checkpoint", default=None, help="fairseq language_modeling checkpoint (fairseq-lm)")
    s.add_argument("--lm-data", default=None, help="the LM's data directory with dict.txt (default: as trained)")
    s.add_argument("--lm-tokenizer", default="none", choices=("none", "moses"), help="how the LM's text was tokenised")
    s.add_argument("--lm-lowercase", action="store_true", help="lowercase prompts (LM trained on lowercased text)")
    s.add_argument("--lm-sentencepiece-model", default=None, help="sentencepiece model of the LM's text (nd-spm)")
    s.add_argument("--max-attempts", type=int, default=5,
                   help="generations per context before recording a failure (default 5)")
    s.add_argument("--retry-failed", action="store_true", help="regenerate contexts recorded as failed")
    s.add_argument("--limit", type=int, default=None, help="generate at most N new contexts in this run")
    s.add_argument("--interrupt-grace", type=float, default=2.0, metavar="SECONDS",
                   help="on Ctrl-C, wait this long for requests in flight and save what completes; the rest "
                        "is abandoned and regenerated on resume (default 2)")
    s.add_argument("--quiet", action="store_true", help="no progress bar or summary")

    s = sub.add_parser("filter", help="re-check generated negatives (Appendix F) and count rejections")
    _add_input(s)
    _add_format(s)
    _add_filter(s)
    s.add_argument("--generated", required=True, help="results of nd-pneg generate, or {id, text} completions")
    s.add_argument("--output", required=True, help="filtered results (JSON lines)")
    s.add_argument("--instruction", default=None, choices=("dir", "pos", "imp"),
                   help="how completions were prompted (default: from the results file, else dir)")
    s.add_argument("--quiet", action="store_true")

    s = sub.add_parser("build-candidates", help="candidate sets for training and testing rankers")
    _add_input(s, "--train", help="training examples (DailyDialog++ file or pairs prefix)")
    _add_input(s, "--test", help="test examples")
    _add_input(s, "--valid", required=False, help="validation examples (optional; see also --valid-fraction)")
    s.add_argument("--valid-fraction", type=float, default=None, metavar="F",
                   help="without --valid: hold out this fraction of the training contexts (seeded by --seed) "
                        "as the validation split")
    s.add_argument("--valid-protocol", default="source", choices=VALID_PROTOCOLS,
                   help="source (default): each source validates on its own negatives (1 positive + 5 random + "
                        "5 of the source); random: every source validates on 1 positive + 10 random")
    s.add_argument("--valid-pneg", default=None,
                   help="results of nd-pneg generate for --valid (source 'pneg' under --valid-protocol source; "
                        "not needed with --valid-fraction, whose contexts --pneg covers)")
    s.add_argument("--positive", default="random", choices=POSITIVE_CHOICES,
                   help="which of a context's positives is its candidate: random (default, seeded) or first "
                        "(DailyDialog++'s first positive is its shortest: a length shortcut)")
    s.add_argument("--format", default="auto", choices=FORMATS)
    s.add_argument("--turn-separator", default=DEFAULT_TURN_SEPARATOR)
    s.add_argument("--sources", default="random,bm25,pneg,human",
                   help="negative sources to build training sets for (default random,bm25,pneg,human; "
                        "pneg needs --pneg, human needs adversarial negatives in --train)")
    s.add_argument("--pneg", default=None, help="results of nd-pneg generate for the training examples")
    s.add_argument("--out-dir", required=True,
                   help="where train.<source>.jsonl, valid.<source>.jsonl, test.*.jsonl go")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--adversarial-test", default="auto", choices=("auto", "human", "context"),
                   help="adversarial test negatives: human (DailyDialog++), context (a context turn + 4 random), "
                        "auto (human if the data has them)")
    s.add_argument("--bm25-exclude-context", action="store_true", help="BM25 negatives never copy a context turn")
    s.add_argument("--all-contexts", action="store_true",
                   help="train each source on every context it covers, not only the contexts all sources cover")

    s = sub.add_parser("rank-benchmark", help="train a fairseq ranker per negative source and report R@1/MRR")
    s.add_argument("--candidates", required=True, help="directory written by build-candidates")
    s.add_argument("--work-dir", required=True, help="where data, checkpoints, report.json and report.md go")
    s.add_argument("--sources", default=None, help="comma-separated sources (default: every train.<source>.jsonl)")
    s.add_argument("--encoder-layers", type=int, default=2)
    s.add_argument("--encoder-embed-dim", type=int, default=64)
    s.add_argument("--encoder-ffn-embed-dim", type=int, default=128)
    s.add_argument("--encoder-attention-heads", type=int, default=2)
    s.add_argument("--max-positions", type=int, default=256)
    s.add_argument("--max-option-length", type=int, default=64, help="candidate tokens kept (with <s>)")
    s.add_argument("--max-context-turns", type=int, default=3, help="most recent context turns kept")
    s.add_argument("--dropout", type=float, default=0.1)
    s.add_argument("--lr", type=float, default=5e-4)
    s.add_argument("--warmup-updates", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=16, help="contexts per batch (PNEG: 16)")
    s.add_argument("--max-epoch", type=int, default=3, help="PNEG: 3")
    s.add_argument("--max-update", type=int, default=0, help="stop after N updates (0: no limit)")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--no-valid", action="store_true", help="no validation: score the last checkpoint")
    s.add_argument("--patience", type=int, default=2,
                   help="stop a ranker's training after N validations without a lower loss (default 2; 0: never)")
    s.add_argument("--fairseq-args", default="", help="extra fairseq-train arguments, as one string")
    s.add_argument("--jobs", type=int, default=1, help="fairseq-train processes run at once (default 1)")
    s.add_argument("--quiet", action="store_true")

    s = sub.add_parser("export-negatives", help="negatives aligned with a training set, one JSON list a line")
    _add_input(s, help="the training set the negatives were generated for")
    _add_format(s)
    s.add_argument("--generated", required=True, help="results of nd-pneg generate")
    s.add_argument("--output", required=True, help="line i = JSON list of the negatives of training example i")
    s.add_argument("--require-all", action="store_true", help="fail unless every example has negatives")
    return p
