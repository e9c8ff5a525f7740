"""Input readers for nd-eval: ``fairseq-generate`` output and plain text, subword pieces undone.

``fairseq-generate`` prints, per test sentence id, ``S-id`` (source), ``T-id`` (reference),
``H-id<TAB>score<TAB>hypothesis`` (after ``--post-process``/``--remove-bpe``), ``D-id`` (the same,
after ``--bpe``/``--tokenizer`` decoding), ``P-id`` (positional scores) and more (``A-``, ``I-``,
``E-``), in batch order, not id order; log lines may be mixed in when stderr was redirected too.
:func:`read_generate` keeps the first (best) hypothesis of each id and returns them sorted by id.
An incomplete output (a last line without its newline, an id with S-/T- lines but no hypothesis,
ids below the largest with no line at all: what a job killed while generating leaves) is an error
unless ``allow_partial``.

Subword units are undone the way fairseq's ``--post-process`` does: sentencepiece pieces
(``▁how ▁are ▁you`` -> ``how are you``) and subword-nmt BPE (``hel@@ lo`` -> ``hello``). With
``mode="auto"`` (the default) a text is treated as pieces when any of its lines contains ``▁``, and as
BPE when any contains ``@@ `` (or ends with ``@@``); text already post-processed passes unchanged.
"""

import os
import re
from dataclasses import dataclass, field as dataclass_field
from typing import Dict, Iterator, List, Optional

from ..io_utils import InputError, iter_line_blocks, read_lines, require_file

SUBWORD_MODES = ("auto", "none", "sentencepiece", "bpe")
FORMATS = ("auto", "generate", "text")
HYPOTHESIS_FIELDS = ("H", "D")

_GENERATE_LINE = re.compile(r"([STHDP])-(\d+)\t")
_CUT_RECORD = re.compile(r"([STHDP])-(\d+)")  # what is left of a record line cut off early
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
    field: str = "H"
    #: the last line, when the file does not end with a newline (cut off while being written)
    cut_line: Optional[int] = None
    #: id -> line of its first S-/T- line, for ids without a hypothesis line (or whose last line was cut)
    unfinished: Dict[int, int] = dataclass_field(default_factory=dict)
    #: ids below the largest id seen that have no line at all
    absent: List[int] = dataclass_field(default_factory=list)

    @property
    def expected(self) -> int:
        """Sentences the run should have written: 0 .. the largest id seen."""
        return len(self.ids) + len(self.unfinished) + len(self.absent)

    def gaps(self) -> str:
        """The incomplete records, counted (e.g. ``line 161 cut off, 1 id without H-``), or ''."""
        parts = []
        if self.cut_line is not None:
            parts.append(f"line {self.cut_line} cut off")
        if self.unfinished:
            parts.append(f"{len(self.unfinished)} id{'s' * (len(self.unfinished) > 1)} without {self.field}-")
        if self.absent:
            parts.append(f"{len(self.absent)} id{'s' * (len(self.absent) > 1)} absent")
        return ", ".join(parts)

    def check_complete(self) -> None:
        """Raise :class:`InputError` naming the file and the first incomplete record, if any."""
        fix = (f"rerun fairseq-generate to the end, or pass --allow-partial to score the {len(self.ids)} "
               f"complete sentences")
        if self.cut_line is not None:
            raise InputError(f"{self.path}: line {self.cut_line} is cut off (the file does not end with a "
                             f"newline: fairseq-generate was stopped while writing it); {fix}")
        if self.unfinished:
            sid, line = min(self.unfinished.items(), key=lambda kv: kv[1])
            raise InputError(f"{self.path}: line {line} starts sentence {sid} but no {self.field}-{sid} line "
                             f"follows (the output is incomplete); {fix}")
        if self.absent:
            shown = ", ".join(map(str, self.absent[:5])) + (", ..." if len(self.absent) > 5 else "")
            ids = "id" if len(self.absent) == 1 else "ids"
            raise InputError(f"{self.path}: sentence {ids} {shown} ({len(self.absent)} of 0..{self.expected - 1}) "
                             f"{'has' if len(self.absent) == 1 else 'have'} no lines (the output is incomplete); {fix}")


