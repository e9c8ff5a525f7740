"""CSV / JSON in and out of a study: for spreadsheets and crowdsourcing platforms.

Two kinds of file:

* **judgments** (``export``): one row per annotator, item and criterion, unblinded, for analysis:
  ``annotator, item, line, query, system_a, system_b, criterion, outcome, choice, left_system,
  source, created``; ``outcome`` is win / tie / lose for ``system_a``.
* **sheet** (``export --sheet NAME``): one annotator's blinded task list, in their order and with
  their left/right sides (the same the web page would show): ``annotator, position, query, left,
  right`` and one column per criterion, to be filled with left / right / tie (or 1 / 2 / tie).

``import`` reads either kind (told apart by their columns), checks every row first and then stores
all of them in one transaction, so a file with a bad row changes nothing.
"""

import csv
import io
import json
import os
import time
from typing import Dict, List, Optional, Tuple

from ..io_utils import InputError, require_file, write_lines_atomic
from . import store
from .server import check_annotator

JUDGMENT_COLUMNS = ["annotator", "item", "line", "query", "system_a", "system_b", "criterion", "outcome", "choice",
                    "left_system", "source", "created"]
CHOICE_WORDS = {"left": "left", "1": "left", "right": "right", "2": "right", "tie": "tie", "=": "tie",
                "equal": "tie"}


def file_format(path: str, given: Optional[str]) -> str:
    if given:
        return given
    ext = os.path.splitext(path)[1].lower()
    if ext in (".csv", ".json"):
        return ext[1:]
    raise InputError(f"{path}: cannot tell CSV from JSON by its name; end it in .csv or .json, or give --format")


def _write(path: str, fmt: str, columns: List[str], rows: List[Dict[str, object]]) -> None:
    if fmt == "json":
        text = json.dumps(rows, indent=1, ensure_ascii=False)
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buf.getvalue().rstrip("\n")
    write_lines_atomic(path, [text])


