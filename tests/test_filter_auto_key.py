"""nd-filter --key auto: the finest grouping key whose zero-entropy share meets the bound."""

import json
import math

import pytest

from conftest import run_cli

from nd_fairseq.filtering.auto_key import CANDIDATES, default_bound, zeros_in_top

pytestmark = pytest.mark.cli


def write_pairs(tmp_path, pairs):
    q, r = tmp_path / "train.query", tmp_path / "train.response"
    q.write_text("".join(a + "\n" for a, _ in pairs), encoding="utf-8")
    r.write_text("".join(b + "\n" for _, b in pairs), encoding="utf-8")
    return q, r


# every response is unique as a whole, so every key down to prefix:2 leaves all pairs at H = 0;
# by their first word they form "yes" (3 distinct queries: log2 3 bits), "no" (2: 1 bit), "ok" (0)
PAIRS = [("q1", "yes a"), ("q2", "yes b"), ("q3", "yes c"), ("q4", "no x"), ("q5", "no y"), ("q6", "ok")]


def test_auto_key_takes_the_finest_key_meeting_the_bound(tmp_path):
    q, r = write_pairs(tmp_path, PAIRS)
    out = tmp_path / "out"
    proc = run_cli(["nd-filter", "--query", q, "--response", r, "--out-dir", out, "--key", "auto"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["key"] == "prefix:1" and summary["key_requested"] == "auto"
    tried = summary["auto"]["tried"]
    assert [t["key"] for t in tried] == list(CANDIDATES)  # prefix:1 is the last candidate
    assert all(t["zero_share"] == 1.0 for t in tried[:-1])
    assert tried[-1]["zero_share"] == pytest.approx(1 / 6)
    assert summary["auto"]["max_zero_share"] == 0.5 and summary["auto"]["met"]
    scores = [float(x) for x in (out / "scores.txt").read_text().split()]
    assert scores == pytest.approx([math.log2(3)] * 3 + [1.0, 1.0, 0.0], abs=1e-6)
    assert (out / "top.response").read_text().split("\n")[:3] == ["yes a", "yes b", "yes c"]
    assert summary["top_zero_share"] == 0.0
    assert "key auto -> prefix:1" in proc.stdout
    assert "warning" not in proc.stderr


def test_auto_key_bound_follows_the_ratio(tmp_path):
    # the bound is 1 - ratio: a top of 80% may leave at most 20% of the pairs at zero
    assert default_bound(0.8, None) == pytest.approx(0.2)
    assert default_bound(None, None) == 0.5 and default_bound(None, 1.0) == 0.5
    q, r = write_pairs(tmp_path, PAIRS)
    out = tmp_path / "out"
    run_cli(["nd-filter", "--query", q, "--response", r, "--out-dir", out, "--key", "auto",
             "--auto-max-zero-share", "0.1", "--quiet"])
    summary = json.loads((out / "summary.json").read_text())
    # no key leaves at most 10% zeros (prefix:1 leaves 1/6): the coarsest is kept and flagged
    assert summary["key"] == "prefix:1" and not summary["auto"]["met"]


def test_negative_set_of_zeros_is_warned_about(tmp_path):
    q, r = write_pairs(tmp_path, PAIRS)
    out = tmp_path / "out"
    proc = run_cli(["nd-filter", "--query", q, "--response", r, "--out-dir", out, "--key", "exact", "--quiet"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["top_zero_share"] == 1.0
    assert "100% of the negative set has entropy 0 with --key exact" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_zeros_in_top_counts_the_zeros_that_rank_into_the_cut():
    # 10 pairs, 6 at zero: the 4 non-zero pairs rank first, a top of 5 takes 1 zero
    assert zeros_in_top(10, 0.6, 5) == 1
    assert zeros_in_top(10, 0.6, 4) == 0
    assert zeros_in_top(10, 1.0, 5) == 5


def test_auto_max_zero_share_needs_auto(tmp_path):
    q, r = write_pairs(tmp_path, PAIRS)
    proc = run_cli(["nd-filter", "--query", q, "--response", r, "--out-dir", tmp_path / "o", "--key", "exact",
                    "--auto-max-zero-share", "0.3"], check=False)
    assert proc.returncode == 2
    assert "--auto-max-zero-share applies to --key auto only" in proc.stderr
    assert not (tmp_path / "o").exists()
