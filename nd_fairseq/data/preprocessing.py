"""``preprocessing.json``: how raw text becomes a model's input and its output becomes text again.

``preprocess.sh`` writes one into every binarised data directory it builds (``DEST/full``,
``DEST/negative``, ``DEST/bottom``), so a data directory, and with it every model trained on it, is
self-describing: the word tokenisation and lowercasing ``nd-prepare`` applied (read from the
``prepare.json`` it leaves beside the text), its length limit, the sentencepiece model (copied
into the data directory as ``spm.model``, with its SHA-256), and the source-entropy filter that
selected the set. :class:`Preprocessing` applies exactly what the data went through, with the
functions ``nd-prepare`` and ``nd-spm`` use, and undoes it for a model's reply (sentencepiece
decoding, then Moses detokenisation; lowercasing cannot be undone).

Data directories binarised before this file existed still work when the caller states the
preparation (``tokenize=...``); otherwise loading fails with a one-line error saying so.

    python -m nd_fairseq.data.preprocessing write --text-dir TEXT --spm-model SPM [--key K ...] DIR...
    python -m nd_fairseq.data.preprocessing show DIR

This module imports neither fairseq nor torch.
"""

import argparse
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field, fields
from typing import Dict, List, Optional, Sequence

from ..io_utils import AtomicFiles, InputError
from .tokenize import make_tokenizer
from .spm import decode_lines_with, encode_lines, load_model

FILE_NAME = "preprocessing.json"
FORMAT_VERSION = 1
SPM_NAME = "spm.model"
TOKENIZERS = ("moses", "whitespace", "none")


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Preprocessing:
    """The preparation of one binarised data directory; turns text into pieces and back.

    ``tokenize`` is None when the text's preparation is unknown (the text directory had no
    ``prepare.json``); such a record must be completed by the caller before use.
    """

    tokenize: Optional[str] = "moses"
    lowercase: bool = True
    max_length: int = 0  # words per utterance after tokenisation; 0 = no limit
    truncate: bool = False  # nd-prepare truncated (True) or dropped (False) longer pairs
    sentencepiece_model: Optional[str] = SPM_NAME  # relative to the data directory
    sentencepiece_sha256: Optional[str] = None
    vocab_size: Optional[int] = None
    filter: Dict[str, object] = field(default_factory=dict)  # key, ratio, threshold, base, subset
    text_dir: Optional[str] = None
    format_version: int = FORMAT_VERSION
    # where it was read from (not stored)
    data_dir: Optional[str] = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        self._tokenizer = self._detokenizer = self._spm = None

    # text -> model input -------------------------------------------------------------------

    def words(self, text: str) -> str:
        """Raw text -> the word tokens nd-prepare would have written (truncated to max_length)."""
        self._check_complete()
        if self._tokenizer is None:
            self._tokenizer = make_tokenizer(self.tokenize, self.lowercase)
        tokens = self._tokenizer(text)
        if self.max_length and len(tokens.split()) > self.max_length:
            # a pair this long never reached training (dropped or truncated); a chat input is cut
            tokens = " ".join(tokens.split()[:self.max_length])
        return tokens

    def encode(self, text: str) -> str:
        """Raw text -> space-separated sentencepiece pieces, as nd-spm encode writes them."""
        return self.encode_words(self.words(text))

    def encode_words(self, words: str) -> str:
        return encode_lines(self.spm(), [words])[0] if words else ""

    # model output -> text ------------------------------------------------------------------

    def decode(self, pieces: str) -> str:
        """Space-separated pieces (fairseq's ``dictionary.string``) -> readable text."""
        return self.detokenize(self.decode_pieces(pieces))

    def decode_pieces(self, pieces: str) -> str:
        """Pieces -> word tokens, as nd-spm decode writes them."""
        return decode_lines_with(self.spm(), [pieces])[0]

    def detokenize(self, words: str) -> str:
        """Word tokens -> text (Moses detokenisation for Moses-tokenised data)."""
        self._check_complete()
        if self.tokenize != "moses":
            return words
        if self._detokenizer is None:
            from sacremoses import MosesDetokenizer

            self._detokenizer = MosesDetokenizer(lang="en")
        return self._detokenizer.detokenize(words.split())

    # files ----------------------------------------------------------------------------------

    def spm_path(self) -> str:
        if not self.sentencepiece_model:
            raise InputError("the preparation names no sentencepiece model; give the model the data was "
                             "encoded with (nd-chat --sentencepiece-model FILE)")
        path = self.sentencepiece_model
        if self.data_dir and not os.path.isabs(path):
            path = os.path.join(self.data_dir, path)
        return path

    def spm(self):
        if self._spm is None:
            path = self.spm_path()
            if not os.path.isfile(path):
                raise InputError(f"sentencepiece model {path} does not exist; copy the model the data "
                                 f"was encoded with there (preprocess.sh writes DATA/{SPM_NAME})")
            if self.sentencepiece_sha256 and sha256_of(path) != self.sentencepiece_sha256:
                raise InputError(f"sentencepiece model {path} is not the one recorded in "
                                 f"{FILE_NAME} (SHA-256 differs); rerun preprocess.sh or restore the model")
            self._spm = load_model(path)
        return self._spm

    def _check_complete(self) -> None:
        if self.tokenize is None:
            where = os.path.join(self.data_dir, FILE_NAME) if self.data_dir else FILE_NAME
            raise InputError(f"{where} does not record how the text was tokenised (its text directory had "
                             f"no prepare.json from nd-prepare); give it: nd-chat --tokenize moses|whitespace|none "
                             f"[--no-lowercase], or DialogueModel.from_pretrained(..., tokenize='moses')")
        if self.tokenize not in TOKENIZERS:
            raise InputError(f"unknown tokenisation {self.tokenize!r}: use one of {', '.join(TOKENIZERS)}")

    def to_json(self) -> Dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "data_dir"}


