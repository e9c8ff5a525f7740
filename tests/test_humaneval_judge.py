"""nd-humaneval judge against a real local OpenAI-compatible server (tests/fixtures/pneg's fake)."""

import csv
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "humaneval"))
sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "pneg"))

from completions_server import CompletionsServer  # noqa: E402
from conftest import run_cli  # noqa: E402
from studykit import SYS_A, SYS_B, create_args, db_rows, make_inputs  # noqa: E402

from nd_fairseq.humaneval.judge import parse_answer  # noqa: E402

CRITERIA = ["informativeness", "relevance", "fluency"]


def scripted_judge(body):
    """Prefers zorblax's response on informativeness in either order (a consistent verdict), always
    says 1 on relevance (pure position bias) and tie on fluency."""
    first = re.search(r"^Response 1: (.*)$", body["prompt"], re.M).group(1)
    informativeness = "1" if "brilliant" in first else "2"
    return f" informativeness: {informativeness}\nrelevance: 1\nfluency: tie\n"


def test_parse_answer():
    assert parse_answer(" Informativeness: 1\n- relevance: tie\nfluency = 2\n###", CRITERIA) == \
        {"informativeness": "left", "relevance": "tie", "fluency": "right"}
    assert parse_answer("informativeness: Response 2\nrelevance: **1**", CRITERIA) == \
        {"informativeness": "right", "relevance": "left", "fluency": None}
    # two different answers for one criterion, or nothing usable: unreadable, not a tie
    assert parse_answer("relevance: 1\nrelevance: 2\n", CRITERIA)["relevance"] is None
    assert parse_answer("I think both are fine.", CRITERIA) == {c: None for c in CRITERIA}


def test_judge_both_orders_retry_failed_answer_and_report(tmp_path):
    files = make_inputs(tmp_path, n=8)
    db = tmp_path / "study.sqlite"
    run_cli(create_args(files, db, n=4))
    # three humans: zorblax wins informativeness, loses relevance, on every item
    sheet = tmp_path / "humans.csv"
    with open(sheet, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["annotator", "item", "criterion", "outcome"])
        for name in ("alice", "bob", "carol"):
            for item in range(1, 5):
                w.writerow([name, item, "informativeness", "win"])
                w.writerow([name, item, "relevance", "lose"])
    run_cli(["nd-humaneval", "import", db, "--input", sheet])

    with CompletionsServer(responder=scripted_judge) as fake:
        fake.queue(("status", 503, "overloaded, try again"), ("texts", ["I cannot decide between them."]))
        proc = run_cli(["nd-humaneval", "judge", db, "--base-url", fake.url, "--model", "fake-judge",
                        "--concurrency", "2", "--backoff", "0.01", "--quiet"])
        assert proc.returncode == 0
        # 4 items x 2 orders, plus the retry of the 503
        assert len(fake.requests) == 9
        bodies = [r["body"] for r in fake.requests]
        assert all(b["model"] == "fake-judge" and b["temperature"] == 0.0 for b in bodies)
        for b in bodies:  # the judge is blinded too
            assert SYS_A not in b["prompt"] and SYS_B not in b["prompt"]
        answers = db_rows(db, "SELECT item_id, a_on_left, criterion, choice, status, raw FROM judge_answers "
                              "WHERE annotator = 'llm:fake-judge'")
        assert len(answers) == 24
        failed = [a for a in answers if a[4] == "failed"]
        assert len(failed) == 3 and {a[3] for a in failed} == {None}
        assert {a[5] for a in failed} == {"I cannot decide between them."}
        failed_item = failed[0][0]
        # each item asked in both orders
        assert sorted({(a[0], a[1]) for a in answers}) == [(i, s) for i in range(1, 5) for s in (0, 1)]
        stored = db_rows(db, "SELECT item_id, criterion, outcome FROM judgments WHERE annotator = 'llm:fake-judge'")
        assert len(stored) == 9 and failed_item not in {s[0] for s in stored}  # failed: no tie stored

        # a rerun asks only the failed order again
        proc = run_cli(["nd-humaneval", "judge", db, "--base-url", fake.url, "--model", "fake-judge",
                        "--backoff", "0.01"])
        assert len(fake.requests) == 10
        assert "asked 1 questions (7 answered before), 3 judgments stored" in proc.stdout
    stored = dict(((i, c), o) for i, c, o in db_rows(
        db, "SELECT item_id, criterion, outcome FROM judgments WHERE annotator = 'llm:fake-judge'"))
    assert len(stored) == 12
    assert {stored[(i, "informativeness")] for i in range(1, 5)} == {"win"}
    assert {stored[(i, "relevance")] for i in range(1, 5)} == {"tie"}  # order-dependent verdict: a tie
    assert {stored[(i, "fluency")] for i in range(1, 5)} == {"tie"}

    run_cli(["nd-humaneval", "report", db, "--quiet"])
    summary = json.loads((tmp_path / "study.report.json").read_text(encoding="utf-8"))
    judge = summary["llm_judges"][0]
    assert judge["judge"] == "llm:fake-judge" and summary["annotators"] == ["alice", "bob", "carol"]
    pb = judge["position_bias"]
    # 12 item-criterion pairs: informativeness and fluency agree across orders (8), relevance says
    # "left" both times (4); non-tie answers: 8 informativeness (4 left) + 8 relevance (all left)
    assert pb == {"answers": 24, "failed": 0, "pairs_both_orders": 12, "consistent": 66.7,
                  "left_both_orders": 33.3, "right_both_orders": 0.0, "left_share_of_non_ties": 75.0}
    crits = judge["pairs"][0]["criteria"]
    assert crits["informativeness"]["agreement_with_majority"] == 100.0
    assert crits["relevance"]["agreement_with_majority"] == 0.0
    assert crits["fluency"]["agreement_items"] == 0  # no human judged fluency
    # the humans' figures do not include the judge
    assert summary["table"][0]["criteria"]["informativeness"]["n"] == 12
    md = (tmp_path / "study.report.md").read_text(encoding="utf-8")
    assert "### LLM judge `llm:fake-judge`" in md and "same verdict in both orders 66.7%" in md


def test_judge_configuration_error_stops_with_one_line(tmp_path):
    files = make_inputs(tmp_path, n=6)
    db = tmp_path / "study.sqlite"
    run_cli(create_args(files, db, n=3))
    with CompletionsServer(responder=scripted_judge) as fake:
        fake.queue(*[("status", 404, "model 'nope' not found")] * 8)
        proc = run_cli(["nd-humaneval", "judge", db, "--base-url", fake.url, "--model", "nope", "--concurrency", "1"],
                       check=False)
    assert proc.returncode == 2
    err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert err[-1].startswith("nd-humaneval: error: ") and "HTTP 404" in err[-1] and "--model" in err[-1]
    assert db_rows(db, "SELECT COUNT(*) FROM judge_answers") == [(0,)]
    proc = run_cli(["nd-humaneval", "judge", db, "--base-url", "localhost:8000", "--model", "m"], check=False)
    assert proc.returncode == 2 and "--base-url 'localhost:8000' is not an http(s) URL" in proc.stderr
