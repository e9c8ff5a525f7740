"""examples/pipeline.sh, the recipe driver, end to end on a small slice of chitchat-dataset.

A tiny model and a few updates per run: what is checked is the recipe's wiring (the runs, the
checkpoints each decode reads, the choice on the validation set made before any test decode, the
report), not its figures.
"""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import REPO, cli_env, run_cli

pytestmark = pytest.mark.cli

TINY = ["--arch", "transformer_nd_dialog_tiny", "--vocab", "300", "--max-units", "60", "--max-valid-pairs", "40",
        "--max-test-pairs", "30", "--max-tokens", "1000", "--updates", "12", "--teacher-updates", "8",
        "--finetune-updates", "4", "--validations", "2", "--alphas", "0.5", "0.3", "--samples", "3"]


@pytest.fixture(scope="module")
def recommended(tmp_path_factory):
    """The recommended recipe on tiny data, greedy decoding: (its --work, its stdout)."""
    work = tmp_path_factory.mktemp("recipe") / "work"
    proc = run_cli(["bash", REPO / "examples" / "pipeline.sh", "--work", work, *TINY, "--modes", "greedy"],
                   timeout=900)
    return work, proc.stdout


def test_recommended_recipe_end_to_end(recommended):
    work, out = recommended
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


def test_the_report_gives_bleu4_intervals_on_the_test_decodes(recommended, tmp_path):
    """The tiny models match no reference word (BLEU-4 0: no ratio), so a copy of the finished run
    gets hand-made test decodes: Standard and the control repeat each reference, the shown student
    says its first half. The rerun only reports, and its intervals are computed by hand."""
    import math

    work, _ = recommended
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    nd = json.loads((copy / "results.json").read_text())["modes"]["greedy"]["shown"][-1]
    # one decode line per test query (the report's sample replies index them), references of 8 words
    n = len((copy / "text" / "test.query").read_text().splitlines())
    refs = [" ".join(f"{w}{i}" for w in "abcdefgh") for i in range(n)]
    for system in ("standard", "control", nd):
        lines = []
        for i, ref in enumerate(refs):
            hyp = ref if system != nd else " ".join(ref.split()[:4])
            lines += [f"S-{i}\tquery {i}", f"T-{i}\t{ref}", f"H-{i}\t-0.5\t{hyp}", f"D-{i}\t-0.5\t{hyp}"]
        (copy / "generate" / f"{system}.s1.greedy.test.txt").write_text("\n".join(lines) + "\n")
    out = run_cli(["bash", REPO / "examples" / "pipeline.sh", "--work", copy, *TINY, "--modes", "greedy"]).stdout
    intervals = json.loads((copy / "results.json").read_text())["modes"]["greedy"]["bleu-4_intervals"]
    # 4 of 8 reference words, every n-gram matching: BLEU-4 is the penalty exp(1 - 8/4) on every
    # sentence and every resample; the precisions alone are equal to the references'
    assert set(intervals) == {"standard", "control"}
    for other in ("standard", "control"):
        bleu, precisions = intervals[other]["bleu-4"], intervals[other]["precisions"]
        assert (bleu["ratio"], bleu["low"], bleu["high"]) == pytest.approx((math.exp(-1),) * 3)
        assert (precisions["ratio"], precisions["low"], precisions["high"]) == pytest.approx((1.0,) * 3)
    assert "95% intervals over 2000 paired resamples of the test sentences" in out
    assert out.count("x0.37 [0.37, 0.37], without the brevity penalty x1.00 [1.00, 1.00]") == 2


