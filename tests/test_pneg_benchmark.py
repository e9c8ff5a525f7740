"""Benchmark fidelity: which positive, shortcut baselines, clean per-source validation, --valid-fraction,
and the readers' handling of DailyDialog++ files as distributed (no final newline, a BOM)."""

import json
import statistics
from collections import Counter
from pathlib import Path

import pytest

from conftest import run_cli
from nd_fairseq.pneg.candidates import (CandidateSet, build_eval_sets, build_training_sets, carve_validation,
                                        read_candidates, write_candidates)
from nd_fairseq.pneg.data import Example, read_dailydialog_pp, read_pairs, write_dailydialog_pp
from nd_fairseq.pneg.generate import ResultStore, read_results
from nd_fairseq.pneg.shortcuts import baseline_metrics, length_profile, shortcut_warnings, words

FIX = Path(__file__).parent / "fixtures" / "pneg"
BOM = b"\xef\xbb\xbf"
FILLER = ["really", "quite", "very", "truly", "so", "just", "indeed", "surely", "clearly", "simply"]


def graded_positives(n):
    """Contexts whose five positives have 2, 4, 6, 8 and 10 words: the first is always the shortest."""
    out = []
    for i in range(n):
        positives = [" ".join([f"ok{i}"] + FILLER[:k - 1]) for k in (2, 4, 6, 8, 10)]
        out.append(Example(str(i), [f"Tell me about topic {i}.", f"Which part of topic {i}?"], positives,
                           adversarial=[f"My cousin {i} loves painting fences number {j}." for j in range(5)],
                           random=[f"Filler sentence {i} {j} of no relevance." for j in range(5)]))
    return out


def positive_lengths(sets):
    return [len(words(cs.candidates[cs.label])) for cs in sets]


def test_positive_is_drawn_among_all_positives_not_the_shortest_first():
    exs = graded_positives(200)
    mean_all = statistics.fmean(len(words(p)) for ex in exs for p in ex.positives)
    assert mean_all == 6.0
    train = build_training_sets(exs, ["random", "human"], seed=1)
    tests = build_eval_sets(exs, seed=1)
    # 200 uniform draws from {2, 4, 6, 8, 10}: standard error sqrt(8 / 200) = 0.2, tolerance 3 of them
    for sets in (train["random"], train["human"], tests["random"], tests["adversarial"]):
        lengths = positive_lengths(sets)
        assert abs(statistics.fmean(lengths) - mean_all) <= 0.6
        assert set(lengths) == {2, 4, 6, 8, 10}  # every position is used
    # the draw is seeded: same seed, same positives; another seed, others
    again = build_training_sets(exs, ["random"], seed=1)["random"]
    assert positive_lengths(again) == positive_lengths(train["random"])
    assert positive_lengths(build_training_sets(exs, ["random"], seed=2)["random"]) != positive_lengths(again)
    # the older behaviour, on request: always the first (here: the shortest) positive
    first = build_eval_sets(exs, seed=1, positive="first")
    assert set(positive_lengths(first["adversarial"])) == {2}


def test_shortcut_baselines_equal_hand_computed_values():
    sets = [
        # words 1, 4, 6; positive 1: shortest ranks it 2, longest 2, overlap ties 2 = 2 with "I like ..." -> 2
        CandidateSet("a", ["I like green tea"], ["yes", "green tea is nice", "I like it a lot today"], 1),
        # words 5, 1, 1; positive 0: shortest 3, longest 1, overlap {is, the, station} = 3 vs 0, 0 -> 1
        CandidateSet("b", ["where is the station"], ["the station is over there", "no", "ok"], 0),
        # words 2, 2, 3 (punctuation is no word); positive 0: shortest ties -> 2, longest 3, overlap all 0 -> 3
        CandidateSet("c", ["hi"], ["hello, there!", "good day", "a b c"], 0),
        # words 2, 1; positive 1: shortest 1, longest 2, overlap {three} 1 vs 0 -> 1
        CandidateSet("d", ["three"], ["one two", "three"], 1),
    ]
    got = baseline_metrics(sets)
    want = {"shortest": (1 / 4, (1 / 2 + 1 / 3 + 1 / 2 + 1) / 4),
            "longest": (1 / 4, (1 / 2 + 1 + 1 / 3 + 1 / 2) / 4),
            "overlap": (2 / 4, (1 / 2 + 1 + 1 / 3 + 1) / 4),
            # expected values: R@1 = mean of 1/n, MRR = mean of H_n / n (n = 3, 3, 3, 2)
            "random": ((3 * (1 / 3) + 1 / 2) / 4, (3 * (1 + 1 / 2 + 1 / 3) / 3 + (1 + 1 / 2) / 2) / 4)}
    for name, (r1, mrr) in want.items():
        assert got[name]["R@1"] == pytest.approx(r1) and got[name]["MRR"] == pytest.approx(mrr), name
        assert got[name]["n"] == 4


