"""Word tokenisation of raw text before sentencepiece: ``--tokenize moses|whitespace|none``.

One function, :func:`make_tokenizer`, shared by every place that must tokenise as nd-prepare did:
nd-prepare itself, a data directory's ``preprocessing.json`` applied to new text
(:mod:`.preprocessing`: what nd-chat sends to a model) and the external negatives of the ND
criterion (:mod:`.external_negatives`), so that their text meets the sentencepiece model in the
form it was trained on.
"""

import functools
import re
from typing import Callable

from ..io_utils import InputError

_WS = re.compile(r"\s+")


def make_tokenizer(kind: str, lowercase: bool) -> Callable[[str], str]:
    """A function from raw text to one line of space-separated tokens."""
    if kind == "moses":
        try:
            from sacremoses import MosesTokenizer
        except ImportError:
            raise InputError("--tokenize moses needs sacremoses (pip install sacremoses) or use "
                             "--tokenize whitespace") from None
        moses = MosesTokenizer(lang="en")

        def tok(text: str) -> str:
            text = _WS.sub(" ", text).strip()
            # moses can leave double spaces (e.g. around stripped control characters)
            return " ".join(moses.tokenize(text, escape=False, return_str=True).split()) if text else ""
    elif kind == "whitespace":
        def tok(text: str) -> str:
            return _WS.sub(" ", text).strip()
    elif kind == "none":
        def tok(text: str) -> str:
            # keep the text but never a newline or tab inside a line
            return text.replace("\n", " ").replace("\t", " ").replace("\r", " ")
    else:
        raise InputError(f"unknown --tokenize {kind!r}: use moses, whitespace or none")
    base = (lambda text: tok(text).lower()) if lowercase else tok
    # Each turn of a conversation is the response of one pair and the query of the next, and
    # short replies repeat a lot: tokenising each distinct string once halves the work.
    return functools.lru_cache(maxsize=1 << 18)(base)
