"""nd-prepare: every input format on small hand-made files, the split, cleaning options, bad input."""

import json
import os
from pathlib import Path

import pytest

from conftest import run_cli
from nd_fairseq.data import prepare
from nd_fairseq.io_utils import InputError

SPLITS = ("train", "valid", "test")


def run(tmp_path: Path, *args, out="out"):
    """nd-prepare in this process; returns (report, {split: [(query, response), ...]})."""
    out_dir = tmp_path / out
    assert prepare.main([str(a) for a in args] + ["--out-dir", str(out_dir), "--quiet"]) == 0
    report = json.loads((out_dir / "prepare.json").read_text())
    data = {}
    for split in SPLITS:
        q = (out_dir / f"{split}.query").read_text(encoding="utf-8").split("\n")[:-1]
        r = (out_dir / f"{split}.response").read_text(encoding="utf-8").split("\n")[:-1]
        assert len(q) == len(r) == report["pairs"][split]
        data[split] = list(zip(q, r))
    return report, data


def fails(capsys, match, tmp_path, *args):
    assert prepare.main([str(a) for a in args] + ["--out-dir", str(tmp_path / "bad"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nd-prepare: error: ") and match in err, err
    assert not (tmp_path / "bad").exists() or os.listdir(tmp_path / "bad") == []
    return err


def dialogues(n=40, turns=4):
    """DailyDialog lines; turn j of dialogue i reads "d<i> t<j>" so pairs can be traced back."""
    return "".join(" __eou__ ".join(f"d{i} t{j}" for j in range(turns)) + " __eou__\n" for i in range(n))


WS = ["--tokenize", "whitespace", "--no-lowercase"]


# Formats -----------------------------------------------------------------------------------------


def test_dailydialog_split_by_conversation_is_seeded_and_disjoint(tmp_path):
    src = tmp_path / "dialogues_text.txt"
    src.write_text(dialogues(40, 4))
    report, data = run(tmp_path, "--format", "dailydialog", "--input", src, "--valid-fraction", "0.1",
                       "--test-fraction", "0.1", "--seed", "7", *WS)
    assert report["unit"] == "conversation"
    assert report["units"] == {"train": 32, "valid": 4, "test": 4}
    assert report["pairs"] == {"train": 96, "valid": 12, "test": 12}  # 3 adjacent-turn pairs each
    owner = {}
    for split, pairs in data.items():
        for q, r in pairs:
            d, tq = q.split()
            assert r == f"{d} t{int(tq[1:]) + 1}"  # adjacent turns of one dialogue
            owner.setdefault(d, set()).add(split)
    assert len(owner) == 40 and all(len(s) == 1 for s in owner.values())  # no dialogue in two splits
    # the same seed gives the same files, another seed another split
    _, again = run(tmp_path, "--format", "dailydialog", "--input", src, "--valid-fraction", "0.1",
                   "--test-fraction", "0.1", "--seed", "7", *WS, out="again")
    assert again == data
    _, other = run(tmp_path, "--format", "dailydialog", "--input", src, "--valid-fraction", "0.1",
                   "--test-fraction", "0.1", "--seed", "8", *WS, out="other")
    assert other["valid"] != data["valid"]


def test_eou_pairs_tsv_and_parallel(tmp_path):
    eou = tmp_path / "pairs.txt"
    eou.write_text("hi __eou__ hello\n\nhow are you ? __eou__ fine __eou__\n")
    report, data = run(tmp_path, "--format", "eou-pairs", "--input", eou, "--valid-fraction", "0",
                       "--test-fraction", "0", *WS, out="eou")
    assert report["unit"] == "pair" and report["units"]["train"] == 2
    assert sorted(data["train"]) == [("hi", "hello"), ("how are you ?", "fine")]

    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("hi\thello\r\nwhat's up\tnothing much\n")
    _, data = run(tmp_path, "--format", "tsv", "--input", tsv, "--valid-fraction", "0", "--test-fraction", "0",
                  *WS, out="tsv")
    assert sorted(data["train"]) == [("hi", "hello"), ("what's up", "nothing much")]

    q, r = tmp_path / "q.txt", tmp_path / "r.txt"
    q.write_text("a\nb\nc\n")
    r.write_text("x\ny\nz\n")
    _, data = run(tmp_path, "--format", "parallel", "--input", q, "--response-input", r,
                  "--valid-fraction", "0", "--test-fraction", "0", *WS, out="par")
    assert data["train"] == [("a", "x"), ("b", "y"), ("c", "z")]  # sorted unit order: input order kept


def test_pre_split_inputs(tmp_path):
    files = {}
    for split, text in (("train", "a\tb\nc\td\n"), ("valid", "e\tf\n"), ("test", "g\th\ni\tj\n")):
        files[split] = tmp_path / f"{split}.tsv"
        files[split].write_text(text)
    report, data = run(tmp_path, "--format", "tsv", "--input", files["train"], "--valid-input", files["valid"],
                       "--test-input", files["test"], *WS)
    assert data == {"train": [("a", "b"), ("c", "d")], "valid": [("e", "f")], "test": [("g", "h"), ("i", "j")]}
    assert report["units"] == {"train": None, "valid": None, "test": None}


def test_chitchat_default_source_sampled(tmp_path):
    report, data = run(tmp_path, "--max-units", "30", "--seed", "3", "--valid-fraction", "0.1",
                       "--test-fraction", "0.1")
    assert report["format"] == "chitchat" and report["unit"] == "conversation"
    assert report["units"] == {"train": 24, "valid": 3, "test": 3}
    assert report["pairs"]["train"] > 50 and report["pairs"]["valid"] > 0
    # moses tokens, lowercased
    text = " ".join(q for q, _ in data["train"])
    assert text == text.lower() and "  " not in text
    # adjacent turns: the response of one pair is often the query of the next
    train = data["train"]
    assert sum(a[1] == b[0] for a, b in zip(train, train[1:])) > len(train) // 2


@pytest.mark.cli
def test_nd_prepare_subprocess(tmp_path):
    src = tmp_path / "d.txt"
    src.write_text("Hello, World! __eou__ I'm fine. __eou__\n")
    proc = run_cli(["nd-prepare", "--format", "dailydialog", "--input", src, "--out-dir", tmp_path / "o",
                    "--valid-fraction", "0", "--test-fraction", "0"])
    assert "pairs: train 1, valid 0, test 0" in proc.stdout
    assert (tmp_path / "o" / "train.query").read_text() == "hello , world !\n"
    assert (tmp_path / "o" / "train.response").read_text() == "i 'm fine .\n"


# Cleaning options --------------------------------------------------------------------------------


def test_tokenize_and_lowercase_options(tmp_path):
    src = tmp_path / "p.tsv"
    src.write_text("Hello,   World!\tI'm FINE.\n")
    none0 = ["--valid-fraction", "0", "--test-fraction", "0"]
    _, data = run(tmp_path, "--format", "tsv", "--input", src, *none0, out="moses")
    assert data["train"] == [("hello , world !", "i 'm fine .")]
    _, data = run(tmp_path, "--format", "tsv", "--input", src, *none0, *WS, out="ws")
    assert data["train"] == [("Hello, World!", "I'm FINE.")]
    _, data = run(tmp_path, "--format", "tsv", "--input", src, *none0, "--tokenize", "none", out="none")
    assert data["train"] == [("hello,   world!", "i'm fine.")]


def test_dedup_max_length_and_empty(tmp_path):
    src = tmp_path / "p.tsv"
    src.write_text("a b\tc\n" "a b\tc\n" "one two three four five\tshort\n" "x\t   \n" "d\te\n")
    none0 = ["--valid-fraction", "0", "--test-fraction", "0", *WS]
    report, data = run(tmp_path, "--format", "tsv", "--input", src, *none0, out="keep")
    assert report["pairs"]["train"] == 4 and report["dropped_empty"] == 1
    report, data = run(tmp_path, "--format", "tsv", "--input", src, *none0, "--dedup", out="dedup")
    assert report["dropped_duplicate"] == 1 and sorted(data["train"]).count(("a b", "c")) == 1
    report, data = run(tmp_path, "--format", "tsv", "--input", src, *none0, "--max-length", "3", out="drop")
    assert report["dropped_long"] == 1 and ("one two three four five", "short") not in data["train"]
    report, data = run(tmp_path, "--format", "tsv", "--input", src, *none0, "--max-length", "3", "--truncate",
                       out="trunc")
    assert report["truncated"] == 1 and ("one two three", "short") in data["train"]


def test_max_units_and_caps(tmp_path):
    src = tmp_path / "d.txt"
    src.write_text(dialogues(50, 3))
    report, data = run(tmp_path, "--format", "dailydialog", "--input", src, "--max-units", "10",
                       "--valid-fraction", "0.2", "--test-fraction", "0.2", "--max-valid-pairs", "1", *WS)
    assert sum(report["units"].values()) == 10
    assert report["pairs"]["valid"] == 1 and report["pairs"]["test"] == 4


# Bad input ---------------------------------------------------------------------------------------


def test_bad_input_errors(tmp_path, capsys):
    fails(capsys, "does not exist", tmp_path, "--format", "tsv", "--input", tmp_path / "missing.tsv")
    fails(capsys, "needs --input", tmp_path, "--format", "dailydialog")
    fails(capsys, "unknown --format", tmp_path, "--format", "csv", "--input", tmp_path)

    tsv = tmp_path / "bad.tsv"
    tsv.write_text("a\tb\nc\td\nonly one field\ne\tf\n")
    err = fails(capsys, "line 3 has 1 tab-separated fields", tmp_path, "--format", "tsv", "--input", tsv)
    assert str(tsv) in err

    eou = tmp_path / "bad.txt"
    eou.write_text("a __eou__ b\na __eou__ b __eou__ c\n")
    fails(capsys, "line 2 has 3 utterances", tmp_path, "--format", "eou-pairs", "--input", eou)

    q, r = tmp_path / "q.txt", tmp_path / "r.txt"
    q.write_text("a\nb\nc\n")
    r.write_text("x\ny\n")
    err = fails(capsys, "misaligned inputs", tmp_path, "--format", "parallel", "--input", q, "--response-input", r)
    assert f"{q} has 3 lines" in err and f"{r} has 2 lines" in err
    fails(capsys, "--response-input", tmp_path, "--format", "parallel", "--input", q)

    latin = tmp_path / "latin1.txt"
    latin.write_bytes(b"ok __eou__ fine __eou__\ncaf\xe9 __eou__ oui __eou__\n")
    err = fails(capsys, "line 2 is not valid UTF-8", tmp_path, "--format", "dailydialog", "--input", latin)
    assert str(latin) in err

    ok = tmp_path / "ok.tsv"
    ok.write_text("a\tb\n")
    fails(capsys, "both --valid-input and --test-input", tmp_path, "--format", "tsv", "--input", ok,
          "--valid-input", ok)
    fails(capsys, "outside [0, 1)", tmp_path, "--format", "tsv", "--input", ok, "--valid-fraction", "1.5")
    fails(capsys, "no training pairs", tmp_path, "--format", "tsv", "--input", ok, "--max-length", "0",
          "--min-length", "5", "--valid-fraction", "0", "--test-fraction", "0")


def test_parallel_presplit_names_the_missing_response_option(tmp_path):
    q, r = tmp_path / "q.txt", tmp_path / "r.txt"
    q.write_text("a\n")
    r.write_text("b\n")
    args = prepare.build_parser().parse_args(
        ["--format", "parallel", "--input", str(q), "--response-input", str(r), "--valid-input", str(q),
         "--test-input", str(q), "--test-response-input", str(r), "--out-dir", str(tmp_path / "o")])
    with pytest.raises(InputError, match="--valid-response-input"):
        prepare.prepare(args)
