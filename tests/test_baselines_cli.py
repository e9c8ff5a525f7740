"""The baseline criteria (UL, NT, FACE) on real fairseq models, data and command lines.

Each baseline is fine-tuned for 4 updates from a tiny Standard (MLE) checkpoint with the real
``fairseq-train``; the run is then resumed from its update-2 checkpoint and must end with the same
running statistics and the same logged losses as the uninterrupted run.
"""

import json
import logging
import shutil

import pytest
import torch

from conftest import TINY_MODEL, TRAIN_COMMON, USER_DIR, build_training, first_batch, run_cli
from nd_fairseq.compat.safe_load import safe_globals

# the window flags make every statistic act after one batch, so 4 updates exercise the whole loss
BASELINES = {
    "unlikelihood_dialog": (["--ul-window", "1", "--ul-decode-max-len", "12"],
                            ("mle", "ul", "n_candidates", "ul_tokens")),
    "negative_training": (["--nt-window", "1", "--nt-decode-max-len", "12"],
                          ("mle", "neg", "n_neg", "max_ratio")),
    "face": ([], ("mle", "w_target", "w_max", "top_rf")),
}
NAMES = list(BASELINES)
VOLATILE = {"wps", "ups", "wall", "train_wall", "gb_free"}
NO_DROPOUT = ["--dropout", "0", "--attention-dropout", "0", "--activation-dropout", "0"]


def _train_argv(data_bin, standard, name, save_dir, updates):
    flags, _ = BASELINES[name]
    return [data_bin / "full", *TRAIN_COMMON, *TINY_MODEL, "--finetune-from-model", standard,
            "--criterion", name, *flags, "--max-update", str(updates), "--save-interval-updates", "2",
            "--no-epoch-checkpoints", "--max-valid-steps", "1", "--save-dir", save_dir]


def _records(lines, tag):
    records = []
    for line in lines:
        start = line.find("{")
        if start >= 0 and f"| {tag} |" in line[:start + 1]:
            records.append(json.loads(line[start:]))
    return records


def _stable(record):
    return {k: v for k, v in record.items() if k not in VOLATILE}


def _task_state(path, name):
    # fairseq's own loading allow-list (argparse.Namespace, numpy): the statistics need nothing more
    with safe_globals():
        return torch.load(path, weights_only=True)["task_state"][name]


@pytest.fixture(scope="module")
def straight_runs(data_bin, teacher_checkpoint, tmp_path_factory):
    """fairseq-train, 4 updates of each baseline from the Standard checkpoint (the teacher fixture is
    a tiny MLE model; as a Standard model it only needs to be one)."""
    runs = {}
    for name in NAMES:
        save = tmp_path_factory.mktemp(f"straight_{name}")
        proc = run_cli(["fairseq-train", *_train_argv(data_bin, teacher_checkpoint, name, save, 4)])
        runs[name] = (proc.stdout + proc.stderr).splitlines(), save
    return runs


@pytest.mark.cli
@pytest.mark.parametrize("name", NAMES)
def test_fine_tuning_from_standard_logs_every_component(straight_runs, name):
    lines, save = straight_runs[name]
    assert any("loading pretrained model from" in line for line in lines)
    inner = _records(lines, "train_inner")
    assert len(inner) == 4
    _, components = BASELINES[name]
    for rec in inner:
        for key in ("loss", "nll_loss", *components):
            assert key in rec, (key, rec)
            assert float(rec[key]) == float(rec[key])  # not NaN
    # after the one-batch window the baseline's own term is at work
    if name == "unlikelihood_dialog":
        assert float(inner[0]["n_candidates"]) == 0 and float(inner[0]["ul"]) == 0  # warm-up batch
        assert any(float(r["n_candidates"]) > 0 and float(r["ul_tokens"]) > 0 for r in inner[1:])
    elif name == "negative_training":
        assert float(inner[0]["n_neg"]) == 0
        assert any(float(r["n_neg"]) > 0 and float(r["neg"]) < 0 for r in inner[1:])
    else:
        assert all(0 < float(r["w_target"]) and 1 < float(r["w_max"]) for r in inner)
    valid = _records(lines, "valid")
    assert valid and not any(k in valid[-1] for k in ("valid_mle", "valid_ul", "valid_neg", "valid_w_target"))
    with safe_globals():
        ckpt = torch.load(save / "checkpoint_last.pt", weights_only=True)
    assert ckpt["criterion"] is None  # the statistics travel in the task state, not the criterion
    assert ckpt["task_state"][name]["batches"] == 4  # validation batches are not counted


