"""The experiment runner's job graph and log reading (no training: the runs themselves are the
CLI tests' business)."""

import importlib.util
import math
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parents[1] / "examples" / "chitchat" / "experiment.py"


@pytest.fixture(scope="module")
def runner():
    spec = importlib.util.spec_from_file_location("nd_experiment_runner", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def jobs_of(runner, tmp_path, *argv):
    args = runner.parse_args(["--out", str(tmp_path), "--updates", "1000", "--finetune-updates", "300", *argv])
    return {job.name: job for job in runner.Experiment(args).jobs()}, runner.Experiment(args)


def test_nd_from_scratch_is_the_default(runner, tmp_path):
    jobs, exp = jobs_of(runner, tmp_path, "--systems", "standard", "nd", "--seeds", "1", "2")
    nd = jobs["nd.s2"]
    assert nd.updates == 1000 and nd.finetune_from is None and nd.deps == ["teacher_top.s1"]
    args = [str(a) for a in nd.args]
    assert args[args.index("--alpha-gamma") + 1] == "500"  # γ = half the run
    assert exp.checkpoint(nd).name == "checkpoint_best.pt"


def test_nd_init_standard_fine_tunes_each_seed_from_its_standard_run(runner, tmp_path):
    jobs, exp = jobs_of(runner, tmp_path, "--systems", "nd", "nd_no_att", "standard_ft", "--seeds", "1", "2",
                        "--nd-init", "standard", "--nd-extra=--fixed-alpha 0.5 --nd-pred-weight 10")
    assert {"standard.s1", "standard.s2", "teacher_top.s1", "standard_ft.s1", "standard_ft.s2"} <= set(jobs)
    for seed in (1, 2):
        nd = jobs[f"nd.s{seed}"]
        assert nd.finetune_from == f"standard.s{seed}" and nd.updates == 300
        assert set(nd.deps) == {"teacher_top.s1", f"standard.s{seed}"}
        args = [str(a) for a in nd.args]
        # --nd-extra is split into separate flags
        assert args[args.index("--fixed-alpha") + 1] == "0.5" and args[args.index("--nd-pred-weight") + 1] == "10"
        control = jobs[f"standard_ft.s{seed}"]
        assert control.finetune_from == f"standard.s{seed}" and control.updates == 300
        assert "negative_distillation" not in [str(a) for a in control.args]
        # fine-tunes are decoded at their last update, from-scratch runs at the best validation loss
        assert exp.checkpoint(nd).name == "checkpoint_last.pt"
    assert exp.checkpoint(jobs["standard.s1"]).name == "checkpoint_best.pt"
    assert "--nd-no-att-loss" in [str(a) for a in jobs["nd_no_att.s1"].args] and "nd_no_att.s2" not in jobs


def test_variants_belong_to_their_experiment(runner, tmp_path):
    import experiment_systems  # beside the runner, on the path once the runner is loaded

    order, labels = list(experiment_systems.SYSTEM_ORDER), dict(experiment_systems.LABELS)
    argv = ["--systems", "nd", "nd_l2", "--seeds", "1", "--variants", "nd_l2=--alpha-lambda 2", "nd_b=--alpha-lambda 8"]
    jobs, first = jobs_of(runner, tmp_path / "a", *argv)
    _, second = jobs_of(runner, tmp_path / "b", *argv)  # the same names again are new to this experiment
    # each variant is inserted right after nd, so the later one comes first
    assert first.systems.order[:5] == ["standard", "standard_ft", "nd", "nd_b", "nd_l2"]
    assert second.systems.order == first.systems.order and len(first.systems.order) == len(order) + 2
    assert first.systems.labels["nd_l2"] == "ND (--alpha-lambda 2)"
    assert [str(a) for a in jobs["nd_l2.s1"].args][-4:-2] == ["--alpha-lambda", "2"]
    # the module's catalogue is what it was
    assert experiment_systems.SYSTEM_ORDER == order and experiment_systems.LABELS == labels
    with pytest.raises(SystemExit):
        jobs_of(runner, tmp_path / "c", "--variants", "nd=--alpha-lambda 2")  # not a new name


def test_unknown_system_is_refused(runner, tmp_path):
    with pytest.raises(SystemExit):
        runner.parse_args(["--out", str(tmp_path), "--systems", "nd_typo"])


def test_read_log_keeps_the_resumed_record_of_each_update(runner, tmp_path):
    log = tmp_path / "train.log"
    rec = '2026-01-01 00:00:00 | INFO | train_inner | {{"num_updates": "{u}", "loss": "{l}", "epoch": 1}}\n'
    log.write_text(rec.format(u=50, l=9.0) + rec.format(u=100, l=8.0) + "killed; resumed from update 50\n"
                   + rec.format(u=100, l=7.5) + rec.format(u=150, l=7.0)
                   + "| valid | {\"num_updates\": \"100\", \"loss\": \"1\"}\n")
    recs = runner.read_log(log, "train_inner")
    assert [(r["num_updates"], r["loss"]) for r in recs] == [(50.0, 9.0), (100.0, 7.5), (150.0, 7.0)]
    assert runner.read_log(tmp_path / "missing.log", "train_inner") == []


def row(dist2, lf, bleu4, seeds=(1, 2)):
    return {"dist-2": dist2, "lf": lf, "bleu-4": bleu4, "seeds": list(seeds)}


def test_validation_selection_takes_the_most_diverse_eligible_configuration(runner):
    valid = {"standard": row(0.010, 0.0, 0.0100),
             "nd": row(0.060, 0.0002, 0.0080),      # BLEU-4 ×0.80: more than 5% below, not eligible
             "nd_a03": row(0.030, 0.0001, 0.0096),  # ×0.96: eligible
             "nd_a01": row(0.020, 0.0001, 0.0102),  # ×1.02: eligible, less diverse
             "nd_lf": row(0.090, -1.0, 0.0200)}     # LF below Standard's: not eligible
    test = {"standard": row(0.008, 0.0, 0.0100), "nd_a03": row(0.024, 0.0001, 0.0091)}
    sel = runner.select_on_valid(valid, test, ["nd", "nd_a03", "nd_a01", "nd_lf", "nd_missing"], 0.05, 0.10)
    assert sel["chosen"] == "nd_a03"
    assert [n for n, c in sel["candidates"].items() if c["eligible"]] == ["nd_a03", "nd_a01"]
    assert sel["candidates"]["nd"]["bleu-4_ratio"] == pytest.approx(0.8)
    # test: Dist-2 .024 > .008, LF .0001 > 0, BLEU-4 ×0.91 >= 0.90
    assert sel["test"]["passes"] and sel["test"]["bleu-4_ratio"] == pytest.approx(0.91)
    # the same test row fails at a 5% acceptance margin, and with LF tied at Standard's
    assert not runner.select_on_valid(valid, test, ["nd_a03"], 0.05, 0.05)["test"]["passes"]
    tied = dict(test, nd_a03=row(0.024, 0.0, 0.0100))
    assert not runner.select_on_valid(valid, tied, ["nd_a03"], 0.05, 0.10)["test"]["passes"]
    text = "\n".join(runner.describe_selection(sel))
    assert "**chosen**" in text and "passes the acceptance check" in text


def test_validation_selection_without_an_eligible_configuration(runner):
    valid = {"standard": row(0.010, 0.0, 0.0100), "nd": row(0.060, 0.0002, 0.0080)}
    sel = runner.select_on_valid(valid, {}, ["nd"], 0.05, 0.10)
    assert sel["chosen"] is None and "test" not in sel
    assert "No candidate meets the rule" in "\n".join(runner.describe_selection(sel))


def test_valid_subset_outputs_sit_beside_the_test_outputs(runner, tmp_path):
    jobs, exp = jobs_of(runner, tmp_path, "--systems", "standard", "--seeds", "1", "--subsets", "test", "valid")
    assert exp.generation("standard.s1", "greedy").name == "standard.s1.greedy.txt"
    assert exp.generation("standard.s1", "beam5", "valid").name == "standard.s1.beam5.valid.txt"
    (exp.ckpt / "standard.s1").mkdir()
    (exp.ckpt / "standard.s1" / ".done").touch()
    for mode in ("greedy", "beam5"):
        exp.generation("standard.s1", mode).write_text("")
    assert not exp.decoded("standard.s1")  # the validation decodes are still missing
    for mode in ("greedy", "beam5"):
        exp.generation("standard.s1", mode, "valid").write_text("")
    assert exp.decoded("standard.s1")


@pytest.fixture(scope="module")
def bootstrap():
    path = RUNNER.parent / "paired_bootstrap.py"
    spec = importlib.util.spec_from_file_location("nd_paired_bootstrap", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_bootstrap_ratio(bootstrap):
    a = [[0.1, 0.2, 0.3, 0.4], [0.2, 0.2, 0.2, 0.2]]
    # B scores every sentence of every seed 0.9 times A's: every paired resample gives exactly 0.9
    b = [[0.9 * x for x in row] for row in a]
    ratio, low, high, share = bootstrap.bootstrap_ratio(a, b, samples=200, margin=0.11)
    assert ratio == pytest.approx(0.9) and low == pytest.approx(0.9) and high == pytest.approx(0.9)
    assert share == 1.0  # 0.9 >= 1 - 0.11 in every resample
    assert bootstrap.bootstrap_ratio(a, b, samples=200, margin=0.09)[3] == 0.0  # 0.9 < 0.91 in every one
    # B better on one sentence, worse on another: the point ratio is (0 + 1.1 + 0.4 + 0.3) /
    # (1.0 + 0 + 0.4 + 0.2) = 1.8 / 1.6 by hand, and the interval brackets it
    a = [[1.0, 0.0, 0.4, 0.2]]
    b = [[0.0, 1.1, 0.4, 0.3]]
    ratio, low, high, share = bootstrap.bootstrap_ratio(a, b, samples=500)
    assert ratio == pytest.approx(1.8 / 1.6)
    assert low < ratio < high and 0.0 < share < 1.0
    with pytest.raises(ValueError):
        bootstrap.bootstrap_ratio([[0.1, 0.2]], [[0.1]])


def test_paired_bootstrap_splits_off_the_brevity_penalty(bootstrap, tmp_path, capsys):
    # the recipe's file names (WORK/generate/NAME.sSEED.MODE.SUBSET.txt); two test queries
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "train.response").write_text("a b c d e f\nx y z w\n")
    gen = tmp_path / "generate"
    gen.mkdir()
    refs = ["a b c d e f", "x y z w"]
    for name, hyps in (("standard", ["a b c d e f", "x y z w"]), ("nd", ["a b c d", "x y z w"])):
        lines = [f"T-{i}\t{r}\nH-{i}\t-0.1\t{h}\n" for i, (r, h) in enumerate(zip(refs, hyps))]
        (gen / f"{name}.s1.beam5.test.txt").write_text("".join(lines))
    assert bootstrap.main(["--out", str(tmp_path), "--a", "standard", "--b", "nd", "--seeds", "1",
                           "--mode", "beam5", "--samples", "200"]) == 0
    out = capsys.readouterr().out
    # "a b c d" against a 6-token reference: every n-gram precision is 1, the penalty exp(1 - 6/4)
    bp = math.exp(-0.5)
    assert f"nd seed 1: BLEU-4 {(bp + 1) / 2:.4f}, brevity penalty {(bp + 1) / 2:.3f}, without it 1.0000" in out
    assert "standard seed 1: BLEU-4 1.0000, brevity penalty 1.000, without it 1.0000" in out
    assert f"BLEU-4 nd / standard (beam5, test, seeds [1]): ×{(bp + 1) / 2:.3f}" in out
    # without the penalty the two systems are equal on every resample
    assert "BLEU-4 without the brevity penalty nd / standard (beam5, test, seeds [1]): ×1.000, 95% interval " \
           "over 200 paired resamples of the sentences [1.000, 1.000]" in out
    assert bootstrap.without_brevity_penalty([0.3, 0.0], [0.5, 0.0]) == [0.6, 0.0]
