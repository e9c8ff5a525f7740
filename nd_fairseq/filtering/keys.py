"""Grouping keys: how the filter decides that two utterances are the same.

``--key exact`` groups the lines as they are; ``normalized`` by their normalised text,
``" ".join(NFKC(line).lower().split())`` (``str.split``: every Unicode whitespace), which
:func:`normalize_line` defines for one line; ``prefix:K`` by the first K words of the normalised
text, a coarser key that groups "yeah i know" with "yeah i know right" (see ``docs/method.md``).
The same key groups the queries and the responses (see
:func:`nd_fairseq.filtering.entropy.conditional_entropy`).

On the fast path the keys are not built one by one: :func:`nd_fairseq.filtering.hashing.block_hashes`
hashes most of them in place, in the bytes of the block, and the helpers here find the few lines
whose key is not their ASCII-lowercased text (:func:`_special_lines`) and normalise those as str
(:func:`_normalized_block_str`).
"""

import unicodedata
from operator import itemgetter, methodcaller
from typing import Iterable, List, Tuple

import numpy as np

from ..io_utils import InputError

_SENTINEL = "\x00"

# A block with more special lines than this share of its lines is normalised as one str.
BLOCK_PATH_SHARE = 0.25


def normalize_line(line: bytes) -> bytes:
    """The normalised key of one UTF-8 line (the reference the block functions agree with)."""
    text = line.decode("utf-8")
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return " ".join(text.lower().split()).encode("utf-8")


_REGULAR_BYTES = bytes(range(0x20, 0x80)) + b"\n"  # bytes.lower already normalises these


def line_bounds(arr: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Starts and ends (byte offsets) of the lines of a block, and its newline positions."""
    nl = np.flatnonzero(arr == 10)
    starts = np.empty(nl.size + 1, dtype=np.intp)
    starts[0] = 0
    starts[1:] = nl + 1
    ends = np.empty_like(starts)
    ends[:-1] = nl
    ends[-1] = arr.size
    return starts, ends, nl


def _special_lines(low: bytes, arr: np.ndarray, nl: np.ndarray) -> np.ndarray:
    """Indices of the lines of an ASCII-lowercased block whose normalised key is not the line.

    Those are lines with a non-ASCII character, whitespace other than single spaces between
    words, or a space at either end (``arr`` is the block as uint8, ``nl`` its newlines).
    """
    if arr.size == 0:
        return np.zeros(0, dtype=np.intp)
    # two whitespace bytes in a row (space-space, space-newline, newline-space) other than an
    # empty line (newline-newline); the place is the space's
    blank = arr <= 32
    pair = np.flatnonzero(blank[:-1] & blank[1:])
    if pair.size:
        first = arr[pair] == 10
        pair = pair[~(first & (arr[pair + 1] == 10))]
        pair += arr[pair] == 10  # after a newline: the place is the next byte
    places = [pair, np.flatnonzero(arr[[0, -1]] == 32) * (arr.size - 1)]  # a space at an end
    if low.translate(None, _REGULAR_BYTES):  # non-ASCII bytes or odd whitespace (\t, \r, ...)
        odd = arr - np.uint8(0x20)  # wraps: bytes < 0x20 and >= 0x80 both end up >= 0x60
        odd = odd >= 0x60
        odd[nl] = False
        places.append(np.flatnonzero(odd))
    return np.unique(np.searchsorted(nl, np.concatenate(places)))  # newlines before a byte = its line


def _normalized_block_str(data: bytes) -> List[bytes]:
    text = data.decode("utf-8")
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    text = text.lower()
    if _SENTINEL in text:  # pragma: no cover - NUL inside dialogue text is exotic
        lines = [" ".join(line.split()) for line in text.split("\n")]
    else:
        lines = list(map(str.strip, " ".join(text.replace("\n", " \x00 ").split()).split(_SENTINEL)))
    return "\n".join(lines).encode("utf-8").split(b"\n")



def _prefix(k: int, sep):
    split_k = methodcaller("split", sep, k)
    take_k = itemgetter(slice(0, k))
    join = sep.join

    def keys(normalized: Iterable) -> List:
        return list(map(join, map(take_k, map(split_k, normalized))))

    return keys


KEY_CHOICES = ("exact", "normalized", "prefix:K")


def parse_key(key: str) -> Tuple[str, int]:
    """``--key`` as (kind, k): ("exact", 0), ("normalized", 0) or ("prefix", k)."""
    if key == "exact":
        return "exact", 0
    if key in ("normalized", "normalised"):
        return "normalized", 0
    if key.startswith("prefix:"):
        try:
            k = int(key.split(":", 1)[1])
        except ValueError:
            k = 0
        if k >= 1:
            return "prefix", k
    raise InputError(f"unknown grouping key {key!r}: use one of exact, normalized, prefix:K (K >= 1)")
