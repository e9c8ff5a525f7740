"""The balance coefficient α between MLE and the negative terms: Eq. 14-16 (progressive) and the
fixed α of Table 8 (the mean of the progressive one)."""

import math
from typing import Optional


def alpha_at(step: float, lam: float = 4.0, gamma: float = 25600.0, beta: Optional[float] = None) -> float:
    """Progressive balance coefficient (Eq. 15-16): ``λ e^-z / (e^-z + 1)^2`` with ``z = β (s - γ)``.

    It is λ times the derivative of the sigmoid at z: zero far from γ, ``λ/4`` at ``s = γ``, and
    symmetric around γ. ``β`` defaults to ``6 / γ`` (the paper's setting).
    """
    if beta is None:
        beta = 6.0 / gamma if gamma else 0.0
    z = beta * (step - gamma)
    # e^-|z| never overflows, and the expression is symmetric in z.
    e = math.exp(-abs(z))
    return lam * e / (1.0 + e) ** 2


def mean_alpha(num_steps: int, lam: float = 4.0, gamma: float = 25600.0, beta: Optional[float] = None) -> float:
    """Mean of α(s) over the updates s = 0..num_steps-1 (fairseq numbers the first update 0):
    the paper's "fixed α" ablation (Table 8)."""
    if num_steps <= 0:
        raise ValueError("num_steps must be positive")
    return sum(alpha_at(s, lam, gamma, beta) for s in range(num_steps)) / num_steps

