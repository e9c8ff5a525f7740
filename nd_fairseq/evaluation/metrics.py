"""The automatic metrics of Table 3 (Negative Distillation, Li et al. NAACL 2022, §3.4), as pure functions.

Every metric works on whitespace tokens. Text is **not** lowercased unless asked
(``lowercase=True``, ``nd-eval --lowercase``): the data nd-prepare writes is already lowercased and
Moses-tokenised, and lowercasing silently would hide a case mismatch between systems. A response is
compared with others as its token sequence joined by single spaces.

Definitions (README-ready)
--------------------------
Let H be the generated responses and R the reference responses (aligned, one per test context).

- **Dist-n** (Li et al. 2016), n = 1, 2, 3: distinct n-grams / all n-grams, counted over the whole
  output H at once (corpus level), n-grams never crossing a response boundary. Undefined (``None``)
  when H has no n-gram of that order.
- **LF** (low-frequency token ratio, Li et al. 2020b; threshold 100 as in the ND paper): the share of
  generated tokens whose count in the training responses is < threshold (strictly below; a token
  never seen in training counts 0, so it is low-frequency).
- **KL-1 / KL-2** (Csáky et al. 2019), following the reference implementation
  ``ricsinaruto/dialog-eval`` (``code/metrics/divergence_metrics.py``, commit af95efc):

  1. count the unigrams (bigrams, within each response) of H and of R;
  2. keep only the n-grams that occur in *both* (the intersection) and renormalise each side over
     it, giving P_R and P_H. N-grams seen on one side only are dropped: no smoothing, no ``<unk>``
     floor;
  3. for each reference response r, average log2(P_R(g) / P_H(g)) over its n-gram tokens g that are
     in the intersection (responses with none are skipped);
  4. KL-n = the mean of these per-response averages.

  The direction is KL(P_R || P_H) (reference distribution first), estimated on the reference
  tokens, in bits. Weighted by tokens instead of by response (steps 3-4), this would be exactly
  KL(P_R || P_H) over the intersection, never negative; dialog-eval averages per response, and so
  do we, so a value near 0 can come out slightly negative (about -0.004 for two samples of the same
  corpus). Lower is better; ``None`` when H and R share no n-gram. One deliberate difference:
  dialog-eval first maps words outside its vocabulary file to ``<unk>``; we count surface tokens,
  so the two agree whenever no test word is outside that vocabulary.
- **BLEU-3 / BLEU-4**: sentence-level BLEU of each hypothesis against its single reference with
  uniform weights (1/3 each, 1/4 each), Chen & Cherry (2014) smoothing, averaged over the responses
  (dialog-eval's ``bleu_metrics.py``: NLTK ``sentence_bleu`` per response, mean over the file). The
  default smoothing is **method 4** (dialog-eval's default ``bleu_smoothing = 4``, K = 5) as NLTK
  implements it since its 2021 fix (nltk PR #2681; checked against NLTK 3.10): the i-th n-gram
  order without a match (i = 1, 2, ... counting only such orders) gets the precision
  ln(len(h)) / (2^i · K) / (number of hypothesis n-grams of that order), for hypotheses longer than
  one token. Like NLTK: the score is 0 when no unigram matches, the brevity penalty is
  exp(1 - |r|/|h|) when |h| <= |r|, and a precision the smoothing leaves at 0 (only a one-token
  hypothesis under method 4) drops out of the geometric mean. Methods 0-3 (0 = none, 1 = epsilon
  0.1, 2 = add-one for n >= 2, 3 = NIST geometric) are available too.

  Not comparable with numbers from NLTK before that fix, whose method 4 set the precision to
  (i + K/ln(len)) / count (nltk issues #2341, #2676), above 1 for higher orders, which can put
  BLEU-4 above BLEU-3. The ND paper does not name its BLEU code; its BLEU-3/4 of about 0.35-0.40
  look like such averaged, heavily smoothed sentence BLEU, so compare our BLEU between our own
  systems, not with the paper's numbers. dialog-eval's BLEU-3 weights are 0.33 (sum 0.99); ours
  are 1/3.
- **length**: mean tokens per response; **unique**: distinct responses / responses; **top_share**:
  the share of responses that are one of the ``top_k`` (10) most frequent responses, a direct gauge
  of generic replies, listed with their counts in ``top_responses``.
- **rep-3**: the share of responses in which some 3-gram occurs more than once ("i 'm not sure i
  'm not sure" counts, "i 'm not sure ." does not), the gauge of decoding loops; lower is better.
"""

