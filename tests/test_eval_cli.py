"""nd-eval: the fairseq-generate reader, the command-line contract, the multi-system table and
every bad-input error (one line, exit code 2, no traceback)."""

import json
import subprocess
import sys
import time

import pytest

from conftest import cli_env, run_cli
from nd_fairseq.evaluation.cli import main
from nd_fairseq.evaluation.metrics import evaluate
from nd_fairseq.evaluation.readers import read_generate, read_responses, read_train_counts

METRIC_KEYS = ("dist-1", "dist-2", "dist-3", "lf", "kl-1", "kl-2", "bleu-3", "bleu-4")

# A hand-written fairseq-generate log (stdout and stderr together, --nbest 2, sentencepiece pieces
# left in H- because --post-process was not given): batches come out of id order, P-/D- lines and
# log lines are mixed in, sentence 1 has an empty hypothesis.
GENERATE_LOG = """\
2024-05-01 10:00:00 | INFO | fairseq_cli.generate | {'_name': None, 'common': {...}}
2024-05-01 10:00:01 | INFO | fairseq.tasks.translation | [query] dictionary: 8000 types
S-2\tdo you like cookies ?
T-2\ti love them
H-2\t-0.6120\t\u2581i \u2581love \u2581them
D-2\t-0.6120\ti love them
P-2\t-0.5000 -0.6000 -0.7000 -0.6480
H-2\t-0.9010\t\u2581i \u2581like \u2581them
D-2\t-0.9010\ti like them
P-2\t-0.8000 -0.9000 -1.0000 -0.9040
S-0\thi , how are you ?
T-0\tgood , and you ?
H-0\t-0.4100\t\u2581i \u2581' m \u2581good
D-0\t-0.4100\ti'm good
P-0\t-0.3000 -0.4000 -0.5000 -0.4400
H-0\t-0.7700\t\u2581good
D-0\t-0.7700\tgood
P-0\t-0.7700
S-1\twhat 's up ?
T-1\tnothing much
H-1\t-1.2000\t
D-1\t-1.2000\t
P-1\t-1.2000
2024-05-01 10:00:02 | INFO | fairseq_cli.generate | NOTE: hypothesis and token scores are output in base 2
2024-05-01 10:00:02 | INFO | fairseq_cli.generate | Translated 3 sentences (9 tokens) in 0.1s
Generate test with beam=2: BLEU4 = 12.34, 40.0/20.0/10.0/5.0 (BP=1.000, ratio=1.000, syslen=6, reflen=8)
"""


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def run_main(argv, capsys):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


# ---------------------------------------------------------------- reader

def test_read_generate_orders_by_id_keeps_best_and_undoes_pieces(tmp_path):
    gen = write(tmp_path / "gen.out", GENERATE_LOG)
    out = read_generate(str(gen))
    assert out.ids == [0, 1, 2]
    assert out.hypotheses == ["\u2581i \u2581' m \u2581good", "", "\u2581i \u2581love \u2581them"]
    assert out.references == {0: "good , and you ?", 1: "nothing much", 2: "i love them"}
    assert out.sources[1] == "what 's up ?"
    resp = read_responses(str(gen))
    assert resp.format == "generate"
    assert resp.hypotheses == ["i 'm good", "", "i love them"]  # pieces joined, first of the n-best
    assert resp.references == ["good , and you ?", "nothing much", "i love them"]
    assert read_responses(str(gen), field="D").hypotheses == ["i'm good", "", "i love them"]


def test_read_generate_bpe_and_trailing_tab_lost(tmp_path):
    gen = write(tmp_path / "gen.out", "H-1\t-0.1\tgood by@@ e\nT-1\tgood bye\nH-0\t-0.5\nT-0\tok\n")
    resp = read_responses(str(gen))
    assert resp.hypotheses == ["", "good bye"] and resp.ids == [0, 1]