def test_the_validation_rule_reads_bleu4_intervals_on_the_validation_decodes(recommended, tmp_path):
    """A copy of the finished run gets hand-made validation decodes (the tiny models match no
    reference word): Standard and the control repeat each reference; α 0.5 gives half of it on one
    sentence in eight and all of it elsewhere; α 0.3 all of it and five words more (too long beside
    the control). The rerun chooses again from these, with the Dist-2 floors off."""
    import math

    work, _ = recommended
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    n = len([line for line in (work / "generate" / "standard.s1.greedy.valid.txt").read_text().splitlines()
             if line.startswith("H-")])
    refs = [" ".join(f"{w}{i}" for w in "abcdefgh") for i in range(n)]
    replies = {"standard": refs, "control": refs,
               "nd_a0.5": [" ".join(r.split()[:4]) if i % 8 == 0 else r for i, r in enumerate(refs)],
               "nd_a0.3": [r + " v w x y z" for r in refs]}
    for system, hyps in replies.items():
        lines = []
        for i, (ref, hyp) in enumerate(zip(refs, hyps)):
            lines += [f"S-{i}\tquery {i}", f"T-{i}\t{ref}", f"H-{i}\t-0.5\t{hyp}", f"D-{i}\t-0.5\t{hyp}"]
        (copy / "generate" / f"{system}.s1.greedy.valid.txt").write_text("\n".join(lines) + "\n")
    out = run_cli(["bash", REPO / "examples" / "pipeline.sh", "--work", copy, *TINY, "--modes", "greedy",
                   "--select-dist2", "0", "0"]).stdout
    sel = json.loads((copy / "results.json").read_text())["modes"]["greedy"]["selection"]
    # α 0.5: every n-gram of its replies is in the reference; the half replies lose the brevity
    # penalty exp(1 - 8/4) = exp(-1), so its ratio is the share of full replies plus exp(-1) times
    # the share of half ones: below 0.95, but its 95% interval over 2000 resamples reaches 0.95
    halves = len(range(0, n, 8))
    expected = ((n - halves) + halves * math.exp(-1)) / n
    a05 = sel["candidates"]["nd_a0.5"]
    assert a05["bleu-4_ratio"] == pytest.approx(expected) and expected < 0.95
    low, high = a05["bleu-4_interval"][1:]
    assert low < expected < 0.95 <= high
    assert a05["eligible"] and a05["checks"]["bleu-4"]
    # α 0.3: 13 tokens against the control's 8 (> 1.5 x), out whatever its BLEU-4
    assert sel["candidates"]["nd_a0.3"]["checks"]["length"] is False
    assert sel["name"] == "max-bleu" and sel["chosen"] == "nd_a0.5"
    # the earlier rule reads the point ratio, x0.92, and chooses none; the report says both
    assert sel["other_rule"]["name"] == "max-dist2" and sel["other_rule"]["chosen"] is None
    assert "chosen on the validation set: ND (α 0.5)" in out
    assert f"BLEU-4 x{expected:.2f} [{low:.2f}, {high:.2f}]" in out
    assert "(for the record, the max-dist2 rule" in out and "would choose: none)" in out
    proc = run_cli(["bash", REPO / "examples" / "pipeline.sh", "--work", copy, "--select-dist2", "-1", "0"],
                   check=False)
    assert proc.returncode == 2 and "--select-dist2: give two multiples of at least 0" in proc.stderr


def test_bad_options_are_one_line_errors(tmp_path):
    proc = run_cli(["bash", REPO / "examples" / "pipeline.sh", "--work", tmp_path, "--alphas", "1.5"], check=False)
    assert proc.returncode == 2 and "--alphas 1.5: each α must be in (0, 1]" in proc.stderr
    proc = run_cli(["bash", REPO / "examples" / "pipeline.sh", "--recipe", "best"], check=False)
    assert proc.returncode == 2 and "invalid choice: 'best'" in proc.stderr
    proc = run_cli(["bash", REPO / "examples" / "pipeline.sh", "--work", tmp_path, "--candidate", "no flags"],
                   check=False)
    assert proc.returncode == 2 and "--candidate 'no flags': give NAME=FLAGS" in proc.stderr
    for args, message in (
            (["--baselines", "ul", "bleu"], "argument --baselines: invalid choice: 'bleu'"),
            # the default --ablate, a0.3_noeos, is not a candidate when --alphas is given
            (["--baselines", "ablations", "--alphas", "0.5"],
             "--ablate a0.3_noeos: not an ND candidate of this run (a0.5); name one of them"),
            (["--baselines", "ablations", "--ablate", "a0.7"],
             "--ablate a0.7: not an ND candidate of this run (a0.3, a0.5_noeos, a0.3_noeos, a0.3_eos0.25, "
             "a0.3_eos0.5, a0.3_eos0.75)"),
            (["--baselines", "ablations", "--ablation-seeds", "2"], "--ablation-seeds 2: each must be one of --seeds (1)"),
            (["--recipe", "paper", "--baselines", "paper"], "--baselines paper: under --recipe paper")):
        proc = run_cli(["bash", REPO / "examples" / "pipeline.sh", "--work", tmp_path / "w", *args], check=False)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, (args, proc.stderr)
    assert not (tmp_path / "w").exists()


