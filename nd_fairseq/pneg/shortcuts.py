"""Trivial scorers that expose shortcuts in a response-selection test set, and its length profile.

A ranker's R@1 means little until it is set beside what a scorer that reads no meaning gets on
the same candidate sets:

* ``shortest``: the candidate with the fewest words wins (score = -words);
* ``longest``: the one with the most words;
* ``overlap``: the one sharing the most distinct words with the context (any turn);
* ``random``: a uniformly random order, given as its exact expected value (R@1 = 1/n,
  MRR = H_n / n for n candidates), so the figure needs no seed and carries no sampling noise.

Words are lowercased ``\\w+`` runs (punctuation is not a word). Ranks follow
:func:`.metrics.positive_rank`: a tie ranks the positive below every tied negative, so a length
baseline gains nothing when the positive shares its length with a negative.

:func:`shortcut_warnings` flags a test set on which the best trivial scorer gets at least
``NEAR_RATIO`` of the best trained ranker's R@1 (or more than it).
"""

import math
import re
import statistics
from collections import defaultdict
from typing import Dict, List, Sequence

from .candidates import CandidateSet
from .metrics import selection_metrics

BASELINES = ("shortest", "longest", "overlap", "random")
DESCRIPTIONS = {"shortest": "shortest candidate", "longest": "longest candidate",
                "overlap": "most word overlap with the context", "random": "random (expected value)"}
NEAR_RATIO = 0.8
_WORD = re.compile(r"\w+")


def words(text: str) -> List[str]:
    return _WORD.findall(text.lower())


def baseline_scores(cs: CandidateSet, name: str) -> List[float]:
    if name == "shortest":
        return [-float(len(words(c))) for c in cs.candidates]
    if name == "longest":
        return [float(len(words(c))) for c in cs.candidates]
    if name == "overlap":
        context = {w for turn in cs.context for w in words(turn)}
        return [float(len(set(words(c)) & context)) for c in cs.candidates]
    raise ValueError(f"no scorer for baseline {name!r}")


def expected_random(sets: Sequence[CandidateSet]) -> Dict[str, float]:
    """R@1 and MRR of a uniformly random ranking, in expectation."""
    if not sets:
        return {"R@1": 0.0, "MRR": 0.0, "n": 0}
    r1 = sum(1.0 / len(cs.candidates) for cs in sets) / len(sets)
    mrr = sum(sum(1.0 / k for k in range(1, len(cs.candidates) + 1)) / len(cs.candidates) for cs in sets) / len(sets)
    return {"R@1": r1, "MRR": mrr, "n": len(sets)}


def baseline_metrics(sets: Sequence[CandidateSet]) -> Dict[str, Dict[str, float]]:
    """``{baseline: {"R@1", "MRR", "n"}}`` on one test set."""
    out = {}
    labels = [cs.label for cs in sets]
    for name in BASELINES:
        if name == "random":
            out[name] = expected_random(sets)
        else:
            out[name] = selection_metrics([baseline_scores(cs, name) for cs in sets], labels)
    return out


def length_profile(sets: Sequence[CandidateSet]) -> Dict[str, Dict[str, float]]:
    """Words per candidate by kind (positive, random, human, ...): count, mean, median, 10th/90th pct."""
    lengths: Dict[str, List[int]] = defaultdict(list)
    for cs in sets:
        kinds = cs.kinds or ["positive" if i == cs.label else "negative" for i in range(len(cs.candidates))]
        for kind, cand in zip(kinds, cs.candidates):
            lengths[kind].append(len(words(cand)))
    out = {}
    for kind in sorted(lengths, key=lambda k: (k != "positive", k)):
        xs = sorted(lengths[kind])
        out[kind] = {"candidates": len(xs), "mean": statistics.fmean(xs), "median": statistics.median(xs),
                     "p10": _percentile(xs, 0.1), "p90": _percentile(xs, 0.9)}
    return out


def _percentile(sorted_xs: Sequence[int], q: float) -> float:
    """Nearest-rank percentile (a value that occurs in the data)."""
    k = max(0, min(len(sorted_xs) - 1, math.ceil(q * len(sorted_xs)) - 1))
    return float(sorted_xs[k])


def shortcut_warnings(baselines: Dict[str, Dict[str, Dict[str, float]]],
                      rankers: Dict[str, Dict[str, Dict[str, float]]]) -> List[str]:
    """One line per test set whose best trivial baseline is near the best ranker (see NEAR_RATIO).

    ``baselines[test][baseline]`` and ``rankers[source][test]`` are metric dicts with ``R@1``.
    """
    lines = []
    for test, by_name in baselines.items():
        ranked = [(e[test]["R@1"], s) for s, e in rankers.items() if e.get(test)]
        if not ranked or not by_name:
            continue
        best_r1, best_source = max(ranked)
        base_r1, base = max((m["R@1"], n) for n, m in by_name.items())
        if base_r1 >= NEAR_RATIO * best_r1:
            lines.append(f"Warning: on the {test} test set the {DESCRIPTIONS[base]} baseline scores R@1 "
                         f"{base_r1:.3f}, {'above' if base_r1 > best_r1 else 'near'} the best ranker "
                         f"({best_source}, {best_r1:.3f}): the set has a shortcut, so ranker differences on it "
                         f"may not measure response selection.")
    return lines
