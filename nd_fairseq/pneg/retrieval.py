"""BM25 lexical-retrieval negatives (the "BM25" baseline of PNEG §3.3, after Karpukhin et al. 2020).

The dialogue context is the query; the documents are the training responses. The top-scored
responses that are not a positive of the context (nor identical to one after normalisation)
are its negatives: lexically close to the context, usually not a coherent reply. Okapi BM25
(Robertson and Zaragoza, 2009) with k1 = 1.2, b = 0.75 and the non-negative idf
``log(1 + (N - df + 0.5) / (df + 0.5))``; ties broken by document order, so results are stable.
"""

import math
from collections import Counter, defaultdict
from typing import Dict, Iterable, List, Optional, Sequence, Set

from .parse import normalise, words


class BM25Index:
    """Okapi BM25 over a list of documents; postings are numpy arrays, so one query costs a few
    vectorised additions per query term (DailyDialog++'s ~46k responses: about a millisecond)."""

    def __init__(self, documents: Sequence[str], k1: float = 1.2, b: float = 0.75):
        import numpy as np

        self.np = np
        self.documents = list(documents)
        self.k1, self.b = k1, b
        postings: Dict[str, List[tuple]] = defaultdict(list)
        lengths = []
        for doc_id, doc in enumerate(self.documents):
            toks = words(doc)
            lengths.append(len(toks))
            for term, tf in Counter(toks).items():
                postings[term].append((doc_id, tf))
        n = len(self.documents)
        self.lengths = np.asarray(lengths, dtype=np.float64)
        self.avgdl = float(self.lengths.mean()) if n else 0.0
        norm = k1 * (1.0 - b + b * self.lengths / (self.avgdl or 1.0))
        # term -> (doc ids, idf * tf * (k1 + 1) / (tf + norm)): the query-independent part of BM25
        self.postings: Dict[str, tuple] = {}
        for term, plist in postings.items():
            ids = np.fromiter((d for d, _ in plist), dtype=np.int64, count=len(plist))
            tf = np.fromiter((t for _, t in plist), dtype=np.float64, count=len(plist))
            idf = math.log(1.0 + (n - len(plist) + 0.5) / (len(plist) + 0.5))
            self.postings[term] = (ids, idf * tf * (k1 + 1.0) / (tf + norm[ids]))

    def score_array(self, query: str):
        """BM25 score of every document (0 where no query term occurs)."""
        scores = self.np.zeros(len(self.documents))
        for term, qtf in Counter(words(query)).items():
            hit = self.postings.get(term)
            if hit is not None:
                scores[hit[0]] += qtf * hit[1]  # a term's doc ids are unique: plain fancy-index add
        return scores

    def scores(self, query: str) -> Dict[int, float]:
        s = self.score_array(query)
        return {int(i): float(s[i]) for i in self.np.flatnonzero(s > 0)}

    def search(self, query: str, k: int, exclude: Optional[Set[str]] = None) -> List[str]:
        """The ``k`` best distinct documents with a positive score, skipping those whose normalised
        text is in ``exclude``; ties go to the earlier document."""
        np = self.np
        scores = self.score_array(query)
        matched = int((scores > 0).sum())
        exclude = set(exclude or ())
        want = min(matched, k + len(exclude) + 8)
        while True:
            if 0 < want < len(scores):
                # every document scoring at least the want-th best: ties at the cut all stay in
                cut = scores[np.argpartition(-scores, want - 1)[want - 1]]
                top = np.flatnonzero(scores >= max(cut, 1e-300))
            else:
                top = np.flatnonzero(scores > 0)
            order = top[np.lexsort((top, -scores[top]))]
            picked, seen = [], set(exclude)
            for doc_id in order.tolist():
                key = normalise(self.documents[doc_id])
                if not key or key in seen:
                    continue
                seen.add(key)
                picked.append(self.documents[doc_id])
                if len(picked) == k:
                    return picked
            if want >= matched:
                return picked
            want = min(matched, want * 4)


def bm25_negatives(contexts: Sequence[Sequence[str]], positives: Sequence[Sequence[str]], corpus: Iterable[str],
                   k: int = 5, exclude_context: bool = False) -> List[List[str]]:
    """``k`` BM25 negatives for each context (query = all turns), from the response ``corpus``.

    Positives are always excluded; ``exclude_context`` also drops copies of the context's turns
    (PNEG's Table 10 shows BM25 returning a context turn, so by default they stay).
    """
    index = BM25Index(list(dict.fromkeys(c for c in corpus if c.strip())))
    out = []
    for context, pos in zip(contexts, positives):
        exclude = {normalise(p) for p in pos}
        if exclude_context:
            exclude |= {normalise(t) for t in context}
        out.append(index.search(" ".join(context), k, exclude))
    return out
