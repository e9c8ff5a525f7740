"""Parse a PNEG completion into five negatives and reject the error types of Appendix F.

PNEG regenerates "until there is no error response" (Appendix F): n-gram or word repetition,
too many ``_`` / ``_ _``, output out of the numbering rules. We also reject what the paper leaves to
human evaluation but can be caught mechanically (Table 8, Appendix D): copies of a context turn and
copies of a positive response, which are false negatives. A completion is accepted only if all
five items pass; otherwise every reason found is reported once for that attempt.

Rejection reasons (``REASONS``):

* ``numbering``: a line that is not ``N. text``, or numbers not 1, 2, 3, ... in order;
* ``count``: not exactly five items;
* ``empty``: an item with no words;
* ``prompt_leak``: an item carrying prompt markup (``\"\"\"``, ``###``, ``Dialogue context:``);
* ``repetition``: a word three times in a row, a 2-3-gram three times in a row, or any 4-gram
  twice in one item (GPT's degenerate loops; "bye bye" and "I know, I know" pass);
* ``duplicate``: two of the five items are the same after normalisation;
* ``underscore``: an item with two or more ``_`` (runs such as ``__`` or ``_ _``);
* ``copy_context``: an item that copies a context turn;
* ``copy_positive``: an item that copies a positive response (a false negative).

"Copies" compares normalised word sequences (lowercase, letters and digits only): equal, one
containing the other when the shorter has at least 4 words, or a difflib ratio >= 0.85.
"""

import difflib
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

from .prompt import N_NEGATIVES, SEPARATOR

REASONS = ("numbering", "count", "empty", "prompt_leak", "repetition", "duplicate", "underscore",
           "copy_context", "copy_positive")

_ITEM = re.compile(r"^(\d{1,2})\s*[.)]\s*(.*)$")
_WORD = re.compile(r"[a-z0-9]+")
_LEAK = re.compile(r'"""|###|dialogue context:', re.IGNORECASE)


@dataclass
class FilterConfig:
    n: int = N_NEGATIVES
    max_word_run: int = 2          # a word may appear at most twice in a row
    max_short_ngram_run: int = 2   # a 2- or 3-gram may appear at most twice in a row
    long_ngram: int = 4            # ... and any 4-gram at most once per item
    max_underscores: int = 1
    copy_ratio: float = 0.85
    copy_min_words: int = 4        # containment counts as a copy when the shorter has this many words
    check_context: bool = True
    check_positive: bool = True


@dataclass
class Verdict:
    negatives: List[str]
    reasons: Dict[str, int] = field(default_factory=dict)  # reason -> number of offending items

    @property
    def ok(self) -> bool:
        return not self.reasons


def words(text: str) -> List[str]:
    return _WORD.findall(text.lower())


def split_numbered(text: str) -> Tuple[List[str], List[str]]:
    """Items of a numbered list and the structural reasons (``numbering``) found.

    ``text`` is the list as written, starting at ``1.``; anything from ``###`` on is dropped
    (the stop sequence, in case the server did not apply it).
    """
    text = text.split(SEPARATOR, 1)[0]
    items: List[str] = []
    reasons: List[str] = []
    expected = 1
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        m = _ITEM.match(line)
        if not m or int(m.group(1)) != expected:
            reasons.append("numbering")
            break
        items.append(m.group(2).strip())
        expected += 1
    return items, reasons


def completion_items(completion: str, prefix: str = "1.") -> Tuple[List[str], List[str]]:
    """Items of a completion that continues a prompt ending in ``prefix`` (``1.``).

    A completion that restates the prefix itself (``" 1. text"``, as some chat-tuned servers do)
    is taken as it is rather than read as item "1. text".
    """
    if re.match(r"\s*1\s*[.)]\s", completion):
        return split_numbered(completion)
    return split_numbered(prefix + completion)