import math
from collections import Counter
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from ..io_utils import InputError

Tokens = Sequence[str]

#: +1: higher is better, -1: lower is better, 0: no direction (not marked in tables).
DIRECTIONS: Dict[str, int] = {
    "dist-1": 1, "dist-2": 1, "dist-3": 1, "lf": 1, "kl-1": -1, "kl-2": -1, "bleu-3": 1, "bleu-4": 1,
    "length": 0, "unique": 1, "top_share": -1, "rep-3": -1,
}

BLEU_SMOOTHING_METHODS = (0, 1, 2, 3, 4)


def tokenize(text: str, lowercase: bool = False) -> List[str]:
    return (text.lower() if lowercase else text).split()


def ngrams(tokens: Tokens, n: int) -> Iterable:
    """n-grams of one response; unigrams are the tokens themselves (not 1-tuples)."""
    if n == 1:
        return tokens
    return zip(*(tokens[i:] for i in range(n)))


def token_counts(lines: Iterable[str], lowercase: bool = False) -> Counter:
    """Token frequencies of raw text lines (e.g. the training responses for LF)."""
    counts: Counter = Counter()
    for line in lines:
        counts.update(tokenize(line, lowercase))
    return counts


def distinct_n(responses: Sequence[Tokens], n: int) -> Optional[float]:
    """Dist-n: distinct n-grams / all n-grams over the whole output (Li et al. 2016)."""
    seen = set()
    total = 0
    for toks in responses:
        if len(toks) >= n:
            total += len(toks) - n + 1
            seen.update(ngrams(toks, n))
    return len(seen) / total if total else None


def low_frequency_count(responses: Sequence[Tokens], train_counts: Mapping[str, int],
                        threshold: int = 100) -> Tuple[int, int]:
    """(generated tokens whose training-response frequency is < ``threshold``, generated tokens)."""
    generated: Counter = Counter()
    for toks in responses:
        generated.update(toks)
    low = sum(c for tok, c in generated.items() if train_counts.get(tok, 0) < threshold)
    return low, sum(generated.values())


def low_frequency_ratio(responses: Sequence[Tokens], train_counts: Mapping[str, int],
                        threshold: int = 100) -> Optional[float]:
    """LF: share of generated tokens whose training-response frequency is < ``threshold``."""
    low, total = low_frequency_count(responses, train_counts, threshold)
    return low / total if total else None


def kl_divergence(hypotheses: Sequence[Tokens], references: Sequence[Tokens], n: int) -> Optional[float]:
    """KL-n of Csáky et al. (2019) as dialog-eval computes it (see the module docstring), in bits."""
    hyp_counts: Counter = Counter()
    for toks in hypotheses:
        hyp_counts.update(ngrams(toks, n))
    ref_counts: Counter = Counter()
    for toks in references:
        ref_counts.update(ngrams(toks, n))
    shared = hyp_counts.keys() & ref_counts.keys()
    if not shared:
        return None
    hyp_total = sum(hyp_counts[g] for g in shared)
    ref_total = sum(ref_counts[g] for g in shared)
    log_ratio = {g: math.log2((ref_counts[g] * hyp_total) / (hyp_counts[g] * ref_total)) for g in shared}
    per_response = []
    for toks in references:
        values = [log_ratio[g] for g in ngrams(toks, n) if g in log_ratio]
        if values:
            per_response.append(math.fsum(values) / len(values))
    return math.fsum(per_response) / len(per_response)


