"""Half precision without a GPU: the ND criterion and the baselines on real fairseq models in
bfloat16 and float16 on the CPU, against the same models in float32.

Tolerances (relative, per logged component, same weights and batch, dropout off): bfloat16 has an
8-bit mantissa (relative rounding 2^-9 ~ 0.2%) and float16 an 11-bit one (2^-12 ~ 0.02%); through
two layers, the attention and the output projection the components move by up to ~10 roundings,
so 3% (bf16) and 0.5% (fp16). The losses themselves are computed in float32 from half-precision
model outputs (fairseq's log-softmax upcasts; MRSE and the soft unlikelihood upcast).

fairseq's own half-precision trainers do not run on a CPU (fairseq 0.12.3, torch CPU build):
``fairseq-train --cpu --bf16`` stops in ``fairseq.utils.get_tpu_device`` with ``AttributeError:
'NoneType' object has no attribute 'xla_device'`` (``--bf16`` implies ``--tpu``), and
``fairseq-train --cpu --fp16`` stops in ``FP16Optimizer.build_fp32_params`` with
``AssertionError: Torch not compiled with CUDA enabled``; the last test pins both, so a fairseq
that starts accepting them is noticed.
"""

import math

import pytest
import torch

from conftest import TINY_MODEL, TRAIN_COMMON, USER_DIR, build_training, first_batch, run_cli
from nd_fairseq.losses import mrse, soft_unlikelihood, standardize_rows
from nd_fairseq.models.capture import attention_scores_for

NO_DROPOUT = ["--dropout", "0", "--attention-dropout", "0", "--activation-dropout", "0"]
TOLERANCE = {torch.bfloat16: 3e-2, torch.float16: 5e-3}
DTYPES = [torch.bfloat16, torch.float16]
BASELINES = {
    "unlikelihood_dialog": (["--ul-window", "1", "--ul-decode-max-len", "12"], ("mle",), ("ul",)),
    "negative_training": (["--nt-window", "1", "--nt-decode-max-len", "12"], ("mle",), ("neg",)),
    "face": ([], ("mle", "loss"), ("w_max", "face_w_target_sum")),
}


def nd_argv(data_bin, teacher, *extra):
    return [data_bin / "full", "--user-dir", USER_DIR, "--task", "negative_distillation", *TINY_MODEL,
            *NO_DROPOUT, "--criterion", "negative_distillation", "--nd-teacher-path", teacher,
            "--optimizer", "adam", "--lr", "1e-3", "--seed", "1", *extra]


def baseline_argv(data_bin, name):
    return [data_bin / "full", "--user-dir", USER_DIR, "--task", "negative_distillation", *TINY_MODEL,
            *NO_DROPOUT, "--criterion", name, *BASELINES[name][0], "--optimizer", "adam", "--lr", "1e-3",
            "--seed", "1"]


@pytest.fixture(scope="module")
def batch(data_bin, teacher_checkpoint):
    _, task, _, _ = build_training(nd_argv(data_bin, teacher_checkpoint))
    return first_batch(task, "train", max_tokens=600)


def build(argv, dtype):
    torch.manual_seed(0)  # same initial weights for every dtype
    _, task, model, criterion = build_training(argv)
    return task, model.to(dtype), criterion


def half_or_skip(dtype, fn):
    try:
        return fn()
    except RuntimeError as err:  # a CPU kernel missing for this dtype in this torch build
        if "not implemented for" in str(err):
            pytest.skip(f"CPU kernel missing for {dtype}: {str(err).splitlines()[0]}")
        raise


