"""The default soft-unlikelihood path (value and gradient in one eager sweep) against the reference
formula and autograd, in float64, and the torch.compile fallback."""

import subprocess
import sys

import pytest
import torch

from conftest import REPO, cli_env
from nd_fairseq.losses import soft_unlikelihood


def reference(logits, q, mask=None):
    """Eq. 6 composed from torch ops, 1 - p clamped at 1e-5, differentiated by autograd."""
    p = torch.softmax(logits, -1)
    per_position = -(q * torch.log((1 - p).clamp(min=1e-5))).sum(-1)
    return per_position[mask].sum() if mask is not None else per_position.sum()


def both(logits, q, mask=None, **kw):
    z1 = logits.clone().requires_grad_(True)
    value = soft_unlikelihood(torch.log_softmax(z1, -1), q, mask, **kw)
    value.backward()
    z2 = logits.clone().requires_grad_(True)
    ref = reference(z2, q, mask)
    ref.backward()
    return value, z1.grad, ref, z2.grad


@pytest.mark.parametrize("clamped", [False, True])
def test_default_path_equals_reference_and_autograd_in_float64(clamped):
    torch.manual_seed(3)
    logits = torch.randn(4, 6, 30, dtype=torch.float64) * 3
    if clamped:
        logits[1, 2, 7] = 60.0  # p = 1 - 1e-25: 1 - p is clamped there, the gradient is zero
        logits[3, 0, 0] = 15.0  # p = 1 - 1e-6 (also clamped)
    q = torch.softmax(torch.randn(4, 6, 30, dtype=torch.float64) * 2, -1)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[0, 4:] = False
    value, grad, ref, ref_grad = both(logits, q, mask)
    assert value.dtype == torch.float64
    assert value.item() == pytest.approx(ref.item(), rel=1e-12)
    assert torch.allclose(grad, ref_grad, rtol=1e-10, atol=1e-13)
    if clamped:
        # the nearly certain position contributes -q log(1e-5) and pushes nothing
        assert ref_grad[1, 2].abs().max() < 1e-6


def test_default_path_gradient_is_correct_for_any_upstream_scale():
    """The gradient is saved in the forward sweep and only scaled in the backward: the scale must
    be the incoming gradient, whatever multiplies the loss afterwards."""
    torch.manual_seed(4)
    logits = torch.randn(3, 5, 11, dtype=torch.float64)
    q = torch.softmax(torch.randn(3, 5, 11, dtype=torch.float64), -1)
    z = logits.clone().requires_grad_(True)
    (soft_unlikelihood(torch.log_softmax(z, -1), q) * -2.5).backward()
    z2 = logits.clone().requires_grad_(True)
    (reference(z2, q) * -2.5).backward()
    assert torch.allclose(z.grad, z2.grad, rtol=1e-10, atol=1e-13)
    assert torch.autograd.gradcheck(lambda x: soft_unlikelihood(torch.log_softmax(x, -1), q), (logits.clone().requires_grad_(True),))


def test_rows_without_teacher_mass_and_empty_input():
    lp = torch.log_softmax(torch.randn(2, 3, 5, dtype=torch.float64), -1).requires_grad_(True)
    q = torch.zeros(2, 3, 5, dtype=torch.float64)
    value = soft_unlikelihood(lp, q)
    value.backward()
    assert value.item() == 0.0 and lp.grad.abs().max().item() == 0.0
    empty = torch.zeros(0, 7, requires_grad=True)
    value = soft_unlikelihood(empty, torch.zeros(0, 7))
    value.backward()
    assert value.item() == 0.0 and empty.grad.shape == (0, 7)


def test_float32_default_path_matches_float64_reference():
    torch.manual_seed(5)
    logits = torch.randn(8, 10, 400, dtype=torch.float64) * 4
    logits[2, 3, 5] = 30.0
    q = torch.softmax(torch.randn(8, 10, 400, dtype=torch.float64) * 3, -1)
    z = logits.float().requires_grad_(True)
    value = soft_unlikelihood(torch.log_softmax(z, -1), q.float())
    value.backward()
    z2 = logits.clone().requires_grad_(True)
    ref = reference(z2, q)
    ref.backward()
    assert value.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(z.grad.double(), z2.grad, rtol=1e-4, atol=1e-7)


def test_compile_fallback_logs_one_line_and_computes_the_same(tmp_path):
    """Where torch.compile cannot build its kernels (here: no working C++ compiler, a fresh cache),
    --nd-compile falls back to the eager sweep with one warning."""
    code = (
        "import logging, torch\n"
        "logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s')\n"
        "from nd_fairseq.losses import soft_unlikelihood\n"
        "torch.manual_seed(0)\n"
        "z = torch.randn(2, 3, 9, dtype=torch.float64)\n"
        "q = torch.softmax(torch.randn(2, 3, 9, dtype=torch.float64), -1)\n"
        "out = []\n"
        "for compiled in (True, True, False):\n"
        "    x = z.clone().requires_grad_(True)\n"
        "    v = soft_unlikelihood(torch.log_softmax(x, -1), q, compiled=compiled)\n"
        "    v.backward()\n"
        "    out.append((v.item(), x.grad))\n"
        "assert out[0][0] == out[2][0] and torch.equal(out[0][1], out[2][1])\n"
        "print('same')\n")
    env = cli_env({"CXX": "/bin/false", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
                   "PYTHONPATH": str(REPO)})
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "same"
    warnings = [line for line in proc.stderr.splitlines() if "torch.compile is unavailable" in line]
    assert len(warnings) == 1, proc.stderr[-3000:]
    assert warnings[0].startswith("WARNING ") and warnings[0].endswith("the soft unlikelihood runs eagerly")


