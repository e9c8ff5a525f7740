"""DailyDialog++ and pairs I/O, BM25 negatives, candidate sets and the aligned export."""

import json
from collections import Counter
from pathlib import Path

import pytest

from conftest import run_cli
from nd_fairseq.io_utils import InputError
from nd_fairseq.pneg.candidates import (CandidateSet, build_eval_sets, build_training_sets, build_valid_sets,
                                        carve_validation, read_candidates, write_candidates)
from nd_fairseq.pneg.data import (Example, detect_format, load_examples, read_dailydialog_pp, read_pairs,
                                  write_dailydialog_pp, write_pairs)
from nd_fairseq.pneg.export import aligned_negatives
from nd_fairseq.pneg.parse import normalise
from nd_fairseq.pneg.retrieval import BM25Index, bm25_negatives

FIX = Path(__file__).parent / "fixtures" / "pneg"


def synthetic_ddpp(n, with_adv=True):
    topics = ["pizza", "train", "guitar", "garden", "exam", "winter", "museum", "coffee", "soccer", "printer",
              "holiday", "doctor", "bicycle", "piano", "rain", "library"]
    out = []
    for i in range(n):
        t, u = topics[i % len(topics)], topics[(i * 7 + 3) % len(topics)]
        out.append(Example(
            id=str(i), context=[f"Do you like {t} number {i}?", f"Yes, {t} is great, and {u} too."],
            positives=[f"Then let us talk about {t} {i} tonight.", f"I agree about {t} {i}."],
            adversarial=[f"My {t} {i} story number {j} was about a {u}." for j in range(5)] if with_adv else [],
            random=[f"Random line {i}-{j} about nothing in particular." for j in range(5)]))
    return out


def test_dailydialog_pp_roundtrip_and_ids(tmp_path):
    exs = read_dailydialog_pp(str(FIX / "dailydialog_pp_sample.jsonl"))
    assert [e.id for e in exs] == ["g1", "g2", "paul", "t10"]
    assert exs[2].adversarial == [] and len(exs[3].positives) == 5
    path = tmp_path / "copy.jsonl"
    write_dailydialog_pp(str(path), exs)
    assert read_dailydialog_pp(str(path)) == exs
    # records without ids are numbered by position
    path.write_text('{"context": ["hi"], "positive_responses": ["hello"]}\n\n'
                    '{"context": ["a", "b"], "positive_responses": ["c"], "adversarial_negative_responses": null}\n')
    got = read_dailydialog_pp(str(path))
    assert [e.id for e in got] == ["0", "1"] and got[1].adversarial == []


@pytest.mark.parametrize("content, message", [
    ("{not json\n", "line 1 is not JSON"),
    ('{"positive_responses": ["x"]}\n', "line 1 has no 'context'"),
    ('{"context": "hi", "positive_responses": ["x"]}\n', "'context' must be a list of strings"),
    ('{"id": 1, "context": ["a"], "positive_responses": ["x"]}\n{"id": 1, "context": ["b"], "positive_responses": ["y"]}\n',
     "line 2 repeats id '1'"),
])
def test_dailydialog_pp_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as err:
        read_dailydialog_pp(str(path))
    assert str(path) in str(err.value)


def test_pairs_roundtrip_with_turn_separator(tmp_path):
    (tmp_path / "train.query").write_text("hi there __eou__ hello\nhow are you ?\n\n")
    (tmp_path / "train.response").write_text("fine\ngood , thanks\nempty query\n")
    exs = read_pairs(str(tmp_path / "train"))
    assert [e.id for e in exs] == ["0", "1", "2"]
    assert exs[0].context == ["hi there", "hello"] and exs[0].positives == ["fine"]
    assert exs[2].context == []
    assert detect_format(str(tmp_path / "train")) == "pairs"
    write_pairs(str(tmp_path / "copy"), exs[:2])
    assert read_pairs(str(tmp_path / "copy")) == exs[:2]
    (tmp_path / "bad.query").write_text("a\nb\n")
    (tmp_path / "bad.response").write_text("a\n")
    with pytest.raises(InputError, match="misaligned"):
        read_pairs(str(tmp_path / "bad"))
    with pytest.raises(InputError, match="neither a DailyDialog"):
        load_examples(str(tmp_path / "missing"))


def test_bm25_ranks_by_term_weight_and_skips_positives():
    docs = ["the cat sat on the mat", "a dog chased the cat", "stock prices fell", "the cat", "cats and dogs"]
    idx = BM25Index(docs)
    s = idx.scores("cat mat")
    assert max(s, key=s.get) == 0 and 2 not in s
    assert idx.search("cat mat", 2) == ["the cat sat on the mat", "the cat"]
    assert idx.search("cat mat", 2, exclude={normalise("the cat sat on the mat")}) == ["the cat", "a dog chased the cat"]
    negs = bm25_negatives([["the cat"]], [["the cat"]], docs, k=5)
    assert negs == [["the cat sat on the mat", "a dog chased the cat"]]  # only two share a term


