"""nd-humaneval report: win / tie / lose %, Fleiss' kappa and judge agreement on hand-made judgments."""

import csv
import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "humaneval"))

from conftest import run_cli  # noqa: E402
from studykit import SYS_A, SYS_B, create_args, make_inputs  # noqa: E402

from nd_fairseq.humaneval.agreement import fleiss_kappa, majority  # noqa: E402
from nd_fairseq.humaneval.report import seconds_per_item  # noqa: E402

# Fleiss (1971)-style worked example as used in many textbooks: 10 subjects, 14 raters, 5 categories
FLEISS_EXAMPLE = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                  [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]


def test_kappa_by_hand():
    # items [3,0,0] [2,1,0] [0,1,2] [0,3,0]: P_i = 1, 1/3, 1/3, 1 -> mean 2/3;
    # shares 5/12, 5/12, 2/12 -> chance 54/144 = 0.375; kappa = (2/3 - 0.375) / 0.625 = 0.4666...
    assert fleiss_kappa([[3, 0, 0], [2, 1, 0], [0, 1, 2], [0, 3, 0]]) == pytest.approx(0.4666667, abs=1e-6)
    # different raters per item: [2,0,0] P=1, [1,1,1] P=0, [0,0,1] has one rating and is left out;
    # shares over 5 ratings 3/5, 1/5, 1/5 -> chance 11/25; kappa = (0.5 - 0.44) / 0.56
    assert fleiss_kappa([[2, 0, 0], [1, 1, 1], [0, 0, 1]]) == pytest.approx(0.06 / 0.56, abs=1e-9)
    # the worked example: mean P 0.378, chance 0.2128 -> 0.210
    assert round(fleiss_kappa(FLEISS_EXAMPLE), 3) == 0.210
    assert fleiss_kappa([[3, 0, 0], [3, 0, 0]]) is None  # one category only: undefined
    assert fleiss_kappa([[1, 0, 0]]) is None
    assert majority(["win", "win", "tie"]) == "win" and majority(["win", "tie", "lose"]) is None


def test_kappa_matches_statsmodels():
    inter_rater = pytest.importorskip("statsmodels.stats.inter_rater")
    rng = random.Random(7)
    tables = [FLEISS_EXAMPLE]
    for _ in range(30):
        raters, cats = rng.randint(2, 6), rng.randint(2, 4)
        table = []
        for _ in range(rng.randint(2, 40)):
            row = [0] * cats
            for _ in range(raters):
                row[min(cats - 1, int(rng.random() ** 1.5 * cats))] += 1
            table.append(row)
        tables.append(table)
    for table in tables:
        expected = inter_rater.fleiss_kappa(table, method="fleiss")
        got = fleiss_kappa(table)
        if got is None:
            assert not expected == expected or expected == pytest.approx(0.0)  # NaN in statsmodels
        else:
            assert got == pytest.approx(expected, abs=1e-12)


# outcome for zorblax, per item, for alice / bob / carol
HUMANS = {"informativeness": {1: "win win win", 2: "win tie win", 3: "lose lose tie", 4: "tie tie tie"},
          "fluency": {1: "lose lose lose", 2: "lose lose lose", 3: "win win win", 4: "win win win"}}
JUDGE = {"informativeness": {1: "win", 2: "tie", 3: "lose", 4: "tie"},
         "fluency": {1: "lose", 2: "win", 3: "win", 4: "tie"}}


