"""The Table 3 metrics (nd_fairseq.evaluation.metrics) against values worked out by hand, and BLEU
against NLTK's independent implementation on real chitchat text."""

import math
import warnings
from collections import Counter

import pytest

from nd_fairseq.evaluation.metrics import (
    best_systems, bleu_scores, distinct_n, evaluate, kl_divergence, low_frequency_count, low_frequency_ratio,
    repetition_rate, response_stats,
    sentence_bleu, smoothed_precisions, token_counts,
)
from nd_fairseq.evaluation.readers import undo_subwords
from nd_fairseq.io_utils import InputError

HYPS = ["i do not know", "i do not care", "yes"]
TOKS = [h.split() for h in HYPS]


# ---------------------------------------------------------------- Dist

def test_distinct_counts_over_the_whole_output_without_crossing_responses():
    # unigrams: i do not know i do not care yes = 9, distinct {i, do, not, know, care, yes} = 6
    assert distinct_n(TOKS, 1) == pytest.approx(6 / 9)
    # bigrams: (i do) (do not) (not know) (i do) (do not) (not care) = 6, distinct 4;
    # crossing the line breaks would add (know i) (care yes): 6/8
    assert distinct_n(TOKS, 2) == pytest.approx(4 / 6)
    # trigrams: (i do not) (do not know) (i do not) (do not care) = 4, distinct 3; "yes" has none
    assert distinct_n(TOKS, 3) == pytest.approx(3 / 4)


def test_distinct_is_corpus_level_not_a_mean_of_responses():
    # two identical responses: corpus level 3 distinct / 6 unigrams; a per-response mean would be 1.0
    assert distinct_n([["a", "b", "c"], ["a", "b", "c"]], 1) == pytest.approx(3 / 6)


def test_distinct_undefined_without_ngrams():
    assert distinct_n([["yes"], ["no"]], 2) is None
    assert distinct_n([[]], 1) is None


# ---------------------------------------------------------------- LF

def test_low_frequency_ratio_by_hand():
    counts = token_counts(["i do not know", "i know"])  # i:2 do:1 not:1 know:2
    assert counts == Counter({"i": 2, "know": 2, "do": 1, "not": 1})
    # threshold 2 -> low: do not (x2), care, yes (count 0) = 6 of the 9 generated tokens;
    # i and know (count 2 = threshold) are not low: the test is strictly below
    assert low_frequency_ratio(TOKS, counts, threshold=2) == pytest.approx(6 / 9)
    # threshold 3 -> every token is low
    assert low_frequency_ratio(TOKS, counts, threshold=3) == pytest.approx(9 / 9)
    # the counts behind the shares
    assert low_frequency_count(TOKS, counts, threshold=2) == (6, 9)
    assert low_frequency_count([[]], counts) == (0, 0) and low_frequency_ratio([[]], counts) is None


def test_low_frequency_default_threshold_is_100():
    counts = Counter({"i": 100, "do": 99, "not": 1000, "know": 5000, "care": 100, "yes": 100})
    m = evaluate(HYPS, HYPS, counts)
    assert m["lf_threshold"] == 100
    assert m["lf"] == pytest.approx(2 / 9)  # only "do" (99) is below 100, twice


def test_lf_counts_training_text_and_lowercases_only_on_request():
    train = ["I do", "i do"]
    assert evaluate(["i"], ["i"], train, lf_threshold=2)["lf"] == pytest.approx(1.0)  # "i" seen once
    assert evaluate(["i"], ["i"], train, lf_threshold=2, lowercase=True)["lf"] == pytest.approx(0.0)


# ---------------------------------------------------------------- KL (Csáky et al. 2019 / dialog-eval)

def test_kl_unigram_by_hand():
    hyp = [["a", "b"], ["a", "a"]]
    ref = [["a", "c"], ["b", "a"]]
    # H counts a:3 b:1; R counts a:2 b:1 c:1; shared {a, b} -> P_H = (3/4, 1/4), P_R = (2/3, 1/3)
    # log ratios log2(P_R/P_H): a -> log2(8/9), b -> log2(4/3); "c" is unseen in H and dropped
    # reference 1 "a c": mean over [a] ; reference 2 "b a": mean over [b, a]; then mean of the two
    expected = (math.log2(8 / 9) + (math.log2(4 / 3) + math.log2(8 / 9)) / 2) / 2
    assert kl_divergence(hyp, ref, 1) == pytest.approx(expected)
    # direction matters: KL(P_R || P_H) on the references' tokens; swapped, by the same steps:
    # P_R = (3/4, 1/4), P_H = (2/3, 1/3): a -> log2(9/8), b -> log2(3/4); refs "a b", "a a"
    swapped = ((math.log2(9 / 8) + math.log2(3 / 4)) / 2 + math.log2(9 / 8)) / 2
    assert kl_divergence(ref, hyp, 1) == pytest.approx(swapped)
    assert expected != pytest.approx(swapped)


