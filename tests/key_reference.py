"""Reference implementations of the grouping keys, for the tests only.

nd-filter never builds the keys: it hashes them in place
(``nd_fairseq.filtering.hashing.block_hashes``), and the one-line definition it agrees with is
``nd_fairseq.filtering.keys.normalize_line``. The functions here build the keys, as str
(:func:`key_function`, with a whole-block str normaliser) and as bytes (:func:`block_key_function`,
with the product's special-line detection), so the tests can state the keys and check the fast
path against two other implementations. They were in the product until nothing there used them.
"""

import unicodedata
from typing import Callable, Iterable, List, Sequence

import numpy as np

from nd_fairseq.filtering.keys import (
    BLOCK_PATH_SHARE,
    _normalized_block_str,
    _prefix,
    _special_lines,
    line_bounds,
    parse_key,
)

_SENTINEL = "\x00"

# Whitespace that str.split() breaks on besides " " and "\n" and that NFKC keeps (NFKC maps the
# other Unicode spaces, U+00A0, U+2000-U+200A, U+202F, U+205F, U+3000, to " ").
_ODD_SPACE = ("\t", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\u1680",
              "\u2028", "\u2029")


def _needs_collapse(text: str) -> bool:
    return ("  " in text or " \n" in text or "\n " in text or text.startswith(" ")
            or text.endswith(" ") or any(c in text for c in _ODD_SPACE))


def normalize_block(lines: Sequence[str]) -> List[str]:
    """NFKC, lowercase and collapse runs of whitespace, for a whole block of lines at once."""
    text = "\n".join(lines)
    if text.isascii():
        text = text.lower()
    else:
        text = unicodedata.normalize("NFKC", text).lower()
    if not _needs_collapse(text):  # the common case for tokenised corpora: a few C-level scans
        return text.split("\n")
    if _SENTINEL in text:  # pragma: no cover - NUL inside dialogue text is exotic
        return [" ".join(line.split()) for line in text.split("\n")]
    # str.split() with no argument splits on every Unicode whitespace, including the newline we
    # turn into a sentinel token, so one split/join collapses whitespace for the whole block.
    parts = " ".join(text.replace("\n", " \x00 ").split()).split(_SENTINEL)
    return list(map(str.strip, parts))


def normalized_block_keys(data: bytes) -> List[bytes]:
    """Normalised keys of a block of UTF-8 lines joined by ``\\n`` (bytes in, bytes out)."""
    low = data.lower()  # ASCII letters only; lines with other letters are redone below
    keys = low.split(b"\n")
    arr = np.frombuffer(low, dtype=np.uint8)
    starts, ends, nl = line_bounds(arr)
    lines = _special_lines(low, arr, nl)
    if lines.size > BLOCK_PATH_SHARE * len(keys):
        return _normalized_block_str(data)
    fixed = _normalized_block_str(b"\n".join([data[a:b] for a, b in zip(starts[lines].tolist(),
                                                                         ends[lines].tolist())]))
    for i, key in zip(lines.tolist(), fixed):
        keys[i] = key
    return keys


def key_function(key: str) -> Callable[[Sequence[str]], Iterable[str]]:
    """Map a ``--key`` value to a function from a block of lines to their grouping keys.

    ``exact``: the line itself (Csáky et al.'s "identity" grouping). ``normalized``: NFKC,
    lowercase, whitespace collapsed. ``prefix:K``: the first K normalised words, a coarser key
    that groups "yeah i know" with "yeah i know right" (see ``docs/method.md`` §3).
    """
    kind, k = parse_key(key)
    if kind == "exact":
        return lambda lines: lines
    if kind == "normalized":
        return normalize_block
    prefix = _prefix(k, " ")
    return lambda lines: prefix(normalize_block(lines))


def block_key_function(key: str) -> Callable[[bytes], List[bytes]]:
    """Like :func:`key_function` for a block of UTF-8 lines joined by ``\\n``, as bytes.

    The byte keys are the UTF-8 encodings of :func:`key_function`'s keys, so both group alike.
    """
    kind, k = parse_key(key)
    if kind == "exact":
        return lambda data: data.split(b"\n")
    if kind == "normalized":
        return normalized_block_keys
    prefix = _prefix(k, b" ")
    return lambda data: prefix(normalized_block_keys(data))

