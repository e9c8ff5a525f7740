"""nd-humaneval create: sampling, pairing, readers of generate logs, sides, and bad input."""

import random
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "humaneval"))

from conftest import cli_env, run_cli  # noqa: E402
from studykit import SYS_A, SYS_B, SYS_C, create_args, db_rows, make_inputs, queries, responses, write_generate, \
    write_lines  # noqa: E402

from nd_fairseq.humaneval import store  # noqa: E402


def test_create_samples_reproducibly_and_pairs_first_with_each_other(tmp_path):
    files = make_inputs(tmp_path, n=12)
    db = tmp_path / "study.sqlite"
    proc = run_cli(create_args(files, db, n=5, systems=(SYS_A, SYS_B, SYS_C)))
    assert "10 items (5 queries x zorblax vs quintvar, zorblax vs plumbrick)" in proc.stdout
    expected = sorted(random.Random(1).sample(range(12), 5))  # the documented draw, 0-based lines
    rows = db_rows(db, "SELECT line, query, system_a, system_b, response_a, response_b FROM items ORDER BY id")
    assert [r[0] - 1 for r in rows] == expected + expected
    assert [(r[2], r[3]) for r in rows] == [(SYS_A, SYS_B)] * 5 + [(SYS_A, SYS_C)] * 5
    qs, ra, rb, rc = queries(12), responses("a", 12), responses("b", 12), responses("c", 12)
    for line, q, a, b, resp_a, resp_b in rows:
        assert q == qs[line - 1] and resp_a == ra[line - 1]
        assert resp_b == (rb if b == SYS_B else rc)[line - 1]
    # the same command gives the same study
    db2 = tmp_path / "again.sqlite"
    run_cli(create_args(files, db2, n=5, systems=(SYS_A, SYS_B, SYS_C)))
    assert db_rows(db2, "SELECT line, system_a, system_b FROM items ORDER BY id") == [(r[0], r[2], r[3]) for r in rows]
    assert db_rows(db, "PRAGMA journal_mode")[0][0] == "wal"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_create_all_pairs_and_generate_logs_with_pieces(tmp_path):
    qs = queries(8)
    files = {"queries": write_lines(tmp_path / "test.query", qs)}
    for name, tag in ((SYS_A, "a"), (SYS_B, "b"), (SYS_C, "c")):
        files[name] = write_generate(tmp_path / f"{name}.gen", qs, responses(tag, 8))
    db = tmp_path / "s.sqlite"
    run_cli(create_args(files, db, n=8, systems=(SYS_A, SYS_B, SYS_C), extra=["--pairs", "all"]))
    rows = db_rows(db, "SELECT line, system_a, system_b, response_a, response_b FROM items ORDER BY id")
    assert len(rows) == 24
    assert {(r[1], r[2]) for r in rows} == {(SYS_A, SYS_B), (SYS_A, SYS_C), (SYS_B, SYS_C)}
    # ids re-ordered and pieces undone: line 3 of zorblax is its hypothesis 2, as plain words
    first = [r for r in rows if r[0] == 3 and r[1] == SYS_A][0]
    assert first[3] == "the ending of film 2 was brilliant and surprising"
    assert db_rows(db, "SELECT name FROM criteria ORDER BY position") == [("informativeness",), ("relevance",),
                                                                            ("fluency",)]


def test_sides_are_balanced_per_annotator_and_pair(tmp_path):
    """Each annotator sees each system on the left for half of its items (within one)."""
    files = make_inputs(tmp_path, n=25)
    db = tmp_path / "s.sqlite"
    run_cli(create_args(files, db, n=25, systems=(SYS_A, SYS_B, SYS_C)))
    with store.Study(str(db)) as st:
        for name in ("alice", "bob", "carol"):
            st.ensure_assignments(name)
        st.ensure_assignments("alice")  # a second visit draws nothing new
    rows = db_rows(db, "SELECT a.annotator, i.system_b, a.a_on_left, a.position FROM assignments a "
                       "JOIN items i ON i.id = a.item_id")
    assert len(rows) == 3 * 50
    for name in ("alice", "bob", "carol"):
        for other in (SYS_B, SYS_C):
            left = sum(r[2] for r in rows if r[0] == name and r[1] == other)
            assert abs(left - (25 - left)) <= 1, (name, other, left)
        assert sorted(r[3] for r in rows if r[0] == name) == list(range(1, 51))
    # orders differ between annotators (randomised per annotator)
    order = {n: [r for r in db_rows(db, "SELECT item_id FROM assignments WHERE annotator = ? ORDER BY position",
                                     (n,))] for n in ("alice", "bob")}
    assert order["alice"] != order["bob"]


