"""R@1 and MRR on hand-made scores; ties never favour the positive."""

import math

import pytest

from nd_fairseq.pneg.metrics import mrr, positive_rank, recall_at_1, selection_metrics


def test_ranks_without_ties():
    assert positive_rank([0.9, 0.1, 0.2], 0) == 1
    assert positive_rank([0.9, 0.1, 0.2], 2) == 2
    assert positive_rank([0.9, 0.1, 0.2], 1) == 3


def test_ties_rank_the_positive_below_every_tied_negative():
    assert positive_rank([0.5, 0.5, 0.1], 0) == 2
    assert positive_rank([0.5, 0.5, 0.1], 1) == 2
    assert positive_rank([1.0] * 6, 3) == 6          # a constant scorer is never lucky
    assert positive_rank([2.0, 1.0, 1.0, 1.0], 1) == 4  # above: 2.0, tied: two negatives


def test_nan_scores_count_against_the_positive():
    assert positive_rank([float("nan"), 0.0, 1.0], 0) == 3
    assert positive_rank([0.5, float("nan"), 0.1], 0) == 2


def test_hand_computed_r1_and_mrr():
    scores = [
        [3.0, 1.0, 2.0, 0.0, -1.0, 0.5],   # positive 0 -> rank 1
        [1.0, 2.0, 0.0, 0.0, 0.0, 0.0],    # positive 0 -> rank 2
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],    # positive 5, all tied -> rank 6
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],    # positive 3 -> rank 3
    ]
    labels = [0, 0, 5, 3]
    m = selection_metrics(scores, labels)
    assert m["n"] == 4
    assert m["R@1"] == pytest.approx(0.25)
    assert m["MRR"] == pytest.approx((1 + 1 / 2 + 1 / 6 + 1 / 3) / 4)
    assert recall_at_1([1, 1, 2]) == pytest.approx(2 / 3)
    assert mrr([1, 4]) == pytest.approx(0.625)
    assert math.isclose(mrr([]), 0.0) and recall_at_1([]) == 0.0


def test_bad_input():
    with pytest.raises(ValueError):
        positive_rank([0.1, 0.2], 2)
    with pytest.raises(ValueError):
        selection_metrics([[0.1, 0.2]], [0, 1])