def test_training_sets_composition_and_shuffle():
    exs = synthetic_ddpp(40)
    pneg = {e.id: [f"Generated negative {e.id}-{j} about it." for j in range(5)] for e in exs[:30]}
    sets = build_training_sets(exs, ["random", "bm25", "pneg", "human"], seed=1, pneg=pneg)
    # common subset: only the 30 contexts with PNEG negatives
    assert {s: len(v) for s, v in sets.items()} == {"random": 30, "bm25": 30, "pneg": 30, "human": 30}
    for source, v in sets.items():
        for cs in v:
            assert len(cs.candidates) == 11
            kinds = Counter(cs.kinds)
            want = {"positive": 1, "random": 10} if source == "random" else {"positive": 1, "random": 5, source: 5}
            assert kinds == want
            assert cs.kinds[cs.label] == "positive"
            assert cs.candidates[cs.label] in exs[int(cs.id)].positives
            assert len({normalise(c) for c in cs.candidates}) == 11  # no duplicates
    labels = [cs.label for cs in sets["human"]]
    assert len(set(labels)) > 5  # the positive moves around
    again = build_training_sets(exs, ["random", "bm25", "pneg", "human"], seed=1, pneg=pneg)
    assert [c.to_json() for c in again["bm25"]] == [c.to_json() for c in sets["bm25"]]
    other = build_training_sets(exs, ["human"], seed=2)
    assert [c.label for c in other["human"]][:30] != labels
    # every source trains a context on the same positive
    chosen = {cs.id: cs.candidates[cs.label] for cs in sets["random"]}
    assert all(chosen[cs.id] == cs.candidates[cs.label] for v in sets.values() for cs in v)
    everyone = build_training_sets(exs, ["random", "pneg"], seed=1, pneg=pneg, common=False)
    assert len(everyone["random"]) == 40 and len(everyone["pneg"]) == 30


def test_eval_sets_human_and_context_fallback():
    exs = synthetic_ddpp(12)
    tests = build_eval_sets(exs, seed=1)
    assert len(tests["random"]) == 12 and len(tests["adversarial"]) == 12
    for cs in tests["adversarial"]:
        assert Counter(cs.kinds) == {"positive": 1, "human": 5}
    no_adv = synthetic_ddpp(12, with_adv=False)
    tests = build_eval_sets(no_adv, seed=1)
    for cs in tests["adversarial"]:
        assert Counter(cs.kinds) == {"positive": 1, "context": 1, "random": 4}
        turn = cs.candidates[cs.kinds.index("context")]
        assert turn in no_adv[int(cs.id)].context
    for cs in tests["random"]:
        assert Counter(cs.kinds) == {"positive": 1, "random": 5} and len(cs.candidates) == 6
    for cs_r, cs_a in zip(tests["random"], tests["adversarial"]):  # both test sets share a context's positive
        assert cs_r.id == cs_a.id and cs_r.candidates[cs_r.label] == cs_a.candidates[cs_a.label]
    valid = build_valid_sets(exs, ["random", "human"], seed=1)
    assert all(len(cs.candidates) == 11 and Counter(cs.kinds)["human"] == 5 for cs in valid["human"])
    assert all(Counter(cs.kinds) == {"positive": 1, "random": 10} for cs in valid["random"])
    shared = build_valid_sets(exs, ["random", "human"], seed=1, protocol="random")
    assert shared["human"] == shared["random"] and all("human" not in cs.kinds for cs in shared["human"])


def test_candidate_file_roundtrip_and_errors(tmp_path):
    sets = [CandidateSet("a", ["hi"], ["x", "y"], 1, ["random", "positive"])]
    write_candidates(str(tmp_path / "c.jsonl"), sets)
    assert read_candidates(str(tmp_path / "c.jsonl")) == sets
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "context": [], "candidates": ["x"], "label": 3}\n')
    with pytest.raises(InputError, match="label 3 outside"):
        read_candidates(str(tmp_path / "bad.jsonl"))


def test_aligned_negatives():
    exs = [Example(str(i), ["c"], ["r"]) for i in range(4)]
    records = {"0": {"id": "0", "status": "ok", "negatives": ["a", "b"]},
               "2": {"id": "2", "status": "failed"}}
    assert aligned_negatives(exs, records) == [["a", "b"], [], [], []]
    with pytest.raises(InputError, match="3 of 4 training examples"):
        aligned_negatives(exs, records, require_all=True)