def _from_json(data: Dict[str, object], data_dir: Optional[str]) -> Preprocessing:
    known = {f.name for f in fields(Preprocessing)} - {"data_dir"}
    return Preprocessing(**{k: v for k, v in data.items() if k in known}, data_dir=data_dir)


def read(data_dir: str) -> Optional[Preprocessing]:
    """The preparation recorded in ``data_dir``, or None when the directory has none."""
    path = os.path.join(data_dir, FILE_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path} is not valid JSON ({err}); rerun preprocess.sh --force to rewrite it") from None
    if not isinstance(data, dict) or not isinstance(data.get("format_version"), int):
        raise InputError(f"{path} is not a {FILE_NAME} written by preprocess.sh (no format_version)")
    if data["format_version"] > FORMAT_VERSION:
        raise InputError(f"{path} has format version {data['format_version']}, newer than this nd_fairseq "
                         f"reads ({FORMAT_VERSION}); upgrade nd_fairseq")
    return _from_json(data, data_dir)


def load(data_dir: str, tokenize: Optional[str] = None, lowercase: Optional[bool] = None,
         max_length: Optional[int] = None, sentencepiece_model: Optional[str] = None) -> Preprocessing:
    """The preparation of ``data_dir``: its ``preprocessing.json``, with any setting given here
    taking precedence. A directory without the file needs at least ``tokenize``."""
    given = {k: v for k, v in (("tokenize", tokenize), ("lowercase", lowercase), ("max_length", max_length))
             if v is not None}
    prep = read(data_dir)
    if prep is None:
        if tokenize is None:
            raise InputError(f"{data_dir} has no {FILE_NAME} (binarised before preprocess.sh recorded the "
                             f"preparation): rerun preprocess.sh --force, or give it: nd-chat --tokenize "
                             f"moses [--no-lowercase], or DialogueModel.from_pretrained(..., tokenize='moses')")
        prep = Preprocessing(data_dir=data_dir, **given)
    else:
        for key, value in given.items():
            setattr(prep, key, value)
    if sentencepiece_model is not None:
        prep.sentencepiece_model = os.path.abspath(sentencepiece_model)
        prep.sentencepiece_sha256 = None  # the caller's model, not the recorded one
    prep._check_complete()
    return prep


