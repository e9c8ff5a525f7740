"""The criteria's flags: one prefix per criterion, the earlier names still accepted, short help."""

import dataclasses

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