def test_report_figures_equal_hand_computed(tmp_path):
    files = make_inputs(tmp_path, n=8)
    db = tmp_path / "study.sqlite"
    run_cli(create_args(files, db, n=4, extra=["--criteria", "informativeness,fluency"]))
    sheet = tmp_path / "judgments.csv"
    with open(sheet, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["annotator", "item", "criterion", "outcome"])
        for crit, per_item in HUMANS.items():
            for item, outcomes in per_item.items():
                for name, outcome in zip(("alice", "bob", "carol"), outcomes.split()):
                    w.writerow([name, item, crit, outcome])
        for crit, per_item in JUDGE.items():
            for item, outcome in per_item.items():
                w.writerow(["llm:judgex", item, crit, outcome])
    run_cli(["nd-humaneval", "import", db, "--input", sheet])
    proc = run_cli(["nd-humaneval", "report", db])
    prefix = tmp_path / "study.report"
    summary = json.loads(Path(f"{prefix}.json").read_text(encoding="utf-8"))
    row = summary["table"][0]
    assert (row["a"], row["b"]) == (SYS_A, SYS_B)
    inf, flu = row["criteria"]["informativeness"], row["criteria"]["fluency"]
    # informativeness: 5 win, 5 tie, 2 lose of 12; kappa 0.4667 (test_kappa_by_hand)
    assert (inf["n"], inf["win"], inf["tie"], inf["lose"], inf["kappa"]) == (12, 41.7, 41.7, 16.7, 0.467)
    assert inf["kappa_items"] == 4 and inf["raters_per_item"] == [3, 3]
    # fluency: 6 win, 0 tie, 6 lose, every item unanimous: mean P 1, chance 0.5 -> kappa 1
    assert (flu["n"], flu["win"], flu["tie"], flu["lose"], flu["kappa"]) == (12, 50.0, 0.0, 50.0, 1.0)
    assert summary["annotators"] == ["alice", "bob", "carol"] and summary["judges"] == ["llm:judgex"]
    judge = summary["llm_judges"][0]["pairs"][0]["criteria"]
    # majorities: inf win win lose tie -> judge agrees on 1, 3, 4; fluency lose lose win win -> 1, 3
    assert judge["informativeness"]["agreement_with_majority"] == 75.0
    assert judge["fluency"]["agreement_with_majority"] == 50.0
    assert (judge["informativeness"]["win"], judge["informativeness"]["tie"], judge["informativeness"]["lose"]) \
        == (25.0, 50.0, 25.0)
    counts = {a["annotator"]: (a["items_complete"], a["judgments"]) for a in summary["per_annotator"]}
    assert counts == {"alice": (4, 8), "bob": (4, 8), "carol": (4, 8), "llm:judgex": (4, 8)}
    md = Path(f"{prefix}.md").read_text(encoding="utf-8")
    assert f"| {SYS_A} vs {SYS_B} | 41.7 | 41.7 | 16.7 | 0.467 | 50.0 | 0.0 | 50.0 | 1.000 |" in md
    assert "| alice | 4 / 4 | 8 | – |" in md and "75.0 (4)" in md  # imported: no time per item
    assert md.strip() in proc.stdout
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.image import imread

    png = f"{prefix}.png"
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(png)[..., :3]
    win = (pixels[..., 0] * 255).round() == 0x2b
    win &= (pixels[..., 1] * 255).round() == 0x8a
    assert win.sum() > 500  # the win bars are drawn


def test_report_output_prefix_and_empty_study(tmp_path):
    files = make_inputs(tmp_path, n=6)
    db = tmp_path / "s.sqlite"
    run_cli(create_args(files, db, n=3))
    out = tmp_path / "out" / "table4"
    (tmp_path / "out").mkdir()
    run_cli(["nd-humaneval", "report", db, "--output", out, "--quiet"])
    summary = json.loads(Path(f"{out}.json").read_text(encoding="utf-8"))
    assert summary["table"][0]["criteria"]["fluency"]["n"] == 0
    assert summary["table"][0]["criteria"]["fluency"]["kappa"] is None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["table4.json", "table4.md", "table4.png"]


def test_seconds_per_item():
    def row(item, t, source="web"):
        return {"item_id": item, "created": t, "source": source}

    # items finished at 10, 40 (last of two judgments), 50, 2000 (after a break), 2030; imported ignored
    rows = [row(1, 10.0), row(2, 35.0), row(2, 40.0), row(3, 50.0), row(4, 2000.0), row(5, 2030.0),
            row(6, 2031.0, "import")]
    # gaps 30, 10, (1950 dropped), 30 -> median 30
    assert seconds_per_item(rows) == 30.0
    assert seconds_per_item(rows[:4]) == 20.0  # gaps 30, 10
    assert seconds_per_item([row(1, 5.0)]) is None
