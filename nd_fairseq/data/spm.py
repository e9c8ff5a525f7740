"""``nd-spm``: train a sentencepiece model on the training text and encode/decode files with it.

    nd-spm train --input train.query train.response --model-prefix spm/spm --vocab-size 8000
    nd-spm encode --model spm/spm.model --input train.query --output spm/train.query
    nd-spm decode --model spm/spm.model --input hyp.spm --output hyp.txt

Encoding keeps one output line per input line (an empty line stays empty), so files stay aligned.
"""

import argparse
import os
import sys
from typing import Iterator, List, Optional, Sequence

from ..io_utils import AtomicFiles, InputError, ScratchDir, iter_line_blocks, require_file


def load_model(model: str):
    """The sentencepiece processor of a model file (nd-spm train's output)."""
    import sentencepiece as spm

    require_file(model, "sentencepiece model", "train one first with nd-spm train")
    return spm.SentencePieceProcessor(model_file=model)


def _sentences(inputs: Sequence[str]) -> Iterator[str]:
    for path in inputs:
        for block in iter_line_blocks(path):
            yield from block


def encode_lines(sp, lines: Sequence[str]) -> List[str]:
    """Lines of text -> lines of space-separated pieces (what nd-spm encode writes)."""
    return [" ".join(p) for p in sp.encode(list(lines), out_type=str)]


def decode_lines_with(sp, lines: Sequence[str]) -> List[str]:
    """Lines of space-separated pieces -> text (what nd-spm decode writes)."""
    return [sp.decode(line.split()) for line in lines]


def train(inputs: Sequence[str], model_prefix: str, vocab_size: int, model_type: str = "unigram",
          character_coverage: float = 1.0, seed_sentences: int = 2_000_000, quiet: bool = True) -> str:
    """Train a sentencepiece model; writes ``model_prefix.model``/``.vocab`` atomically."""
    import sentencepiece as spm

    for path in inputs:
        require_file(path, "training text")
        for _ in iter_line_blocks(path):  # validates UTF-8 with a file/line error
            pass
    directory = os.path.dirname(os.path.abspath(model_prefix))
    os.makedirs(directory, exist_ok=True)
    # a killed run's directory is removed by the next run training into the same directory
    with ScratchDir(directory, ".nd-spm-") as scratch:
        tmp_prefix = os.path.join(scratch.name, "m")
        try:
            # the lines are handed over by our reader, not as sentencepiece's comma-separated
            # ``input`` list: a path may hold commas, and the reader drops a byte order mark
            spm.SentencePieceTrainer.train(
                sentence_iterator=_sentences(inputs), model_prefix=tmp_prefix, vocab_size=vocab_size,
                model_type=model_type, character_coverage=character_coverage,
                input_sentence_size=seed_sentences, shuffle_input_sentence=True,
                # fairseq adds its own <s>, <pad>, </s>, <unk>; keep spm's ids out of the way
                bos_id=-1, eos_id=-1, unk_id=0, pad_id=-1, hard_vocab_limit=False,
                num_threads=max(1, min(2, os.cpu_count() or 1)), minloglevel=2 if quiet else 0,
            )
        except RuntimeError as err:
            raise InputError(f"sentencepiece training on {', '.join(inputs)} failed: {err}") from None
        for ext in ("model", "vocab"):
            os.replace(f"{tmp_prefix}.{ext}", f"{model_prefix}.{ext}")
    return f"{model_prefix}.model"


def encode_file(model: str, inp: str, out: str) -> int:
    sp = load_model(model)
    require_file(inp, "text to encode")
    n = 0
    directory, name = os.path.split(os.path.abspath(out))
    with AtomicFiles(directory) as files:
        f = files.open(name)
        for block in iter_line_blocks(inp):
            f.write("\n".join(encode_lines(sp, block)))
            f.write("\n")
            n += len(block)
    return n


def decode_lines(model: str, lines: Sequence[str]) -> List[str]:
    return decode_lines_with(load_model(model), lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="nd-spm", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a model on one or more text files")
    t.add_argument("--input", nargs="+", required=True)
    t.add_argument("--model-prefix", required=True)
    t.add_argument("--vocab-size", type=int, default=8000)
    t.add_argument("--model-type", default="unigram", choices=("unigram", "bpe", "char", "word"))
    t.add_argument("--character-coverage", type=float, default=1.0)
    e = sub.add_parser("encode", help="text -> space-separated pieces, line by line")
    e.add_argument("--model", required=True)
    e.add_argument("--input", required=True)
    e.add_argument("--output", required=True)
    d = sub.add_parser("decode", help="space-separated pieces -> text, line by line")
    d.add_argument("--model", required=True)
    d.add_argument("--input", required=True)
    d.add_argument("--output", required=True)
    args = p.parse_args(argv)
    try:
        if args.cmd == "train":
            path = train(args.input, args.model_prefix, args.vocab_size, args.model_type,
                         args.character_coverage)
            print(f"sentencepiece model: {path}")
        elif args.cmd == "encode":
            n = encode_file(args.model, args.input, args.output)
            print(f"encoded {n} lines -> {args.output}")
        else:
            require_file(args.input, "text to decode")
            lines = [ln for block in iter_line_blocks(args.input) for ln in block]
            directory, name = os.path.split(os.path.abspath(args.output))
            with AtomicFiles(directory) as files:
                f = files.open(name)
                for line in decode_lines(args.model, lines):
                    f.write(line + "\n")
    except InputError as err:
        print(f"nd-spm: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        name = err.filename if err.filename is not None else "an output"
        print(f"nd-spm: error: cannot write {name}: {err.strerror or err}; check the path, its permissions "
              f"and the free space", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
