"""The label-smoothing convention of L_mle (docs/method.md §1): 1 - ε on the reference token and
ε/(V-1) on each of the other V-1 entries, which is what fairseq's ``label_smoothed_nll_loss``
computes and what the ND criterion calls."""

import math

import pytest
import torch


def test_fairseq_label_smoothing_puts_epsilon_over_v_minus_1_on_each_wrong_token():
    from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss

    from nd_fairseq.criterions import negative_distillation

    # the criterion uses fairseq's function itself, not a copy
    assert negative_distillation.label_smoothed_nll_loss is label_smoothed_nll_loss

    probs = [[0.5, 0.25, 0.125, 0.125], [0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]]
    lprobs = torch.tensor(probs, dtype=torch.float64).log()
    target = torch.tensor([0, 3, 1])  # the last row is padding (index 1)
    eps, pad = 0.1, 1
    loss, nll = label_smoothed_nll_loss(lprobs, target, eps, ignore_index=pad, reduce=True)

    # by hand, rows 0 and 1 only: 0.9 on the reference, 0.1 / 3 on each of the three others
    row0 = 0.9 * -math.log(0.5) + (0.1 / 3) * -(math.log(0.25) + 2 * math.log(0.125))
    row1 = 0.9 * -math.log(0.4) + (0.1 / 3) * -(math.log(0.1) + math.log(0.2) + math.log(0.3))
    assert float(loss) == pytest.approx(row0 + row1, rel=1e-12)
    assert float(nll) == pytest.approx(-math.log(0.5) - math.log(0.4), rel=1e-12)

    # not the ε/V-on-every-entry convention, which gives the reference 1 - ε + ε/V
    szegedy0 = (0.9 + 0.1 / 4) * -math.log(0.5) + (0.1 / 4) * -(math.log(0.25) + 2 * math.log(0.125))
    szegedy1 = (0.9 + 0.1 / 4) * -math.log(0.4) + (0.1 / 4) * -(math.log(0.1) + math.log(0.2) + math.log(0.3))
    assert abs(float(loss) - (szegedy0 + szegedy1)) > 1e-3