def _match_counts(hyp: Tokens, ref: Tokens, n: int) -> Tuple[int, int]:
    """Clipped n-gram matches and the number of hypothesis n-grams (at least 1, as NLTK)."""
    if len(hyp) < n:
        return 0, 1
    hyp_grams = Counter(ngrams(hyp, n))
    ref_grams = Counter(ngrams(ref, n)) if len(ref) >= n else {}
    matches = sum(min(c, ref_grams.get(g, 0)) for g, c in hyp_grams.items())
    return matches, len(hyp) - n + 1


def _smooth(counts: Sequence[Tuple[int, int]], hyp_len: int, smoothing: int, k: float = 5.0,
            epsilon: float = 0.1) -> List[float]:
    """Chen & Cherry (2014) smoothing of (matches, total) per order, as NLTK's ``SmoothingFunction``."""
    out: List[float] = []
    zeros = 0  # the "invcnt" exponent of methods 3 and 4: zero orders met so far
    for i, (m, total) in enumerate(counts):
        if smoothing == 2 and i > 0:
            out.append((m + 1) / (total + 1))  # Lin & Och (2004): orders >= 2 only
        elif m > 0 or smoothing == 0:
            out.append(m / total)
        elif smoothing == 1:
            out.append(epsilon / total)
        elif smoothing == 3:
            zeros += 1
            out.append(1.0 / (2 ** zeros * total))
        elif smoothing == 4:
            if hyp_len > 1:  # ln(1) = 0: NLTK leaves one-token hypotheses unsmoothed
                zeros += 1
                out.append(math.log(hyp_len) / (2 ** zeros * k) / total)
            else:
                out.append(0.0)
        else:
            raise ValueError(f"unknown BLEU smoothing method {smoothing}; choose one of {BLEU_SMOOTHING_METHODS}")
    return out


def smoothed_precisions(hyp: Tokens, ref: Tokens, max_n: int = 4, smoothing: int = 4) -> List[float]:
    """Modified n-gram precisions p_1..p_max_n after smoothing ``smoothing``.

    Every method only looks at lower orders, so the first 3 values are also those of BLEU-3.
    """
    return _smooth([_match_counts(hyp, ref, n) for n in range(1, max_n + 1)], len(hyp), smoothing)


def brevity_penalty(hyp_len: int, ref_len: int) -> float:
    if hyp_len > ref_len:
        return 1.0
    if hyp_len == 0:
        return 0.0
    return math.exp(1 - ref_len / hyp_len)


def bleu_scores(hypotheses: Sequence[Tokens], references: Sequence[Tokens], orders: Sequence[int] = (3, 4),
                smoothing: int = 4) -> Dict[str, float]:
    """Mean sentence BLEU-n over aligned responses for each n in ``orders`` (dialog-eval's average)."""
    if smoothing not in BLEU_SMOOTHING_METHODS:
        raise ValueError(f"unknown BLEU smoothing method {smoothing}; choose one of {BLEU_SMOOTHING_METHODS}")
    max_n = max(orders)
    sums = {n: 0.0 for n in orders}
    for hyp, ref in zip(hypotheses, references):
        counts = [_match_counts(hyp, ref, n) for n in range(1, max_n + 1)]
        if counts[0][0] == 0:
            continue  # no unigram match (or an empty hypothesis): 0 whatever the smoothing, as NLTK
        precisions = _smooth(counts, len(hyp), smoothing)
        bp = brevity_penalty(len(hyp), len(ref))
        for n in orders:
            used = precisions[:n]
            if smoothing == 0 and 0.0 in used:
                continue  # unsmoothed: a zero precision makes the geometric mean 0
            # a zero the smoothing kept (method 4, one-token hypothesis) drops out, as in NLTK
            sums[n] += bp * math.exp(math.fsum(math.log(p) for p in used if p > 0) / n)
    count = len(hypotheses)
    return {f"bleu-{n}": (sums[n] / count if count else 0.0) for n in orders}


