"""nd-filter: the CLI contract, bad input, atomic outputs, and the fast path against a reference.

The reference implementation below is deliberately plain (str keys, dicts, math.fsum, a full
sort): the fast path (bytes, vectorised hashing, hash buckets, several processes, block-wise
writing) must give the same scores to 6 decimals and exactly the same selections.
"""

import json
import math
import os
import random
import statistics
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from nd_fairseq.filtering import cli
from nd_fairseq.io_utils import InputError, iter_line_buffers, iter_line_blocks, iter_numbered_lines, run_parallel

from nd_fairseq.filtering import file_scoring as se  # the module whose tuning constants the tests patch

OUTPUTS = {"scores.txt", "top.query", "top.response", "bottom.query", "bottom.response", "summary.json"}

# The hand-made corpus of test_source_entropy.py: scores in bits, by hand.
PAIRS = [("hi", "yeah"), ("hi", "yeah"), ("how are you", "yeah"),
         ("a", "ok"), ("b", "ok"), ("c", "ok"), ("d", "ok"),
         ("a", "sure"), ("a", "sure"), ("b", "sure"), ("b", "sure"),
         ("c", "no"), ("d", "no"), ("e", "the weather is nice"), ("e", "same"), ("e", "same")]
H_YEAH = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
SCORES = [H_YEAH] * 3 + [2.0] * 4 + [1.0] * 6 + [0.0] * 3


def write_pairs(directory: Path, pairs, newline="\n", name=("train.query", "train.response")):
    q, r = directory / name[0], directory / name[1]
    q.write_bytes("".join(p[0] + newline for p in pairs).encode())
    r.write_bytes("".join(p[1] + newline for p in pairs).encode())
    return q, r


def lines_of(path: Path):
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def nd_filter(*args):
    """cli.main in this process (the subprocess contract is tested separately)."""
    return cli.main([str(a) for a in args] + ["--quiet"])


# The CLI contract ---------------------------------------------------------------------------------


@pytest.mark.cli
def test_cli_contract_subprocess(tmp_path):
    q, r = write_pairs(tmp_path, PAIRS)
    out = tmp_path / "out"
    proc = run_cli(["nd-filter", "--query", q, "--response", r, "--out-dir", out, "--bottom"])
    assert "pairs: 16" in proc.stdout and "top (negative set): 8 pairs" in proc.stdout
    assert set(os.listdir(out)) == OUTPUTS  # and nothing half-written beside them
    assert lines_of(out / "scores.txt") == ["0.918296"] * 3 + ["2.0"] * 4 + ["1.0"] * 6 + ["0.0"] * 3
    top = [3, 4, 5, 6, 7, 8, 9, 10]  # score desc, ties (the six 1-bit lines) by line number
    bottom = [0, 1, 2, 11, 12, 13, 14, 15]
    assert lines_of(out / "top.query") == [PAIRS[i][0] for i in top]
    assert lines_of(out / "top.response") == [PAIRS[i][1] for i in top]
    assert lines_of(out / "bottom.query") == [PAIRS[i][0] for i in bottom]
    assert lines_of(out / "bottom.response") == [PAIRS[i][1] for i in bottom]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == 16 and summary["unique"] == 6
    assert summary["median"] == 1.0  # sorted scores: 0 x3, 0.918 x3, 1 x6, 2 x4
    assert summary["zero_share"] == 3 / 16
    assert summary["cut"] == 1.0 and summary["top"] == 8 and summary["bottom"] == 8
    assert summary["mean"] == pytest.approx(sum(SCORES) / 16)
    assert summary["key"] == "normalized" and summary["base"] == "2" and summary["mode"] == "ratio"


