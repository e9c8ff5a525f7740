"""Unlikelihood on the prediction layer: Eq. 2 (one negative token per position), Eq. 6 (the soft
unlikelihood L_pred against the teacher's distribution), Eq. 7 (the temperature softmax), and Eq. 1
with Eq. 6 fused into one pass over the log-probabilities.

``log(1 - p)`` is computed two ways on purpose (docs/method.md, §2 and §5): :func:`hard_unlikelihood`
reads one entry per position and uses :func:`log1mexp`, accurate for every p; the soft unlikelihood
sweeps the whole vocabulary and uses ``log1p(-p)`` on a clamped p, which is as accurate where it
matters and a few passes cheaper.
"""

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

_LN2 = math.log(2.0)

# FAIR's unlikelihood code clamps 1 - p at 1e-5: a probability that the student already gives
# (almost) all its mass to a negative token is not pushed further, and the loss stays finite.
UNLIKELIHOOD_MIN_ONE_MINUS_P = 1e-5
_MAX_LOGP = math.log1p(-UNLIKELIHOOD_MIN_ONE_MINUS_P)


def log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x <= 0`` (i.e. ``log(1 - p)`` from ``log p``), accurate everywhere.

    Uses ``log(-expm1(x))`` near 0 and ``log1p(-exp(x))`` far from it (Mächler 2012). ``x`` is
    clamped at ``log(1 - 1e-5)`` (gradient zero beyond), so the result is at least ``log 1e-5``:
    never inf or NaN, in value or gradient.
    """
    x = x.clamp(max=_MAX_LOGP)
    near = torch.log(-torch.expm1(x.clamp(min=-_LN2)))
    far = torch.log1p(-torch.exp(x.clamp(max=-_LN2)))
    return torch.where(x > -_LN2, near, far)


# exp of log-probabilities below -87.3 gives float32 denormals, which x86 CPUs compute 10-20x
# slower (a trained model has many such entries); e^-87 ~ 1.6e-38 is as good as 0 here.
_MIN_LOGP = -87.0


def _probs(lprobs: Tensor) -> Tensor:
    return lprobs.detach().clamp(min=_MIN_LOGP).exp_()


# the largest p that is not clamped, as float32 computes 1 - 1e-5
_MAX_P = 1.0 - UNLIKELIHOOD_MIN_ONE_MINUS_P


def _soft_ul_value_and_grad(lprobs: Tensor, teacher_probs: Tensor) -> Tuple[Tensor, Tensor]:
    """``-sum q log(1 - p)`` and its gradient ``q p / (1 - p)`` w.r.t. log p, in one sweep (eager).

    Eight passes over (positions x vocabulary), one exp and one log, and one temporary besides the
    gradient: p = exp(log p) is turned in place into p / (1 - p) and then into the gradient, and
    1 - p in place into log(1 - p). Where 1 - p is clamped at 1e-5 the gradient is zero; that
    masking pass runs only when some p reaches the clamp (on CUDA always, to avoid a host sync).
    """
    p = _probs(lprobs)
    clamp = p.numel() > 0 and (p.is_cuda or bool(p.max() >= _MAX_P))
    if clamp:
        at_clamp = p >= _MAX_P
        p.clamp_(max=_MAX_P)
    one_minus_p = torch.rsub(p, 1.0)
    grad = p.div_(one_minus_p)
    if clamp:
        grad.masked_fill_(at_clamp, 0.0)
    q = teacher_probs.to(grad.dtype)
    grad.mul_(q)
    value = -torch.dot(q.reshape(-1), one_minus_p.log_().reshape(-1))
    return value, grad


def _soft_ul_value_pure(lprobs: Tensor, teacher_probs: Tensor) -> Tensor:
    p = lprobs.clamp(min=_MIN_LOGP).exp().clamp(max=_MAX_P)
    return -(teacher_probs * torch.log1p(-p)).sum()


def _soft_ul_grad_pure(lprobs: Tensor, teacher_probs: Tensor, grad_output: Tensor) -> Tensor:
    p = lprobs.clamp(min=_MIN_LOGP).exp()
    w = torch.where(p >= _MAX_P, torch.zeros_like(p), p / (1.0 - p))
    return w * teacher_probs * grad_output


_COMPILED = {}


def compile_soft_unlikelihood() -> bool:
    """Compile the fused soft-unlikelihood kernels (once per process); False, with one log line, when
    torch.compile is unavailable here (no C++ compiler, unsupported platform): callers then keep the
    eager path. The first call compiles (~15-40 s on a CPU; seconds with a warm inductor cache)."""
    if "value" in _COMPILED:
        return True
    if _COMPILED.get("failed"):
        return False
    try:
        value = torch.compile(_soft_ul_value_pure, dynamic=True)
        grad = torch.compile(_soft_ul_grad_pure, dynamic=True)
        # compile now on a small example, so that a failure shows here and not mid-update
        lp = torch.log_softmax(torch.randn(3, 2, 7), -1)
        q = torch.softmax(torch.randn(3, 2, 7), -1)
        value(lp, q)
        grad(lp, q, torch.ones(()))
    except Exception as err:  # any backend failure: the eager path computes the same values
        import logging

        logging.getLogger(__name__).warning(
            "torch.compile is unavailable (%s: %s); the soft unlikelihood runs eagerly",
            type(err).__name__, str(err).strip().splitlines()[0] if str(err).strip() else "")
        _COMPILED["failed"] = True
        return False
    _COMPILED["value"], _COMPILED["grad"] = value, grad
    return True


class _SoftUnlikelihood(torch.autograd.Function):
    """Eq. 6 with the gradient computed in the forward sweep (eager) and saved, so the backward is
    one multiplication by the incoming scalar: a handful of passes over (positions x vocabulary)
    instead of the ~20 that autograd records for the composed expression.

    d/d log p_k of -q_k log(1 - p_k) is q_k p_k / (1 - p_k); positions where 1 - p_k was clamped
    at 1e-5 get zero gradient (as the clamp in the composed form).
    """

    @staticmethod
    def forward(ctx, student_lprobs: Tensor, teacher_probs: Tensor) -> Tensor:
        ctx.input_dtype = student_lprobs.dtype
        value, grad = _soft_ul_value_and_grad(_at_least_float32(student_lprobs.detach()), teacher_probs)
        ctx.save_for_backward(grad)
        return value.to(ctx.input_dtype)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        (grad,) = ctx.saved_tensors
        return (grad * grad_output).to(ctx.input_dtype), None


def _at_least_float32(x: Tensor) -> Tensor:
    """Half-precision inputs are computed in float32: in bfloat16 1 - 1e-5 rounds to 1, so the clamp
    would vanish and log(1 - p) become -inf; in float16 p / (1 - p) overflows near p = 1."""
    return x.float() if x.is_floating_point() and x.element_size() < 4 else x


class _CompiledSoftUnlikelihood(torch.autograd.Function):
    """The same value and gradient from two kernels fused by torch.compile (one loop each)."""

    @staticmethod
    def forward(ctx, student_lprobs: Tensor, teacher_probs: Tensor) -> Tensor:
        ctx.save_for_backward(student_lprobs)
        # kept as an attribute, not saved: the teacher's probabilities may come from
        # torch.inference_mode, and they are never modified
        ctx.teacher_probs = _at_least_float32(teacher_probs)
        lp = _at_least_float32(student_lprobs.detach())
        return _COMPILED["value"](lp, ctx.teacher_probs).to(student_lprobs.dtype)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        (student_lprobs,) = ctx.saved_tensors
        lp = _at_least_float32(student_lprobs.detach())
        grad = _COMPILED["grad"](lp, ctx.teacher_probs, grad_output.to(lp.dtype))
        return grad.to(student_lprobs.dtype), None


def soft_unlikelihood(student_lprobs: Tensor, teacher_probs: Tensor, mask: Optional[Tensor] = None,
                      compiled: bool = False) -> Tensor:
    """Soft unlikelihood (Eq. 6), summed over positions and vocabulary.

    ``L = - sum_i sum_k p_N(k | i) log(1 - p_S(k | i))``. ``student_lprobs`` are log-probabilities
    at temperature t (``log_softmax(z_S / t)``), ``teacher_probs`` probabilities at the same t
    (``softmax(z_N / t)``, Eq. 7), both ``(..., V)``; ``mask`` ``(...)`` marks real (non-pad)
    positions. 1 - p_S is clamped at 1e-5 (FAIR's unlikelihood code does the same), so the value
    and the gradient are always finite. ``compiled`` uses the torch.compile kernels (falling back to
    the eager sweep, with one log line, where they cannot be built).
    """
    if mask is not None:
        teacher_probs = teacher_probs.masked_fill(~mask.unsqueeze(-1), 0.0)
    if compiled and compile_soft_unlikelihood():
        return _CompiledSoftUnlikelihood.apply(student_lprobs, teacher_probs)
    return _SoftUnlikelihood.apply(student_lprobs, teacher_probs)


class _LabelSmoothedNllAndSoftUnlikelihood(torch.autograd.Function):
    """fairseq's label-smoothed NLL and Eq. 6 on the same log-probabilities, with one backward that
    writes the summed gradient once (autograd would build one array per term and add them)."""

    @staticmethod
    def forward(ctx, lprobs: Tensor, target: Tensor, teacher_probs: Tensor, epsilon: float, pad: int):
        lprobs = lprobs.detach()
        real = target.ne(pad)
        rows = real.nonzero().squeeze(1)
        if teacher_probs.size(0) != rows.numel():
            raise ValueError(f"teacher_probs has {teacher_probs.size(0)} rows for {rows.numel()} real positions")
        # the same operations as fairseq's label_smoothed_nll_loss, so the same numbers
        nll = -lprobs.gather(-1, target.unsqueeze(-1)).masked_fill_(~real.unsqueeze(-1), 0.0).sum()
        smooth = -lprobs.sum(-1, keepdim=True).masked_fill_(~real.unsqueeze(-1), 0.0).sum()
        eps_i = epsilon / (lprobs.size(-1) - 1)
        mle = (1.0 - epsilon - eps_i) * nll + eps_i * smooth
        student = lprobs if rows.numel() == lprobs.size(0) else lprobs.index_select(0, rows)
        ctx.input_dtype = lprobs.dtype
        pred, grad = _soft_ul_value_and_grad(_at_least_float32(student), teacher_probs)
        ctx.save_for_backward(grad, target, rows)
        ctx.shape, ctx.epsilon, ctx.eps_i, ctx.pad = lprobs.shape, epsilon, eps_i, pad
        return mle, nll, pred.to(lprobs.dtype)

    @staticmethod
    def backward(ctx, grad_mle: Tensor, grad_nll: Tensor, grad_pred: Tensor):
        grad, target, rows = ctx.saved_tensors
        # every real row: -eps_i for each entry (smoothing) plus the unlikelihood gradient ...
        per_row = grad * grad_pred.to(grad.dtype) - ctx.eps_i * grad_mle.to(grad.dtype)
        if rows.numel() == ctx.shape[0]:
            full = per_row.to(ctx.input_dtype)
        else:
            full = per_row.new_zeros(ctx.shape, dtype=ctx.input_dtype).index_copy_(0, rows, per_row.to(ctx.input_dtype))
        # ... and the target entry: -(1 - eps - eps_i) for the loss, -1 for the NLL
        at_target = -(1.0 - ctx.epsilon - ctx.eps_i) * grad_mle - grad_nll
        real = target.ne(ctx.pad).unsqueeze(-1)
        full.scatter_add_(-1, target.unsqueeze(-1), (at_target.to(full.dtype) * real).to(full.dtype))
        return full, None, None, None, None


def label_smoothed_nll_and_soft_unlikelihood(lprobs: Tensor, target: Tensor, teacher_probs: Tensor,
                                             epsilon: float, pad: int) -> Tuple[Tensor, Tensor, Tensor]:
    """``(label-smoothed NLL sum, NLL sum, soft-unlikelihood sum)`` over ``(M, V)`` log-probabilities.

    The first two are fairseq's ``label_smoothed_nll_loss(lprobs, target, epsilon, ignore_index=pad)``;
    the third is :func:`soft_unlikelihood` of the rows whose target is not ``pad`` against
    ``teacher_probs`` (one row per such position, in order). Same values and gradients as the two
    functions apart, computed with fewer passes over the (M, V) array.
    """
    return _LabelSmoothedNllAndSoftUnlikelihood.apply(lprobs, target, teacher_probs, float(epsilon), int(pad))


def hard_unlikelihood(student_lprobs: Tensor, negative_tokens: Tensor, mask: Optional[Tensor] = None,
                      weights: Optional[Tensor] = None) -> Tensor:
    """Token unlikelihood against one negative token per position (Eq. 2 with one candidate).

    ``-sum_i w_i log(1 - p_S(c_i | i))``: ``student_lprobs`` ``(..., V)``; ``negative_tokens``
    ``(...)`` holds c_i; ``mask`` ``(...)`` marks the positions that have a candidate; ``weights``
    ``(...)``, one per position, default 1 (UL's vocabulary penalty β(c_i) is such a weight).
    ``1 - p`` is floored at 1e-5 (:func:`log1mexp`).
    """
    lp = student_lprobs.gather(-1, negative_tokens.unsqueeze(-1)).squeeze(-1)
    per_position = -log1mexp(lp)
    if weights is not None:
        per_position = per_position * weights
    if mask is not None:
        per_position = per_position.masked_fill(~mask, 0.0)
    return per_position.sum()


def temperature_log_softmax(logits: Tensor, temperature: float) -> Tensor:
    """``log_softmax(z / t)`` in float32 (Eq. 7)."""
    z = logits.float()
    if temperature != 1.0:
        z = z / temperature
    return F.log_softmax(z, dim=-1)
