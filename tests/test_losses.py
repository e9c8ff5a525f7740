"""The pure loss functions against numbers computed by hand on tiny tensors."""

import math

import pytest
import torch

from nd_fairseq.losses import (
    alpha_at,
    attention_loss,
    hard_unlikelihood,
    hidden_state_loss,
    log1mexp,
    mean_alpha,
    mrse,
    negative_distillation_loss,
    self_attention_mask,
    soft_unlikelihood,
    temperature_log_softmax,
)

# --- MRSE (Eq. 8) ---------------------------------------------------------------------------


def test_mrse_by_hand():
    a = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    b = torch.tensor([[0.0, 0.0], [0.0, 3.0]])
    # squared differences 0, 1, 4, 0 -> exp(-0) + exp(-1) + exp(-4) + exp(-0), over n = 4
    expected = (1 + math.exp(-1) + math.exp(-4) + 1) / 4
    assert mrse(a, b).item() == pytest.approx(expected, rel=1e-6)
    assert mrse(b, a).item() == pytest.approx(expected, rel=1e-6)  # symmetric


def test_mrse_identical_is_one_and_far_is_zero():
    a = torch.randn(3, 4)
    assert mrse(a, a).item() == pytest.approx(1.0)
    assert mrse(a, a + 100.0).item() == pytest.approx(0.0, abs=1e-12)


def test_mrse_mask_excludes_elements_even_minus_inf():
    a = torch.tensor([0.0, 1.0, float("-inf"), 5.0])
    b = torch.tensor([0.5, 1.0, float("-inf"), -5.0])
    mask = torch.tensor([True, True, False, False])
    # only the first two count: exp(-0.25) + exp(0), n = 2
    assert mrse(a, b, mask).item() == pytest.approx((math.exp(-0.25) + 1.0) / 2, rel=1e-6)


def test_mrse_masked_minus_inf_gives_finite_gradient():
    a = torch.tensor([0.0, 1.0, float("-inf")], requires_grad=True)
    b = torch.tensor([0.5, 1.0, float("-inf")])
    mask = torch.tensor([True, True, False])
    mrse(a, b, mask).backward()
    assert torch.isfinite(a.grad).all()
    # d/da_0 of exp(-(a0 - b0)^2) / 2 = -2 (a0 - b0) exp(-(a0 - b0)^2) / 2 = 0.5 exp(-0.25)
    assert a.grad[0].item() == pytest.approx(0.5 * math.exp(-0.25), rel=1e-6)
    assert a.grad[1].item() == 0.0 and a.grad[2].item() == 0.0


def test_mrse_per_layer():
    a = torch.tensor([[0.0, 0.0], [1.0, 2.0]])  # two "layers" of two features
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    per_layer = mrse(a, b, keep_leading=True)
    assert per_layer[0].item() == pytest.approx((math.exp(-1) + 1) / 2, rel=1e-6)
    assert per_layer[1].item() == pytest.approx((1 + math.exp(-4)) / 2, rel=1e-6)
    mask = torch.tensor([[True, False], [True, True]])
    per_layer = mrse(a, b, mask, keep_leading=True)
    assert per_layer[0].item() == pytest.approx(math.exp(-1), rel=1e-6)


# --- soft unlikelihood (Eq. 6-7) --------------------------------------------------------------


def test_soft_unlikelihood_t1_by_hand():
    # student p_S = (1/6, 2/6, 3/6); teacher p_N = (1/2, 1/4, 1/4)
    student_logits = torch.tensor([[0.0, math.log(2.0), math.log(3.0)]])
    teacher_logits = torch.tensor([[math.log(2.0), 0.0, 0.0]])
    lp_s = temperature_log_softmax(student_logits, 1.0)
    p_n = temperature_log_softmax(teacher_logits, 1.0).exp()
    expected = -(0.5 * math.log(1 - 1 / 6) + 0.25 * math.log(1 - 2 / 6) + 0.25 * math.log(1 - 3 / 6))
    assert soft_unlikelihood(lp_s, p_n).item() == pytest.approx(expected, rel=1e-6)