def sentence_bleu(hyp: Tokens, ref: Tokens, n: int = 4, smoothing: int = 4) -> float:
    """Smoothed BLEU-n of one hypothesis against one reference (uniform weights 1/n)."""
    return bleu_scores([hyp], [ref], orders=(n,), smoothing=smoothing)[f"bleu-{n}"]


def response_stats(responses: Sequence[Tokens], top_k: int = 10) -> dict:
    """Average length, share of unique responses, and the ``top_k`` most frequent responses."""
    n = len(responses)
    freq = Counter(" ".join(toks) for toks in responses)
    top = freq.most_common(top_k)
    return {
        "length": sum(len(t) for t in responses) / n if n else None,
        "unique": len(freq) / n if n else None,
        "top_k": top_k,
        "top_share": sum(c for _, c in top) / n if n else None,
        "top_responses": [{"response": r, "count": c, "share": c / n} for r, c in top],
    }


def repetition_rate(responses: Sequence[Tokens], n: int = 3) -> Optional[float]:
    """Share of responses with an n-gram that occurs at least twice in the response itself."""
    if not responses:
        return None
    looping = 0
    for toks in responses:
        grams = list(ngrams(toks, n))
        looping += len(set(grams)) < len(grams)
    return looping / len(responses)


def evaluate(hypotheses: Sequence[str], references: Sequence[str],
             train_responses: Union[Iterable[str], Mapping[str, int], None] = None,
             lf_threshold: int = 100, bleu_smoothing: int = 4, lowercase: bool = False,
             top_k: int = 10) -> dict:
    """All Table 3 metrics of one system, as fractions (not percentages).

    ``hypotheses`` and ``references`` are aligned response strings. ``train_responses`` are the
    training response lines (tokenised here, with ``lowercase``) or a ready token-count mapping
    (used as given); without them ``lf`` is ``None``. Undefined values (no n-grams, nothing shared)
    are ``None``.
    """
    if len(hypotheses) != len(references):
        raise InputError(f"{len(hypotheses)} hypotheses but {len(references)} references; "
                         f"give one reference per hypothesis, in the same order")
    if not hypotheses:
        raise InputError("no hypotheses to evaluate; give at least one response")
    if lf_threshold < 0:
        raise InputError(f"LF threshold {lf_threshold} is negative; give a count >= 0 (the paper uses 100)")
    hyp = [tokenize(h, lowercase) for h in hypotheses]
    ref = [tokenize(r, lowercase) for r in references]
    if train_responses is None:
        counts = None
    elif isinstance(train_responses, Mapping):
        counts = train_responses
    else:
        counts = token_counts(train_responses, lowercase)
    out: dict = {"n": len(hyp)}
    for n in (1, 2, 3):
        out[f"dist-{n}"] = distinct_n(hyp, n)
    out["lf"] = low_frequency_ratio(hyp, counts, lf_threshold) if counts is not None else None
    for n in (1, 2):
        out[f"kl-{n}"] = kl_divergence(hyp, ref, n)
    out.update(bleu_scores(hyp, ref, (3, 4), bleu_smoothing))
    out.update(response_stats(hyp, top_k))
    out["rep-3"] = repetition_rate(hyp, 3)
    out["ref_length"] = sum(len(t) for t in ref) / len(ref)
    out.update({"lf_threshold": lf_threshold, "bleu_smoothing": bleu_smoothing, "lowercase": lowercase})
    return out


def best_systems(results: Mapping[str, Mapping[str, Optional[float]]], metric: str,
                 digits: Optional[int] = None) -> List[str]:
    """Names of the systems with the best value of ``metric`` (ties included; optionally compared
    after rounding to ``digits``, as a table shows them). Empty for metrics without a direction."""
    sign = DIRECTIONS.get(metric, 0)
    values = {name: r.get(metric) for name, r in results.items()}
    values = {name: (round(v, digits) if digits is not None else v)
              for name, v in values.items() if v is not None}
    if not sign or not values:
        return []
    best = max(values.values()) if sign > 0 else min(values.values())
    return [name for name, v in values.items() if v == best]
