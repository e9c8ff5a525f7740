"""What the four criteria share (criterions/base.py): one flag prefix each, the earlier names still
accepted, short help, and the per-token and per-batch metrics every subclass reduces."""

import dataclasses
import math

import pytest

from conftest import TINY_MODEL, USER_DIR, build_training


def parse(data, *flags):
    """The criterion config fairseq-train would build from ``flags`` (no model, no data read)."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(data), "--user-dir", USER_DIR, "--task", "negative_distillation",
                                                "--arch", "transformer_nd_dialog_tiny", *flags])
    return convert_namespace_to_omegaconf(args).criterion


# criterion, the earlier flags, the prefixed ones, the values both must give
RENAMED = [
    ("negative_distillation",
     ["--teacher-path", "t.pt", "--no-pred-loss", "--no-hid-loss", "--no-att-loss", "--negative-target", "hard",
      "--external-negatives-weight", "0.5"],
     ["--nd-teacher-path", "t.pt", "--nd-no-pred-loss", "--nd-no-hid-loss", "--nd-no-att-loss",
      "--nd-negative-target", "hard", "--nd-external-negatives-weight", "0.5"],
     {"nd_teacher_path": "t.pt", "nd_no_pred_loss": True, "nd_no_hid_loss": True, "nd_no_att_loss": True,
      "nd_negative_target": "hard", "nd_external_negatives_weight": 0.5}),
    ("negative_training",
     ["--frequency-threshold", "0.05", "--lambda-pos", "2", "--decode-max-len", "7"],
     ["--nt-frequency-threshold", "0.05", "--nt-lambda-pos", "2", "--nt-decode-max-len", "7"],
     {"nt_frequency_threshold": 0.05, "nt_lambda_pos": 2.0, "nt_decode_max_len": 7}),
    ("unlikelihood_dialog", ["--decode-max-len", "9"], ["--ul-decode-max-len", "9"], {"ul_decode_max_len": 9}),
]


@pytest.mark.parametrize("criterion, old, new, values", RENAMED, ids=[r[0] for r in RENAMED])
def test_earlier_flag_names_are_aliases_of_the_prefixed_ones(tmp_path, criterion, old, new, values):
    defaults = parse(tmp_path, "--criterion", criterion)
    by_old = parse(tmp_path, "--criterion", criterion, *old)
    by_new = parse(tmp_path, "--criterion", criterion, *new)
    for name, value in values.items():
        assert by_old[name] == value and by_new[name] == value, name
        assert defaults[name] != value, name  # the flags did change something
    assert dict(by_old) == dict(by_new)


def test_an_earlier_flag_name_of_another_criterion_is_still_refused(tmp_path):
    from fairseq import options

    parser = options.get_training_parser()
    with pytest.raises(SystemExit):
        options.parse_args_and_arch(parser, [str(tmp_path), "--user-dir", USER_DIR, "--task", "negative_distillation",
                                             "--arch", "transformer_nd_dialog_tiny", "--criterion", "face",
                                             "--teacher-path", "t.pt"])


def test_the_students_draws_follow_fairseqs_seed(data_bin, teacher_checkpoint):
    _, _, _, criterion = build_training([
        data_bin / "full", "--user-dir", USER_DIR, "--task", "negative_distillation", *TINY_MODEL,
        "--criterion", "negative_distillation", "--nd-teacher-path", teacher_checkpoint, "--optimizer", "adam",
        "--lr", "1e-3", "--seed", "7"])
    assert criterion.seed == 7


def test_every_criterion_option_has_a_short_help():
    import nd_fairseq  # noqa: F401  (registers the criteria)
    from nd_fairseq.criterions.face import FaceCriterionConfig
    from nd_fairseq.criterions.negative_distillation import NegativeDistillationCriterionConfig
    from nd_fairseq.criterions.negative_training import NegativeTrainingCriterionConfig
    from nd_fairseq.criterions.unlikelihood_dialog import UnlikelihoodDialogCriterionConfig

    prefixes = {NegativeDistillationCriterionConfig: "nd_", UnlikelihoodDialogCriterionConfig: "ul_",
                NegativeTrainingCriterionConfig: "nt_", FaceCriterionConfig: "face_"}
    shared = {f.name for f in dataclasses.fields(FaceCriterionConfig)} - {"face_frequency"}
    for config, prefix in prefixes.items():
        own = [f for f in dataclasses.fields(config) if f.name not in shared and f.name != "seed"]
        assert own
        for f in own:
            assert f.name.startswith(prefix), (config.__name__, f.name)
            text = f.metadata.get("help", "")
            assert text and "\n" not in text and len(text) <= 120, (f.name, len(text))


def reduced(cls, logs):
    from fairseq import metrics

    with metrics.aggregate() as agg:
        cls.reduce_metrics(logs)
        return dict(agg.get_smoothed_values())


def test_reduce_metrics_by_hand():
    import nd_fairseq  # noqa: F401
    from nd_fairseq.criterions.face import FaceCriterion
    from nd_fairseq.criterions.negative_distillation import NegativeDistillationCriterion
    from nd_fairseq.criterions.negative_training import NegativeTrainingCriterion
    from nd_fairseq.criterions.unlikelihood_dialog import UnlikelihoodDialogCriterion

    def step(size, **extra):
        # a training step's logging output: every term × sample_size, as base.training_log writes it
        return {"loss": 2.0 * size, "nll_loss": 1.0 * size, "ntokens": size, "nsentences": 2, "sample_size": size,
                "aux_sample_size": size, **extra}

    ln2 = math.log(2)
    # two steps of 10 and 30 tokens: per-token means weight the steps by their size
    nd = reduced(NegativeDistillationCriterion, [step(10, mle=10 * 3.0, alpha=10 * 0.3, pred=10 * 0.1),
                                                 step(30, mle=30 * 5.0, alpha=30 * 0.3, pred=30 * 0.5)])
    assert nd["mle"] == pytest.approx((30 + 150) / 40 / ln2, abs=1e-4)  # in bits
    assert nd["alpha"] == pytest.approx(0.3) and nd["pred"] == pytest.approx((1 + 15) / 40, abs=1e-4)
    assert "hid" not in nd and "att" not in nd  # terms no step logged
    ul = reduced(UnlikelihoodDialogCriterion, [
        step(10, mle=10.0, ul=10 * 0.2, ul_batches=1, n_candidates=4, ul_tokens=6, ul_beta_sum=0.6),
        step(10, mle=10.0, ul=0.0, ul_batches=1, n_candidates=0, ul_tokens=0, ul_beta_sum=0.0)])
    assert ul["ul"] == pytest.approx(0.1) and ul["n_candidates"] == 2 and ul["ul_tokens"] == 3
    assert ul["ul_beta"] == pytest.approx(0.1)  # per penalised position: 0.6 / 6
    nt = reduced(NegativeTrainingCriterion, [step(20, mle=20.0, neg=-20 * 0.5, nt_batches=1, n_neg=3, max_ratio=0.25)])
    assert nt["neg"] == pytest.approx(-0.5) and nt["n_neg"] == 3 and nt["max_ratio"] == pytest.approx(0.25)
    face = reduced(FaceCriterion, [step(10, mle=10.0, face_batches=1, face_w_target_sum=8.0, face_targets=10,
                                        w_max=1.5, top_rf=0.1),
                                   step(10, mle=10.0, face_batches=1, face_w_target_sum=12.0, face_targets=10,
                                        w_max=2.5, top_rf=0.3)])
    assert face["w_target"] == pytest.approx(1.0) and face["w_max"] == pytest.approx(2.0)
    assert face["top_rf"] == pytest.approx(0.2) and face["mle"] == pytest.approx(1 / ln2, abs=1e-4)
    # validation: fairseq's label-smoothed logging alone, no extras
    valid = reduced(FaceCriterion, [{"loss": 2.0, "nll_loss": 1.0, "ntokens": 1, "nsentences": 1, "sample_size": 1}])
    assert set(valid) == {"loss", "nll_loss", "ppl"}