def test_soft_unlikelihood_t2_by_hand():
    # at t = 2 the logits are halved: student (0, 2ln2, 2ln3)/2 -> p = (1/6, 2/6, 3/6) again;
    # teacher (2 ln 2, 0, 0)/2 -> (ln 2, 0, 0) -> p = (1/2, 1/4, 1/4)
    student_logits = torch.tensor([[0.0, 2 * math.log(2.0), 2 * math.log(3.0)]])
    teacher_logits = torch.tensor([[2 * math.log(2.0), 0.0, 0.0]])
    lp_s = temperature_log_softmax(student_logits, 2.0)
    p_n = temperature_log_softmax(teacher_logits, 2.0).exp()
    expected = -(0.5 * math.log(5 / 6) + 0.25 * math.log(4 / 6) + 0.25 * math.log(3 / 6))
    assert soft_unlikelihood(lp_s, p_n).item() == pytest.approx(expected, rel=1e-6)
    # and differs from t = 1 on the same logits, where p_S = (1/14, 4/14, 9/14), p_N = (4/6, 1/6, 1/6)
    lp1 = temperature_log_softmax(student_logits, 1.0)
    pn1 = temperature_log_softmax(teacher_logits, 1.0).exp()
    t1 = -(4 / 6 * math.log(13 / 14) + 1 / 6 * math.log(10 / 14) + 1 / 6 * math.log(5 / 14))
    assert soft_unlikelihood(lp1, pn1).item() == pytest.approx(t1, rel=1e-6)


def test_soft_unlikelihood_mask_and_sum_over_positions():
    lp_s = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1]], [[0.2, 0.8], [0.5, 0.5]]]))
    p_n = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.5], [1.0, 0.0]]])
    mask = torch.tensor([[True, True], [True, False]])
    # positions: -log(0.5); -log(0.9); -(0.5 log 0.8 + 0.5 log 0.2); masked
    expected = -math.log(0.5) - math.log(0.9) - (0.5 * math.log(0.8) + 0.5 * math.log(0.2))
    assert soft_unlikelihood(lp_s, p_n, mask).item() == pytest.approx(expected, rel=1e-6)


def test_soft_unlikelihood_is_finite_when_student_is_certain():
    # the student puts all its mass on the teacher's favourite token: 1 - p underflows to 0
    lp_s = torch.log_softmax(torch.tensor([[200.0, 0.0, 0.0]], requires_grad=True), -1)
    p_n = torch.tensor([[1.0, 0.0, 0.0]])
    loss = soft_unlikelihood(lp_s, p_n)
    assert math.isfinite(loss.item())
    # clamped at 1 - p >= 1e-5 (as FAIR's unlikelihood code): loss = -log(1e-5), up to float32
    # rounding of 1 - 1e-5 (spacing 6e-8 near 1, i.e. 0.6% of 1e-5 at most)
    assert loss.item() == pytest.approx(-math.log(1e-5), rel=5e-4)
    logits = torch.tensor([[30.0, 0.0, 0.0]], requires_grad=True)
    soft_unlikelihood(torch.log_softmax(logits, -1), p_n).backward()
    assert torch.isfinite(logits.grad).all()


def test_soft_unlikelihood_gradient_pushes_down_teacher_tokens():
    logits = torch.zeros(1, 4, requires_grad=True)
    p_n = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    soft_unlikelihood(torch.log_softmax(logits, -1), p_n).backward()
    # descending the gradient lowers the teacher token's logit and raises the others
    assert logits.grad[0, 1] > 0 and (logits.grad[0, [0, 2, 3]] < 0).all()


def test_log1mexp_matches_direct_formula_and_floor():
    x = torch.tensor([-50.0, -5.0, -0.7, -0.5, -1e-3])
    # double-precision references: log1p(-e^x) is exact far from 0, log(-expm1(x)) near it
    expected = torch.tensor([math.log1p(-math.exp(v)) if v < -1 else math.log(-math.expm1(v))
                             for v in x.tolist()])
    assert torch.allclose(log1mexp(x), expected, rtol=1e-6, atol=1e-30)
    assert log1mexp(torch.tensor([0.0])).item() == pytest.approx(math.log(1e-5), rel=1e-4)


def test_hard_unlikelihood_by_hand():
    lp = torch.log(torch.tensor([[[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]]]))
    tokens = torch.tensor([[0, 2]])
    expected = -math.log(1 - 0.7) - math.log(1 - 0.4)
    assert hard_unlikelihood(lp, tokens).item() == pytest.approx(expected, rel=1e-6)
    mask = torch.tensor([[False, True]])
    assert hard_unlikelihood(lp, tokens, mask).item() == pytest.approx(-math.log(0.6), rel=1e-6)


# --- α schedule (Eq. 15-16) --------------------------------------------------------------------