@pytest.mark.cli
def test_cli_build_candidates_and_export(tmp_path):
    exs = synthetic_ddpp(30)
    write_dailydialog_pp(str(tmp_path / "train.jsonl"), exs[:20])
    write_dailydialog_pp(str(tmp_path / "test.jsonl"), exs[20:])
    results = tmp_path / "negs.jsonl"
    recs = [{"meta": {"instruction": "dir", "k": 2, "seed": 1}}]
    recs += [{"id": e.id, "status": "ok", "negatives": [f"Made up {e.id} {j}." for j in range(5)]} for e in exs[:15]]
    recs += [{"id": "15", "status": "failed", "attempts": 5}]
    results.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = run_cli(["nd-pneg", "build-candidates", "--train", tmp_path / "train.jsonl", "--test", tmp_path / "test.jsonl",
                   "--valid", tmp_path / "test.jsonl", "--valid-protocol", "random", "--pneg", results,
                   "--out-dir", tmp_path / "cands"])
    summary = json.loads((tmp_path / "cands" / "summary.json").read_text())
    assert summary["train"] == {"random": 15, "bm25": 15, "pneg": 15, "human": 15}, out.stdout
    assert summary["test"] == {"random": 10, "adversarial": 10}
    assert summary["valid"] == {"random": 10, "bm25": 10, "pneg": 10, "human": 10}
    assert summary["valid_protocol"] == "random" and summary["positive"] == "random"
    names = sorted(p.name for p in (tmp_path / "cands").iterdir())
    assert names == ["summary.json", "test.adversarial.jsonl", "test.random.jsonl", "train.bm25.jsonl",
                     "train.human.jsonl", "train.pneg.jsonl", "train.random.jsonl", "valid.bm25.jsonl",
                     "valid.human.jsonl", "valid.pneg.jsonl", "valid.random.jsonl"]
    # pneg validated on its own negatives needs them for the validation contexts
    bad = run_cli(["nd-pneg", "build-candidates", "--train", tmp_path / "train.jsonl", "--test", tmp_path / "test.jsonl",
                   "--valid", tmp_path / "test.jsonl", "--pneg", results, "--out-dir", tmp_path / "c3"], check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--valid-pneg" in bad.stderr
    assert not (tmp_path / "c3").exists()
    valid_results = tmp_path / "negs.valid.jsonl"
    valid_results.write_text("".join(json.dumps({"id": e.id, "status": "ok", "negatives": [
        f"Valid made up {e.id} {j}." for j in range(5)]}) + "\n" for e in exs[20:]))
    run_cli(["nd-pneg", "build-candidates", "--train", tmp_path / "train.jsonl", "--test", tmp_path / "test.jsonl",
             "--valid", tmp_path / "test.jsonl", "--pneg", results, "--valid-pneg", valid_results,
             "--out-dir", tmp_path / "c4"])
    valid_pneg = read_candidates(str(tmp_path / "c4" / "valid.pneg.jsonl"))
    assert len(valid_pneg) == 10
    for cs in valid_pneg:  # the validation contexts' own PNEG negatives, not the training ones of the same id
        assert Counter(cs.kinds) == {"positive": 1, "random": 5, "pneg": 5}
        assert {c for c, k in zip(cs.candidates, cs.kinds) if k == "pneg"} == {f"Valid made up {cs.id} {j}."
                                                                               for j in range(5)}
    run_cli(["nd-pneg", "export-negatives", "--input", tmp_path / "train.jsonl", "--generated", results,
             "--output", tmp_path / "train.negatives.jsonl"])
    lines = (tmp_path / "train.negatives.jsonl").read_text().splitlines()
    assert len(lines) == 20
    assert json.loads(lines[3]) == [f"Made up 3 {j}." for j in range(5)] and json.loads(lines[15]) == []
    bad = run_cli(["nd-pneg", "build-candidates", "--train", tmp_path / "train.jsonl", "--test", tmp_path / "test.jsonl",
                   "--sources", "random,pneg", "--out-dir", tmp_path / "c2"], check=False)
    assert bad.returncode == 2 and "--pneg" in bad.stderr and bad.stderr.count("\n") == 1


def test_bm25_shortfall_is_topped_up_at_random():
    exs = [Example(str(i), [f"zebra{i} quokka{i}"], [f"reply number {i} here"]) for i in range(12)]
    exs[0] = Example("0", ["reply number"], ["something else entirely"])
    sets = build_training_sets(exs, ["bm25"], seed=1)["bm25"]
    assert len(sets) == 12
    lonely = next(cs for cs in sets if cs.id == "3")  # shares no word with any response
    assert Counter(lonely.kinds) == {"positive": 1, "random": 10}
    first = next(cs for cs in sets if cs.id == "0")
    assert Counter(first.kinds) == {"positive": 1, "random": 5, "bm25": 5}


@pytest.mark.cli
def test_package_imports_without_fairseq_or_torch():
    import subprocess
    import sys

    code = ("import sys, nd_fairseq.pneg, nd_fairseq.pneg.cli, nd_fairseq.pneg.generate, nd_fairseq.pneg.candidates, "
            "nd_fairseq.pneg.ranker, nd_fairseq.pneg.benchmark, nd_fairseq.pneg.options, nd_fairseq.pneg.backends, "
            "nd_fairseq.pneg.export, nd_fairseq.pneg.shortcuts; "
            "print('torch' in sys.modules, 'fairseq' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