def text_preparation(text_dir: str) -> Dict[str, object]:
    """nd-prepare's settings, from the ``prepare.json`` it writes beside the text (empty if none)."""
    path = os.path.join(text_dir, "prepare.json")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            options = json.load(f).get("options", {})
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        raise InputError(f"{path} is not the prepare.json nd-prepare writes; rerun nd-prepare") from None
    return {k: options[k] for k in ("tokenize", "lowercase", "max_length", "truncate") if k in options}


def write(data_dirs: Sequence[str], text_dir: str, spm_model: str, subsets: Sequence[str],
          filter_settings: Dict[str, object], vocab_size: Optional[int] = None) -> List[Preprocessing]:
    """Write ``preprocessing.json`` into each of ``data_dirs`` (``subsets``: all/top/bottom each)."""
    if len(subsets) != len(data_dirs):
        raise InputError(f"{len(data_dirs)} data directories but {len(subsets)} --subset values")
    if not os.path.isfile(spm_model):
        raise InputError(f"sentencepiece model {spm_model} does not exist; give the model that encoded the data")
    text = text_preparation(text_dir)
    digest = sha256_of(spm_model)
    written = []
    for data_dir, subset in zip(data_dirs, subsets):
        prep = Preprocessing(tokenize=text.get("tokenize"), lowercase=bool(text.get("lowercase", True)),
                             max_length=int(text.get("max_length", 0)), truncate=bool(text.get("truncate", False)),
                             sentencepiece_model=SPM_NAME, sentencepiece_sha256=digest, vocab_size=vocab_size,
                             filter={**filter_settings, "subset": subset}, text_dir=os.path.abspath(text_dir))
        with AtomicFiles(data_dir) as out:
            json.dump(prep.to_json(), out.open(FILE_NAME), indent=2)
        written.append(prep)
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nd_fairseq.data.preprocessing", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="record the preparation in binarised data directories (preprocess.sh)")
    w.add_argument("data_dirs", nargs="+")
    w.add_argument("--text-dir", required=True, help="nd-prepare's output (its prepare.json is read)")
    w.add_argument("--spm-model", required=True, help="the sentencepiece model that encoded the data")
    w.add_argument("--subset", nargs="+", default=None, help="per directory: all, top or bottom")
    w.add_argument("--vocab-size", type=int, default=None)
    w.add_argument("--key", default=None, help="nd-filter grouping key")
    w.add_argument("--ratio", type=float, default=None)
    w.add_argument("--threshold", default="", help="entropy cut (empty: --ratio was used)")
    w.add_argument("--base", default=None)
    s = sub.add_parser("show", help="print the preparation of a data directory")
    s.add_argument("data_dir")
    args = p.parse_args(argv)
    try:
        if args.cmd == "write":
            subsets = args.subset or ["all"] * len(args.data_dirs)
            filter_settings = {"key": args.key, "ratio": None if args.threshold else args.ratio,
                               "threshold": float(args.threshold) if args.threshold else None, "base": args.base}
            written = write(args.data_dirs, args.text_dir, args.spm_model, subsets, filter_settings, args.vocab_size)
            if written and written[0].tokenize is None:
                print(f"preprocess.sh: warning: {args.text_dir} has no prepare.json; {FILE_NAME} does not "
                      f"record the tokenisation (nd-chat will ask for --tokenize)", file=sys.stderr)
        else:
            prep = read(args.data_dir)
            if prep is None:
                raise InputError(f"{args.data_dir} has no {FILE_NAME}; rerun preprocess.sh --force")
            print(json.dumps(prep.to_json(), indent=2))
    except InputError as err:
        print(f"{p.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