def test_shortcut_warning_rule_and_length_profile():
    baselines = {"random": {"shortest": {"R@1": 0.434}, "random": {"R@1": 1 / 6}},
                 "adversarial": {"shortest": {"R@1": 0.694}, "longest": {"R@1": 0.05}}}
    rankers = {"random": {"random": {"R@1": 0.70}, "adversarial": {"R@1": 0.715}},
               "human": {"random": {"R@1": 0.69}, "adversarial": {"R@1": 0.797}}}
    lines = shortcut_warnings(baselines, rankers)
    # 0.694 >= 0.8 * 0.797 = 0.638 on adversarial; 0.434 < 0.8 * 0.70 = 0.56 on random
    assert len(lines) == 1 and "adversarial test set" in lines[0] and "shortest candidate" in lines[0]
    assert "0.694" in lines[0] and "(human, 0.797)" in lines[0] and "\n" not in lines[0]
    rankers["human"]["adversarial"]["R@1"] = 0.868  # 0.8 * 0.868 = 0.6944 > 0.694: no warning
    assert shortcut_warnings(baselines, rankers) == []
    sets = [CandidateSet("a", ["c"], ["one", "one two three", "a b c d e"], 0, ["positive", "human", "random"]),
            CandidateSet("b", ["c"], ["x y", "p q r s t u v", "a"], 2, ["human", "human", "positive"])]
    profile = length_profile(sets)
    assert list(profile) == ["positive", "human", "random"]
    assert profile["positive"] == {"candidates": 2, "mean": 1.0, "median": 1.0, "p10": 1.0, "p90": 1.0}
    assert profile["human"]["candidates"] == 3 and profile["human"]["mean"] == 4.0
    assert profile["human"]["median"] == 3 and profile["human"]["p10"] == 2 and profile["human"]["p90"] == 7


def test_valid_fraction_is_seeded_by_context_and_disjoint():
    exs = graded_positives(50)
    # a record repeating the context of record 0 must land on the same side as record 0
    exs.append(Example("dup", list(exs[0].context), ["another reply"]))
    train, valid = carve_validation(exs, 0.2, seed=3)
    assert len(valid) in (10, 11)  # round(0.2 * 51) = 10 contexts, plus the duplicate if record 0 is drawn
    assert {e.id for e in train}.isdisjoint({e.id for e in valid})
    assert len(train) + len(valid) == len(exs)
    assert {tuple(e.context) for e in train}.isdisjoint({tuple(e.context) for e in valid})
    train2, valid2 = carve_validation(exs, 0.2, seed=3)
    assert [e.id for e in valid2] == [e.id for e in valid] and [e.id for e in train2] == [e.id for e in train]
    assert [e.id for e in carve_validation(exs, 0.2, seed=4)[1]] != [e.id for e in valid]
    with pytest.raises(Exception, match="--valid-fraction must be between 0 and 1"):
        carve_validation(exs, 1.0, seed=1)


