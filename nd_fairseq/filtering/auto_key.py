"""``--key auto``: choose the grouping key of the source-entropy filter on the corpus itself.

Why a rule and not a constant: how often an utterance repeats verbatim depends on the corpus.
Grouped by their exact (or normalised) text, 93% of chitchat-dataset's pairs have H_src = 0, and
so do 94% of another chit-chat corpus's; a top-50% cut then falls inside the zeros and the
negative set is filled up by line order, not by entropy. Grouping by the first K words makes the
generic openings ("i don't know ...", "yeah ...") collide, and the coarser K, the fewer zeros.

The rule: score the corpus with the keys from the finest to the coarsest
(:data:`CANDIDATES`) and keep the first whose share of zero-entropy pairs is at most the bound.
The default bound is ``1 - ratio`` (0.5 for the paper's top-50% cut): then every pair of the
negative set has H_src > 0, i.e. it is chosen by its entropy. With ``--threshold`` the bound is
0.5. If no key meets the bound, the coarsest is kept and the caller warns. The figures of every
key tried go to ``summary.json`` (``auto``), so the choice can be checked.
"""

from typing import Callable, List, Optional, Tuple

# from the finest grouping to the coarsest; exact text first, then the normalised text, then
# ever shorter normalised prefixes
CANDIDATES: Tuple[str, ...] = ("exact", "normalized") + tuple(f"prefix:{k}" for k in range(8, 0, -1))

# a negative set with more zero-entropy pairs than this share is reported as mostly arbitrary
MOSTLY_ZEROS = 0.5


def default_bound(ratio: Optional[float], threshold: Optional[float]) -> float:
    """The largest zero-entropy share that leaves no zero-entropy pair in the top ``ratio``."""
    if threshold is not None:
        return 0.5
    return 1.0 - (0.5 if ratio is None else ratio)


def choose_key(score: Callable[[str], object], bound: float,
               candidates: Tuple[str, ...] = CANDIDATES) -> Tuple[object, str, List[dict]]:
    """Score with each candidate key in turn; return (corpus, key, what was tried).

    ``score(key)`` returns a :class:`~nd_fairseq.filtering.source_entropy.ScoredCorpus` (closed
    here when it is not the one kept). ``bound``: the zero-entropy share a key must not exceed.
    """
    tried: List[dict] = []
    corpus = None
    for key in candidates:
        if corpus is not None:
            corpus.close()
        corpus = score(key)
        summary = corpus.summary()
        tried.append({"key": key, "zero_share": summary["zero_share"], "median": summary["median"],
                      "unique": summary["unique"]})
        if summary["zero_share"] <= bound:
            break
    return corpus, tried[-1]["key"], tried


def zeros_in_top(n_pairs: int, zero_share: float, top: int) -> int:
    """Zero-entropy pairs in the top set of ``top`` pairs (the zeros rank last)."""
    zeros = round(zero_share * n_pairs)
    return max(0, top - (n_pairs - zeros))