def export_judgments(study: store.Study, path: str, fmt: Optional[str] = None) -> int:
    fmt = file_format(path, fmt)
    items = {it.id: it for it in study.items()}
    rows = []
    for j in study.judgments():
        it = items[j["item_id"]]
        rows.append({"annotator": j["annotator"], "item": j["item_id"], "line": j["line"], "query": it.query,
                     "system_a": j["system_a"], "system_b": j["system_b"], "criterion": j["criterion"],
                     "outcome": j["outcome"], "choice": j["choice"],
                     "left_system": j["system_a"] if j["a_on_left"] else j["system_b"], "source": j["source"],
                     "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(j["created"]))})
    _write(path, fmt, JUDGMENT_COLUMNS, rows)
    return len(rows)


def export_sheet(study: store.Study, annotator: str, path: str, fmt: Optional[str] = None) -> int:
    why = check_annotator(annotator)
    if why:
        raise InputError(f"--sheet {annotator!r}: {why}")
    fmt = file_format(path, fmt)
    study.ensure_assignments(annotator)
    crits = study.criterion_names
    rows = []
    for pos in range(1, study.n_items + 1):
        view = study.view(annotator, pos)
        done = study.choices_at(annotator, view.item.id)
        rows.append({"annotator": annotator, "position": pos, "query": view.item.query, "left": view.left,
                     "right": view.right, **{c: done.get(c, "") for c in crits}})
    _write(path, fmt, ["annotator", "position", "query", "left", "right"] + crits, rows)
    return len(rows)


def _read(path: str, fmt: Optional[str]) -> List[Dict[str, str]]:
    require_file(path, "--input", "give a file written by nd-humaneval export")
    fmt = file_format(path, fmt)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            if fmt == "json":
                data = json.load(f)
                if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                    raise InputError(f"--input {path}: expected a JSON list of objects (as nd-humaneval export "
                                     f"writes)")
                return [{str(k): "" if v is None else str(v) for k, v in r.items()} for r in data]
            return [dict(r) for r in csv.DictReader(f)]
    except UnicodeDecodeError:
        raise InputError(f"--input {path} is not UTF-8 text; save it as UTF-8 (CSV UTF-8 in a spreadsheet)") from None
    except (json.JSONDecodeError, csv.Error) as err:
        raise InputError(f"--input {path} is not valid {fmt.upper()} ({err}); export it again as {fmt.upper()}") from None


def _annotator_ok(name: str, where: str) -> str:
    name = (name or "").strip()
    if name.startswith(store.JUDGE_PREFIX):  # a judge is named after its model: any name without spaces
        if len(name) > len(store.JUDGE_PREFIX) and not any(c.isspace() for c in name):
            return name
        raise InputError(f"{where}: annotator {name!r}: give the judge's name after llm:, without spaces")
    why = check_annotator(name)
    if why:
        raise InputError(f"{where}: annotator {name!r}: {why}")
    return name


def import_file(study: store.Study, path: str, fmt: Optional[str] = None, annotator: Optional[str] = None,
                replace: bool = False) -> Dict[str, int]:
    """Check every row of ``path``, then store them in one transaction; returns counts."""
    rows = _read(path, fmt)
    if not rows:
        raise InputError(f"--input {path} has no rows; give a file written by nd-humaneval export")
    columns = set(rows[0])
    crits = study.criterion_names
    items = {it.id: it for it in study.items()}
    parsed: List[Tuple[str, int, str, str, bool]] = []
    skipped = 0
    if {"annotator", "item", "criterion", "outcome"} <= columns:
        for n, r in enumerate(rows, 2 if not path.lower().endswith(".json") else 1):
            where = f"{path} row {n}"
            name = _annotator_ok(r.get("annotator", ""), where)
            try:
                item = items[int(r["item"])]
            except (KeyError, ValueError):
                raise InputError(f"{where}: item {r.get('item')!r} is not an item of {study.path} "
                                 f"(1-{len(items)})") from None
            for key in ("system_a", "system_b"):
                if r.get(key) and r[key] != getattr(item, key):
                    raise InputError(f"{where}: {key} {r[key]!r} but item {item.id} of {study.path} has "
                                     f"{getattr(item, key)!r}; the file belongs to another study")
            crit = (r.get("criterion") or "").strip().lower()
            if crit not in crits:
                raise InputError(f"{where}: criterion {crit!r} is not in the study ({', '.join(crits)})")
            outcome = (r.get("outcome") or "").strip().lower()
            if outcome not in store.OUTCOMES:
                raise InputError(f"{where}: outcome {outcome!r} is not win, tie or lose")
            left = r.get("left_system")
            if left:
                if left not in (item.system_a, item.system_b):
                    raise InputError(f"{where}: left_system {left!r} is neither {item.system_a} nor {item.system_b}")
                a_on_left = left == item.system_a
            else:
                a_on_left = True
            parsed.append((name, item.id, crit, store.choice_of(outcome, a_on_left), a_on_left))
    elif {"position"} <= columns and set(crits) & columns:
        for n, r in enumerate(rows, 2 if not path.lower().endswith(".json") else 1):
            where = f"{path} row {n}"
            name = _annotator_ok(r.get("annotator") or annotator or "", where)
            if not study.assignment(name):
                raise InputError(f"{where}: {name} has no sheet in {study.path}; export one first with "
                                 f"nd-humaneval export {study.path} --sheet {name}")
            try:
                view = study.view(name, int(r["position"]))
            except ValueError:
                view = None
            if view is None:
                raise InputError(f"{where}: position {r.get('position')!r} is not 1-{study.n_items}")
            for crit in crits:
                value = (r.get(crit) or "").strip().lower()
                if not value:
                    skipped += 1  # not judged yet
                    continue
                if value not in CHOICE_WORDS:
                    raise InputError(f"{where}: {crit} {value!r} is not left, right or tie (or 1, 2, tie)")
                parsed.append((name, view.item.id, crit, CHOICE_WORDS[value], view.a_on_left))
    else:
        raise InputError(f"--input {path}: columns {sorted(columns)} are neither judgments (annotator, item, "
                         f"criterion, outcome) nor a sheet (position and the criteria); export one first")
    existing = {(j["annotator"], j["item_id"], j["criterion"]): j["outcome"] for j in study.judgments()}
    new, same = [], 0
    for row in parsed:
        key = row[:3]
        outcome = store.outcome_of(row[3], row[4])
        if key in existing:
            if existing[key] == outcome:
                same += 1
                continue
            if not replace:
                raise InputError(f"--input {path}: {row[0]} already judged item {row[1]} on {row[2]} as "
                                 f"{existing[key]}, the file says {outcome}; add --replace to take the file's")
        new.append(row)
    if new:
        study.record_many(new, "import")
    return {"stored": len(new), "unchanged": same, "blank": skipped}