def single_item(completion: str) -> str:
    """One I_imp response: the first line before ``###``, without wrapping quotes."""
    text = completion.split(SEPARATOR, 1)[0].strip()
    text = text.split("\n", 1)[0].strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def has_repetition(tokens: Sequence[str], config: FilterConfig = FilterConfig()) -> bool:
    run = 1
    for a, b in zip(tokens, tokens[1:]):
        run = run + 1 if a == b else 1
        if run > config.max_word_run:
            return True
    for n in (2, 3):
        for i in range(len(tokens) - n * (config.max_short_ngram_run + 1) + 1):
            gram = tokens[i:i + n]
            if all(tokens[i + j * n:i + (j + 1) * n] == gram for j in range(1, config.max_short_ngram_run + 1)):
                return True
    n = config.long_ngram
    if len(tokens) >= 2 * n:
        seen: Dict[Tuple[str, ...], int] = {}
        for i in range(len(tokens) - n + 1):
            gram = tuple(tokens[i:i + n])
            if gram in seen and i - seen[gram] >= n:  # non-overlapping second occurrence
                return True
            seen.setdefault(gram, i)
    return False


def _contains(longer: Sequence[str], shorter: Sequence[str]) -> bool:
    n = len(shorter)
    return any(longer[i:i + n] == list(shorter) for i in range(len(longer) - n + 1))


def is_copy(item: str, reference: str, config: FilterConfig = FilterConfig()) -> bool:
    a, b = words(item), words(reference)
    if not a or not b:
        return False
    if a == b:
        return True
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    if len(short) >= config.copy_min_words and _contains(long_, short):
        return True
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= config.copy_ratio


def check_items(items: Sequence[str], context: Sequence[str] = (), positives: Sequence[str] = (),
                config: FilterConfig = FilterConfig()) -> Dict[str, int]:
    """Reasons (with the number of offending items) why a list of negatives is rejected; {} if none."""
    found: Counter = Counter()
    if len(items) != config.n:
        found["count"] += 1
    seen = set()
    for item in items:
        toks = words(item)
        if not toks:
            found["empty"] += 1
            continue
        if _LEAK.search(item):
            found["prompt_leak"] += 1
        if has_repetition(toks, config):
            found["repetition"] += 1
        key = " ".join(toks)
        if key in seen:
            found["duplicate"] += 1
        seen.add(key)
        if item.count("_") > config.max_underscores:
            found["underscore"] += 1
        if config.check_context and any(is_copy(item, turn, config) for turn in context):
            found["copy_context"] += 1
        if config.check_positive and any(is_copy(item, pos, config) for pos in positives):
            found["copy_positive"] += 1
    return dict(found)


def judge(completions: Sequence[str], context: Sequence[str], positives: Sequence[str],
          instruction: str = "dir", config: FilterConfig = FilterConfig()) -> Verdict:
    """Parse the completion(s) of one attempt and check them.

    I_dir / I_pos: one completion continuing ``1.``; I_imp: ``config.n`` completions, one negative each.
    """
    if instruction == "imp":
        items = [single_item(c) for c in completions]
        structural: List[str] = []
    else:
        if len(completions) != 1:
            raise ValueError("a numbered-list prompt expects exactly one completion per attempt")
        items, structural = completion_items(completions[0])
    if structural:
        return Verdict(items, {r: 1 for r in structural})
    return Verdict(list(items), check_items(items, context, positives, config))


def reason_counts(verdicts: Sequence[Verdict]) -> Counter:
    """Attempts rejected for each reason (a reason counts once per attempt)."""
    out: Counter = Counter()
    for v in verdicts:
        out.update(set(v.reasons))
    return out


def format_counts(counts: Dict[str, int]) -> str:
    ordered = [r for r in REASONS if counts.get(r)] + sorted(r for r in counts if r not in REASONS and counts[r])
    return ", ".join(f"{r} {counts[r]}" for r in ordered) or "none"


def normalise(text: str) -> str:
    return " ".join(words(text))

