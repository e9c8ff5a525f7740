"""The recipe's validation rule (nd_fairseq.evaluation.selection) on hand-made metric rows."""

import pytest

from nd_fairseq.evaluation.selection import check_candidate, choose_configuration, lf_not_lower, ratio, verdict


def row(dist2, bleu4, lf=0.001, rep3=0.10, length=10.0):
    return {"dist-2": dist2, "bleu-4": bleu4, "lf": lf, "rep-3": rep3, "length": length}


VALID = {
    "standard": row(0.010, 0.0100, lf=0.001, rep3=0.40, length=16.0),
    "control": row(0.012, 0.0098, lf=0.001, rep3=0.20, length=10.0),
    # highest Dist-2, but BLEU-4 x0.90 < 0.95: out
    "nd_a0.5": row(0.040, 0.0090),
    # eligible: BLEU-4 x0.96, LF equal, rep-3 0.10 <= 0.20, length 12 <= 15
    "nd_a0.3": row(0.030, 0.0096, length=12.0),
    # eligible but less diverse
    "nd_a0.1": row(0.020, 0.0099),
    # diverse, BLEU fine, but loops more than the control
    "nd_loop": row(0.035, 0.0100, rep3=0.25),
    # diverse, BLEU fine, but 16 tokens > 1.5 x 10
    "nd_long": row(0.036, 0.0100, length=16.0),
}


def test_rule_picks_the_most_diverse_eligible_candidate():
    sel = choose_configuration(VALID, ["nd_a0.5", "nd_a0.3", "nd_a0.1", "nd_loop", "nd_long"])
    assert sel["chosen"] == "nd_a0.3"
    c = sel["candidates"]
    assert c["nd_a0.5"]["checks"] == {"bleu-4": False, "lf": True, "rep-3": True, "length": True}
    assert c["nd_loop"]["checks"]["rep-3"] is False and c["nd_long"]["checks"]["length"] is False
    assert [n for n in c if c[n]["eligible"]] == ["nd_a0.3", "nd_a0.1"]
    assert c["nd_a0.3"]["bleu-4_ratio"] == pytest.approx(0.96)


def test_margin_and_length_bound_are_parameters():
    # at a 10% margin the most diverse candidate becomes eligible (x0.90 >= 0.90)
    sel = choose_configuration(VALID, ["nd_a0.5", "nd_a0.3"], bleu_margin=0.10)
    assert sel["chosen"] == "nd_a0.5"
    sel = choose_configuration(VALID, ["nd_long", "nd_a0.1"], length_ratio=1.6)
    assert sel["chosen"] == "nd_long"


def test_nothing_eligible_and_lf_below_standard():
    sel = choose_configuration({**VALID, "nd_lf": row(0.05, 0.0100, lf=0.0005)}, ["nd_a0.5", "nd_lf"])
    assert sel["chosen"] is None
    assert sel["candidates"]["nd_lf"]["checks"]["lf"] is False
    # LF missing on both sides counts as equal (0 >= 0)
    assert check_candidate(row(0.1, 0.01, lf=None), row(0.1, 0.01, lf=None), row(0.1, 0.01))["lf"]


def test_lf_check_allows_the_counting_noise_of_standards_lf():
    # Standard: LF 0.0002 over 20,000 tokens = 4 rare tokens, sd sqrt(4) = 2 tokens = 0.0001;
    # two sd = 0.0002, so even 0 rare tokens is within the noise
    assert lf_not_lower(0.0, 0.0002, 20_000)
    assert not lf_not_lower(0.0, 0.0002)  # no token count: strict
    # Standard: LF 0.001 over 20,000 tokens = 20 tokens, sd sqrt(20) = 4.47 tokens = 0.000224;
    # the bound is 0.001 - 0.000447 = 0.000553
    assert lf_not_lower(0.00056, 0.001, 20_000)
    assert not lf_not_lower(0.00055, 0.001, 20_000)
    assert lf_not_lower(None, None, 1000) and lf_not_lower(0.001, 0.001)
    # in the rule, through the row's "tokens"
    std = {**VALID["standard"], "lf": 0.0002, "tokens": 20_000}
    sel = choose_configuration({**VALID, "standard": std, "nd_lf": row(0.05, 0.0100, lf=0.0)}, ["nd_lf"])
    assert sel["chosen"] == "nd_lf"
    std = {**VALID["standard"], "lf": 0.001, "tokens": 20_000}
    sel = choose_configuration({**VALID, "standard": std, "nd_lf": row(0.05, 0.0100, lf=0.00055)}, ["nd_lf"])
    assert sel["chosen"] is None and sel["candidates"]["nd_lf"]["checks"]["lf"] is False


def test_ratio_and_verdict_line():
    assert ratio(2.0, 4.0) == 0.5 and ratio(1.0, 0.0) is None and ratio(None, 1.0) is None
    rows = {"nd": row(0.024, 0.0098, lf=0.0013, rep3=0.02), "std": row(0.010, 0.0100, lf=0.0010, rep3=0.31),
            "ctl": row(0.012, 0.0097, lf=0.0, rep3=0.05)}
    line = verdict(rows, "nd", ["std", "ctl"], {"nd": "ND", "std": "Standard", "ctl": "MLE control"})
    assert line == ("ND vs Standard: Dist-2 x2.40, LF x1.30, BLEU-4 x0.98; "
                    "vs MLE control: Dist-2 x2.00, LF 0.00130 vs 0.00000, BLEU-4 x1.01; "
                    "replies repeating a 3-gram: ND 2.0%, Standard 31.0%, MLE control 5.0%")