def test_alpha_schedule_by_hand():
    lam, gamma = 4.0, 25600.0
    beta = 6.0 / gamma
    # s = 0: z = -6, α = 4 e^6 / (e^6 + 1)^2
    assert alpha_at(0, lam, gamma) == pytest.approx(4 * math.exp(6) / (math.exp(6) + 1) ** 2, rel=1e-12)
    assert alpha_at(0, lam, gamma) == pytest.approx(0.0098660, rel=1e-4)
    # s = γ: z = 0, α = λ / 4
    assert alpha_at(gamma, lam, gamma) == pytest.approx(1.0)
    assert alpha_at(100, 2.0, 100.0) == pytest.approx(0.5)
    # s = 2γ: z = 6, α = 4 e^-6 / (e^-6 + 1)^2, the same as s = 0 (symmetry)
    assert alpha_at(2 * gamma, lam, gamma) == pytest.approx(4 * math.exp(-6) / (math.exp(-6) + 1) ** 2, rel=1e-12)
    for d in (1, 500, 7000, 25600, 90000):
        assert alpha_at(gamma + d, lam, gamma) == pytest.approx(alpha_at(gamma - d, lam, gamma), rel=1e-9)
    # explicit β overrides 6/γ; z = 0.001 * (1000 - 25600) = -24.6
    z = 0.001 * (1000 - gamma)
    assert alpha_at(1000, lam, gamma, 0.001) == pytest.approx(lam * math.exp(-z) / (math.exp(-z) + 1) ** 2, rel=1e-9)
    assert beta == pytest.approx(6.0 / 25600.0)


def test_alpha_far_from_peak_does_not_overflow():
    assert alpha_at(10**9, 4.0, 100.0) == 0.0
    assert alpha_at(-(10**9), 4.0, 100.0) == 0.0


def test_mean_alpha_is_the_average_over_updates():
    # three updates s = 0, 1, 2 with γ = 1, β = 1: z = -1, 0, 1
    s = lambda z: math.exp(-z) / (math.exp(-z) + 1) ** 2
    assert mean_alpha(3, 4.0, 1.0, 1.0) == pytest.approx(4 * (s(-1) + s(0) + s(1)) / 3, rel=1e-12)


def test_soft_unlikelihood_gradient_matches_the_composed_formula():
    """The hand-written backward equals autograd through -sum q log(1 - softmax(z))."""
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7, dtype=torch.float64) * 3
    logits[0, 0, 2] = 40.0  # one nearly certain position: clamped, zero gradient
    q = torch.softmax(torch.randn(3, 5, 7, dtype=torch.float64), -1)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[2, 3:] = False
    z1 = logits.clone().requires_grad_(True)
    soft_unlikelihood(torch.log_softmax(z1, -1), q, mask).backward()
    z2 = logits.clone().requires_grad_(True)
    p = torch.softmax(z2, -1)
    ref = -(q * torch.log((1 - p).clamp(min=1e-5))).sum(-1)[mask].sum()
    ref.backward()
    assert torch.allclose(z1.grad, z2.grad, atol=1e-10)
    q2 = torch.softmax(torch.randn(2, 3, 4, dtype=torch.float64), -1)
    z = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: soft_unlikelihood(torch.log_softmax(x, -1), q2), (z,))


def test_compiled_soft_unlikelihood_equals_eager():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 50) * 4
    q = torch.softmax(torch.randn(2, 3, 50), -1)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    grads = []
    values = []
    for compiled in (False, True):
        z = logits.clone().requires_grad_(True)
        v = soft_unlikelihood(torch.log_softmax(z, -1), q, mask, compiled=compiled)
        v.backward()
        values.append(v.item())
        grads.append(z.grad)
    assert values[0] == pytest.approx(values[1], rel=1e-5)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_standardize_rows_by_hand():
    from nd_fairseq.losses import standardize_rows

    scores = torch.tensor([[[1.0, float("-inf"), float("-inf")],
                            [1.0, 3.0, float("-inf")],
                            [1.0, 2.0, 3.0]]])
    mask = torch.ones(3, 3, dtype=torch.bool).tril()[None]
    z, rows = standardize_rows(scores, mask)
    s = math.sqrt(2 / 3)  # row 3: mean 2, variance (1 + 0 + 1) / 3
    assert torch.allclose(z[0, 2], torch.tensor([-1 / s, 0.0, 1 / s]), atol=1e-5)
    assert torch.allclose(z[0, 1, :2], torch.tensor([-1.0, 1.0]), atol=1e-5)  # mean 2, std 1
    assert rows[0, :, 0].tolist() == [False, True, True]  # the one-key row has no shape
    # scale and shift do not matter
    z2, _ = standardize_rows(scores * 7 + 3, mask)
    assert torch.allclose(z2[rows], z[rows], atol=1e-5)


def test_normalize_features_by_hand():
    from nd_fairseq.losses import normalize_features

    x = torch.tensor([[1.0, 2.0, 3.0], [10.0, 10.0, 10.0]])
    s = math.sqrt(2 / 3)
    out = normalize_features(x)
    assert torch.allclose(out[0], torch.tensor([-1 / s, 0.0, 1 / s]), atol=1e-4)
    assert torch.allclose(out[1], torch.zeros(3), atol=1e-4)
    assert torch.allclose(normalize_features(x * 5 + 2), out, atol=1e-4)  # scale- and shift-free


