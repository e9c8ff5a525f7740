"""Table 4 of the paper from a study's judgments: win / tie / lose %, Fleiss' kappa, judge agreement.

Per system pair (``a`` vs ``b``) and criterion, win / tie / lose are the shares of the human
judgments (items x annotators) in which ``a``'s response was judged better / as good / worse, as
percentages; kappa is Fleiss' kappa over the human annotators on the three outcomes. LLM judges
(annotators ``llm:NAME``) are reported on their own lines with their agreement with the human
majority (the outcome more than half the humans chose on that item; items without one are left out)
and their position bias (each item is asked in both left/right orders).
"""

import json
import os
from collections import defaultdict
from typing import Dict, List, Optional

from ..io_utils import AtomicFiles
from . import store
from .agreement import count_table, fleiss_kappa, majority


def _pct(n: int, total: int) -> Optional[float]:
    return round(100.0 * n / total, 1) if total else None


def _shares(outcomes: List[str]) -> Dict[str, object]:
    total = len(outcomes)
    return {"n": total, **{o: _pct(outcomes.count(o), total) for o in store.OUTCOMES}}


def position_bias(study: store.Study, judge: str) -> Dict[str, object]:
    """How the judge's answers depend on the order: both orders asked per item and criterion."""
    rows = study.con.execute("SELECT item_id, criterion, a_on_left, choice, status FROM judge_answers "
                             "WHERE annotator = ?", (judge,)).fetchall()
    failed = sum(1 for r in rows if r[4] != "ok")
    ok = [r for r in rows if r[4] == "ok"]
    by_key: Dict[tuple, Dict[int, str]] = defaultdict(dict)
    for item_id, crit, a_on_left, choice, _ in ok:
        by_key[(item_id, crit)][a_on_left] = choice
    both = [v for v in by_key.values() if len(v) == 2]
    consistent = sum(1 for v in both if store.outcome_of(v[1], True) == store.outcome_of(v[0], False))
    left_both = sum(1 for v in both if v[0] == v[1] == "left")
    right_both = sum(1 for v in both if v[0] == v[1] == "right")
    sided = [r[3] for r in ok if r[3] != "tie"]
    return {"answers": len(rows), "failed": failed, "pairs_both_orders": len(both),
            "consistent": _pct(consistent, len(both)), "left_both_orders": _pct(left_both, len(both)),
            "right_both_orders": _pct(right_both, len(both)),
            "left_share_of_non_ties": _pct(sided.count("left"), len(sided))}


BREAK_SECONDS = 600


def seconds_per_item(rows: List[dict]) -> Optional[float]:
    """Median time between consecutive items an annotator finished on the web page.

    An item is finished at its last judgment; gaps over BREAK_SECONDS are breaks, not work.
    """
    finished: Dict[int, float] = {}
    for j in rows:
        if j["source"] == "web":
            finished[j["item_id"]] = max(finished.get(j["item_id"], 0.0), j["created"])
    times = sorted(finished.values())
    gaps = sorted(b - a for a, b in zip(times, times[1:]) if b - a <= BREAK_SECONDS)
    if not gaps:
        return None
    mid = len(gaps) // 2
    return round(gaps[mid] if len(gaps) % 2 else (gaps[mid - 1] + gaps[mid]) / 2, 1)


