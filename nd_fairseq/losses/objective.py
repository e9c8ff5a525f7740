"""Eq. 13, the objective of the negative-distillation student."""

from typing import Dict

from torch import Tensor


def negative_distillation_loss(mle: Tensor, terms: Dict[str, Tensor], alpha: float, pred_weight: float = 1.0) -> Tensor:
    """``(1 - α) L_mle + α (w · L_pred + Σ_l L_hid^l + Σ_l L_att^l)`` (Eq. 13), per token.

    ``mle``: the label-smoothed MLE per token; ``terms``: the enabled negative terms by name
    (``pred``, ``hid``, ``att``), each per token (L_pred) or summed over layers (the MRSE terms);
    ``pred_weight`` w: the paper's 1, raised by the recommended recipe (``--nd-pred-weight``),
    because per token L_pred is two orders of magnitude below L_mle (docs/method.md, §7).
    """
    negative = sum((pred_weight * v if k == "pred" else v for k, v in terms.items()), mle.new_zeros(()))
    return (1.0 - alpha) * mle + alpha * negative