@pytest.mark.cli
@pytest.mark.parametrize("name", NAMES)
def test_resumed_run_continues_the_running_statistics(straight_runs, data_bin, teacher_checkpoint, name,
                                                      tmp_path, caplog):
    lines, straight = straight_runs[name]
    middle = _task_state(straight / "checkpoint_1_2.pt", name)
    assert middle["batches"] == 2
    # a run stopped after 2 updates, resumed to 4 (in this process: saves a second interpreter start)
    shutil.copy(straight / "checkpoint_1_2.pt", tmp_path / "checkpoint_last.pt")
    caplog.set_level(logging.INFO)
    _train_in_process(_train_argv(data_bin, teacher_checkpoint, name, tmp_path, 4))
    assert "Loaded checkpoint" in caplog.text and "@ 2 updates" in caplog.text
    resumed = _task_state(tmp_path / "checkpoint_last.pt", name)
    expected = _task_state(straight / "checkpoint_last.pt", name)
    assert resumed["batches"] == 4  # restored, not restarted from zero
    _assert_same_state(resumed, expected)
    # the same losses and statistics for updates 3 and 4 as the uninterrupted run
    resumed_inner = [json.loads(r.getMessage()) for r in caplog.records if r.name == "train_inner"]
    assert [_stable(r) for r in resumed_inner] == [_stable(r) for r in _records(lines, "train_inner")[2:]]


def _train_in_process(argv):
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.distributed import utils as distributed_utils
    from fairseq_cli.train import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocess runs (OMP_NUM_THREADS=1): same arithmetic
    try:
        args = options.parse_args_and_arch(options.get_training_parser(), [str(a) for a in argv])
        distributed_utils.call_main(convert_namespace_to_omegaconf(args), main)
    finally:
        torch.set_num_threads(threads)


def _assert_same_state(a, b, where="state"):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same_state(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


# -- in process: the plain translation task, validation, decoding ---------------------------------

def _argv(data_bin, name, task="negative_distillation", *extra):
    flags, _ = BASELINES[name]
    return [data_bin / "full", "--user-dir", USER_DIR, "--task", task, *TINY_MODEL, *NO_DROPOUT,
            "--criterion", name, *flags, "--optimizer", "adam", "--lr", "1e-3", "--seed", "1", *extra]


@pytest.fixture(scope="module")
def batch(data_bin):
    _, task, _, _ = build_training(_argv(data_bin, "face"))
    return first_batch(task, "train", max_tokens=600)


@pytest.mark.parametrize("name", NAMES)
def test_trains_with_the_plain_translation_task(data_bin, batch, name):
    torch.manual_seed(0)
    _, task, model, criterion = build_training(_argv(data_bin, name, "translation"))
    model.train()
    for _ in range(2):  # the second batch is past the one-batch window
        loss, sample_size, log = criterion(model, batch)
        loss.backward()
        assert torch.isfinite(loss) and sample_size == batch["ntokens"]
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert not hasattr(task, "persistent_state")  # statistics in a plain dict: not checkpointed


@pytest.mark.parametrize("name", NAMES)
def test_validation_is_plain_label_smoothed_mle_and_counts_nothing(data_bin, batch, name):
    from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion

    _, task, model, criterion = build_training(_argv(data_bin, name))
    model.eval()
    with torch.no_grad():
        loss, sample_size, log = criterion(model, batch)
        ref_loss, ref_size, _ = LabelSmoothedCrossEntropyCriterion(task, False, 0.1)(model, batch)
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-6) and sample_size == ref_size
    assert task.persistent_state(name, dict)["batches"] == 0