def test_candidates_are_the_alphas_then_the_named_ones():
    import importlib.util

    spec = importlib.util.spec_from_file_location("nd_recipe", REPO / "examples" / "recipe.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    a = recipe.parse_args(["--alphas", "0.5", "--candidate", "a0.3_noeos=--fixed-alpha 0.3 --nd-pred-skip-eos"])
    assert a.candidates == {
        "nd_a0.5": ["--fixed-alpha", "0.5", *recipe.ND_FLAGS],
        "nd_a0.3_noeos": ["--fixed-alpha", "0.3", "--nd-pred-skip-eos", *recipe.ND_FLAGS]}
    # the scale's own candidates come with its α list: α 0.3, then α 0.5 and 0.3 without </s>, and
    # α 0.3 with </s> weighing a quarter, a half and three quarters
    assert list(recipe.parse_args([]).candidates) == ["nd_a0.3", "nd_a0.5_noeos", "nd_a0.3_noeos",
                                                      "nd_a0.3_eos0.25", "nd_a0.3_eos0.5", "nd_a0.3_eos0.75"]
    for w in ("0.25", "0.5", "0.75"):
        assert recipe.parse_args([]).candidates[f"nd_a0.3_eos{w}"][:4] == ["--fixed-alpha", "0.3",
                                                                           "--nd-pred-eos-weight", w]
    assert recipe.parse_args([]).candidates["nd_a0.3_noeos"][:3] == ["--fixed-alpha", "0.3", "--nd-pred-skip-eos"]
    r = recipe.Recipe.__new__(recipe.Recipe)
    assert r.label("nd_a0.5") == "ND (α 0.5)" and r.label("nd_a0.3_noeos") == "ND (α 0.3, no </s>)" and r.label("nd_x") == "ND (x)"
    assert r.label("nd_a0.3_eos0.25") == "ND (α 0.3, </s> x 0.25)" and r.label("nd_a0.3_eosx") == "ND (a0.3_eosx)"
    assert r.label("nd_paper") == "ND, paper recipe" and r.label("control") == "MLE control"
    assert [r.label(s) for s in ("ul", "nt", "face")] == ["UL", "NT", "FACE"]
    assert r.label("nd_a0.3_noeos_no_pred") == "ND (α 0.3, no </s>) w/o L_pred"
    assert r.label("nd_paper_no_hid") == "ND, paper recipe w/o L_hid"
    # the README main job has no baselines; the ablations default to the first seed and to a0.3_noeos
    assert recipe.parse_args([]).baselines == []
    a = recipe.parse_args(["--seeds", "2", "3", "--baselines", "ablations", "nt", "nt"])
    assert a.ablation_seeds == [2] and a.ablate == "nd_a0.3_noeos" and a.baselines == ["ablations", "nt"]


def test_where_no_candidate_is_chosen_the_reference_one_is_shown():
    import importlib.util

    spec = importlib.util.spec_from_file_location("nd_recipe", REPO / "examples" / "recipe.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    defaults = recipe.parse_args([])
    cands = list(defaults.candidates)
    assert defaults.reference == "nd_a0.3_noeos" and cands[-1] == "nd_a0.3_eos0.75"
    # the rule's choice wins; with none, the reference, not the last candidate of the list
    assert recipe.shown_candidate("nd_a0.5", cands, defaults.reference) == "nd_a0.5"
    assert recipe.shown_candidate(None, cands, defaults.reference) == "nd_a0.3_noeos"
    # --alphas leaves the reference out: then the last α given
    only = recipe.parse_args(["--alphas", "0.5", "0.2"])
    assert recipe.shown_candidate(None, list(only.candidates), only.reference) == "nd_a0.2"
    # --ablate names what is ablated, not what is shown
    other = recipe.parse_args(["--baselines", "ablations", "--ablate", "a0.5_noeos"])
    assert other.ablate == "nd_a0.5_noeos" and other.reference == "nd_a0.3_noeos"
    assert recipe.parse_args(["--scale", "paper"]).reference == "nd_a0.3"


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


def commands(log) -> list:
    return [line for line in log.read_text().splitlines() if line.startswith("$ ")]


def test_baselines_added_to_a_finished_run_train_only_themselves(recommended, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(recommended[0], work)
    logs = work / "logs"
    before = {p.name: len(commands(p)) for p in logs.glob("*.log")}
    proc = run_cli(["bash", REPO / "examples" / "pipeline.sh", "--work", work, *TINY, "--modes", "greedy",
                    "--baselines", "ul", "nt", "face", "paper", "ablations", "--ablate", "a0.3"], timeout=900)
    # nothing of the finished run was trained or decoded again
    for name, n in before.items():
        if not name.startswith("prepare") and not name.startswith("preprocess"):
            assert len(commands(logs / name)) == n, name
    std = str(work / "checkpoints" / "standard.s1" / "checkpoint_best.pt")
    teacher = str(work / "checkpoints" / "teacher.s1" / "checkpoint_best.pt")
    # UL, NT and FACE: the control's second phase (4 updates from Standard's checkpoint) with their criterion
    for system, criterion in (("ul", "unlikelihood_dialog"), ("nt", "negative_training"), ("face", "face")):
        [cmd] = commands(logs / f"{system}.s1.train.log")
        assert f"--criterion {criterion} --label-smoothing 0.1" in cmd and f"--finetune-from-model {std}" in cmd
        assert "--max-update 4 " in cmd and "--lr-scheduler fixed" in cmd
        assert f"loading pretrained model from {std}" in (logs / f"{system}.s1.train.log").read_text()
        assert f"checkpoints/{system}.s1/checkpoint_last.pt" in commands(logs / f"{system}.s1.generate.log")[0]
    # the paper-recipe student: from scratch, progressive α, 12 updates, read at its best checkpoint
    [cmd] = commands(logs / "nd_paper.s1.train.log")
    assert "--criterion negative_distillation" in cmd and "--alpha-lambda 4 --alpha-gamma 6" in cmd
    assert "--finetune-from-model" not in cmd and "--max-update 12 " in cmd and teacher in cmd
    assert "checkpoints/nd_paper.s1/checkpoint_best.pt" in commands(logs / "nd_paper.s1.generate.log")[0]
    # the ablations: the α 0.3 candidate's run with one loss left out each
    [nd_cmd] = commands(logs / "nd_a0.3.s1.train.log")
    for suffix, flag in (("no_pred", "--nd-no-pred-loss"), ("no_att", "--nd-no-att-loss"), ("no_hid", "--nd-no-hid-loss")):
        [cmd] = commands(logs / f"nd_a0.3_{suffix}.s1.train.log")
        assert f" {flag} " in cmd and f"--finetune-from-model {std}" in cmd and "--fixed-alpha 0.3" in cmd
        assert cmd.replace(f" {flag} ", " ").replace(f"nd_a0.3_{suffix}.s1", "nd_a0.3.s1") == \
            nd_cmd.replace(str(recommended[0]), str(work))
    baselines = ["ul", "nt", "face", "nd_paper", "nd_a0.3_no_pred", "nd_a0.3_no_att", "nd_a0.3_no_hid"]
    for system in baselines:  # decoded on the validation and the test set
        assert (work / "generate" / f"{system}.s1.greedy.valid.txt").exists()
        assert (work / "generate" / f"{system}.s1.greedy.test.txt").exists()
    # never candidates: the choice and the systems it shows are those of the run without baselines
    greedy = json.loads((work / "results.json").read_text())["modes"]["greedy"]
    first = json.loads((recommended[0] / "results.json").read_text())["modes"]["greedy"]
    assert set(greedy["selection"]["candidates"]) == {"nd_a0.5", "nd_a0.3"}
    assert greedy["selection"]["chosen"] == first["selection"]["chosen"] and greedy["shown"] == first["shown"]
    assert list(greedy["test"]) == [*first["shown"], *baselines] and greedy["baselines"] == baselines
    assert greedy["test"]["standard"] == first["test"]["standard"]
    assert set(greedy["baselines_valid"]) == set(baselines)
    assert greedy["verdict"] == first["verdict"]
    # the Table-3 block: the ND row, then one row per baseline
    md = (work / "results.md").read_text()
    labels = ["UL", "NT", "FACE", "ND, paper recipe", "ND (α 0.3) w/o L_pred", "ND (α 0.3) w/o L_att",
              "ND (α 0.3) w/o L_hid"]
    rows = [line.split(" | ")[0][2:] for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1:] == ["Standard", "MLE control", rows[3], *labels]
    assert "Against the baselines (greedy): ND (α" in proc.stdout and "vs UL: Dist-2" in proc.stdout
    assert "vs ND (α 0.3) w/o L_hid: Dist-2" in proc.stdout
