"""The negative_distillation criterion in process, on real fairseq models, data and checkpoints."""

import math

import pytest
import torch

from conftest import TINY_MODEL, USER_DIR, build_training, first_batch
from nd_fairseq.io_utils import InputError
from nd_fairseq.teacher import DICTIONARY_STATE_KEY, TeacherMismatchError

NO_DROPOUT = ["--dropout", "0", "--attention-dropout", "0", "--activation-dropout", "0"]


def student_argv(data_bin, teacher, *extra, model=TINY_MODEL):
    return [data_bin / "full", "--user-dir", USER_DIR, "--task", "negative_distillation",
            *model, *NO_DROPOUT, "--criterion", "negative_distillation", "--nd-teacher-path", teacher,
            "--optimizer", "adam", "--lr", "1e-3", "--seed", "1", *extra]


@pytest.fixture(scope="module")
def batch(data_bin, teacher_checkpoint):
    _, task, _, _ = build_training(student_argv(data_bin, teacher_checkpoint))
    return first_batch(task, "train", max_tokens=600)


def test_hidden_state_distillation_step_lowers_similarity(data_bin, teacher_checkpoint, batch):
    torch.manual_seed(0)
    _, _, model, criterion = build_training(student_argv(
        data_bin, teacher_checkpoint, "--nd-no-pred-loss", "--nd-no-att-loss", "--fixed-alpha", "1.0"))
    model.train()
    criterion.set_alpha(1.0)
    loss, sample_size, log = criterion(model, batch)
    before = float(log["hid"]) / sample_size
    assert set(k for k in ("pred", "hid", "att") if k in log) == {"hid"}
    # α = 1: the loss is Σ_l L_hid^l alone (times sample_size)
    assert float(loss) == pytest.approx(before * sample_size, rel=1e-5)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    opt.zero_grad()
    (loss / sample_size).backward()
    opt.step()
    with torch.no_grad():
        _, _, log_after = criterion(model, batch)
    after = float(log_after["hid"]) / sample_size
    assert after < before - 1e-4, (before, after)


@pytest.mark.parametrize("flags, present", [
    ([], {"pred", "hid", "att"}),
    (["--nd-no-pred-loss"], {"hid", "att"}),
    (["--nd-no-att-loss"], {"pred", "hid"}),
    (["--nd-no-hid-loss"], {"pred", "att"}),
    (["--nd-no-pred-loss", "--nd-no-hid-loss", "--nd-no-att-loss"], set()),
])
def test_ablation_flags_select_logged_components(data_bin, teacher_checkpoint, batch, flags, present):
    torch.manual_seed(0)
    _, _, model, criterion = build_training(student_argv(data_bin, teacher_checkpoint, *flags))
    model.train()
    alpha = 0.3
    criterion.set_alpha(alpha)
    loss, sample_size, log = criterion(model, batch)
    assert {k for k in ("pred", "hid", "att") if k in log} == present
    if present:
        # Eq. 13 from the logged per-token components
        mle = float(log["mle"]) / sample_size
        negative = sum(float(log[k]) / sample_size for k in present)
        assert float(loss) / sample_size == pytest.approx((1 - alpha) * mle + alpha * negative, rel=1e-5)
        assert float(log["alpha"]) / sample_size == pytest.approx(alpha)
        for k in present:
            value = float(log[k]) / sample_size
            assert math.isfinite(value) and value > 0
        if "hid" in present:  # a sum over 2 layers of similarities in (0, 1]
            assert float(log["hid"]) / sample_size <= 2.0
    else:  # nothing to distil: plain label-smoothed MLE
        assert "mle" not in log


def test_pred_weight_scales_only_the_prediction_term(data_bin, teacher_checkpoint, batch):
    torch.manual_seed(0)
    _, _, model, criterion = build_training(student_argv(data_bin, teacher_checkpoint, "--nd-pred-weight", "20"))
    model.train()
    alpha = 0.25
    criterion.set_alpha(alpha)
    loss, sample_size, log = criterion(model, batch)
    mle, pred, hid, att = (float(log[k]) / sample_size for k in ("mle", "pred", "hid", "att"))
    # Eq. 13 with L_pred weighted: (1 - α) L_mle + α (20 L_pred + L_hid + L_att); components logged unweighted
    assert float(loss) / sample_size == pytest.approx((1 - alpha) * mle + alpha * (20 * pred + hid + att), rel=1e-5)
    assert float(loss) / sample_size > (1 - alpha) * mle + alpha * (pred + hid + att) + alpha * 18 * pred


def test_negative_pred_weight_is_refused(data_bin, teacher_checkpoint):
    with pytest.raises(InputError, match="--nd-pred-weight"):
        build_training(student_argv(data_bin, teacher_checkpoint, "--nd-pred-weight", "-1"))