@pytest.mark.cli
def test_cli_valid_fraction_and_clean_per_source_validation(tmp_path):
    exs = graded_positives(60)
    exs += [Example(str(60 + i), [f"A context {i} without adversarial negatives."], [f"Fine {i}."]) for i in range(10)]
    write_dailydialog_pp(str(tmp_path / "train.jsonl"), exs)
    write_dailydialog_pp(str(tmp_path / "test.jsonl"), graded_positives(8))
    human = {h for ex in exs for h in ex.adversarial}

    def build(out, *extra):
        return run_cli(["nd-pneg", "build-candidates", "--train", tmp_path / "train.jsonl", "--test",
                        tmp_path / "test.jsonl", "--sources", "random,human", "--out-dir", out, *extra], check=False)

    assert build(tmp_path / "a", "--valid-fraction", "0.25", "--seed", "5").returncode == 0
    assert build(tmp_path / "b", "--valid-fraction", "0.25", "--seed", "5").returncode == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    # 60 contexts have human negatives (both sources cover them): 15 carved, 45 trained on
    assert summary["valid"] == {"random": 15, "human": 15} and summary["train"] == {"random": 45, "human": 45}
    assert summary["valid_protocol"] == "source" and "0.25 of the contexts" in summary["valid_from"]
    for name in ("valid.random.jsonl", "valid.human.jsonl", "train.random.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()  # deterministic
    valid_r = read_candidates(str(tmp_path / "a" / "valid.random.jsonl"))
    valid_h = read_candidates(str(tmp_path / "a" / "valid.human.jsonl"))
    train_ids = {cs.id for cs in read_candidates(str(tmp_path / "a" / "train.random.jsonl"))}
    assert train_ids.isdisjoint({cs.id for cs in valid_r}) and {cs.id for cs in valid_r} == {cs.id for cs in valid_h}
    # the random-source ranker is validated on random negatives only: no human adversarial negative in it
    assert all(Counter(cs.kinds) == {"positive": 1, "random": 10} for cs in valid_r)
    assert not human & {c for cs in valid_r for c in cs.candidates}
    assert all(Counter(cs.kinds) == {"positive": 1, "random": 5, "human": 5} for cs in valid_h)
    # --valid-protocol random: every source on 1 + 10 random
    assert build(tmp_path / "c", "--valid-fraction", "0.25", "--valid-protocol", "random").returncode == 0
    shared = read_candidates(str(tmp_path / "c" / "valid.human.jsonl"))
    assert shared and not human & {c for cs in shared for c in cs.candidates}
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["valid_protocol"] == "random"
    # a rebuild without validation removes the old validation files
    assert build(tmp_path / "c").returncode == 0
    assert not list((tmp_path / "c").glob("valid*"))
    for extra, message in [(["--valid-fraction", "0"], "--valid-fraction must be between 0 and 1 (exclusive), got 0"),
                           (["--valid-fraction", "0.2", "--valid", tmp_path / "test.jsonl"],
                            "give either --valid (a validation file) or --valid-fraction (carved from --train), not both")]:
        bad = build(tmp_path / "d", *extra)
        assert bad.returncode == 2 and bad.stderr == f"nd-pneg: error: {message}\n"
    assert not (tmp_path / "d").exists()


def test_dailydialog_pp_last_line_without_newline_and_bom(tmp_path):
    data = (FIX / "dailydialog_pp_sample.jsonl").read_bytes()
    want = read_dailydialog_pp(str(FIX / "dailydialog_pp_sample.jsonl"))
    assert data.endswith(b"}\n")
    path = tmp_path / "train.json"
    path.write_bytes(data.rstrip(b"\n"))  # as distributed: the last record ends the file
    assert read_dailydialog_pp(str(path)) == want and len(want) == 4
    path.write_bytes(data.rstrip(b"\n").replace(b"\n", b"\r\n"))
    assert read_dailydialog_pp(str(path)) == want
    path.write_bytes(BOM + data)
    got = read_dailydialog_pp(str(path))
    assert got == want and got[0].id == "g1" and got[0].context[0].startswith("How about")


def test_bom_is_not_part_of_the_first_utterance_or_record(tmp_path):
    (tmp_path / "train.query").write_bytes(BOM + "hello there __eou__ how are you ?\nsecond\n".encode())
    (tmp_path / "train.response").write_bytes(BOM + "fine , thanks\nok\n".encode())
    exs = read_pairs(str(tmp_path / "train"))
    assert exs[0].context == ["hello there", "how are you ?"] and exs[0].positives == ["fine , thanks"]
    assert exs[1].context == ["second"]
    # generated results (read for --pneg / export, and resumed by generate) and candidate files
    results = tmp_path / "negs.jsonl"
    results.write_bytes(BOM + b'{"meta": {"seed": 1}}\n{"id": "0", "status": "ok", "negatives": ["a"]}\n')
    assert read_results(str(results)) == {"0": {"id": "0", "status": "ok", "negatives": ["a"]}}
    store = ResultStore(str(results))
    assert store.meta == {"seed": 1} and set(store.records) == {"0"}
    store.close()
    results.write_bytes(BOM + b'{"id": "7", "text": " x"}\n')
    assert set(read_results(str(results))) == {"7"}
    cands = tmp_path / "c.jsonl"
    sets = [CandidateSet("a", ["hi"], ["x", "y"], 1, ["random", "positive"])]
    write_candidates(str(cands), sets)
    cands.write_bytes(BOM + cands.read_bytes())
    assert read_candidates(str(cands)) == sets
