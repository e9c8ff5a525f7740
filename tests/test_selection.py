"""The recipe's validation rule (nd_fairseq.evaluation.selection) on hand-made metric rows."""

import pytest

from nd_fairseq.evaluation.selection import (bleu_interval_reaches, check_candidate, choose_configuration,
                                             dist2_floors_met, lf_not_lower, lf_standard_error,
                                             median_seed_ratio, ratio, verdict)


def row(dist2, bleu4, lf=0.001, rep3=0.10, length=10.0, unique=0.30):
    return {"dist-2": dist2, "bleu-4": bleu4, "lf": lf, "rep-3": rep3, "length": length, "unique": unique}


VALID = {
    "standard": row(0.010, 0.0100, lf=0.001, rep3=0.40, length=16.0),
    "control": row(0.012, 0.0098, lf=0.001, rep3=0.20, length=10.0, unique=0.25),
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
    # the most diverse with BLEU fine, but short replies given alike: 20% unique < the control's 25%
    "nd_short": row(0.045, 0.0100, length=4.0, unique=0.20),
}


def test_rule_picks_the_most_diverse_eligible_candidate():
    sel = choose_configuration(VALID, ["nd_a0.5", "nd_a0.3", "nd_a0.1", "nd_loop", "nd_long", "nd_short"])
    assert sel["chosen"] == "nd_a0.3"
    c = sel["candidates"]
    assert c["nd_a0.5"]["checks"] == {"bleu-4": False, "lf": True, "rep-3": True, "length": True, "unique": True}
    assert c["nd_loop"]["checks"]["rep-3"] is False and c["nd_long"]["checks"]["length"] is False
    assert c["nd_short"]["checks"] == {"bleu-4": True, "lf": True, "rep-3": True, "length": True, "unique": False}
    assert [n for n in c if c[n]["eligible"]] == ["nd_a0.3", "nd_a0.1"]
    assert c["nd_a0.3"]["bleu-4_ratio"] == pytest.approx(0.96)


def test_margin_and_length_bound_are_parameters():
    # at a 10% margin the most diverse candidate becomes eligible (x0.90 >= 0.90)
    sel = choose_configuration(VALID, ["nd_a0.5", "nd_a0.3"], bleu_margin=0.10)
    assert sel["chosen"] == "nd_a0.5"
    sel = choose_configuration(VALID, ["nd_long", "nd_a0.1"], length_ratio=1.6)
    assert sel["chosen"] == "nd_long"


def test_unique_share_equal_to_the_controls_passes():
    as_unique = row(0.045, 0.0100, length=4.0, unique=0.25)  # 25%: the control's share exactly
    sel = choose_configuration({**VALID, "nd_short": as_unique}, ["nd_a0.3", "nd_short"])
    assert sel["chosen"] == "nd_short"


def test_nothing_eligible_and_lf_below_the_control():
    sel = choose_configuration({**VALID, "nd_lf": row(0.05, 0.0100, lf=0.0005)}, ["nd_a0.5", "nd_lf"])
    assert sel["chosen"] is None
    assert sel["candidates"]["nd_lf"]["checks"]["lf"] is False
    # LF missing on both sides counts as equal (0 >= 0)
    assert check_candidate(row(0.1, 0.01, lf=None), row(0.1, 0.01), row(0.1, 0.01, lf=None))["lf"]
    # the reference is the control, not Standard: LF 0.0005 against a Standard at 0.001 passes
    assert check_candidate(row(0.1, 0.01, lf=0.0005), row(0.1, 0.01, lf=0.001), row(0.1, 0.01, lf=0.0005))["lf"]


