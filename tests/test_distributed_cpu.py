"""Negative distillation under fairseq's own distributed data-parallel training, on CPU (gloo)."""

import json
import shutil

import pytest

from conftest import BIN, REPO, TINY_MODEL, USER_DIR, run_cli

pytestmark = pytest.mark.cli

PROBE = REPO / "tests" / "helpers" / "train_probe.py"
NO_DROPOUT = ["--dropout", "0", "--attention-dropout", "0", "--activation-dropout", "0"]


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _args(data_bin, teacher, save_dir):
    return [data_bin / "full", "--user-dir", USER_DIR, "--task", "negative_distillation", *TINY_MODEL,
            *NO_DROPOUT, "--cpu", "--criterion", "negative_distillation", "--nd-teacher-path", teacher,
            "--alpha-gamma", "1", "--alpha-lambda", "2", "--optimizer", "adam", "--lr", "1e-3",
            "--max-tokens", "600", "--max-update", "3", "--seed", "7", "--save-dir", save_dir,
            "--no-progress-bar", "--log-interval", "1", "--disable-validation", "--no-save",
            "--num-workers", "0", "--required-batch-size-multiple", "1"]


@pytest.fixture(scope="module")
def runs(data_bin, teacher_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    (root / "ddp").mkdir()
    (root / "single").mkdir()
    torchrun = str(BIN / "torchrun") if (BIN / "torchrun").exists() else shutil.which("torchrun")
    run_cli([torchrun, "--nproc_per_node", "2", "--master_port", "29517", PROBE, root / "ddp",
             *_args(data_bin, teacher_checkpoint, root / "ddp_ckpt")], timeout=600)
    # the same global batches in one process: two micro-batches per update
    run_cli([str(BIN / "python"), PROBE, root / "single",
             *_args(data_bin, teacher_checkpoint, root / "single_ckpt"), "--update-freq", "2"], timeout=600)
    return root


def test_both_ranks_train_with_their_own_frozen_teacher(runs, teacher_checkpoint):
    for rank in (0, 1):
        recs = _records(runs / "ddp" / f"rank{rank}.jsonl")
        assert [r["update"] for r in recs] == [1, 2, 3]
        assert all(r["world"] == 2 for r in recs)
        assert all(r["teacher"] == str(teacher_checkpoint) and r["teacher_training"] is False for r in recs)


def test_parameters_are_identical_across_ranks_after_every_update(runs):
    r0 = _records(runs / "ddp" / "rank0.jsonl")
    r1 = _records(runs / "ddp" / "rank1.jsonl")
    for a, b in zip(r0, r1):
        assert a["checksum"] == b["checksum"] and a["abs"] == b["abs"] and a["head"] == b["head"]
        assert a["loss"] == b["loss"]  # the logged loss is all-reduced


def test_distributed_run_matches_single_process_on_the_same_global_batch(runs):
    ddp = _records(runs / "ddp" / "rank0.jsonl")
    single = _records(runs / "single" / "rank0.jsonl")
    assert [r["update"] for r in single] == [1, 2, 3] and single[0]["world"] == 1
    for a, b in zip(ddp, single):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-3)
        assert a["abs"] == pytest.approx(b["abs"], rel=1e-5)
        assert a["head"] == pytest.approx(b["head"], rel=1e-4, abs=1e-6)


def test_distributed_resume_loads_the_checkpoint_on_every_rank(data_bin, teacher_checkpoint, tmp_path):
    """Rank 0 loads checkpoint_last.pt and broadcasts it (safe unpickling on the other rank)."""
    torchrun = str(BIN / "torchrun") if (BIN / "torchrun").exists() else shutil.which("torchrun")
    args = [a for a in _args(data_bin, teacher_checkpoint, tmp_path / "ckpt") if a != "--no-save"]
    args[args.index("--max-update") + 1] = "2"
    run_cli([torchrun, "--nproc_per_node", "2", "--master_port", "29519", PROBE, tmp_path, *args], timeout=600)
    args[args.index("--max-update") + 1] = "4"
    proc = run_cli([torchrun, "--nproc_per_node", "2", "--master_port", "29521", PROBE, tmp_path, *args],
                   timeout=600)
    assert "Loaded checkpoint" in proc.stdout + proc.stderr
    for rank in (0, 1):
        assert [r["update"] for r in _records(tmp_path / f"rank{rank}.jsonl")] == [1, 2, 3, 4]