def nd_step(argv, dtype, batch):
    task, model, criterion = build(argv, dtype)
    model.train()
    criterion.set_alpha(0.5)
    loss, sample_size, log = criterion(model, batch)
    loss.backward()
    values = {k: float(log[k]) / sample_size for k in ("mle", "pred", "hid", "att") if k in log}
    values["loss"] = float(loss) / sample_size
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    return values, grads, model, criterion


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
def test_nd_components_in_half_precision_match_float32(data_bin, teacher_checkpoint, batch, dtype):
    argv = nd_argv(data_bin, teacher_checkpoint)
    ref, ref_grads, _, _ = nd_step(argv, torch.float32, batch)
    got, grads, model, criterion = half_or_skip(dtype, lambda: nd_step(argv, dtype, batch))
    assert set(got) == {"mle", "pred", "hid", "att", "loss"}
    # the teacher follows the student's dtype (and stays frozen)
    teacher = criterion.teacher.model
    assert {p.dtype for p in teacher.parameters()} == {dtype}
    assert not any(p.requires_grad for p in teacher.parameters())
    for name, value in got.items():
        assert math.isfinite(value), name
        assert value == pytest.approx(ref[name], rel=TOLERANCE[dtype]), (name, value, ref[name])
    assert all(g is not None and g.dtype == dtype and torch.isfinite(g).all() for g in grads)
    # the gradient as a whole points where float32's does
    flat = torch.cat([g.float().flatten() for g in grads])
    ref_flat = torch.cat([g.flatten() for g in ref_grads])
    cosine = torch.nn.functional.cosine_similarity(flat, ref_flat, dim=0).item()
    assert cosine > 0.99, cosine


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
def test_soft_unlikelihood_backward_matches_autograd_in_half_precision(dtype):
    """The hand-written gradient for half-precision inputs equals autograd through the composed
    formula on the same inputs (upcast), and neither is inf near p = 1."""
    torch.manual_seed(6)
    logits = (torch.randn(6, 9, 300) * 4).to(dtype)
    logits[1, 1, 3] = 40.0  # p ~ 1: 1 - p is clamped (in bf16, 1 - 1e-5 itself rounds to 1)
    q = torch.softmax(torch.randn(6, 9, 300) * 3, -1).to(dtype)
    z = logits.clone().requires_grad_(True)
    value = half_or_skip(dtype, lambda: soft_unlikelihood(torch.log_softmax(z, -1), q))
    value.backward()
    assert value.dtype == dtype and torch.isfinite(value)
    assert z.grad.dtype == dtype and torch.isfinite(z.grad).all()
    z2 = logits.double().requires_grad_(True)
    p = torch.softmax(z2, -1)
    ref = -(q.double() * torch.log((1 - p).clamp(min=1e-5))).sum()
    ref.backward()
    # the inputs are the same half-precision numbers; what differs is the arithmetic
    assert value.item() == pytest.approx(ref.item(), rel=TOLERANCE[dtype] / 3)
    scale = z2.grad.abs().max().item()
    assert (z.grad.double() - z2.grad).abs().max().item() <= TOLERANCE[dtype] * scale
    assert z.grad[1, 1].abs().max().item() <= TOLERANCE[dtype] * scale  # clamped: pushed (almost) nothing


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
def test_attention_capture_and_mrse_do_not_overflow_with_fp16_score_ranges(data_bin, teacher_checkpoint, batch,
                                                                           dtype):
    """Scores of ±60 (the range fp16 training reaches; 60² and 120² would overflow fp16's squares
    beyond 255): the captured scores, L_att and L_hid stay finite and equal float32's."""
    argv = nd_argv(data_bin, teacher_checkpoint, "--nd-no-pred-loss")

    def scaled(dtype):
        task, model, criterion = build(argv, torch.float32)
        with attention_scores_for(model).capture() as scores:
            model(**batch["net_input"])
        peak = max(s.float().masked_fill(~torch.isfinite(s), 0).abs().max().item() for s in scores)
        for layer in model.decoder.layers:  # scale Q so the largest score is 60
            layer.self_attn.q_proj.weight.data *= 60.0 / peak
            layer.self_attn.q_proj.bias.data *= 60.0 / peak
        model = model.to(dtype)
        model.train()
        criterion.set_alpha(1.0)
        with attention_scores_for(model).capture() as scores:
            model(**batch["net_input"])
        loss, sample_size, log = criterion(model, batch)
        loss.backward()
        return scores, {k: float(log[k]) / sample_size for k in ("hid", "att")}, model

    ref_scores, ref, _ = scaled(torch.float32)
    scores, got, model = half_or_skip(dtype, lambda: scaled(dtype))
    finite = [torch.isfinite(s) for s in scores]
    assert all(s.dtype == dtype for s in scores)
    peak = max(s.float()[f].abs().max().item() for s, f in zip(scores, finite))
    assert 55.0 <= peak <= 65.0, peak
    # only the causally masked entries are -inf, exactly where float32 has them
    assert all(torch.equal(f, torch.isfinite(r)) for f, r in zip(finite, ref_scores))
    for name in ("hid", "att"):
        assert math.isfinite(got[name]) and got[name] == pytest.approx(ref[name], rel=TOLERANCE[dtype]), name
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
def test_mrse_and_standardized_scores_at_fp16_extremes_by_hand(dtype):
    a = torch.tensor([[60.0, -60.0, 60.0, 0.5]], dtype=dtype)
    b = torch.tensor([[-60.0, 60.0, 59.5, 0.0]], dtype=dtype)
    # differences 120, -120, 0.5, 0.5: exp(-14400) = 0 twice, exp(-0.25) twice, over 4
    assert mrse(a, b).item() == pytest.approx(2 * math.exp(-0.25) / 4, rel=1e-6)
    mask = torch.tensor([[True, True, True, False]])
    z, rows = standardize_rows(a, mask)
    # allowed 60, -60, 60: mean 20, std sqrt((40² + 80² + 40²) / 3) = sqrt(3200)
    assert z.dtype == torch.float32 and rows[0].tolist() == [True, True, True, False]
    assert z[0, :3].tolist() == pytest.approx([40 / math.sqrt(3200), -80 / math.sqrt(3200), 40 / math.sqrt(3200)],
                                              rel=1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", list(BASELINES))
def test_baselines_in_half_precision(data_bin, batch, name, dtype):
    """Each baseline, two steps (the second is past its one-batch window, so its own term acts): every
    logged value finite, the dtype-independent ones within tolerance of float32, gradients finite."""
    _, compared, acting = BASELINES[name]

    def run(dtype):
        task, model, criterion = build(baseline_argv(data_bin, name), dtype)
        model.train()
        logs = []
        for _ in range(2):
            model.zero_grad()
            loss, sample_size, log = criterion(model, batch)
            loss.backward()
            logs.append({k: float(v) / (sample_size if k in ("mle", "loss", "ul", "neg") else 1)
                         for k, v in log.items() if torch.is_tensor(v) or isinstance(v, (int, float))})
        return logs, model

    ref, _ = run(torch.float32)
    logs, model = half_or_skip(dtype, lambda: run(dtype))
    for log in logs:
        assert all(math.isfinite(v) for v in log.values()), log
    assert all(k in logs[1] for k in acting), logs[1]
    for k in compared:
        assert logs[1][k] == pytest.approx(ref[1][k], rel=TOLERANCE[dtype]), (k, logs[1][k], ref[1][k])
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == dtype and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("flag,message", [
    ("--bf16", "AttributeError: 'NoneType' object has no attribute 'xla_device'"),
    ("--fp16", "AssertionError: Torch not compiled with CUDA enabled"),
])
def test_fairseq_train_refuses_half_precision_on_cpu(data_bin, teacher_checkpoint, tmp_path, flag, message):
    if torch.cuda.is_available():
        pytest.skip("a CUDA build: fairseq's half-precision trainers run (benchmarks/gpu_check.sh)")
    proc = run_cli(["fairseq-train", data_bin / "full", *TRAIN_COMMON, *TINY_MODEL, "--cpu", flag,
                    "--criterion", "negative_distillation", "--nd-teacher-path", teacher_checkpoint,
                    "--max-update", "2", "--no-save", "--disable-validation", "--save-dir", tmp_path],
                   check=False, timeout=300)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-3000:]
