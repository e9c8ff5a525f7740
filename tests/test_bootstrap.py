"""nd_fairseq.evaluation.bootstrap: the BLEU-4 ratio of two systems with its paired-bootstrap interval,
and the same for the n-gram precisions without the brevity penalty; expected values by hand."""

import math

import pytest

from nd_fairseq.evaluation.bootstrap import bleu4_ratio_intervals, sentence_bleu4

REFS = ["a b c d e f g h", "p q r s t u v w", "k l m n o x y z"]
HALVES = ["a b c d", "p q r s", "k l m n"]  # the first half of each reference


def test_sentence_bleu4_of_a_prefix_is_its_brevity_penalty():
    scores, penalties = sentence_bleu4(HALVES, REFS)
    # every n-gram of a prefix is in the reference: the precisions are 1, and the penalty of 4 tokens
    # against 8 is exp(1 - 8/4)
    assert penalties == pytest.approx([math.exp(-1)] * 3)
    assert scores == pytest.approx([math.exp(-1)] * 3)
    assert sentence_bleu4(REFS, REFS) == ([1.0] * 3, [1.0] * 3)


def test_a_gap_that_is_all_length_is_shown_as_such():
    exact, halves = [(REFS, REFS), (REFS, REFS)], [(HALVES, REFS), (HALVES, REFS)]  # two seeds each
    found = bleu4_ratio_intervals(exact, halves, samples=300)
    # every sentence of every seed has the ratio exp(-1), so every resample has it too
    assert found["bleu-4"] == pytest.approx((math.exp(-1),) * 3)
    # without the penalty the two systems are the same on every sentence
    assert found["precisions"] == pytest.approx((1.0, 1.0, 1.0))


def test_the_interval_brackets_a_ratio_that_depends_on_the_sentences():
    # B matches the reference on the first sentence only, A on the other two: B's mean BLEU-4 is 1/3,
    # A's 2/3 (a reply with no word of its reference scores 0), so the ratio is 1/2 by hand
    a = [(["x1 x2 x3 x4 x5 x6 x7 x8", REFS[1], REFS[2]], REFS)]
    b = [([REFS[0], "x1 x2 x3 x4 x5 x6 x7 x8", "x1 x2 x3 x4 x5 x6 x7 x8"], REFS)]
    ratio, low, high = bleu4_ratio_intervals(a, b, samples=500)["bleu-4"]
    assert ratio == pytest.approx(0.5)
    assert low < ratio < high


def test_a_reference_system_without_any_match_has_no_ratio():
    nothing = [(["x1 x2 x3 x4"] * 3, REFS)]
    with pytest.raises(ValueError, match="0 on every sentence"):
        bleu4_ratio_intervals(nothing, [(REFS, REFS)], samples=10)
    with pytest.raises(ValueError, match="equal"):  # seeds that do not pair
        bleu4_ratio_intervals([(REFS, REFS)], [(REFS, REFS), (REFS, REFS)], samples=10)