def _fails(args, tmp_path, needle):
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = run_cli(args, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nd-humaneval: error: "), proc.stderr
    assert needle in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no temporary left
    return lines[0]


def test_bad_input_one_line_errors_nothing_written(tmp_path):
    files = make_inputs(tmp_path, n=10)
    db = tmp_path / "s.sqlite"
    short = write_lines(tmp_path / "short.txt", responses("b", 9))
    msg = _fails(["nd-humaneval", "create", "--system", f"{SYS_A}={files[SYS_A]}", "--system", f"{SYS_B}={short}",
                  "--queries", files["queries"], "--n", "5", "--db", db], tmp_path, "different numbers of responses")
    assert f"{SYS_A}={files[SYS_A]} has 10" in msg and f"{SYS_B}={short} has 9" in msg
    # a query file of another length
    other_q = write_lines(tmp_path / "other.query", queries(11))
    _fails(create_args({**files, "queries": other_q}, db), tmp_path, f"--queries {other_q} has 11 lines")
    # a query file of the right length but not the test set the generate logs were decoded on
    gen_a = write_generate(tmp_path / "a.gen", queries(10), responses("a", 10))
    gen_b = write_generate(tmp_path / "b.gen", queries(10), responses("b", 10))
    wrong = write_lines(tmp_path / "wrong.query", [f"how is your dog {i} ?" for i in range(10)])
    _fails(["nd-humaneval", "create", "--system", f"{SYS_A}={gen_a}", "--system", f"{SYS_B}={gen_b}", "--queries",
            wrong, "--n", "5", "--db", db], tmp_path, "does not match the S- lines")
    # one system, a missing file, a duplicate name, --n too large, an unknown criterion
    _fails(create_args(files, db, systems=(SYS_A,)), tmp_path, "at least two --system")
    _fails(["nd-humaneval", "create", "--system", f"{SYS_A}={tmp_path / 'nope.txt'}", "--system",
            f"{SYS_B}={files[SYS_B]}", "--queries", files["queries"], "--db", db], tmp_path, "does not exist")
    _fails(["nd-humaneval", "create", "--system", f"{SYS_A}={files[SYS_A]}", "--system", f"{SYS_A}={files[SYS_B]}",
            "--queries", files["queries"], "--db", db], tmp_path, "is given twice")
    _fails(create_args(files, db, n=11), tmp_path, "--n 11 is more than the 10 test queries")
    _fails(create_args(files, db, extra=["--criteria", "humour"]), tmp_path, "--define humour=")
    # an existing study is never overwritten
    run_cli(create_args(files, db))
    _fails(create_args(files, db), tmp_path, "already exists")


def test_not_a_study_file(tmp_path):
    text = write_lines(tmp_path / "notes.sqlite", ["just some text"])
    other = tmp_path / "other.sqlite"
    import sqlite3

    con = sqlite3.connect(str(other))
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    for path in (text, str(other)):
        before = Path(path).read_bytes()
        for cmd in (["report", path], ["serve", path, "--port", "0"], ["export", path, "--output",
                                                                        str(tmp_path / "j.csv")],
                    ["judge", path, "--base-url", "http://127.0.0.1:9/v1", "--model", "m"]):
            msg = _fails(["nd-humaneval", *cmd], tmp_path, "is not a study file")
            assert path in msg
        assert Path(path).read_bytes() == before
    _fails(["nd-humaneval", "report", str(tmp_path / "missing.sqlite")], tmp_path, "does not exist")


def test_no_fairseq_or_torch_import():
    code = ("import sys, nd_fairseq.humaneval.cli, nd_fairseq.humaneval.server, nd_fairseq.humaneval.report, "
            "nd_fairseq.humaneval.judge, nd_fairseq.humaneval.exchange; "
            "print(sorted(m for m in ('fairseq', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_multi_turn_queries_shown_one_turn_a_line():
    from nd_fairseq.humaneval.study import display_query

    assert display_query("hi there ! __eou__ hello , how are you ?") == "hi there !\nhello , how are you ?"
    assert display_query("just one turn") == "just one turn"