def summarize(study: store.Study) -> Dict[str, object]:
    """Everything the report shows, as plain data (this is the JSON written)."""
    criteria = study.criterion_names
    items = {it.id: it for it in study.items()}
    pairs: List[tuple] = []
    for it in items.values():
        if (it.system_a, it.system_b) not in pairs:
            pairs.append((it.system_a, it.system_b))
    judgments = study.judgments()
    humans = sorted({j["annotator"] for j in judgments if not j["annotator"].startswith(store.JUDGE_PREFIX)})
    judges = sorted({j["annotator"] for j in judgments if j["annotator"].startswith(store.JUDGE_PREFIX)} |
                    {r[0] for r in study.con.execute("SELECT DISTINCT annotator FROM judge_answers")})
    # votes[(pair, criterion)][item] -> human outcomes; judge_votes[judge][(pair, criterion)][item] -> outcome
    votes: Dict[tuple, Dict[int, List[str]]] = defaultdict(lambda: defaultdict(list))
    judge_votes: Dict[str, Dict[tuple, Dict[int, str]]] = defaultdict(lambda: defaultdict(dict))
    for j in judgments:
        key = ((j["system_a"], j["system_b"]), j["criterion"])
        if j["annotator"].startswith(store.JUDGE_PREFIX):
            judge_votes[j["annotator"]][key][j["item_id"]] = j["outcome"]
        else:
            votes[key][j["item_id"]].append(j["outcome"])

    table = []
    for pair in pairs:
        row = {"a": pair[0], "b": pair[1], "items": sum(1 for it in items.values()
                                                         if (it.system_a, it.system_b) == pair), "criteria": {}}
        for crit in criteria:
            per_item = votes[(pair, crit)]
            outcomes = [o for vs in per_item.values() for o in vs]
            counts = count_table(per_item, store.OUTCOMES)
            rated = [sum(c) for c in counts if sum(c) >= 2]
            kappa = fleiss_kappa(counts)
            row["criteria"][crit] = {**_shares(outcomes),
                                     "kappa": None if kappa is None else round(kappa, 3),
                                     "kappa_items": len(rated),
                                     "raters_per_item": [min(rated), max(rated)] if rated else None}
        table.append(row)

    judge_rows = []
    for judge in judges:
        entry = {"judge": judge, "pairs": [], "position_bias": position_bias(study, judge)}
        for pair in pairs:
            crits = {}
            for crit in criteria:
                mine = judge_votes[judge][(pair, crit)]
                agree = total = 0
                for item_id, outcome in mine.items():
                    m = majority(votes[(pair, crit)].get(item_id, []))
                    if m is not None:
                        total += 1
                        agree += outcome == m
                crits[crit] = {**_shares(list(mine.values())), "agreement_with_majority": _pct(agree, total),
                               "agreement_items": total}
            entry["pairs"].append({"a": pair[0], "b": pair[1], "criteria": crits})
        judge_rows.append(entry)

    per_annotator = []
    k = len(criteria)
    for name in humans + judges:
        rows = [j for j in judgments if j["annotator"] == name]
        per_item = defaultdict(int)
        for j in rows:
            per_item[j["item_id"]] += 1
        per_annotator.append({"annotator": name, "judgments": len(rows),
                              "items_complete": sum(1 for c in per_item.values() if c == k),
                              "median_seconds_per_item": seconds_per_item(rows),
                              "sources": sorted({j["source"] for j in rows})})
    return {"study": os.path.abspath(study.path), "queries": int(study.meta.get("n", 0)), "items": len(items),
            "criteria": criteria, "systems": study.systems, "annotators": humans, "judges": judges,
            "table": table, "llm_judges": judge_rows, "per_annotator": per_annotator}