def test_validation_reports_label_smoothed_mle(data_bin, teacher_checkpoint, batch):
    from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion

    _, task, model, criterion = build_training(student_argv(data_bin, teacher_checkpoint))
    model.eval()
    criterion.set_alpha(0.9)
    with torch.no_grad():
        loss, sample_size, log = criterion(model, batch)
        reference = LabelSmoothedCrossEntropyCriterion(task, False, 0.1)
        ref_loss, ref_size, _ = reference(model, batch)
    assert "hid" not in log and sample_size == ref_size
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-6)


def test_padding_is_excluded_everywhere(data_bin, teacher_checkpoint, batch):
    torch.manual_seed(0)
    _, task, model, criterion = build_training(student_argv(data_bin, teacher_checkpoint))
    model.train()  # dropout is 0: deterministic
    criterion.set_alpha(0.5)
    pad = task.target_dictionary.pad()
    padded = {**batch, "net_input": dict(batch["net_input"])}
    extra = torch.full((batch["target"].size(0), 5), pad, dtype=batch["target"].dtype)
    padded["target"] = torch.cat([batch["target"], extra], 1)
    padded["net_input"]["prev_output_tokens"] = torch.cat([batch["net_input"]["prev_output_tokens"], extra], 1)
    _, _, log = criterion(model, batch)
    _, _, log_padded = criterion(model, padded)
    for key in ("loss", "mle", "pred", "hid", "att"):
        assert float(log_padded[key]) == pytest.approx(float(log[key]), rel=1e-5), key


def test_teacher_is_frozen_and_off_the_books(data_bin, teacher_checkpoint, batch):
    _, _, model, criterion = build_training(student_argv(data_bin, teacher_checkpoint))
    teacher = criterion.teacher.model
    criterion.train()  # what fairseq's trainer does every step
    model.train()
    criterion.set_alpha(0.5)
    loss, sample_size, _ = criterion(model, batch)
    loss.backward()
    assert not teacher.training
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert criterion.state_dict() == {} and not list(criterion.parameters())
    student_ids = {id(p) for p in model.parameters()}
    assert not any(id(p) in student_ids for p in teacher.parameters())
    assert all(not m.training for m in teacher.modules())  # dropout stays off


def test_soft_target_against_hand_assembled_soft_unlikelihood(data_bin, teacher_checkpoint, batch):
    """L_pred equals Eq. 6 assembled directly from the two models' distributions."""
    _, task, model, criterion = build_training(student_argv(
        data_bin, teacher_checkpoint, "--nd-no-hid-loss", "--nd-no-att-loss", "--nd-temperature", "2"))
    model.eval()
    with torch.no_grad():
        logits = model(**batch["net_input"])[0]
        teacher_logits = criterion.teacher.model(**batch["net_input"])[0]
        target = batch["target"]
        mask = target.ne(task.target_dictionary.pad())
        p_s = torch.softmax(logits.double() / 2, -1)
        p_n = torch.softmax(teacher_logits.double() / 2, -1)
        by_hand = -(p_n * torch.log(1 - p_s)).sum(-1)[mask].sum() / mask.sum()
    model.train()
    # dropout is 0, so train mode computes the same forward
    criterion.set_alpha(1.0)
    with torch.no_grad():
        _, sample_size, log = criterion(model, batch)
    assert float(log["pred"]) / sample_size == pytest.approx(float(by_hand), rel=1e-4)


@pytest.mark.parametrize("target", ["soft", "hard"])
@pytest.mark.parametrize("flags, eos_weight", [
    (["--nd-pred-skip-eos"], 0.0),  # </s> is not a negative token
    (["--nd-pred-eos-weight", "0.25"], 0.25),  # it counts a quarter
])
def test_eos_weight_scales_end_of_sentence_as_a_negative_target(data_bin, teacher_checkpoint, batch, target,
                                                                 flags, eos_weight):
    _, task, model, criterion = build_training(student_argv(
        data_bin, teacher_checkpoint, "--nd-no-hid-loss", "--nd-no-att-loss", *flags, "--nd-negative-target", target))
    eos = task.target_dictionary.eos()
    model.eval()
    with torch.no_grad():
        logits = model(**batch["net_input"])[0]
        teacher_logits = criterion.teacher.model(**batch["net_input"])[0]
        mask = batch["target"].ne(task.target_dictionary.pad())
        p_s = torch.softmax(logits.double(), -1)
        if target == "soft":
            p_n = torch.softmax(teacher_logits.double(), -1)
            p_n[..., eos] *= eos_weight
            by_hand = -(p_n * torch.log(1 - p_s)).sum(-1)[mask].sum() / mask.sum()
        else:
            greedy = teacher_logits.argmax(-1)
            assert (mask & greedy.eq(eos)).any()  # the case the flag is about occurs in this batch
            weight = torch.where(greedy.eq(eos), eos_weight, 1.0).double()
            p_c = p_s.gather(-1, greedy.unsqueeze(-1)).squeeze(-1)
            by_hand = -(weight * torch.log(1 - p_c))[mask].sum() / mask.sum()
    model.train()
    criterion.set_alpha(1.0)
    with torch.no_grad():
        _, sample_size, log = criterion(model, batch)
    assert float(log["pred"]) / sample_size == pytest.approx(float(by_hand), rel=1e-4)


