"""nd-humaneval export / import: judgments round trip, blinded sheets, all-or-nothing import."""

import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "humaneval"))

from conftest import run_cli  # noqa: E402
from studykit import SYS_A, SYS_B, create_args, db_rows, make_inputs  # noqa: E402

from nd_fairseq.humaneval import store  # noqa: E402

JUDGMENTS = "SELECT annotator, item_id, criterion, choice, a_on_left, outcome FROM judgments ORDER BY 1, 2, 3"


def _study(tmp_path, name="study.sqlite", n=4):
    files = make_inputs(tmp_path, n=8)
    db = tmp_path / name
    run_cli(create_args(files, db, n=n))
    return db


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_sheet_export_fill_import_and_judgments_round_trip(tmp_path):
    db = _study(tmp_path)
    sheet = tmp_path / "dana.csv"
    run_cli(["nd-humaneval", "export", db, "--sheet", "dana", "--output", sheet])
    rows = _read_csv(sheet)
    assert [r["position"] for r in rows] == ["1", "2", "3", "4"]
    assert list(rows[0]) == ["annotator", "position", "query", "left", "right", "informativeness", "relevance",
                             "fluency"]
    text = sheet.read_text(encoding="utf-8")
    assert SYS_A not in text and SYS_B not in text  # blinded
    sides = {pos: (iid, left) for pos, iid, left in db_rows(
        db, "SELECT position, item_id, a_on_left FROM assignments WHERE annotator = 'dana'")}
    responses = {iid: a for iid, a in db_rows(db, "SELECT id, response_a FROM items")}
    for r in rows:  # the sheet shows the sides recorded for dana
        iid, a_left = sides[int(r["position"])]
        assert (r["left"] == responses[iid]) == bool(a_left)
    # dana fills the sheet: always the left response better on informativeness, 2 = right on fluency,
    # relevance left blank on the last item
    for r in rows:
        r["informativeness"], r["fluency"] = "left", "2"
        r["relevance"] = "" if r["position"] == "4" else "tie"
    with open(sheet, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    proc = run_cli(["nd-humaneval", "import", db, "--input", sheet])
    assert "11 judgments stored, 0 already there, 1 blank cells skipped" in proc.stdout
    stored = db_rows(db, JUDGMENTS)
    assert len(stored) == 11
    for annotator, iid, crit, choice, a_on_left, outcome in stored:
        pos = [p for p, (i, _) in sides.items() if i == iid][0]
        assert a_on_left == sides[pos][1]
        assert choice == {"informativeness": "left", "fluency": "right", "relevance": "tie"}[crit]
        assert outcome == store.outcome_of(choice, a_on_left)
    # importing the same sheet again changes nothing
    assert "0 judgments stored, 11 already there" in run_cli(["nd-humaneval", "import", db, "--input", sheet]).stdout

    # judgments out as CSV and JSON, into a second copy of the same study: identical rows
    for fmt in ("csv", "json"):
        out = tmp_path / f"judgments.{fmt}"
        assert "wrote" in run_cli(["nd-humaneval", "export", db, "--output", out]).stdout
        copy = _study(tmp_path, f"copy-{fmt}.sqlite")
        run_cli(["nd-humaneval", "import", copy, "--input", out])
        assert db_rows(copy, JUDGMENTS) == stored
    exported = json.loads((tmp_path / "judgments.json").read_text(encoding="utf-8"))
    first = exported[0]
    assert set(first) == {"annotator", "item", "line", "query", "system_a", "system_b", "criterion", "outcome",
                          "choice", "left_system", "source", "created"}
    assert first["system_a"] == SYS_A and first["source"] == "import"


def test_bad_import_writes_nothing(tmp_path):
    db = _study(tmp_path)
    good = tmp_path / "good.csv"
    good.write_text("annotator,item,criterion,outcome\nalice,1,fluency,win\nalice,2,fluency,lose\n", encoding="utf-8")
    run_cli(["nd-humaneval", "import", db, "--input", good])
    before = db_rows(db, JUDGMENTS)
    cases = {
        "row3.csv": ("annotator,item,criterion,outcome\nbob,1,fluency,win\nbob,2,humour,win\n",
                     "row 3: criterion 'humour' is not in the study"),
        "outcome.csv": ("annotator,item,criterion,outcome\nbob,1,fluency,better\n", "outcome 'better' is not win"),
        "item.csv": ("annotator,item,criterion,outcome\nbob,9,fluency,win\n", "item '9' is not an item"),
        "other.csv": (f"annotator,item,criterion,outcome,system_a\nbob,1,fluency,win,{SYS_B}\n",
                      "belongs to another study"),
        "conflict.csv": ("annotator,item,criterion,outcome\nbob,3,fluency,win\nalice,1,fluency,tie\n",
                         "add --replace"),
        "columns.csv": ("who,what\nx,y\n", "are neither judgments"),
        "name.csv": ("annotator,item,criterion,outcome\nbad name,1,fluency,win\n", "annotator 'bad name'"),
        "nosheet.csv": ("annotator,position,fluency\nerin,1,left\n", "erin has no sheet"),
        "data.txt": ("annotator,item\n", "end it in .csv or .json"),
        "broken.json": ("[{\"annotator\": ", "is not valid JSON"),
    }
    for name, (content, needle) in cases.items():
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        proc = run_cli(["nd-humaneval", "import", db, "--input", path], check=False)
        assert proc.returncode == 2, (name, proc.stdout)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and str(path) in lines[0], (name, proc.stderr)
        assert db_rows(db, JUDGMENTS) == before, name
    assert db_rows(db, "SELECT COUNT(*) FROM assignments") == [(0,)]
    # --replace takes the file's judgment
    run_cli(["nd-humaneval", "import", db, "--input", tmp_path / "conflict.csv", "--replace"])
    assert ("alice", 1, "fluency", "tie", 1, "tie") in db_rows(db, JUDGMENTS)
