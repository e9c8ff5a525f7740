"""Dialogue examples for PNEG: the DailyDialog++ JSON-lines format and plain query/response pairs.

DailyDialog++ (Sai et al., 2020) stores one context a line::

    {"id": 17, "context": ["turn 1", "turn 2", ...],
     "positive_responses": [5 strings], "adversarial_negative_responses": [5 strings or none],
     "random_negative_responses": [5 strings]}

(about 45% of its training contexts have no adversarial negatives; PNEG §3.2 trains on the 9,259
that do). ``nd-prepare`` writes aligned ``{split}.query`` / ``{split}.response`` files instead;
a query line may hold several turns separated by ``__eou__``.

Every example gets a string id: the record's ``id`` field if present, else its 0-based position
in the file. For pairs the id is the 0-based line number, so that generated negatives can be
exported aligned with the training set (line i = pair i).
"""

import json
import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from ..io_utils import AtomicFiles, InputError, check_aligned, iter_numbered_lines, read_lines, require_file

DDPP_KEYS = ("context", "positive_responses", "adversarial_negative_responses", "random_negative_responses")
FORMATS = ("auto", "dailydialog++", "pairs")
DEFAULT_TURN_SEPARATOR = "__eou__"
BOM = "\ufeff"


def strip_bom(first_line: str) -> str:
    """The first line of a file without a UTF-8 byte-order mark (editors on Windows write one)."""
    return first_line[1:] if first_line.startswith(BOM) else first_line


@dataclass
class Example:
    """One dialogue context with its reference responses (any list may be empty)."""

    id: str
    context: List[str]
    positives: List[str] = field(default_factory=list)
    adversarial: List[str] = field(default_factory=list)
    random: List[str] = field(default_factory=list)

    def to_json(self) -> Dict[str, object]:
        return {"id": self.id, "context": self.context, "positive_responses": self.positives,
                "adversarial_negative_responses": self.adversarial,
                "random_negative_responses": self.random}


def clean_turn(text: str) -> str:
    """One line of text: inner newlines and tabs become spaces, ends are stripped."""
    return " ".join(str(text).split())


def _string_list(value, path: str, line: int, key: str, required: bool) -> List[str]:
    if value is None:
        if required:
            raise InputError(f"{path}: line {line} has no {key!r}; every DailyDialog++ record needs "
                             f"'context' and 'positive_responses'")
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{path}: line {line}: {key!r} must be a list of strings")
    return [clean_turn(v) for v in value if v.strip()]


def iter_dailydialog_pp(path: str) -> Iterator[Example]:
    """Yield the examples of a DailyDialog++ JSON-lines file (blank lines are skipped).

    The last line may lack a newline (the files as distributed end that way); a leading BOM is dropped.
    """
    require_file(path, "DailyDialog++ file", "give a JSON-lines file with 'context' and "
                                             "'positive_responses' fields")
    index = 0
    seen = set()
    for line_no, line in iter_numbered_lines(path):
        if line_no == 1:
            line = strip_bom(line)
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: line {line_no} is not JSON ({err.msg}); the file must hold "
                             f"one DailyDialog++ record per line") from None
        if not isinstance(rec, dict):
            raise InputError(f"{path}: line {line_no} is not a JSON object")
        context = _string_list(rec.get("context"), path, line_no, "context", True)
        if not context:
            raise InputError(f"{path}: line {line_no} has an empty 'context'")
        ex_id = str(rec["id"]) if rec.get("id") is not None else str(index)
        if ex_id in seen:
            raise InputError(f"{path}: line {line_no} repeats id {ex_id!r}; ids must be unique")
        seen.add(ex_id)
        yield Example(
            id=ex_id, context=context,
            positives=_string_list(rec.get("positive_responses"), path, line_no, "positive_responses", True),
            adversarial=_string_list(rec.get("adversarial_negative_responses"), path, line_no,
                                     "adversarial_negative_responses", False),
            random=_string_list(rec.get("random_negative_responses"), path, line_no,
                                "random_negative_responses", False))
        index += 1


def read_dailydialog_pp(path: str) -> List[Example]:
    return list(iter_dailydialog_pp(path))


def write_dailydialog_pp(path: str, examples: Iterable[Example]) -> int:
    """Write examples as DailyDialog++ JSON lines (atomically); returns how many."""
    directory, name = os.path.split(os.path.abspath(path))
    n = 0
    with AtomicFiles(directory) as out:
        f = out.open(name)
        for ex in examples:
            f.write(json.dumps(ex.to_json(), ensure_ascii=False))
            f.write("\n")
            n += 1
    return n


def split_turns(line: str, separator: Optional[str] = DEFAULT_TURN_SEPARATOR) -> List[str]:
    if separator:
        turns = [clean_turn(t) for t in line.split(separator)]
        turns = [t for t in turns if t]
    else:
        turns = [clean_turn(line)] if line.strip() else []
    return turns


def pair_paths(prefix: str) -> Tuple[str, str]:
    return f"{prefix}.query", f"{prefix}.response"


def read_pairs(prefix: str, turn_separator: Optional[str] = DEFAULT_TURN_SEPARATOR) -> List[Example]:
    """Aligned ``PREFIX.query`` / ``PREFIX.response`` files as examples with id = line number (0-based).

    Empty lines are kept (as examples with an empty context) so that ids stay line numbers.
    """
    query, response = pair_paths(prefix)
    require_file(query, "query file", "give the prefix of aligned .query/.response files (e.g. data/train)")
    require_file(response, "response file", f"{query} needs an aligned {response}")
    check_aligned([query, response])
    examples = []
    queries, responses = read_lines(query), read_lines(response)
    if queries:
        queries[0], responses[0] = strip_bom(queries[0]), strip_bom(responses[0])
    for i, (q, r) in enumerate(zip(queries, responses)):
        r = clean_turn(r)
        examples.append(Example(id=str(i), context=split_turns(q, turn_separator), positives=[r] if r else []))
    return examples


def write_pairs(prefix: str, examples: Sequence[Example], turn_separator: str = f" {DEFAULT_TURN_SEPARATOR} ") -> None:
    """Write ``PREFIX.query`` (turns joined by the separator) and ``PREFIX.response`` (first positive)."""
    query, response = pair_paths(prefix)
    directory = os.path.dirname(os.path.abspath(query))
    with AtomicFiles(directory) as out:
        fq, fr = out.open(os.path.basename(query)), out.open(os.path.basename(response))
        for ex in examples:
            fq.write(turn_separator.join(ex.context) + "\n")
            fr.write((ex.positives[0] if ex.positives else "") + "\n")


def detect_format(path: str, fmt: str = "auto") -> str:
    if fmt not in FORMATS:
        raise InputError(f"unknown --format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    if os.path.isfile(path) and path.endswith((".json", ".jsonl")):
        return "dailydialog++"
    if os.path.isfile(f"{path}.query"):
        return "pairs"
    if os.path.isfile(path):
        return "dailydialog++"
    raise InputError(f"{path} is neither a DailyDialog++ JSON-lines file nor the prefix of "
                     f"{path}.query/{path}.response; check the path or give --format")


def load_examples(path: str, fmt: str = "auto", turn_separator: Optional[str] = DEFAULT_TURN_SEPARATOR) -> List[Example]:
    """Examples of a DailyDialog++ file or a pairs prefix (``fmt`` auto-detects)."""
    kind = detect_format(path, fmt)
    if kind == "dailydialog++":
        return read_dailydialog_pp(path)
    return read_pairs(path, turn_separator)