def _fmt(x, digits=1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def format_markdown(summary: Dict[str, object]) -> str:
    crits = summary["criteria"]
    humans = summary["annotators"]
    lines = ["## Human evaluation", ""]
    lines.append(f"{summary['queries']} test queries, {len(humans)} annotator{'s' if len(humans) != 1 else ''}"
                 f"{' (' + ', '.join(humans) + ')' if humans else ''}. W / T / L: % of the judgments (items × "
                 f"annotators) in which the first system's response was better / as good / worse; κ: Fleiss' "
                 f"kappa over the annotators.")
    lines.append("")
    head = "| Comparison | " + " | ".join(f"{c.capitalize()} W | T | L | κ" for c in crits) + " |"
    lines += [head, "|---|" + "---:|" * (4 * len(crits))]
    for row in summary["table"]:
        cells = []
        for c in crits:
            r = row["criteria"][c]
            cells += [_fmt(r["win"]), _fmt(r["tie"]), _fmt(r["lose"]), _fmt(r["kappa"], 3)]
        lines.append(f"| {row['a']} vs {row['b']} | " + " | ".join(cells) + " |")
    counts = sorted({row["criteria"][c]["n"] for row in summary["table"] for c in crits})
    lines += ["", f"Judgments per comparison and criterion: {', '.join(map(str, counts)) or '0'}."]
    for judge in summary["llm_judges"]:
        lines += ["", f"### LLM judge `{judge['judge']}`", ""]
        lines += ["| Comparison | " + " | ".join(f"{c.capitalize()} W | T | L | agree" for c in crits) + " |",
                  "|---|" + "---:|" * (4 * len(crits))]
        for row in judge["pairs"]:
            cells = []
            for c in crits:
                r = row["criteria"][c]
                cells += [_fmt(r["win"]), _fmt(r["tie"]), _fmt(r["lose"]),
                          f"{_fmt(r['agreement_with_majority'])} ({r['agreement_items']})"]
            lines.append(f"| {row['a']} vs {row['b']} | " + " | ".join(cells) + " |")
        pb = judge["position_bias"]
        agree = ("agree: % of the items with a human majority (their number in brackets) on which the judge "
                 "chose the majority's outcome.")
        if not pb["answers"]:
            lines += ["", agree + " Position bias: not measured (these judgments were imported, not asked)."]
            continue
        lines += ["", agree + f" Position bias: both orders asked on {pb['pairs_both_orders']} "
                      f"item-criterion pairs; same verdict in both orders {_fmt(pb['consistent'])}%, the left "
                      f"response both times {_fmt(pb['left_both_orders'])}%, the right both times "
                      f"{_fmt(pb['right_both_orders'])}%; left in {_fmt(pb['left_share_of_non_ties'])}% of the "
                      f"non-tie answers; {pb['failed']} of {pb['answers']} answers failed (unreadable, not "
                      f"counted). A verdict that changes with the order counts as a tie."]
    lines += ["", "| Annotator | items complete | judgments | median s / item |", "|---|---:|---:|---:|"]
    for a in summary["per_annotator"]:
        lines.append(f"| {a['annotator']} | {a['items_complete']} / {summary['items']} | {a['judgments']} | "
                     f"{_fmt(a['median_seconds_per_item'])} |")
    return "\n".join(lines) + "\n"


COLOURS = {"win": "#2b8a3e", "tie": "#adb5bd", "lose": "#c92a2a"}


def plot(summary: Dict[str, object], path_or_file) -> None:
    """Stacked win / tie / lose bars, one panel per criterion, one bar per comparison (humans)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    crits = summary["criteria"]
    rows = summary["table"]
    fig, axes = plt.subplots(1, len(crits), figsize=(3.2 * len(crits) + 1.5, 0.55 * len(rows) + 1.4),
                             sharey=True, squeeze=False)
    labels = [f"{r['a']} vs {r['b']}" for r in rows]
    for ax, crit in zip(axes[0], crits):
        left = [0.0] * len(rows)
        for outcome in store.OUTCOMES:
            values = [r["criteria"][crit][outcome] or 0.0 for r in rows]
            ax.barh(range(len(rows)), values, left=left, color=COLOURS[outcome], label=outcome)
            for y, (x0, v) in enumerate(zip(left, values)):
                if v >= 8:
                    ax.text(x0 + v / 2, y, f"{v:.0f}", ha="center", va="center", fontsize=8, color="white")
            left = [a + b for a, b in zip(left, values)]
        ax.set_title(crit.capitalize(), fontsize=10)
        ax.set_xlim(0, 100)
        ax.set_xlabel("% of judgments")
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(labels)
        ax.invert_yaxis()
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    fig.savefig(path_or_file, format="png", dpi=150)
    plt.close(fig)


def write_report(study: store.Study, prefix: str) -> Dict[str, str]:
    """Write PREFIX.md, PREFIX.json and PREFIX.png together (atomically); returns the paths."""
    summary = summarize(study)
    directory, base = os.path.split(os.path.abspath(prefix))
    names = {"markdown": base + ".md", "json": base + ".json", "chart": base + ".png"}
    with AtomicFiles(directory) as out:
        out.open(names["markdown"]).write(format_markdown(summary))
        out.open(names["json"]).write(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        with out.open(names["chart"], "wb") as f:
            plot(summary, f)
    return {k: os.path.join(directory, v) for k, v in names.items()}