def test_eos_weight_scales_end_of_sentence_of_a_random_negative(data_bin, teacher_checkpoint, batch):
    _, task, model, criterion = build_training(student_argv(
        data_bin, teacher_checkpoint, "--nd-no-hid-loss", "--nd-no-att-loss", "--nd-pred-eos-weight", "0.25",
        "--nd-negative-target", "random", "--negative-data", data_bin / "negative"))
    eos, target = task.target_dictionary.eos(), batch["target"]
    mask = target.ne(task.target_dictionary.pad())
    # a draw whose negative ends (</s>) inside its row's target, so the weight has a position to act on
    for draw in range(200):
        criterion._draws = draw
        negative, has = criterion._random_negatives(target)
        if (negative.eq(eos) & has & mask).any():
            break
    else:
        pytest.fail("no drawn negative ends within its target in 200 draws")
    model.eval()
    with torch.no_grad():
        p_s = torch.softmax(model(**batch["net_input"])[0].double(), -1)
        p_c = p_s.gather(-1, negative.unsqueeze(-1)).squeeze(-1)
        weight = torch.where(negative.eq(eos), 0.25, 1.0).double()
        by_hand = -(weight * torch.log(1 - p_c))[has & mask].sum() / mask.sum()
        unweighted = -torch.log(1 - p_c)[has & mask].sum() / mask.sum()
    model.train()
    criterion.set_alpha(1.0)
    criterion._draws = draw  # the criterion draws the same negatives again
    with torch.no_grad():
        _, sample_size, log = criterion(model, batch)
    assert float(log["pred"]) / sample_size == pytest.approx(float(by_hand), rel=1e-4)
    assert float(by_hand) < float(unweighted)  # the weight changed the figure


@pytest.mark.parametrize("flags, message", [
    (["--nd-pred-eos-weight", "1.5"], r"--nd-pred-eos-weight must be in \[0, 1\], got 1.5"),
    (["--nd-pred-skip-eos", "--nd-pred-eos-weight", "0.5"], r"--nd-pred-skip-eos is --nd-pred-eos-weight 0"),
])
def test_eos_weight_out_of_range_or_doubled_is_refused(data_bin, teacher_checkpoint, flags, message):
    with pytest.raises(InputError, match=message):
        build_training(student_argv(data_bin, teacher_checkpoint, *flags))


