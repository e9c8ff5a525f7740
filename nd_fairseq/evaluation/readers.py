"""Input readers for nd-eval: ``fairseq-generate`` output and plain text, subword pieces undone.

``fairseq-generate`` prints, per test sentence id, ``S-id`` (source), ``T-id`` (reference),
``H-id<TAB>score<TAB>hypothesis`` (after ``--post-process``/``--remove-bpe``), ``D-id`` (the same,
after ``--bpe``/``--tokenizer`` decoding), ``P-id`` (positional scores) and more (``A-``, ``I-``,
``E-``), in batch order, not id order; log lines may be mixed in when stderr was redirected too.
:func:`read_generate` keeps the first (best) hypothesis of each id and returns them sorted by id.

Subword units are undone the way fairseq's ``--post-process`` does: sentencepiece pieces
(``▁how ▁are ▁you`` -> ``how are you``) and subword-nmt BPE (``hel@@ lo`` -> ``hello``). With
``mode="auto"`` (the default) a text is treated as pieces when any of its lines contains ``▁``, and as
BPE when any contains ``@@ `` (or ends with ``@@``); text already post-processed passes unchanged.
"""

import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

from ..io_utils import InputError, iter_line_blocks, read_lines, require_file

SUBWORD_MODES = ("auto", "none", "sentencepiece", "bpe")
FORMATS = ("auto", "generate", "text")
HYPOTHESIS_FIELDS = ("H", "D")

_GENERATE_LINE = re.compile(r"([STHDP])-(\d+)\t")
_SPM = "\u2581"


def detect_subwords(lines: List[str]) -> str:
    """``"sentencepiece"``, ``"bpe"`` or ``"none"`` for a text (see the module docstring)."""
    if any(_SPM in line for line in lines):
        return "sentencepiece"
    if any("@@ " in line or line.endswith("@@") for line in lines):
        return "bpe"
    return "none"


def undo_subwords(lines: List[str], mode: str = "auto") -> List[str]:
    """Join subword units back into words (fairseq's ``post_process``); ``mode`` in SUBWORD_MODES."""
    if mode not in SUBWORD_MODES:
        raise ValueError(f"unknown subword mode {mode!r}; choose one of {', '.join(SUBWORD_MODES)}")
    if mode == "auto":
        mode = detect_subwords(lines)
    if mode == "sentencepiece":
        return [line.replace(" ", "").replace(_SPM, " ").strip() for line in lines]
    if mode == "bpe":
        return [(line + " ").replace("@@ ", "").rstrip() for line in lines]
    return list(lines)


@dataclass
class GenerateOutput:
    """One fairseq-generate output, sorted by sentence id."""

    path: str
    ids: List[int]
    hypotheses: List[str]
    references: Dict[int, str]  # T- lines (may be missing or partial)
    sources: Dict[int, str]  # S- lines


def _iter_lines(path: str) -> Iterator[str]:
    for block in iter_line_blocks(path):
        yield from block


def parse_generate(lines, path: str = "<generate output>", field: str = "H") -> GenerateOutput:
    """Collect S-/T- lines and the first ``field`` (H or D) line of each id from generate output."""
    if field not in HYPOTHESIS_FIELDS:
        raise ValueError(f"unknown hypothesis field {field!r}; choose H or D")
    hyps: Dict[int, str] = {}
    refs: Dict[int, str] = {}
    srcs: Dict[int, str] = {}
    for line in lines:
        m = _GENERATE_LINE.match(line)
        if not m:
            continue  # log lines, P-/A-/E- lines, the final BLEU line
        kind, sid, rest = m.group(1), int(m.group(2)), line[m.end():]
        if kind == field:
            if sid not in hyps:  # with --nbest the best hypothesis comes first
                # "score<TAB>text"; an empty hypothesis may have lost its trailing tab
                hyps[sid] = rest.split("\t", 1)[1] if "\t" in rest else ""
        elif kind == "T":
            refs.setdefault(sid, rest)
        elif kind == "S":
            srcs.setdefault(sid, rest)
    ids = sorted(hyps)
    return GenerateOutput(path, ids, [hyps[i] for i in ids], refs, srcs)


def read_generate(path: str, field: str = "H") -> GenerateOutput:
    require_file(path, "generate output")
    out = parse_generate(_iter_lines(path), path, field)
    if not out.ids:
        raise InputError(f"{path} has no {field}- lines; give the output of fairseq-generate (without "
                         f"--quiet), or a plain text file with one response per line")
    return out


def looks_like_generate(path: str) -> bool:
    """True when the file has a line like ``H-12<TAB>...`` or ``T-12<TAB>...``."""
    for line in _iter_lines(path):
        if _GENERATE_LINE.match(line):
            return True
    return False


@dataclass
class Responses:
    """The responses of one system: hypotheses in test order, and references if the file had them."""

    path: str
    format: str  # "generate" or "text"
    hypotheses: List[str]
    references: Optional[List[str]]
    ids: Optional[List[int]] = None
    missing_references: int = 0  # generate output: ids without a T- line


def read_responses(path: str, fmt: str = "auto", field: str = "H", subwords: str = "auto") -> Responses:
    """Read a system's output (``fmt`` in FORMATS) with subword units undone."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    require_file(path, "hypothesis file", "check the path of the system output")
    if fmt == "auto":
        fmt = "generate" if looks_like_generate(path) else "text"
    if fmt == "text":
        lines = read_lines(path)
        if not lines:
            raise InputError(f"hypothesis file {path} is empty; give one generated response per line")
        return Responses(path, "text", undo_subwords(lines, subwords), None)
    gen = read_generate(path, field)
    missing = sum(1 for i in gen.ids if i not in gen.references)
    refs = None if missing else undo_subwords([gen.references[i] for i in gen.ids], subwords)
    return Responses(path, "generate", undo_subwords(gen.hypotheses, subwords), refs, gen.ids, missing)


def read_references(path: str, subwords: str = "auto") -> List[str]:
    """Plain text references, one per line."""
    require_file(path, "reference file", "give the test responses (e.g. test.response from nd-prepare)")
    lines = read_lines(path)
    if not lines:
        raise InputError(f"reference file {path} is empty; give one reference response per line")
    return undo_subwords(lines, subwords)


def read_train_counts(path: str, lowercase: bool = False, subwords: str = "auto"):
    """Token counts of the training responses, streamed block by block (files of any size).

    In ``auto`` mode the subword format is detected on the first block (8 MiB) and kept for the file.
    """
    from collections import Counter

    require_file(path, "training responses file", "give the response side of the training data "
                 "(e.g. train.response from nd-prepare) with --train-responses")
    counts: Counter = Counter()
    mode = subwords
    lines = 0
    for block in iter_line_blocks(path):
        if mode == "auto":
            mode = detect_subwords(block)
        if mode != "none":
            block = undo_subwords(block, mode)
        text = "\n".join(block)
        counts.update((text.lower() if lowercase else text).split())
        lines += len(block)
    if not lines:
        raise InputError(f"training responses file {path} is empty; give the response side of the "
                         f"training data, one response per line")
    return counts