def test_lf_check_allows_the_counting_noise_of_the_controls_lf():
    # control: LF 0.0002 over 20,000 tokens = 4 rare tokens, sd sqrt(4) = 2 tokens = 0.0001;
    # two sd = 0.0002, so even 0 rare tokens is within the noise
    assert lf_standard_error({"lf": 0.0002, "tokens": 20_000}) == pytest.approx(0.0001)
    assert lf_not_lower(0.0, {"lf": 0.0002, "tokens": 20_000})
    assert not lf_not_lower(0.0, {"lf": 0.0002})  # no token count and no spread: strict
    # control: LF 0.001 over 20,000 tokens = 20 tokens, sd sqrt(20) = 4.47 tokens = 0.000224;
    # the bound is 0.001 - 0.000447 = 0.000553
    assert lf_not_lower(0.00056, {"lf": 0.001, "tokens": 20_000})
    assert not lf_not_lower(0.00055, {"lf": 0.001, "tokens": 20_000})
    assert lf_not_lower(None, {"lf": None, "tokens": 1000}) and lf_not_lower(0.001, {"lf": 0.001})
    # in the rule, through the control row's "tokens"
    ctl = {**VALID["control"], "lf": 0.0002, "tokens": 20_000}
    sel = choose_configuration({**VALID, "control": ctl, "nd_lf": row(0.05, 0.0100, lf=0.0)}, ["nd_lf"])
    assert sel["chosen"] == "nd_lf"
    ctl = {**VALID["control"], "lf": 0.001, "tokens": 20_000}
    sel = choose_configuration({**VALID, "control": ctl, "nd_lf": row(0.05, 0.0100, lf=0.00055)}, ["nd_lf"])
    assert sel["chosen"] is None and sel["candidates"]["nd_lf"]["checks"]["lf"] is False


def test_lf_check_allows_the_spread_of_the_controls_lf_between_seeds():
    # three seeds at LF 0, 0 and 0.0015: mean 0.0005, sd sqrt((2 x 0.0005^2 + 0.001^2) / 2)
    # = sqrt(0.00000075) = 0.000866, standard error 0.000866 / sqrt(3) = 0.0005, larger than the
    # counting noise over 60,000 tokens (sqrt(0.0005 / 60,000) = 0.0000913): the bound is
    # 0.0005 - 2 x 0.0005 < 0, so a candidate at 0 passes
    ctl = {"lf": 0.0005, "lf_sd": 0.000866, "seeds": 3, "tokens": 60_000}
    assert lf_standard_error(ctl) == pytest.approx(0.0005, rel=1e-3)
    assert lf_not_lower(0.0, ctl)
    # one seed: no spread to read, the counting noise alone (bound 0.0005 - 0.000183 = 0.000317)
    one = {"lf": 0.0005, "lf_sd": None, "seeds": 1, "tokens": 60_000}
    assert lf_standard_error(one) == pytest.approx(0.0000913, rel=1e-3)
    assert not lf_not_lower(0.0003, one) and lf_not_lower(0.00032, one)


def seeds_row(bleu_by_seed, **kw):
    """A row as the recipe's table makes it over seeds: the means, the per-seed BLEU-4 and which seed."""
    out = row(kw.pop("dist2", 0.03), sum(bleu_by_seed.values()) / len(bleu_by_seed), **kw)
    out.update({"bleu-4_runs": list(bleu_by_seed.values()), "seed_ids": list(bleu_by_seed), "seeds": len(bleu_by_seed)})
    return out