@pytest.mark.parametrize("padded", [True, False])
def test_mle_and_soft_unlikelihood_together_equal_fairseq_and_the_formula(padded):
    """One function for L_mle and L_pred (the criterion's default when t = 1): fairseq's
    label-smoothed NLL and Eq. 6, values and gradients, in float64."""
    from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss

    from nd_fairseq.losses import label_smoothed_nll_and_soft_unlikelihood

    torch.manual_seed(7)
    pad, eps, m, v = 1, 0.1, 12, 25
    logits = torch.randn(m, v, dtype=torch.float64) * 3
    logits[4, 9] = 50.0  # a clamped position
    target = torch.randint(4, v, (m,))
    if padded:
        target[[2, 7, 11]] = pad
    real = target.ne(pad)
    q = torch.softmax(torch.randn(int(real.sum()), v, dtype=torch.float64), -1)
    weights = (0.7, 0.2, 1.9)  # how the criterion might scale the three outputs

    z1 = logits.clone().requires_grad_(True)
    mle, nll, pred = label_smoothed_nll_and_soft_unlikelihood(torch.log_softmax(z1, -1), target, q, eps, pad)
    (weights[0] * mle + weights[1] * nll + weights[2] * pred).backward()

    z2 = logits.clone().requires_grad_(True)
    lp = torch.log_softmax(z2, -1)
    ref_mle, ref_nll = label_smoothed_nll_loss(lp, target, eps, ignore_index=pad, reduce=True)
    p = torch.softmax(z2, -1)[real]
    ref_pred = -(q * torch.log((1 - p).clamp(min=1e-5))).sum()
    (weights[0] * ref_mle + weights[1] * ref_nll + weights[2] * ref_pred).backward()

    assert mle.item() == pytest.approx(ref_mle.item(), rel=1e-12)
    assert nll.item() == pytest.approx(ref_nll.item(), rel=1e-12)
    assert pred.item() == pytest.approx(ref_pred.item(), rel=1e-12)
    assert torch.allclose(z1.grad, z2.grad, rtol=1e-10, atol=1e-13)
    if padded:
        assert z1.grad[2].abs().max().item() == 0.0  # a padded position gets nothing


def test_mle_and_soft_unlikelihood_refuses_misaligned_teacher_rows():
    from nd_fairseq.losses import label_smoothed_nll_and_soft_unlikelihood

    target = torch.tensor([5, 6, 1])
    with pytest.raises(ValueError, match="teacher_probs has 3 rows for 2 real positions"):
        label_smoothed_nll_and_soft_unlikelihood(torch.log_softmax(torch.randn(3, 8), -1), target,
                                                 torch.full((3, 8), 1 / 8), 0.1, 1)


def test_criterion_default_path_equals_the_composed_formula_by_autograd(data_bin, teacher_checkpoint):
    """The ND criterion's default path (L_mle and L_pred in one function) on a real model and batch:
    the loss and every parameter's gradient equal autograd through the written-out Eq. 13 with
    fairseq's label-smoothed NLL and Eq. 6. The model is float64, but fairseq's log-softmax returns
    float32 (as in any training run), so the two agree to float32 rounding."""
    from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss

    from conftest import TINY_MODEL, USER_DIR, build_training, first_batch

    argv = [data_bin / "full", "--user-dir", USER_DIR, "--task", "negative_distillation", *TINY_MODEL,
            "--dropout", "0", "--attention-dropout", "0", "--activation-dropout", "0",
            "--criterion", "negative_distillation", "--nd-teacher-path", teacher_checkpoint,
            "--nd-no-hid-loss", "--nd-no-att-loss", "--optimizer", "adam", "--lr", "1e-3"]
    torch.manual_seed(0)
    _, task, model, criterion = build_training(argv)
    assert criterion.shares_lprobs
    batch = first_batch(task, "train", max_tokens=600)
    model = model.double().train()
    criterion.set_alpha(0.3)
    loss, sample_size, log = criterion(model, batch)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    pad = task.target_dictionary.pad()
    teacher = criterion.teacher.model
    assert next(teacher.parameters()).dtype == torch.float64
    with torch.no_grad():
        q = torch.softmax(teacher(**batch["net_input"])[0], -1)
    lp = model.get_normalized_probs(model(**batch["net_input"]), log_probs=True)
    assert lp.dtype == torch.float32
    target = batch["target"]
    mle, _ = label_smoothed_nll_loss(lp.view(-1, lp.size(-1)), target.view(-1), 0.1, ignore_index=pad)
    real = target.ne(pad)
    pred = -(q[real] * torch.log((1 - lp.exp()[real]).clamp(min=1e-5))).sum()
    ntokens = batch["ntokens"]
    ref = ((1 - 0.3) * mle / ntokens + 0.3 * pred / ntokens) * sample_size
    ref.backward()
    assert float(loss) == pytest.approx(float(ref), rel=1e-6)
    assert float(log["pred"]) == pytest.approx(float(pred / ntokens * sample_size), rel=1e-5)
    got = torch.cat([g.flatten() for g in grads])
    want = torch.cat([p.grad.flatten() for p in model.parameters()])
    # float32 log-probabilities: agreement to float32 rounding of the largest gradient entries
    assert (got - want).abs().max().item() <= 1e-5 * want.abs().max().item()
    assert (got - want).norm().item() <= 1e-5 * want.norm().item()
