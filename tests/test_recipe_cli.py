"""examples/pipeline.sh, the recipe driver, end to end on a small slice of chitchat-dataset.

A tiny model and a few updates per run: what is checked is the recipe's wiring (the runs, the
checkpoints each decode reads, the choice on the validation set made before any test decode, the
report), not its figures.
"""

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import REPO, cli_env, run_cli

pytestmark = pytest.mark.cli

TINY = ["--arch", "transformer_nd_dialog_tiny", "--vocab", "300", "--max-units", "60", "--max-valid-pairs", "40",
        "--max-test-pairs", "30", "--max-tokens", "1000", "--updates", "12", "--teacher-updates", "8",
        "--finetune-updates", "4", "--validations", "2", "--alphas", "0.5", "0.3", "--samples", "3"]


def test_recommended_recipe_end_to_end(tmp_path):
    work = tmp_path / "work"
    proc = run_cli(["bash", REPO / "examples" / "pipeline.sh", "--work", work, *TINY, "--modes", "greedy"],
                   timeout=900)
    out = proc.stdout
    results = json.loads((work / "results.json").read_text())
    greedy = results["modes"]["greedy"]
    # the choice was made on the validation decodes of every candidate, Standard and the control
    sel = greedy["selection"]
    assert set(sel["candidates"]) == {"nd_a0.5", "nd_a0.3"}
    assert set(sel["valid"]) == {"standard", "control", "nd_a0.5", "nd_a0.3"}
    nd = greedy["shown"][-1]
    assert greedy["shown"][:2] == ["standard", "control"] and nd in sel["candidates"]
    assert sel["chosen"] in (None, nd)
    # validation decodes for all, test decodes only for the systems shown
    gen = work / "generate"
    for system in ("standard", "control", "nd_a0.5", "nd_a0.3"):
        assert (gen / f"{system}.s1.greedy.valid.txt").exists()
    tested = {p.name.split(".s1.")[0] for p in gen.glob("*.greedy.test.txt")}
    assert tested == {"standard", "control", nd}
    # second-phase runs started from Standard's checkpoint and stopped after their 4 updates
    log = (work / "logs" / "control.s1.train.log").read_text()
    assert "--finetune-from-model" in log and str(work / "checkpoints" / "standard.s1" / "checkpoint_best.pt") in log
    assert (work / "checkpoints" / "control.s1" / "checkpoint_last.pt").exists()
    nd_log = (work / "logs" / f"{nd}.s1.train.log").read_text()
    assert "--fixed-alpha" in nd_log and "--nd-pred-weight 10" in nd_log
    # the report: table rows, the verdict line, three sample queries, the nd-chat command
    assert "| Standard |" in out and "| MLE control |" in out
    assert "Verdict (greedy): ND (α" in out and "vs MLE control: Dist-2" in out
    assert out.count("reference: ") == 3
    assert "nd-chat --model standard=" in out and f"--data {work / 'data-bin' / 'full'}" in out
    assert (work / "results.md").read_text().count("| Standard |") == 1
    # a rerun finds every step done and trains nothing
    again = run_cli(["bash", REPO / "examples" / "pipeline.sh", "--work", work, *TINY, "--modes", "greedy"])
    assert "finished standard.s1" in again.stdout  # the scheduler reports it, at once
    assert (work / "logs" / "standard.s1.train.log").read_text().count("$ ") == 1


def test_bad_options_are_one_line_errors(tmp_path):
    proc = run_cli(["bash", REPO / "examples" / "pipeline.sh", "--work", tmp_path, "--alphas", "1.5"], check=False)
    assert proc.returncode == 2 and "--alphas 1.5: each α must be in (0, 1]" in proc.stderr
    proc = run_cli(["bash", REPO / "examples" / "pipeline.sh", "--recipe", "best"], check=False)
    assert proc.returncode == 2 and "invalid choice: 'best'" in proc.stderr
    proc = run_cli(["bash", REPO / "examples" / "pipeline.sh", "--work", tmp_path, "--candidate", "no flags"],
                   check=False)
    assert proc.returncode == 2 and "--candidate 'no flags': give NAME=FLAGS" in proc.stderr


def test_candidates_are_the_alphas_then_the_named_ones():
    import importlib.util

    spec = importlib.util.spec_from_file_location("nd_recipe", REPO / "examples" / "recipe.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    a = recipe.parse_args(["--alphas", "0.5", "--candidate", "a0.3_noeos=--fixed-alpha 0.3 --nd-pred-skip-eos"])
    assert a.candidates == {
        "nd_a0.5": ["--fixed-alpha", "0.5", *recipe.ND_FLAGS],
        "nd_a0.3_noeos": ["--fixed-alpha", "0.3", "--nd-pred-skip-eos", *recipe.ND_FLAGS]}
    # the scale's own candidates come with its α list: α 0.5 and 0.3, each also without </s>
    assert list(recipe.parse_args([]).candidates) == ["nd_a0.5", "nd_a0.3", "nd_a0.5_noeos", "nd_a0.3_noeos"]
    assert recipe.parse_args([]).candidates["nd_a0.3_noeos"][:3] == ["--fixed-alpha", "0.3", "--nd-pred-skip-eos"]
    r = recipe.Recipe.__new__(recipe.Recipe)
    assert r.label("nd_a0.5") == "ND (α 0.5)" and r.label("nd_a0.3_noeos") == "ND (α 0.3, no </s>)" and r.label("nd_x") == "ND (x)"
    assert r.label("nd_paper") == "ND, paper recipe" and r.label("control") == "MLE control"


def test_sigterm_stops_the_runs_and_a_rerun_resumes(tmp_path):
    work = tmp_path / "work"
    args = ["bash", str(REPO / "examples" / "pipeline.sh"), "--work", str(work), *TINY, "--updates", "400",
            "--modes", "greedy"]
    proc = subprocess.Popen(args, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    log = work / "logs" / "standard.s1.train.log"
    deadline = time.time() + 300
    while time.time() < deadline and not (log.exists() and "train_inner" in log.read_text()):
        time.sleep(1)
    assert log.exists(), "Standard never started"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted; rerun the same command to resume" in err
    # no fairseq process of this run is left
    time.sleep(1)
    left = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True).stdout.split()
    assert left == [], left
    os.killpg(proc.pid, signal.SIGKILL) if left else None