def test_bleu_check_is_on_the_median_seed():
    # the beam-5 validation BLEU-4 of seeds 10-12 (RESULTS.md §8.12): Standard .0112 / .0100 / .0080,
    # the student .0102 / .0087 / .0110. Ratio of the means .0299 / .0292 = 1.024 would pass; the
    # per-seed ratios are .911, .870 and 1.375, so the median seed is at .911 < 0.95
    std = seeds_row({10: 0.0112, 11: 0.0100, 12: 0.0080}, lf=0.0, rep3=0.2, length=8.0)
    nd = seeds_row({10: 0.0102, 11: 0.0087, 12: 0.0110}, lf=0.0)
    assert ratio(nd["bleu-4"], std["bleu-4"]) == pytest.approx(0.0299 / 0.0292)
    assert median_seed_ratio(nd, std) == pytest.approx(0.0102 / 0.0112)
    valid = {"standard": std, "control": seeds_row({10: 0.01, 11: 0.01, 12: 0.01}, lf=0.0, rep3=0.2, length=8.0),
             "nd": nd}
    sel = choose_configuration(valid, ["nd"])
    assert sel["chosen"] is None and sel["candidates"]["nd"]["checks"]["bleu-4"] is False
    assert sel["candidates"]["nd"]["bleu-4_ratio"] == pytest.approx(0.0102 / 0.0112)
    assert "on the median seed" in sel["rule"]
    # the seeds are paired by id, not by position
    shuffled = dict(nd, **{"bleu-4_runs": [0.0110, 0.0102, 0.0087], "seed_ids": [12, 10, 11]})
    assert median_seed_ratio(shuffled, std) == pytest.approx(0.0102 / 0.0112)
    # two seeds: the mean of the two ratios (1.0 and 0.9)
    two = median_seed_ratio(seeds_row({1: 0.010, 2: 0.009}), seeds_row({1: 0.010, 2: 0.010}))
    assert two == pytest.approx(0.95)
    # one seed, other seeds, or no per-seed values: the ratio of the means
    assert median_seed_ratio(seeds_row({1: 0.009}), seeds_row({1: 0.010})) == pytest.approx(0.9)
    assert median_seed_ratio(nd, seeds_row({1: 0.0292, 2: 0.0292, 3: 0.0292})) == pytest.approx(0.0299 / 0.0876)
    assert median_seed_ratio(row(0.03, 0.0099), row(0.03, 0.0100)) == pytest.approx(0.99)


def test_ratio_and_verdict_line():
    assert ratio(2.0, 4.0) == 0.5 and ratio(1.0, 0.0) is None and ratio(None, 1.0) is None
    rows = {"nd": row(0.024, 0.0098, lf=0.0013, rep3=0.02), "std": row(0.010, 0.0100, lf=0.0010, rep3=0.31),
            "ctl": row(0.012, 0.0097, lf=0.0, rep3=0.05)}
    line = verdict(rows, "nd", ["std", "ctl"], {"nd": "ND", "std": "Standard", "ctl": "MLE control"})
    assert line == ("ND vs Standard: Dist-2 x2.40, LF x1.30, BLEU-4 x0.98; "
                    "vs MLE control: Dist-2 x2.00, LF 0.00130 vs 0.00000, BLEU-4 x1.01; "
                    "replies repeating a 3-gram: ND 2.0%, Standard 31.0%, MLE control 5.0%")


# the max-bleu rule: Standard's Dist-2 .010 and the control's .012 put the floors at
# 1.5 x .010 = .015 and 1.3 x .012 = .0156
FLOOR_VALID = {
    "standard": row(0.010, 0.0100, rep3=0.40, length=16.0),
    "control": row(0.012, 0.0098, rep3=0.20, length=10.0, unique=0.25),
    "nd_flat": row(0.015, 0.0102),   # x1.5 Standard's but x1.25 the control's: out on Dist-2
    "nd_a": row(0.030, 0.0097),      # interval [0.85, 1.10]: eligible, BLEU-4 x0.97
    "nd_b": row(0.040, 0.0090),      # x0.90 with [0.80, 1.00]: eligible (1.00 >= 0.95), less BLEU-4
    "nd_c": row(0.050, 0.0080),      # x0.80 with [0.70, 0.92]: shown below 0.95, out
    "nd_loop": row(0.030, 0.0099, rep3=0.25),  # the guards hold under both rules
}
FLOOR_INTERVALS = {"nd_flat": (1.02, 0.90, 1.15), "nd_a": (0.97, 0.85, 1.10), "nd_b": (0.90, 0.80, 1.00),
                   "nd_c": (0.80, 0.70, 0.92), "nd_loop": (0.99, 0.90, 1.10)}
FLOOR_CANDIDATES = ["nd_flat", "nd_a", "nd_b", "nd_c", "nd_loop"]