@pytest.mark.parametrize("name", NAMES)
def test_filler_batches_do_not_count_in_the_statistics(data_bin, batch, name):
    """fairseq's dummy batches (ignore_grad) leave the running statistics as they were."""
    import copy

    from fairseq import optim

    cfg, task, model, criterion = build_training(_argv(data_bin, name))
    optimizer = optim.build_optimizer(cfg.optimizer, list(model.parameters()))
    task.train_step(batch, model, criterion, optimizer, 0)
    before = copy.deepcopy(task.persistent_state(name, dict))
    assert before["batches"] == 1
    task.train_step(batch, model, criterion, optimizer, 1, ignore_grad=True)
    _assert_same_state(task.persistent_state(name, dict), before)
    task.train_step(batch, model, criterion, optimizer, 1)
    assert task.persistent_state(name, dict)["batches"] == 2


@pytest.mark.parametrize("name", NAMES)
def test_loss_is_the_documented_combination_of_logged_components(data_bin, batch, name):
    torch.manual_seed(0)
    _, _, model, criterion = build_training(_argv(data_bin, name))
    model.train()  # dropout 0: deterministic
    with torch.no_grad():
        criterion(model, batch)  # fills the one-batch window
        loss, size, log = criterion(model, batch)
    per_token = float(loss) / size
    mle = float(log["mle"]) / size
    if name == "unlikelihood_dialog":
        assert per_token == pytest.approx(mle + 1000.0 * float(log["ul"]) / size, rel=1e-5)
    elif name == "negative_training":
        assert per_token == pytest.approx(mle + float(log["neg"]) / size, rel=1e-5)
    else:
        assert per_token == pytest.approx(_face_by_hand(model, batch, criterion.padding_idx, times=2), rel=1e-5)


def _face_by_hand(model, batch, pad, times, eps=0.1):
    """Σ_t w[y_t] CE_t / ntokens with the weights of FACE's output frequency (the batch counted
    ``times`` times), written out with python loops."""
    with torch.no_grad():
        lprobs = torch.log_softmax(model(**batch["net_input"])[0].double(), -1)
    eos, vocab = 2, lprobs.size(-1)
    counts = [0] * vocab
    for row_pred, row_tgt in zip(lprobs.argmax(-1).tolist(), batch["target"].tolist()):
        for p, t in zip(row_pred, row_tgt):
            if t == pad:
                break
            counts[p] += times
            if p == eos:
                break
    rf = [c / sum(counts) for c in counts]
    w = [1 - r / max(rf) for r in rf]
    w = [x * vocab / sum(w) for x in w]
    total = 0.0
    for b, row in enumerate(batch["target"].tolist()):
        for t, y in enumerate(row):
            if y != pad:
                lp = lprobs[b, t]
                ce = (1 - eps - eps / (vocab - 1)) * -float(lp[y]) + eps / (vocab - 1) * -float(lp.sum())
                total += w[y] * ce
    return total / batch["ntokens"]


def test_greedy_decoder_matches_fairseq_generate_beam_1(data_bin, teacher_checkpoint):
    from fairseq import checkpoint_utils
    from fairseq.sequence_generator import SequenceGenerator

    from nd_fairseq.decoding import greedy_decode

    _, task, _, _ = build_training(_argv(data_bin, "negative_training"))
    models, _ = checkpoint_utils.load_model_ensemble([str(teacher_checkpoint)], task=task)
    model = models[0].eval()
    sample = first_batch(task, "test", max_tokens=3000)
    generator = SequenceGenerator([model], task.target_dictionary, beam_size=1, max_len_a=0, max_len_b=12)
    hypotheses = generator.generate([model], sample)
    ours = greedy_decode(model, sample["net_input"]["src_tokens"], sample["net_input"]["src_lengths"], 12,
                         task.target_dictionary.eos(), task.target_dictionary.pad())
    pad = task.target_dictionary.pad()
    for row, hyps in zip(ours, hypotheses):
        assert row[row.ne(pad)].tolist() == hyps[0]["tokens"].tolist()