# --- the masks, L_hid (Eq. 9), L_att (Eq. 10-12), the total (Eq. 13) ----------------------------


def test_self_attention_mask_by_hand():
    positions = torch.tensor([[True, True, False]])
    mask = self_attention_mask(positions)
    assert mask.shape == (1, 1, 3, 3)
    assert mask[0, 0].int().tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]


def test_hidden_state_loss_by_hand():
    # two layers, T = 2, B = 1, C = 1; only the first position is real
    student = [torch.tensor([[[0.0]], [[1.0]]]), torch.tensor([[[2.0]], [[5.0]]])]
    teacher = [torch.tensor([[[1.0]], [[1.0]]]), torch.tensor([[[2.0]], [[0.0]]])]
    positions = torch.tensor([[True, False]])
    assert float(hidden_state_loss(student, teacher, positions)) == pytest.approx(math.exp(-1) + 1.0, rel=1e-6)
    both = torch.tensor([[True, True]])
    by_hand = (math.exp(-1) + 1.0) / 2 + (1.0 + math.exp(-25)) / 2
    assert float(hidden_state_loss(student, teacher, both)) == pytest.approx(by_hand, rel=1e-6)
    # normalised over C = 1 every feature is 0: each layer's MRSE is 1
    assert float(hidden_state_loss(student, teacher, both, normalized=True)) == pytest.approx(2.0, rel=1e-6)


def test_attention_loss_by_hand():
    # one layer, B = 1, H = 1, T = 2: scores (B * H, T, T)
    student = [torch.tensor([[[0.0, 9.0], [1.0, 2.0]]])]
    teacher = [torch.tensor([[[1.0, -5.0], [1.0, 0.0]]])]
    both = torch.tensor([[True, True]])
    # allowed (query, key): (0, 0), (1, 0), (1, 1); the future (0, 1) is out
    by_hand = (math.exp(-1) + 1.0 + math.exp(-4)) / 3
    assert float(attention_loss(student, teacher, both)) == pytest.approx(by_hand, rel=1e-6)
    assert float(attention_loss(student, teacher, torch.tensor([[True, False]]))) == pytest.approx(math.exp(-1))
    # probs: row 0 has one key (1 = 1), row 1 compares two softmaxes
    s1 = [math.exp(1) / (math.exp(1) + math.exp(2)), math.exp(2) / (math.exp(1) + math.exp(2))]
    t1 = [math.exp(1) / (math.exp(1) + 1), 1 / (math.exp(1) + 1)]
    by_hand = (1.0 + math.exp(-(s1[0] - t1[0]) ** 2) + math.exp(-(s1[1] - t1[1]) ** 2)) / 3
    assert float(attention_loss(student, teacher, both, "probs")) == pytest.approx(by_hand, rel=1e-6)
    # standardized: the one-key row drops out; row 1 is [-1, 1] against [1, -1]
    assert float(attention_loss(student, teacher, both, "standardized")) == pytest.approx(math.exp(-4), rel=1e-4)
    with pytest.raises(RuntimeError, match="1 student and 2 teacher attention layers"):
        attention_loss(student, teacher * 2, both)


def test_negative_distillation_loss_by_hand():
    mle = torch.tensor(2.0)
    terms = {"pred": torch.tensor(0.1), "hid": torch.tensor(1.5), "att": torch.tensor(0.5)}
    # (1 - α) L_mle + α (w L_pred + L_hid + L_att)
    assert float(negative_distillation_loss(mle, terms, 0.3, 10.0)) == pytest.approx(0.7 * 2 + 0.3 * (1 + 1.5 + 0.5))
    assert float(negative_distillation_loss(mle, terms, 0.3)) == pytest.approx(0.7 * 2 + 0.3 * 2.1)
    assert float(negative_distillation_loss(mle, {}, 0.3)) == pytest.approx(0.7 * 2)


def test_hard_unlikelihood_weights_each_position():
    lprobs = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    total = hard_unlikelihood(lprobs, torch.tensor([0, 0]), weights=torch.tensor([2.0, 0.5]))
    assert float(total) == pytest.approx(-(2 * math.log(0.5) + 0.5 * math.log(0.1)), rel=1e-6)
    masked = hard_unlikelihood(lprobs, torch.tensor([0, 0]), torch.tensor([False, True]), torch.tensor([2.0, 0.5]))
    assert float(masked) == pytest.approx(-0.5 * math.log(0.1), rel=1e-6)