def test_cli_options(tmp_path):
    q, r = write_pairs(tmp_path, PAIRS)
    # nats
    assert nd_filter("--query", q, "--response", r, "--out-dir", tmp_path / "e", "--base", "e") == 0
    nats = [float(x) for x in lines_of(tmp_path / "e" / "scores.txt")]
    assert nats == [round(s * math.log(2), 6) for s in SCORES]
    assert set(os.listdir(tmp_path / "e")) == {"scores.txt", "top.query", "top.response", "summary.json"}
    # threshold: top = score > T, bottom = score <= T
    assert nd_filter("--query", q, "--response", r, "--out-dir", tmp_path / "t", "--threshold", "1.0",
                     "--bottom") == 0
    assert lines_of(tmp_path / "t" / "top.query") == ["a", "b", "c", "d"]
    assert len(lines_of(tmp_path / "t" / "bottom.query")) == 12
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["mode"] == "threshold" and summary["ratio"] is None and summary["cut"] == 1.0
    # --no-top with a bottom ratio: the last 4 of the order
    assert nd_filter("--query", q, "--response", r, "--out-dir", tmp_path / "b", "--no-top",
                     "--bottom-ratio", "0.25") == 0
    assert set(os.listdir(tmp_path / "b")) == {"scores.txt", "bottom.query", "bottom.response", "summary.json"}
    assert lines_of(tmp_path / "b" / "bottom.response") == ["yeah", "the weather is nice", "same", "same"]
    # target entropy (of the queries), exact keys
    assert nd_filter("--query", q, "--response", r, "--out-dir", tmp_path / "g", "--entropy", "target",
                     "--key", "exact", "--ratio", "0.25") == 0
    h_a = -(1 / 3 * math.log2(1 / 3) + 2 / 3 * math.log2(2 / 3))
    tgt = {"hi": 0.0, "how are you": 0.0, "a": h_a, "b": h_a, "c": 1.0, "d": 1.0, "e": h_a}
    assert [float(x) for x in lines_of(tmp_path / "g" / "scores.txt")] == [round(tgt[p[0]], 6) for p in PAIRS]
    assert lines_of(tmp_path / "g" / "top.query") == ["c", "d", "c", "d"]  # the 4 lines with 1 bit


def test_prefix_key_and_crlf_input(tmp_path):
    pairs = [("q1", "Yeah I know"), ("q2", "yeah i know right"), ("q3", "yeah  i"), ("q4", "no idea")]
    q, r = write_pairs(tmp_path, pairs, newline="\r\n")
    assert nd_filter("--query", q, "--response", r, "--out-dir", tmp_path / "o", "--key", "prefix:2",
                     "--bottom") == 0
    assert [float(x) for x in lines_of(tmp_path / "o" / "scores.txt")] == [round(math.log2(3), 6)] * 3 + [0.0]
    # CR LF read as LF; outputs are written with LF and the original text
    assert (tmp_path / "o" / "top.response").read_bytes() == b"Yeah I know\nyeah i know right\n"
    assert lines_of(tmp_path / "o" / "bottom.query") == ["q3", "q4"]


# Bad input and atomic outputs ---------------------------------------------------------------------


def assert_fails(capsys, match, *args):
    assert nd_filter(*args) == 2
    err = capsys.readouterr().err
    assert err.startswith("nd-filter: error: ") and match in err, err
    return err


def test_errors_name_the_file_and_leave_nothing_behind(tmp_path, capsys):
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    q, r = write_pairs(tmp_path, PAIRS)
    # a finished run first: a failed run must leave its outputs as they were
    assert nd_filter("--query", q, "--response", r, "--out-dir", out, "--bottom") == 0
    before = {f: (out / f).read_bytes() for f in os.listdir(out)}
    common = ["--out-dir", out, "--bottom", "--scratch-dir", scratch]

    empty_q, empty_r = write_pairs(tmp_path, [], name=("e.query", "e.response"))
    assert_fails(capsys, "are empty", "--query", empty_q, "--response", empty_r, *common)

    short = tmp_path / "short.response"
    short.write_text("yeah\nok\n")
    err = assert_fails(capsys, "misaligned", "--query", q, "--response", short, *common)
    assert f"{q} has 16 lines" in err and f"{short} has 2 lines" in err

    bad = tmp_path / "bad.response"
    bad.write_bytes(b"yeah\nok\ncaf\xe9\n" + b"x\n" * 13)  # latin-1 on line 3
    err = assert_fails(capsys, "not valid UTF-8", "--query", q, "--response", bad, *common)
    assert f"{bad}: line 3 " in err
    bad_q = tmp_path / "bad.query"
    bad_q.write_bytes(b"a\n" * 10 + b"\xff\xfe\n" + b"b\n" * 5)
    err = assert_fails(capsys, "not valid UTF-8", "--query", bad_q, "--response", r, *common)
    assert f"{bad_q}: line 11 " in err

    assert_fails(capsys, "does not exist", "--query", tmp_path / "nope", "--response", r, *common)
    assert_fails(capsys, "grouping key", "--query", q, "--response", r, "--key", "words", *common)
    assert_fails(capsys, "outside [0, 1]", "--query", q, "--response", r, "--ratio", "1.5", *common)

    assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before  # no temporaries either
    assert os.listdir(scratch) == []