def test_plain_text_is_read_as_is(tmp_path):
    hyp = write(tmp_path / "hyp.txt", "i 'm good\n\ni love them\n")
    resp = read_responses(str(hyp))
    assert resp.format == "text" and resp.references is None
    assert resp.hypotheses == ["i 'm good", "", "i love them"]


def test_train_counts_stream(tmp_path):
    train = write(tmp_path / "train.txt", "i love them\nI love it\n")
    assert read_train_counts(str(train)) == {"i": 1, "I": 1, "love": 2, "them": 1, "it": 1}
    assert read_train_counts(str(train), lowercase=True)["i"] == 2


# ---------------------------------------------------------------- the minimal contract

def test_cli_contract_plain_text(chitchat_text, tmp_path):
    hyp = chitchat_text / "test.query"  # a real "system": answers each query with a query-like line
    ref = chitchat_text / "test.response"
    train = chitchat_text / "train.response"
    out = tmp_path / "scores.json"
    proc = run_cli(["nd-eval", "--hyp", hyp, "--ref", ref, "--train-responses", train, "--json", out])
    data = json.loads(out.read_text(encoding="utf-8"))
    for key in METRIC_KEYS:
        assert isinstance(data[key], float), key
    for key in ("dist-1", "dist-2", "dist-3", "lf", "bleu-3", "bleu-4"):
        assert 0 < data[key] < 1, key  # fractions, not percentages
    expected = evaluate(lines(hyp), lines(ref), lines(train))
    for key in METRIC_KEYS + ("length", "unique", "top_share"):
        assert data[key] == pytest.approx(expected[key]), key
    assert data["n"] == len(lines(hyp)) and len(data["top_responses"]) == 10
    # one system: one table row, no best marks
    table = [ln for ln in proc.stdout.splitlines() if ln.startswith("| ")]
    assert len(table) == 2 and "**" not in proc.stdout
    assert "| test.query | " in table[1]
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left behind


def test_cli_small_files_by_hand(tmp_path, capsys):
    hyp = write(tmp_path / "hyp.txt", "i do not know\ni do not care\nyes\n")
    ref = write(tmp_path / "ref.txt", "i do not know\nwho cares\nyes\n")
    train = write(tmp_path / "train.txt", "i do not know\ni know\n")
    out = tmp_path / "o.json"
    rc, _, _ = run_main(["--hyp", hyp, "--ref", ref, "--train-responses", train, "--json", out,
                         "--lf-threshold", "2", "--quiet"], capsys)
    assert rc == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["dist-1"] == pytest.approx(6 / 9)
    assert data["dist-2"] == pytest.approx(4 / 6)
    assert data["dist-3"] == pytest.approx(3 / 4)
    assert data["lf"] == pytest.approx(6 / 9)  # do, not, do, not, care, yes: count < 2
    # hypothesis 1 and 3 equal their references: BLEU 1 (one-token "yes": see NLTK's convention);
    # hypothesis 2 "i do not care" vs "who cares": no unigram match -> 0
    assert data["bleu-4"] == pytest.approx(2 / 3)
    assert data["unique"] == pytest.approx(1.0) and data["length"] == pytest.approx(9 / 3)


def test_cli_generate_output_uses_t_lines(tmp_path, capsys):
    gen = write(tmp_path / "gen.out", GENERATE_LOG)
    train = write(tmp_path / "train.txt", "i love them\ngood , and you ?\n")
    out = tmp_path / "o.json"
    rc, stdout, _ = run_main(["--hyp", gen, "--train-responses", train, "--json", out], capsys)
    assert rc == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    expected = evaluate(["i 'm good", "", "i love them"], ["good , and you ?", "nothing much", "i love them"],
                        ["i love them", "good , and you ?"])
    for key in METRIC_KEYS:
        assert data[key] == pytest.approx(expected[key]), key
    # by hand: tokens i 'm good i love them -> 5 distinct of 6
    assert data["dist-1"] == pytest.approx(5 / 6)
    assert data["format"] == "generate" and "| gen.out |" in stdout