def test_missing_teacher_is_a_clear_error(data_bin, tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(InputError, match=r"teacher checkpoint .*nope\.pt does not exist"):
        build_training(student_argv(data_bin, missing))


def test_teacher_with_other_dictionary_is_refused(data_bin, teacher_checkpoint, tmp_path):
    state = torch.load(teacher_checkpoint, weights_only=False)
    symbols = state["task_state"][DICTIONARY_STATE_KEY]["target"]
    symbols[10], symbols[11] = symbols[11], symbols[10]
    bad = tmp_path / "other_dict.pt"
    torch.save(state, bad)
    with pytest.raises(TeacherMismatchError, match=r"different target dictionary \(symbol 10 is"):
        build_training(student_argv(data_bin, bad))


def test_teacher_with_other_dictionary_size_is_refused_without_stored_symbols(data_bin, teacher_checkpoint, tmp_path):
    state = torch.load(teacher_checkpoint, weights_only=False)
    state["task_state"] = {}
    state["cfg"]["task"]["data"] = str(tmp_path / "gone")  # no dictionary files to compare with
    for key in list(state["model"]):
        if key.endswith("embed_tokens.weight"):
            state["model"][key] = state["model"][key][:-3]
    bad = tmp_path / "smaller.pt"
    torch.save(state, bad)
    with pytest.raises(TeacherMismatchError, match=r"dictionary of \d+ symbols, the student \d+"):
        build_training(student_argv(data_bin, bad))


def test_teacher_with_other_depth_is_refused(data_bin, teacher_checkpoint):
    deeper = [a if a != "2" or i != TINY_MODEL.index("--decoder-layers") + 1 else "3"
              for i, a in enumerate(TINY_MODEL)]
    with pytest.raises(TeacherMismatchError, match=r"teacher .* has 2 decoder layers, the student 3"):
        build_training(student_argv(data_bin, teacher_checkpoint, model=deeper))


def test_criterion_needs_the_nd_task(data_bin, teacher_checkpoint):
    argv = student_argv(data_bin, teacher_checkpoint)
    argv[argv.index("negative_distillation")] = "translation"
    with pytest.raises(InputError, match="needs --task negative_distillation"):
        build_training(argv)


def _negatives_file(path, n, texts):
    import json

    path.write_text("".join(json.dumps(texts if i % 3 else []) + "\n" for i in range(n)), encoding="utf-8")
    return path


def test_external_negatives_are_pushed_down(data_bin, teacher_checkpoint, chitchat_text, tmp_path, batch):
    """--nd-external-negatives-weight: training on the unlikelihood term lowers the negatives' likelihood."""
    n = len((chitchat_text / "train.query").read_text().splitlines())
    negatives = _negatives_file(tmp_path / "neg.jsonl", n, ["i don't know .", "yeah , i do n't know"])
    torch.manual_seed(0)
    _, task, model, criterion = build_training(student_argv(
        data_bin, teacher_checkpoint, "--external-negatives", negatives, "--nd-external-negatives-weight", "1",
        "--fixed-alpha", "0"))
    model.train()
    criterion.set_alpha(0.0)
    encoded = task.external_negatives()
    assert len(encoded) == n and encoded[0] == [] and len(encoded[1]) == 2
    assert encoded[1][0][-1].item() == task.target_dictionary.eos()
    # the moses-tokenised, lowercased text went through the training data's sentencepiece model
    assert "<unk>" not in task.target_dictionary.string(encoded[1][0])
    loss, sample_size, log = criterion(model, batch)
    first = float(log["ext"]) / sample_size
    assert first > 0 and float(loss) == pytest.approx(float(log["loss"]))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    for _ in range(5):
        opt.zero_grad()
        with torch.no_grad():
            pass
        term, _ = criterion.external_negative_term(model, batch)
        term.backward()
        opt.step()
    with torch.no_grad():
        last, _ = criterion.external_negative_term(model, batch)
    assert float(last) < first


def test_external_negatives_misaligned_file_is_refused(data_bin, teacher_checkpoint, tmp_path):
    negatives = _negatives_file(tmp_path / "short.jsonl", 5, ["yeah"])
    _, task, _, _ = build_training(student_argv(data_bin, teacher_checkpoint))
    task.cfg.external_negatives = str(negatives)
    task.load_dataset("train")
    with pytest.raises(InputError, match=r"short\.jsonl has 5 lines but the training set has \d+ pairs"):
        task.external_negatives()


@pytest.mark.parametrize("flags, term", [
    (["--nd-no-pred-loss", "--nd-no-hid-loss", "--nd-attention", "probs"], "att"),
    (["--nd-no-pred-loss", "--nd-no-hid-loss", "--nd-attention", "standardized"], "att"),
    (["--nd-no-pred-loss", "--nd-no-att-loss", "--nd-hidden", "normalized"], "hid"),
])
def test_feature_variants(data_bin, teacher_checkpoint, batch, flags, term):
    torch.manual_seed(0)
    _, _, model, criterion = build_training(student_argv(data_bin, teacher_checkpoint, *flags))
    model.train()
    criterion.set_alpha(1.0)
    loss, sample_size, log = criterion(model, batch)
    value = float(log[term]) / sample_size
    assert 0.0 < value <= 2.0  # a sum over 2 layers of similarities in (0, 1]
    loss.backward()
    grads = [p.grad for p in model.decoder.layers[0].self_attn.q_proj.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("target", ["soft", "hard", "random"])
def test_every_negative_target_trains_a_step(data_bin, teacher_checkpoint, batch, target):
    # a real backward through each prediction-layer target: the hard target's teacher tokens come
    # from the teacher's inference mode and are saved by autograd as an index
    torch.manual_seed(0)
    _, _, model, criterion = build_training(student_argv(
        data_bin, teacher_checkpoint, "--nd-no-hid-loss", "--nd-no-att-loss", "--nd-negative-target", target,
        *(["--negative-data", data_bin / "negative"] if target == "random" else [])))
    model.train()
    criterion.set_alpha(1.0)
    loss, sample_size, log = criterion(model, batch)
    model.zero_grad()
    (loss / sample_size).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # α = 1 and L_pred alone: the output layer moves, and the loss is L_pred
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert float(loss) / sample_size == pytest.approx(float(log["pred"]) / sample_size, rel=1e-5)