def test_failure_while_writing_removes_the_temporaries(tmp_path, monkeypatch, capsys):
    q, r = write_pairs(tmp_path, PAIRS)

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(cli, "_write_scores", broken)
    assert nd_filter("--query", q, "--response", r, "--out-dir", tmp_path / "out", "--bottom", "--jobs", "1") == 2
    assert capsys.readouterr().err == f"nd-filter: error: {tmp_path / 'out'}: disk full; check the path, its " \
                                      f"permissions and the free space\n"
    assert not (tmp_path / "out").exists()  # the directory it made is removed too


def test_run_parallel_order_and_errors():
    assert run_parallel([(pow, (2, 3)), (pow, (3, 2)), (max, (1, 5))], 2) == [8, 9, 5]
    assert run_parallel([(pow, (2, 3)), (pow, (3, 2))], 1) == [8, 9]

    def fails(x):
        raise InputError(f"bad {x}")

    with pytest.raises(InputError, match="bad 1"):
        run_parallel([(pow, (2, 3)), (fails, (1,))], 2)  # raised in the child, re-raised here
    with pytest.raises(InputError, match="bad 0"):
        run_parallel([(fails, (0,)), (pow, (2, 3))], 2)


def test_numbered_lines_count_from_one_as_wc_does(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("\ufeffa\r\n\nb\u2028c\nlast".encode())
    # a BOM is no part of line 1, \r\n ends a line, U+2028 does not, a final line needs no newline
    assert list(iter_numbered_lines(str(path))) == [(1, "a"), (2, ""), (3, "b\u2028c"), (4, "last")]
    (tmp_path / "empty.txt").write_bytes(b"")
    assert list(iter_numbered_lines(str(tmp_path / "empty.txt"))) == []


def test_line_buffers_match_line_blocks(tmp_path):
    path = tmp_path / "t.txt"
    text = "a\r\nbb\n\nccc\r\r\n" + "x" * 300 + "\nlast\r"
    path.write_bytes(text.encode())
    expected = [line for block in iter_line_blocks(str(path)) for line in block]
    assert expected == ["a", "bb", "", "ccc\r", "x" * 300, "last"]
    for size in (4, 16, 64, 1 << 20):  # lines longer than a block too
        got = []
        for data, n in iter_line_buffers(str(path), size):
            got += data[:n].decode().split("\n")
        assert got == expected, size


# The fast path against a reference -----------------------------------------------------------------


def reference_keys(lines, key):
    if key == "exact":
        return list(lines)
    norm = [" ".join(unicodedata.normalize("NFKC", x).lower().split()) for x in lines]
    if key.startswith("prefix:"):
        k = int(key.split(":")[1])
        return [" ".join(x.split(" ")[:k]) for x in norm]
    return norm


def reference_scores(queries, responses, key, base):
    qk, rk = reference_keys(queries, key), reference_keys(responses, key)
    answered = defaultdict(Counter)
    for a, b in zip(qk, rk):
        answered[b][a] += 1
    entropy = {}
    for b, counts in answered.items():
        n = sum(counts.values())
        entropy[b] = max(0.0, -math.fsum(c / n * math.log(c / n) for c in counts.values())) / math.log(base)
    return [entropy[b] for b in rk], len(answered)


def reference_cut(scores, ratio):
    n = len(scores)
    order = sorted(range(n), key=lambda i: (-round(scores[i], 6), i))  # ranked as scores.txt holds them
    k = min(n, math.ceil(ratio * n - 1e-9))
    return sorted(order[:k]), sorted(order[k:])


POOL = ["yeah", "Yeah", "yeah ", "ok", "OK", "lol", "i don't know", "i  don't know", "i don't\tknow",
        "haha 😂", "café ?", "ｙｅａｈ", "yeah\u00a0i know", "yeah i know right", "no", "me too", "what ?",
        "why not", "Σίσυφος", "oh really ?", "same here", "", " "]


def random_corpus(rng, n):
    def line():
        if rng.random() < 0.6:
            return rng.choice(POOL)
        words = [rng.choice(["i", "you", "the", "a", "like", "dogs", "cats", "it", "is", "so", "Good"])
                 for _ in range(rng.randint(1, 12))]
        return rng.choice(["", "", "", " "]) + " ".join(words) + rng.choice(["", "", "", "  "])
    turns = [line() for _ in range(n + 1)]
    return turns[:-1], turns[1:]


@pytest.mark.parametrize("key,base,jobs,bucket_lines,block,large", [
    ("normalized", "2", 2, None, None, None),
    ("exact", "2", 1, 300, 256, None),
    ("prefix:2", "e", 2, 200, 512, None),
    ("prefix:1", "10", 3, 500, 128, None),
    ("normalized", "e", 2, 100, 400, None),
    ("normalized", "2", 2, 100, None, 0.5),  # every bucket counted chunk by chunk
])
def test_fast_path_matches_reference(tmp_path, monkeypatch, key, base, jobs, bucket_lines, block, large):
    rng = random.Random(f"{key}{base}{jobs}")
    queries, responses = random_corpus(rng, 2001)
    q, r = write_pairs(tmp_path, list(zip(queries, responses)))
    ref, n_unique = reference_scores(queries, responses, key, math.e if base == "e" else float(base))
    ref_top, ref_bottom = reference_cut(ref, 0.5)
    assert 10 < len(set(round(x, 9) for x in ref)) < 500  # many ties
    assert key.startswith("prefix") or ref.count(0.0) > 100

    if bucket_lines:
        monkeypatch.setattr(se, "BUCKET_LINES", bucket_lines)  # several hash buckets
    if large:
        monkeypatch.setattr(se, "LARGE_BUCKET", large)
    if block:
        monkeypatch.setattr(se, "HASH_BLOCK_BYTES", block)  # many blocks, lines across them
        monkeypatch.setattr(cli, "WRITE_BLOCK_BYTES", block)
    with se.score_files(str(q), str(r), key=key, base=base, jobs=jobs) as corpus:
        np.testing.assert_allclose(np.asarray(corpus.scores), ref, rtol=0, atol=1e-9)
        assert corpus.n_unique == n_unique

    out = tmp_path / "out"
    assert nd_filter("--query", q, "--response", r, "--out-dir", out, "--key", key, "--base", base,
                     "--bottom", "--jobs", jobs) == 0
    scores = [float(x) for x in lines_of(out / "scores.txt")]
    assert len(scores) == 2001
    assert max(abs(a - b) for a, b in zip(scores, ref)) <= 5e-7 + 1e-12
    assert lines_of(out / "top.query") == [queries[i] for i in ref_top]
    assert lines_of(out / "top.response") == [responses[i] for i in ref_top]
    assert lines_of(out / "bottom.query") == [queries[i] for i in ref_bottom]
    assert lines_of(out / "bottom.response") == [responses[i] for i in ref_bottom]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == 2001 and summary["unique"] == n_unique
    assert summary["zero_share"] == sum(x == 0.0 for x in ref) / 2001
    assert summary["median"] == pytest.approx(statistics.median(ref), abs=1e-9)
    # the cut is reported as ranked: the value scores.txt holds (6 decimals)
    assert summary["cut"] == pytest.approx(sorted(ref, reverse=True)[len(ref_top) - 1], abs=5e-7)


def test_cut_ranks_the_values_scores_txt_holds(tmp_path):
    """Entropies that differ only beyond the 6 decimals of scores.txt tie (broken by line order), so
    the in-fairseq filter, which reads scores.txt, selects exactly what nd-filter selected."""
    from nd_fairseq.filtering.cut import select_indices

    # response "a" answered 12/6/5/2 times by four queries, "b" 7/7/4/1 times:
    # H(a) = 1.7582975702..., H(b) = 1.7582975708... bits, both 1.758298 in scores.txt
    pairs = []
    for q, c in zip("pqrs", (12, 6, 5, 2)):
        pairs += [(f"{q}1", "a")] * c
    for q, c in zip("pqrs", (7, 7, 4, 1)):
        pairs += [(f"{q}2", "b")] * c
    pairs += [(f"u{i}", f"z{i}") for i in range(40)]  # 40 pairs with H = 0
    (tmp_path / "q").write_text("\n".join(q for q, _ in pairs) + "\n")
    (tmp_path / "r").write_text("\n".join(r for _, r in pairs) + "\n")
    assert nd_filter("--query", tmp_path / "q", "--response", tmp_path / "r", "--out-dir", tmp_path / "o",
                     "--key", "exact", "--ratio", str(20 / 84), "--bottom") == 0
    scores = np.array([float(x) for x in lines_of(tmp_path / "o" / "scores.txt")])
    assert scores[0] == scores[25] == 1.758298
    # a tie at the cut: the first 20 lines in input order ("a"), not the slightly higher "b"
    assert lines_of(tmp_path / "o" / "top.response") == ["a"] * 20
    responses = [r for _, r in pairs]
    for subset, ratio in (("top", 20 / 84), ("bottom", 64 / 84)):
        chosen = select_indices(scores, subset, ratio)
        assert [responses[i] for i in chosen] == lines_of(tmp_path / "o" / f"{subset}.response")