def test_kl_bigram_by_hand_and_no_shared_bigram():
    hyp = [["a", "b", "c"], ["a", "b"]]
    ref = [["a", "b"], ["b", "c", "d"]]
    # H bigrams (a b) x2, (b c); R bigrams (a b), (b c), (c d); shared {(a b), (b c)}
    # P_H = (2/3, 1/3), P_R = (1/2, 1/2): (a b) -> log2(3/4), (b c) -> log2(3/2)
    # ref 1: [log2(3/4)]; ref 2: [log2(3/2)] ((c d) dropped) -> mean = log2(9/8) / 2
    assert kl_divergence(hyp, ref, 2) == pytest.approx(math.log2(9 / 8) / 2)
    assert kl_divergence([["a", "b"], ["a", "a"]], [["a", "c"], ["b", "a"]], 2) is None


def test_kl_is_zero_for_identical_distributions():
    toks = [h.split() for h in ["how are you", "fine thanks", "how about you"]]
    assert kl_divergence(toks, toks, 1) == pytest.approx(0.0, abs=1e-12)
    assert kl_divergence(toks, toks, 2) == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- BLEU (Chen & Cherry 2014, method 4)

def test_bleu_smoothed_by_hand():
    hyp = "the cat sat on the mat".split()
    ref = "the cat is on the mat".split()
    # p1 = 5/6 (the x2, cat, on, mat), p2 = 3/5 (the cat, on the, the mat), p3 = 1/4 (on the mat)
    # p4 = 0/3 -> method 4, first zero order: ln(6) / (2^1 * 5) / 3; equal lengths: BP = 1
    p4 = math.log(6) / (2 * 5) / 3
    assert smoothed_precisions(hyp, ref, 4, 4) == pytest.approx([5 / 6, 3 / 5, 1 / 4, p4])
    assert sentence_bleu(hyp, ref, 3) == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3))  # = 0.5
    assert sentence_bleu(hyp, ref, 3) == pytest.approx(0.5)
    assert sentence_bleu(hyp, ref, 4) == pytest.approx((5 / 6 * 3 / 5 * 1 / 4 * p4) ** (1 / 4))


def test_bleu_brevity_penalty_and_two_smoothed_orders_by_hand():
    hyp = "the cat".split()
    ref = "the cat is here".split()
    # p1 = p2 = 1; no trigram/4-gram in hyp (0 of 1): ln(2)/(2*5), then ln(2)/(4*5); BP = exp(1 - 4/2)
    expected = math.exp(-1) * (1 * 1 * (math.log(2) / 10) * (math.log(2) / 20)) ** (1 / 4)
    assert sentence_bleu(hyp, ref, 4) == pytest.approx(expected)


def test_bleu_averages_sentences_and_zero_without_unigram_match():
    hyps = ["the cat sat on the mat".split(), "hello there".split(), []]
    refs = ["the cat is on the mat".split(), "good bye".split(), ["x"]]
    # sentence BLEU-3: 0.5, 0 (no unigram match), 0 (empty) -> mean 0.5 / 3
    assert bleu_scores(hyps, refs, (3,))["bleu-3"] == pytest.approx(0.5 / 3)


def _nltk_mean_bleu(hyps, refs, n, method):
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu as nltk_sentence_bleu

    fn = getattr(SmoothingFunction(), f"method{method}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = [nltk_sentence_bleu([r], h, weights=(1 / n,) * n, smoothing_function=fn)
                  for h, r in zip(hyps, refs)]
    return sum(scores) / len(scores)


@pytest.mark.parametrize("method", [1, 2, 3, 4])
def test_bleu_matches_nltk_on_real_text(chitchat_text, method):
    pytest.importorskip("nltk")
    # a "system" that answers each test query with a training response: real, varied lengths,
    # some one-token responses (the odd case of method 4)
    queries = (chitchat_text / "test.query").read_text(encoding="utf-8").splitlines()
    train = (chitchat_text / "train.response").read_text(encoding="utf-8").splitlines()
    refs = [r.split() for r in (chitchat_text / "test.response").read_text(encoding="utf-8").splitlines()]
    hyps = [t.split() for t in train[:len(refs)]] + [q.split() for q in queries]
    refs = refs + refs
    hyps += [["yes"], ["yes"], ["ok", "."]]
    refs += [["yes"], ["yes", "i", "do"], ["ok"]]
    ours = bleu_scores(hyps, refs, (3, 4), smoothing=method)
    for n in (3, 4):
        assert ours[f"bleu-{n}"] == pytest.approx(_nltk_mean_bleu(hyps, refs, n, method), rel=1e-9)
    assert 0 < ours["bleu-4"] < 1