# ---------------------------------------------------------------- several systems

def parse_table(stdout):
    rows = [ln for ln in stdout.splitlines() if ln.startswith("| ")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    table = {}
    for row in rows[1:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        table[cells[0]] = dict(zip(header[1:], cells[1:]))
    return header, table


def test_multi_system_table_marks_best(chitchat_text, tmp_path, capsys):
    ref_lines = lines(chitchat_text / "test.response")
    n = len(ref_lines)
    # "Standard": the generic reply everywhere, as out-of-order fairseq-generate output
    std = tmp_path / "std.out"
    body = []
    for i in reversed(range(n)):
        body += [f"T-{i}\t{ref_lines[i]}", f"H-{i}\t-0.5\t\u2581i \u2581do \u2581n ' t \u2581know \u2581.",
                 f"P-{i}\t-0.1 -0.1 -0.1 -0.1 -0.1 -0.1"]
    write(std, "\n".join(body) + "\n")
    # "ND": a diverse system (real training responses), plain text
    nd = write(tmp_path / "nd.txt", "\n".join(lines(chitchat_text / "train.response")[:n]) + "\n")
    out = tmp_path / "table.json"
    rc, stdout, _ = run_main(["--system", f"Standard={std}", "--system", f"ND={nd}",
                              "--ref", chitchat_text / "test.response",
                              "--train-responses", chitchat_text / "train.response", "--json", out], capsys)
    assert rc == 0
    header, table = parse_table(stdout)
    assert header[:9] == ["System", "Dist-1 ↑", "Dist-2 ↑", "Dist-3 ↑", "LF ↑", "KL-1 ↓", "KL-2 ↓",
                          "BLEU-3 ↑", "BLEU-4 ↑"]
    assert list(table) == ["Standard", "ND"]
    data = json.loads(out.read_text(encoding="utf-8"))
    std_m, nd_m = data["systems"]["Standard"], data["systems"]["ND"]
    # the generic system: one response, 6 tokens each -> Dist-1 = 6 distinct / (6 n), Top-10 = 1
    assert std_m["dist-1"] == pytest.approx(6 / (6 * n))
    assert std_m["top_share"] == pytest.approx(1.0) and std_m["unique"] == pytest.approx(1 / n)
    assert std_m["top_responses"] == [{"response": "i do n't know .", "count": n, "share": 1.0}]
    # ND wins diversity; the generic-response gauge marks the lower top share
    for col in ("Dist-1 ↑", "Dist-2 ↑", "Dist-3 ↑", "Unique ↑", "Top-10 ↓"):
        assert table["ND"][col].startswith("**") and not table["Standard"][col].startswith("**"), col
    # every directed column: the bold row is the one with the better value
    for key, col, better in (("lf", "LF ↑", max), ("kl-1", "KL-1 ↓", min), ("kl-2", "KL-2 ↓", min),
                             ("bleu-3", "BLEU-3 ↑", max), ("bleu-4", "BLEU-4 ↑", max)):
        defined = [s for s in ("Standard", "ND") if data["systems"][s][key] is not None]
        winner = better(defined, key=lambda s: data["systems"][s][key])
        loser = "ND" if winner == "Standard" else "Standard"
        assert table[winner][col].startswith("**") and not table[loser][col].startswith("**"), col
        assert data["best"][key] == [winner]
    # the generic reply shares no bigram with these references: KL-2 undefined, shown as n/a
    assert std_m["kl-2"] is None and table["Standard"]["KL-2 ↓"] == "n/a"
    assert not any(c.startswith("**") for r in table.values() for c in [r["Len"]])  # no direction
    assert data["directions"]["kl-1"] == "lower" and data["directions"]["dist-2"] == "higher"


def test_multi_system_ties_are_all_marked(tmp_path, capsys):
    hyp = write(tmp_path / "a.txt", "hello there\nfine\n")
    ref = write(tmp_path / "ref.txt", "hello\nfine thanks\n")
    train = write(tmp_path / "t.txt", "hello there\n")
    rc, stdout, _ = run_main(["--system", f"A={hyp}", "--system", f"B={hyp}", "--ref", ref,
                              "--train-responses", train], capsys)
    assert rc == 0
    _, table = parse_table(stdout)
    assert table["A"]["Dist-1 ↑"] == table["B"]["Dist-1 ↑"] == "**1.0000**"


# ---------------------------------------------------------------- bad input

@pytest.fixture
def files(tmp_path):
    f = {
        "hyp": write(tmp_path / "hyp.txt", "a b\nc d\nyes\n"),
        "ref": write(tmp_path / "ref.txt", "a b\nc e\nno\n"),
        "ref4": write(tmp_path / "ref4.txt", "a b\nc e\nno\nmore\n"),
        "train": write(tmp_path / "train.txt", "a b c\n"),
        "empty": write(tmp_path / "empty.txt", ""),
        "latin1": tmp_path / "latin1.txt",
        "missing": tmp_path / "nope.txt",
        "gap": write(tmp_path / "gap.out", "H-0\t-1\ta b\nH-2\t-1\tc d\nH-3\t-1\tyes\n"),
        "no_t": write(tmp_path / "no_t.out", "H-0\t-1\ta b\nT-0\ta b\nH-1\t-1\tc d\nH-2\t-1\tyes\n"),
        "gen_a": write(tmp_path / "gen_a.out", "H-0\t-1\ta b\nT-0\ta b\n"),
        "gen_b": write(tmp_path / "gen_b.out", "H-0\t-1\ta b\nT-0\tx y\n"),
    }
    f["latin1"].write_bytes("a b\ncaf\u00e9 ol\u00e9\nyes\n".encode("latin-1"))
    return f


BAD_INPUTS = {
    "count mismatch": (["--hyp", "hyp", "--ref", "ref4", "--train-responses", "train"],
                       ["hyp.txt has 3 hypotheses but", "ref4.txt has 4 references"]),
    "empty hypotheses": (["--hyp", "empty", "--ref", "ref", "--train-responses", "train"],
                         ["hypothesis file", "empty.txt is empty"]),
    "empty references": (["--hyp", "hyp", "--ref", "empty", "--train-responses", "train"],
                         ["reference file", "empty.txt is empty"]),
    "empty training": (["--hyp", "hyp", "--ref", "ref", "--train-responses", "empty"],
                       ["training responses file", "empty.txt is empty"]),
    "missing hypotheses": (["--hyp", "missing", "--ref", "ref", "--train-responses", "train"],
                           ["hypothesis file", "nope.txt does not exist"]),
    "missing references": (["--hyp", "hyp", "--ref", "missing", "--train-responses", "train"],
                           ["reference file", "nope.txt does not exist"]),
    "missing training": (["--hyp", "hyp", "--ref", "ref", "--train-responses", "missing"],
                         ["training responses file", "nope.txt does not exist", "--train-responses"]),
    "latin-1 hypotheses": (["--hyp", "latin1", "--ref", "ref", "--train-responses", "train"],
                           ["latin1.txt: line 2 is not valid UTF-8", "re-encode"]),
    "latin-1 references": (["--hyp", "hyp", "--ref", "latin1", "--train-responses", "train"],
                           ["latin1.txt: line 2 is not valid UTF-8"]),
    "latin-1 training": (["--hyp", "hyp", "--ref", "ref", "--train-responses", "latin1"],
                         ["latin1.txt: line 2 is not valid UTF-8"]),
    "no references": (["--hyp", "hyp", "--train-responses", "train"], ["no references for", "--ref"]),
    "generate ids with a gap": (["--hyp", "gap", "--ref", "ref", "--train-responses", "train"],
                                ["gap.out: sentence id 1 (1 of 0..3) has no lines", "--allow-partial"]),
    "generate without all T- lines": (["--hyp", "no_t", "--train-responses", "train"],
                                      ["no_t.out lacks T- lines for 2 of its 3 sentences", "--ref"]),
    "not generate output": (["--hyp", "hyp", "--ref", "ref", "--train-responses", "train",
                             "--format", "generate"], ["hyp.txt has no H- lines"]),
    "different test sets": (["--system", "A=gen_a", "--system", "B=gen_b", "--train-responses", "train"],
                            ["gen_b.out and", "gen_a.out have different T- lines", "--ref"]),
    "bad --system": (["--system", "gen_a", "--ref", "ref", "--train-responses", "train"],
                     ["is not NAME=FILE"]),
    "duplicate --system name": (["--system", "A=hyp", "--system", "A=hyp", "--ref", "ref",
                                 "--train-responses", "train"], ["'A' is given twice"]),
    "no system": (["--ref", "ref", "--train-responses", "train"], ["--hyp FILE or --system"]),
}


def _resolve(argv, files):
    out = []
    for a in argv:
        if a in files:
            out.append(str(files[a]))
        elif "=" in a and a.split("=", 1)[1] in files:
            name, key = a.split("=", 1)
            out.append(f"{name}={files[key]}")
        else:
            out.append(a)
    return out


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_error(case, files, tmp_path, capsys):
    argv, needles = BAD_INPUTS[case]
    out = tmp_path / "out.json"
    out.write_text("previous results\n", encoding="utf-8")
    rc, stdout, stderr = run_main(_resolve(argv, files) + ["--json", out], capsys)
    assert rc == 2
    assert stdout == ""
    assert stderr.startswith("nd-eval: error: ") and stderr.count("\n") == 1, stderr
    for needle in needles:
        assert needle in stderr, (needle, stderr)
    assert out.read_text(encoding="utf-8") == "previous results\n"  # untouched on failure


def test_bad_input_in_a_real_process_has_no_traceback(files):
    proc = run_cli(["nd-eval", "--hyp", files["hyp"], "--ref", files["ref4"],
                    "--train-responses", files["train"]], check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("nd-eval: error: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr and "ref4.txt" in proc.stderr


def test_bad_option_values_exit_2(files, capsys):
    with pytest.raises(SystemExit) as err:
        main(["--hyp", str(files["hyp"]), "--ref", str(files["ref"]), "--train-responses",
              str(files["train"]), "--lf-threshold", "-1"])
    assert err.value.code == 2
    assert "is negative" in capsys.readouterr().err


# ---------------------------------------------------------------- startup and speed

def test_no_fairseq_or_torch_import():
    code = ("import sys, nd_fairseq.evaluation.cli; "
            "print(sorted(m for m in ('torch', 'fairseq', 'numpy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(),
                          check=True)
    assert proc.stdout.strip() == "[]"


def test_ten_thousand_hypotheses_in_seconds(chitchat_text, tmp_path, capsys):
    train_lines = lines(chitchat_text / "train.response") + lines(chitchat_text / "train.query")
    # 10k hypotheses and references, 100k training lines, made by tiling the real slice
    hyps = [train_lines[(7 * i) % len(train_lines)] for i in range(10_000)]
    refs = [train_lines[(11 * i + 3) % len(train_lines)] for i in range(10_000)]
    train = [train_lines[i % len(train_lines)] for i in range(100_000)]
    paths = [write(tmp_path / name, "\n".join(text) + "\n")
             for name, text in (("h.txt", hyps), ("r.txt", refs), ("t.txt", train))]
    t0 = time.perf_counter()
    rc, _, _ = run_main(["--hyp", paths[0], "--ref", paths[1], "--train-responses", paths[2],
                         "--json", tmp_path / "o.json", "--quiet"], capsys)
    seconds = time.perf_counter() - t0
    assert rc == 0
    assert seconds < 15, f"nd-eval took {seconds:.1f} s for 10k hypotheses"
