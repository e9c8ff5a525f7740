"""End to end through the real command-line tools: preprocess.sh, fairseq-train, fairseq-generate."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from conftest import TINY_MODEL, TRAIN_COMMON, USER_DIR, build_training, run_cli

pytestmark = pytest.mark.cli


def _lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def test_preprocess_builds_full_negative_and_bottom_with_one_dictionary(data_bin, chitchat_text):
    n = len(_lines(chitchat_text / "train.query"))
    for name in ("full", "negative", "bottom"):
        assert (data_bin / name / "train.query-response.query.bin").is_file()
        assert (data_bin / name / "dict.query.txt").read_bytes() == (data_bin / "full" / "dict.query.txt").read_bytes()
        assert (data_bin / name / "dict.response.txt").read_bytes() == (data_bin / "full" / "dict.query.txt").read_bytes()
    scores = [float(x) for x in _lines(data_bin / "full" / "train.entropy")]
    assert len(scores) == n
    summary = json.loads((data_bin / "full" / "entropy.summary.json").read_text())
    assert summary["top"] == -(-n // 2) and summary["bottom"] == n // 2
    log = (data_bin / "negative" / "preprocess.log").read_text()
    assert f"{summary['top']} sents" in log


def test_preprocess_is_idempotent_and_checks_inputs(data_bin, chitchat_text, tmp_path):
    before = (data_bin / "full" / "train.query-response.query.bin").stat().st_mtime_ns
    proc = run_cli(["bash", "preprocess.sh", "--text-dir", chitchat_text, "--work-dir", data_bin.parent / "work",
                    "--dest", data_bin, "--vocab-size", "600", "--key", "prefix:3", "--bottom", "--workers", "1"])
    assert "up to date" in proc.stdout
    assert (data_bin / "full" / "train.query-response.query.bin").stat().st_mtime_ns == before
    proc = run_cli(["bash", "preprocess.sh", "--text-dir", tmp_path / "missing", "--dest", tmp_path / "out"], check=False)
    assert proc.returncode == 2
    assert "missing" in proc.stderr and "nd-prepare" in proc.stderr
    assert not (tmp_path / "out" / "full").exists()


def test_entropy_subset_inside_fairseq_matches_the_script_negative_set(data_bin):
    argv = [data_bin / "full", "--user-dir", USER_DIR, "--task", "negative_distillation", *TINY_MODEL,
            "--criterion", "label_smoothed_cross_entropy", "--entropy-subset", "top"]
    _, task, _, _ = build_training(argv)
    task.load_dataset("train")
    subset = task.dataset("train")
    argv_neg = [data_bin / "negative", "--user-dir", USER_DIR, "--task", "negative_distillation", *TINY_MODEL,
                "--criterion", "label_smoothed_cross_entropy"]
    _, neg_task, _, _ = build_training(argv_neg)
    neg_task.load_dataset("train")
    negative = neg_task.dataset("train")
    assert len(subset) == len(negative)
    for i in range(len(subset)):
        assert torch.equal(subset[i]["source"], negative[i]["source"])
        assert torch.equal(subset[i]["target"], negative[i]["target"])
    # and it batches: sizes, ordering and size filtering go through the wrapper
    itr = task.get_batch_iterator(dataset=subset, max_tokens=800, max_positions=(40, 40),
                                  ignore_invalid_inputs=True).next_epoch_itr(shuffle=True)
    ids = torch.cat([b["id"] for b in itr])
    assert len(ids) > 0 and len(set(ids.tolist())) == len(ids)


def _train(data_dir, save_dir, *extra, updates=6):
    return run_cli(["fairseq-train", data_dir, *TRAIN_COMMON, *TINY_MODEL, "--max-update", str(updates),
                    "--save-dir", save_dir, *extra])


def _json_records(stdout_and_err, tag):
    records = []
    for line in stdout_and_err.splitlines():
        start = line.find("{")
        if start >= 0 and f"| {tag} |" in line[:start + 1]:
            records.append(json.loads(line[start:]))
    return records


def _generate(data_dir, checkpoint, *extra):
    return run_cli(["fairseq-generate", data_dir, "--user-dir", USER_DIR, "--path", checkpoint,
                    "--gen-subset", "test", "--batch-size", "32", "--max-len-b", "20", "--remove-bpe",
                    "sentencepiece", *extra])


def test_student_trains_generates_and_outlives_its_teacher(data_bin, teacher_checkpoint, tmp_path):
    teacher = tmp_path / "teacher.pt"
    shutil.copy(teacher_checkpoint, teacher)
    save = tmp_path / "student"
    proc = _train(data_bin / "full", save, "--criterion", "negative_distillation", "--nd-teacher-path", teacher,
                  "--alpha-gamma", "3", "--max-valid-steps", "2", "--no-epoch-checkpoints", updates=6)
    inner = _json_records(proc.stderr + proc.stdout, "train_inner")
    assert len(inner) == 6
    for rec in inner:
        for key in ("loss", "nll_loss", "mle", "pred", "hid", "att", "alpha"):
            assert key in rec, (key, rec)
    valid = _json_records(proc.stderr + proc.stdout, "valid")
    assert valid and "hid" not in valid[-1]  # validation reports the MLE loss only
    ckpt = torch.load(save / "checkpoint_last.pt", weights_only=False)
    assert not any("teacher" in k for k in ckpt["model"])
    assert ckpt["criterion"] is None
    n_test = len((data_bin.parent / "work" / "spm" / "test.query").read_text().splitlines())
    for extra in (["--beam", "1"], ["--beam", "5", "--lenpen", "1.2"]):
        out = _generate(data_bin / "full", save / "checkpoint_best.pt", *extra).stdout
        hyps = [l for l in out.splitlines() if l.startswith("H-")]
        assert len(hyps) == n_test
    teacher.unlink()
    out = _generate(data_bin / "full", save / "checkpoint_last.pt", "--beam", "1").stdout
    assert len([l for l in out.splitlines() if l.startswith("H-")]) == n_test


def test_resume_continues_the_alpha_schedule(data_bin, teacher_checkpoint, tmp_path):
    common = ["--criterion", "negative_distillation", "--nd-teacher-path", teacher_checkpoint,
              "--alpha-gamma", "4", "--alpha-lambda", "2", "--disable-validation", "--no-epoch-checkpoints",
              "--save-interval-updates", "3"]
    straight = _train(data_bin / "full", tmp_path / "a", *common, updates=6)
    alphas = [float(r["alpha"]) for r in _json_records(straight.stderr + straight.stdout, "train_inner")]
    assert len(alphas) == 6
    first = _train(data_bin / "full", tmp_path / "b", *common, updates=3)
    resumed = _train(data_bin / "full", tmp_path / "b", *common, updates=6)
    assert "Loaded checkpoint" in resumed.stderr + resumed.stdout
    a2 = [float(r["alpha"]) for r in _json_records(first.stderr + first.stdout, "train_inner")]
    a2 += [float(r["alpha"]) for r in _json_records(resumed.stderr + resumed.stdout, "train_inner")]
    assert a2 == pytest.approx(alphas, abs=1e-4)
    # the schedule itself: update s (0-based) logs α(s) = 2 e^-z / (e^-z + 1)^2 with z = 1.5 (s - 4)
    expected = [2 * np.exp(-1.5 * (s - 4)) / (np.exp(-1.5 * (s - 4)) + 1) ** 2 for s in range(6)]
    assert alphas == pytest.approx(expected, abs=1e-4)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_generate_refuses_a_checkpoint_with_a_foreign_pickled_object(data_bin, teacher_checkpoint, tmp_path):
    state = torch.load(teacher_checkpoint, weights_only=False)
    state["extra_state"]["payload"] = Evil()
    bad = tmp_path / "evil.pt"
    torch.save(state, bad)
    proc = run_cli(["fairseq-generate", data_bin / "negative", "--user-dir", USER_DIR, "--path", bad,
                    "--gen-subset", "test", "--batch-size", "8", "--max-len-b", "5"], check=False)
    assert proc.returncode != 0
    assert "pwned" not in proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert "refused to load checkpoint" in last and "evil.pt" in last and "'posix.system'" in last


def test_generate_loads_a_normal_checkpoint_safely(data_bin, teacher_checkpoint):
    out = _generate(data_bin / "negative", teacher_checkpoint, "--beam", "2").stdout
    assert any(l.startswith("H-") for l in out.splitlines())
