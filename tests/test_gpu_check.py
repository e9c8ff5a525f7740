"""benchmarks/gpu_check.sh and its parts (benchmarks/gpu_check.py) on the CPU.

The parts run here on the shared tiny data and teacher; the whole ``--device cpu`` dry run (its own
data preparation and teacher, ~2 minutes on 2 busy cores) runs when ND_GPU_CHECK_DRY_RUN=1.
"""

import json
import os
import sys

import pytest
import torch

from conftest import REPO, TINY_MODEL, run_cli

HELPER = REPO / "benchmarks" / "gpu_check.py"
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
TINY = "transformer_nd_dialog_tiny"
SIZES = " ".join(TINY_MODEL[2:])  # the conftest teacher's sizes


def helper(*args, check=False):
    return run_cli([sys.executable, HELPER, *args], check=check, timeout=600)


def record(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def trained(data_bin, teacher_checkpoint, tmp_path_factory):
    """The train part: 3 ND updates in float32 on the CPU (α fixed at 0.5)."""
    work = tmp_path_factory.mktemp("gpu_check")
    out = work / "train_fp32.json"
    proc = helper("train", "--device", "cpu", "--data", data_bin / "full", "--teacher", teacher_checkpoint,
                  "--arch", TINY, "--model-args", SIZES, "--precision", "fp32", "--updates", "3", "--max-tokens", "1500",
                  "--save-dir", work / "nd", "--out", out, "--label", "cpu dry run")
    return work, proc, out


def test_components_part_compares_every_term(data_bin, teacher_checkpoint, tmp_path):
    out = tmp_path / "components.json"
    proc = helper("components", "--device", "cpu", "--data", data_bin / "full", "--teacher", teacher_checkpoint,
                  "--arch", TINY, "--model-args", SIZES, "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = record(out)
    assert rec["ok"] and rec["part"] == "components"
    assert set(rec["cpu"]) == {"loss", "mle", "pred", "hid", "att", "grad_norm"}
    # α = 0.5: the total is half L_mle plus half the three negative terms
    c = rec["cpu"]
    assert c["loss"] == pytest.approx(0.5 * c["mle"] + 0.5 * (c["pred"] + c["hid"] + c["att"]), rel=1e-5)
    assert rec["max_rel_diff"] == 0.0  # CPU against CPU: the same numbers
    assert all(v > 0 for v in c.values())


def test_train_part_trains_and_reads_the_log(trained):
    _, proc, out = trained
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = record(out)
    assert rec["ok"] and rec["updates"] == 3 and rec["precision"] == "fp32"
    assert rec["loss_scale_min"] is None  # float32: no loss scaler
    assert rec["label"] == "cpu dry run" and rec["summary"].startswith("3 updates, loss ")


def test_train_part_fails_on_a_broken_run(data_bin, teacher_checkpoint, tmp_path):
    """A student whose decoder does not match the teacher: fairseq-train stops, the record says so."""
    out = tmp_path / "train_bad.json"
    proc = helper("train", "--device", "cpu", "--data", data_bin / "full", "--teacher", teacher_checkpoint,
                  "--arch", "transformer_nd_dialog_small", "--updates", "2", "--save-dir", tmp_path / "nd",
                  "--out", out)
    assert proc.returncode == 1
    rec = record(out)
    assert not rec["ok"] and any(p.startswith("exit ") for p in rec["problems"])
    assert "decoder layers" in rec["summary"] or "embed dim" in rec["summary"], rec["summary"]


@pytest.mark.parametrize("beam", [1, 5])
def test_generate_part_on_the_trained_checkpoint(trained, data_bin, beam):
    work, proc, _ = trained
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = work / f"generate_{beam}.json"
    proc = helper("generate", "--device", "cpu", "--data", data_bin / "full", "--checkpoint",
                  work / "nd" / "checkpoint_last.pt", "--beam", str(beam), "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = record(out)
    # the conftest slice has 60 test pairs; every one gets a hypothesis
    assert rec["ok"] and rec["sentences"] == 60 and rec["hypotheses"] == 60


def test_bench_part_reports_ratios(tmp_path):
    out = tmp_path / "bench.json"
    proc = helper("bench", "--device", "cpu", "--size", "tiny", "--precision", "bf16", "--configs", "mle,nd",
                  "--steps", "2", "--work", tmp_path, "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = record(out)
    assert rec["ok"] and rec["precision"] == "bf16"
    assert rec["nd_mle_ratio"] == pytest.approx(rec["bench"]["seconds"]["nd"] / rec["bench"]["seconds"]["mle"])
    assert rec["mem_ratio"] > 0 and set(rec["updates_per_s"]) == {"mle", "nd"}


def test_summary_fails_on_a_missing_or_failed_part(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"part": "a", "ok": True, "summary": "fine"}))
    (tmp_path / "b.json").write_text(json.dumps({"part": "b", "ok": False, "summary": "broke"}))
    out = tmp_path / "all.json"
    proc = helper("summary", "--device", "cpu", "--dir", tmp_path, "--expect", "a,b,c", "--json", out,
                  "--skipped", "d", "--skip-reason", "needs CUDA")
    assert proc.returncode == 1
    rows = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines()
            if line.split() and line.split()[0] in "abcd"}
    assert rows == {"a": "ok", "b": "FAIL", "c": "FAIL", "d": "skip"}
    res = record(out)
    assert res["failed"] == ["b", "c"] and not res["ok"] and res["parts"]["d"]["skipped"]
    proc = helper("summary", "--device", "cpu", "--dir", tmp_path, "--expect", "a", "--json", out)
    assert proc.returncode == 0 and record(out)["ok"]


@pytest.mark.parametrize("args,message", [
    (["--device", "tpu"], "gpu_check.sh: --device must be cuda or cpu, got 'tpu'"),
    (["--updates", "0"], "gpu_check.sh: --updates must be a positive integer, got '0'"),
    (["--frobnicate"], "gpu_check.sh: unknown option --frobnicate; see --help"),
])
def test_script_usage_errors(args, message):
    proc = run_cli(["bash", SCRIPT, *args], check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == message


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_script_without_cuda_points_to_the_dry_run():
    proc = run_cli(["bash", SCRIPT], check=False)
    assert proc.returncode == 2
    assert "no CUDA device visible to torch; run 'bash benchmarks/gpu_check.sh --device cpu'" in proc.stderr


@pytest.mark.skipif(os.environ.get("ND_GPU_CHECK_DRY_RUN") != "1",
                    reason="the whole dry run takes ~2 minutes; ND_GPU_CHECK_DRY_RUN=1 runs it")
def test_whole_cpu_dry_run(tmp_path):
    proc = run_cli(["bash", SCRIPT, "--device", "cpu", "--work-dir", tmp_path], check=False, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = record(tmp_path / "gpu_check.json")
    assert res["ok"] and not res["failed"]
    ran = {n for n, r in res["parts"].items() if not r.get("skipped")}
    assert ran == {"components", "train_fp32", "bench_tiny_bf16", "generate_greedy", "generate_beam5"}
    assert {n for n, r in res["parts"].items() if r.get("skipped")} == {
        "train_fp16", "train_bf16", "train_amp", "bench_small_fp16", "bench_paper_fp16"}
