"""The feature terms of Negative Distillation: MRSE (Eq. 8) on every decoder layer's hidden states
(L_hid, Eq. 9) and pre-softmax self-attention scores (L_att, Eq. 10-12), the masks that keep padding
and future positions out of them, and the two scale-free feature variants.

Decoder states come as fairseq gives them (``inner_states``: one ``(T, B, C)`` tensor per layer) and
attention scores as :func:`nd_fairseq.models.capture.attention_scores_for` captures them (one
``(B * H, T, T)`` tensor per layer); both terms are summed over layers, each layer a mean over its
unmasked elements (docs/method.md, §6).
"""

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

ATTENTION_FEATURES = ("scores", "probs", "standardized")


def decoder_position_mask(prev_output_tokens: Tensor, pad: int) -> Tensor:
    """(B, T) True where the decoder input is a real token."""
    return prev_output_tokens.ne(pad)


def self_attention_mask(position_mask: Tensor) -> Tensor:
    """(B, 1, T, T) True where query i may attend to key j: j <= i, both real tokens."""
    t = position_mask.size(1)
    causal = torch.ones(t, t, dtype=torch.bool, device=position_mask.device).tril()
    return (causal[None] & position_mask[:, :, None] & position_mask[:, None, :]).unsqueeze(1)


def mrse(a: Tensor, b: Tensor, mask: Optional[Tensor] = None, keep_leading: bool = False) -> Tensor:
    """Mean reverse square error (Eq. 8): ``(1/n) sum_j exp(-(a_j - b_j)^2)``.

    A similarity in (0, 1]: 1 for identical features, towards 0 as they move apart, so minimising
    it pushes the student's features away from the teacher's. ``mask`` (broadcastable to ``a``)
    selects the n elements that count; masked elements may hold anything, -inf included. With
    ``keep_leading`` the mean is taken per index of the first dimension (one value per layer).
    """
    diff = a.float() - b.float()
    if mask is not None:
        mask = mask.expand_as(diff)
        # zero the excluded differences *before* squaring: a masked -inf - -inf is NaN, and a
        # NaN that only a later mask removes still poisons the gradient
        diff = torch.where(mask, diff, diff.new_zeros(()))
    sim = torch.exp(-diff.square())
    if mask is None:
        return sim.flatten(1).mean(1) if keep_leading else sim.mean()
    sim = sim * mask
    if keep_leading:
        count = mask.flatten(1).sum(1).clamp(min=1)
        return sim.flatten(1).sum(1) / count
    return sim.sum() / mask.sum().clamp(min=1)


def standardize_rows(scores: Tensor, mask: Tensor, eps: float = 1e-6) -> Tuple[Tensor, Tensor]:
    """Each row of attention scores standardised over its allowed keys: ``(a - mean) / std``.

    A scale- and shift-free view of the scores (a variant for L_att): pushing raw scores apart can be
    done by scaling Q and K alone, which changes nothing the attention computes; standardised scores
    only differ where the rows' shapes differ. ``mask`` (broadcastable to ``scores``) marks allowed
    keys; returns the standardised scores and the mask of the rows that have at least two keys (a
    row with one key has no shape).
    """
    mask = mask.expand_as(scores)
    a = scores.float().masked_fill(~mask, 0.0)
    n = mask.sum(-1, keepdim=True)
    mean = a.sum(-1, keepdim=True) / n.clamp(min=1)
    centered = (a - mean).masked_fill(~mask, 0.0)
    std = (centered.square().sum(-1, keepdim=True) / n.clamp(min=1) + eps).sqrt()
    return centered / std, mask & (n >= 2)


def normalize_features(states: Tensor, eps: float = 1e-5) -> Tensor:
    """Layer normalisation without affine parameters over the last dimension (a variant for L_hid):
    the raw output of a post-LN layer is ``LN(x) * g + b``, which the student can push away from the
    teacher's by growing ``g`` alone."""
    return F.layer_norm(states.float(), states.shape[-1:], eps=eps)


def hidden_state_loss(student_states: Sequence[Tensor], teacher_states: Sequence[Tensor], positions: Tensor,
                      normalized: bool = False) -> Tensor:
    """Σ_l L_hid^l (Eq. 9): the MRSE of each decoder layer's output, student against teacher.

    ``student_states``, ``teacher_states``: one ``(T, B, C)`` tensor per decoder layer (fairseq's
    ``inner_states`` without the embedding output); ``positions`` ``(B, T)``: the real decoder
    positions. Each layer is a mean over its real positions × C; ``normalized`` compares the outputs
    layer-normalised without affine parameters (:func:`normalize_features`) instead of raw.
    """
    s_states, t_states = torch.stack(list(student_states)), torch.stack(list(teacher_states))
    if normalized:
        s_states, t_states = normalize_features(s_states), normalize_features(t_states)
    mask = positions.t()[None, :, :, None]
    return mrse(s_states, t_states, mask, keep_leading=True).sum()


def attention_loss(student_scores: List[Tensor], teacher_scores: List[Tensor], positions: Tensor,
                   features: str = "scores") -> Tensor:
    """Σ_l L_att^l (Eq. 10-12): the MRSE of each decoder layer's self-attention, student against teacher.

    ``student_scores``, ``teacher_scores``: one ``(B * H, T, T)`` tensor of pre-softmax scores
    QKᵀ/√d_k (Eq. 10) per decoder layer; ``positions`` ``(B, T)``: the real decoder positions. Each
    layer is a mean over the heads × the (query, key) pairs the causal and padding masks allow
    (Eq. 11-12 average the heads). ``features``: ``scores`` (the paper), ``probs`` (the softmax
    weights) or ``standardized`` (each query's row standardised over its allowed keys,
    :func:`standardize_rows`; rows with one key drop out).
    """
    if len(student_scores) != len(teacher_scores) or not student_scores:
        raise RuntimeError(f"captured {len(student_scores)} student and {len(teacher_scores)} "
                           f"teacher attention layers; expected one per decoder layer")
    bsz, tgt_len = positions.shape
    s_att = torch.stack(student_scores).view(len(student_scores), bsz, -1, tgt_len, tgt_len)
    t_att = torch.stack(teacher_scores).view(len(teacher_scores), bsz, -1, tgt_len, tgt_len)
    mask = self_attention_mask(positions)[None]  # 1, B, 1, T, T
    if features == "probs":
        s_att = s_att.float().masked_fill(~mask, float("-inf")).softmax(-1)
        t_att = t_att.float().masked_fill(~mask, float("-inf")).softmax(-1)
    elif features == "standardized":
        s_att, rows = standardize_rows(s_att, mask)
        t_att, _ = standardize_rows(t_att, mask)
        mask = rows
    elif features != "scores":
        raise ValueError(f"attention features {features!r}: expected one of {', '.join(ATTENTION_FEATURES)}")
    return mrse(s_att, t_att, mask, keep_leading=True).sum()