def _iter_lines(path: str) -> Iterator[str]:
    for block in iter_line_blocks(path):
        yield from block


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def parse_generate(lines, path: str = "<generate output>", field: str = "H",
                   last_line_cut: bool = False) -> GenerateOutput:
    """Collect S-/T- lines and the first ``field`` (H or D) line of each id from generate output.

    With ``last_line_cut`` (the file does not end with a newline) the last line is incomplete:
    its sentence counts as unfinished. Ids below the largest one with no line are ``absent``.
    """
    if field not in HYPOTHESIS_FIELDS:
        raise ValueError(f"unknown hypothesis field {field!r}; choose H or D")
    hyps: Dict[int, str] = {}
    refs: Dict[int, str] = {}
    srcs: Dict[int, str] = {}
    first_line: Dict[int, int] = {}  # id -> its first S-/T-/hypothesis line
    no, line = 0, None
    pending = None  # the line before, kept back until it is known not to be the (cut) last one
    for no, line in enumerate(lines, 1):
        if pending is not None:
            _collect(pending[1], pending[0], field, hyps, refs, srcs, first_line)
        pending = (no, line)
    cut_line = cut_id = None
    if pending is not None:
        if last_line_cut:
            cut_line = pending[0]
            m = _CUT_RECORD.match(pending[1])
            if m:
                cut_id = int(m.group(2))
                first_line.setdefault(cut_id, cut_line)
        else:
            _collect(pending[1], pending[0], field, hyps, refs, srcs, first_line)
    if cut_id is not None:
        hyps.pop(cut_id, None)  # its record was still being written
    seen = set(first_line)
    unfinished = {sid: first_line[sid] for sid in sorted(seen - set(hyps))}
    absent = [i for i in range(max(seen) + 1) if i not in seen] if seen else []
    ids = sorted(hyps)
    return GenerateOutput(path, ids, [hyps[i] for i in ids], refs, srcs, field, cut_line, unfinished, absent)


def _collect(line: str, no: int, field: str, hyps: Dict[int, str], refs: Dict[int, str],
             srcs: Dict[int, str], first_line: Dict[int, int]) -> None:
    """Record one line of generate output (see :func:`parse_generate`)."""
    m = _GENERATE_LINE.match(line)
    if not m:
        return  # log lines, P-/A-/E- lines, the final BLEU line
    kind, sid, rest = m.group(1), int(m.group(2)), line[m.end():]
    if kind in ("S", "T", field):
        first_line.setdefault(sid, no)
    if kind == field:
        if sid not in hyps:  # with --nbest the best hypothesis comes first
            # "score<TAB>text"; an empty hypothesis may have lost its trailing tab
            hyps[sid] = rest.split("\t", 1)[1] if "\t" in rest else ""
    elif kind == "T":
        refs.setdefault(sid, rest)
    elif kind == "S":
        srcs.setdefault(sid, rest)


def read_generate(path: str, field: str = "H", allow_partial: bool = False) -> GenerateOutput:
    """Read generate output; incomplete records are an error unless ``allow_partial``."""
    require_file(path, "generate output")
    out = parse_generate(_iter_lines(path), path, field, last_line_cut=not _ends_with_newline(path))
    if not out.ids:
        if out.gaps():
            out.check_complete()
        raise InputError(f"{path} has no {field}- lines; give the output of fairseq-generate (without "
                         f"--quiet), or a plain text file with one response per line")
    if not allow_partial:
        out.check_complete()
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
    expected: Optional[int] = None  # generate output: sentences it should hold (0 .. largest id)
    gaps: str = ""  # generate output read with allow_partial: what is incomplete


def read_responses(path: str, fmt: str = "auto", field: str = "H", subwords: str = "auto",
                   allow_partial: bool = False) -> Responses:
    """Read a system's output (``fmt`` in FORMATS) with subword units undone.

    Generate output with incomplete records (see :meth:`GenerateOutput.check_complete`) is an
    error, unless ``allow_partial``: then the complete sentences are read.
    """
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
    gen = read_generate(path, field, allow_partial)
    missing = sum(1 for i in gen.ids if i not in gen.references)
    refs = None if missing else undo_subwords([gen.references[i] for i in gen.ids], subwords)
    return Responses(path, "generate", undo_subwords(gen.hypotheses, subwords), refs, gen.ids, missing,
                     gen.expected, gen.gaps())


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