def test_max_bleu_cuts_on_dist2_and_the_bleu_interval_then_takes_the_highest_bleu():
    sel = choose_configuration(FLOOR_VALID, FLOOR_CANDIDATES, rule="max-bleu", bleu_intervals=FLOOR_INTERVALS)
    c = sel["candidates"]
    assert sel["chosen"] == "nd_a" and sel["name"] == "max-bleu"
    assert c["nd_flat"]["checks"]["dist-2"] is False and c["nd_flat"]["checks"]["bleu-4"] is True
    assert c["nd_flat"]["dist-2_ratios"] == pytest.approx([1.5, 0.015 / 0.012])
    assert c["nd_b"]["eligible"] and c["nd_b"]["bleu-4_interval"] == [0.90, 0.80, 1.00]
    assert c["nd_c"]["checks"] == {"dist-2": True, "bleu-4": False, "lf": True, "rep-3": True, "length": True,
                                   "unique": True}
    assert c["nd_loop"]["checks"]["rep-3"] is False
    assert [n for n in c if c[n]["eligible"]] == ["nd_a", "nd_b"]
    # the ratio ranked is the interval's (the pooled one), not the rows' means
    assert c["nd_a"]["bleu-4_ratio"] == 0.97
    assert "then the highest BLEU-4" in sel["rule"] and ">= 1.5 x Standard and >= 1.3 x control" in sel["rule"]
    # the same rows under max-dist2: BLEU-4 x0.97 passes, x0.90 and x0.80 do not, so the most
    # diverse eligible one is nd_a too; with a 10% margin x0.90 passes and nd_b is more diverse
    assert choose_configuration(FLOOR_VALID, FLOOR_CANDIDATES)["chosen"] == "nd_a"
    assert choose_configuration(FLOOR_VALID, FLOOR_CANDIDATES, bleu_margin=0.10)["chosen"] == "nd_b"
    # max-bleu with a 10% margin: nd_c's 0.92 reaches 0.90, but its BLEU-4 is still the lowest
    wide = choose_configuration(FLOOR_VALID, FLOOR_CANDIDATES, rule="max-bleu", bleu_intervals=FLOOR_INTERVALS,
                                bleu_margin=0.10)
    assert wide["candidates"]["nd_c"]["eligible"] and wide["chosen"] == "nd_a"


def test_max_bleu_floors_and_interval_edges():
    std, ctl = FLOOR_VALID["standard"], FLOOR_VALID["control"]
    # exactly at the floors and at 0.95 passes; a hair below does not
    assert dist2_floors_met(row(0.0156, 0.01), std, ctl) and not dist2_floors_met(row(0.01559, 0.01), std, ctl)
    assert bleu_interval_reaches((0.9, 0.8, 0.95)) and not bleu_interval_reaches((0.9, 0.8, 0.9499))
    assert bleu_interval_reaches((0.8, 0.7, 0.9), margin=0.10)
    # no interval (a Standard whose BLEU-4 is 0 everywhere has no ratio): not met
    assert not bleu_interval_reaches(None)
    sel = choose_configuration(FLOOR_VALID, ["nd_a"], rule="max-bleu")
    assert sel["chosen"] is None and sel["candidates"]["nd_a"]["bleu-4_interval"] is None
    assert sel["candidates"]["nd_a"]["bleu-4_ratio"] == pytest.approx(0.97)  # the rows' means instead
    # floors are a parameter: at 1.0 and 1.0, nd_flat (BLEU-4 x1.02) is eligible and wins
    low = choose_configuration(FLOOR_VALID, FLOOR_CANDIDATES, rule="max-bleu", bleu_intervals=FLOOR_INTERVALS,
                               dist2_floors=(1.0, 1.0))
    assert low["chosen"] == "nd_flat"
    # ties on BLEU-4 go to the higher Dist-2, then to the first listed
    tied = {**FLOOR_INTERVALS, "nd_b": (0.97, 0.85, 1.10)}
    assert choose_configuration(FLOOR_VALID, ["nd_a", "nd_b"], rule="max-bleu", bleu_intervals=tied)["chosen"] == "nd_b"
    same = {**FLOOR_VALID, "nd_b": FLOOR_VALID["nd_a"]}
    assert choose_configuration(same, ["nd_b", "nd_a"], rule="max-bleu", bleu_intervals=tied)["chosen"] == "nd_b"
    with pytest.raises(ValueError, match="unknown selection rule 'best'"):
        check_candidate(row(0.03, 0.01), std, ctl, rule="best")