def test_bleu_one_token_hypothesis_as_nltk():
    # method 4 cannot smooth a one-token hypothesis (ln 1 = 0): the zero orders drop out, as NLTK
    assert sentence_bleu(["yes"], ["yes"], 4) == pytest.approx(1.0)
    assert sentence_bleu(["yes"], "yes i do".split(), 4) == pytest.approx(math.exp(1 - 3))


# ---------------------------------------------------------------- generic-response gauges, evaluate

def test_response_stats_by_hand():
    resp = [r.split() for r in ["i do not know", "i  do not know", "yes", "sure", "i do not know"]]
    s = response_stats(resp, top_k=2)
    assert s["length"] == pytest.approx((4 + 4 + 1 + 1 + 4) / 5)
    assert s["unique"] == pytest.approx(3 / 5)  # whitespace differences do not make a new response
    # top 2: "i do not know" x3, then "yes" (first of the ties) x1
    assert s["top_responses"] == [{"response": "i do not know", "count": 3, "share": 3 / 5},
                                  {"response": "yes", "count": 1, "share": 1 / 5}]
    assert s["top_share"] == pytest.approx(4 / 5)


def test_repetition_rate_by_hand():
    resp = [r.split() for r in ["i 'm not sure i 'm not sure", "i 'm not sure .", "no no no no", "a b a b", "yes"]]
    # looping: the first ("i 'm not" twice) and "no no no" (twice in "no no no no"); "a b a b" repeats
    # bigrams only (its 3-grams "a b a", "b a b" differ); "yes" has no 3-gram
    assert repetition_rate(resp, 3) == pytest.approx(2 / 5)
    assert repetition_rate(resp, 2) == pytest.approx(3 / 5)
    assert repetition_rate([], 3) is None
    assert evaluate(["no no no no", "yes"], ["a", "b"])["rep-3"] == pytest.approx(1 / 2)


def test_evaluate_keys_and_fractions():
    m = evaluate(HYPS, ["i do not know .", "i care", "yes i do"], ["i do not know", "i know"], lf_threshold=2)
    for key in ("dist-1", "dist-2", "dist-3", "lf", "kl-1", "kl-2", "bleu-3", "bleu-4"):
        assert isinstance(m[key], float), key
    assert m["dist-1"] == pytest.approx(6 / 9) and m["lf"] == pytest.approx(6 / 9)
    assert m["n"] == 3 and m["bleu_smoothing"] == 4
    assert m["lf"] is not None and evaluate(HYPS, HYPS)["lf"] is None  # no training data, no LF


def test_evaluate_rejects_bad_input():
    with pytest.raises(InputError, match="3 hypotheses but 2 references"):
        evaluate(HYPS, HYPS[:2])
    with pytest.raises(InputError, match="no hypotheses"):
        evaluate([], [])
    with pytest.raises(ValueError, match="smoothing method 9"):
        evaluate(HYPS, HYPS, bleu_smoothing=9)


def test_best_systems_by_direction_and_ties():
    results = {"A": {"dist-2": 0.5, "kl-1": 1.20, "length": 9.0},
               "B": {"dist-2": 0.3, "kl-1": 0.90, "length": 12.0},
               "C": {"dist-2": 0.50004, "kl-1": None, "length": 3.0}}
    assert best_systems(results, "dist-2") == ["C"]
    assert best_systems(results, "dist-2", digits=4) == ["A", "C"]  # equal as the table shows them
    assert best_systems(results, "kl-1") == ["B"]  # lower is better; None is skipped
    assert best_systems(results, "length") == []  # no direction


# ---------------------------------------------------------------- subword pieces

def test_undo_subwords():
    pieces = ["▁i ▁don ' t ▁know ▁.", "▁hel lo"]
    assert undo_subwords(pieces) == ["i don't know .", "hello"]
    assert undo_subwords(["hel@@ lo wor@@ ld", "ok@@"]) == ["hello world", "ok"]
    plain = ["i do n't know .", "hello"]
    assert undo_subwords(plain) == plain
    assert undo_subwords(pieces, "none") == pieces
