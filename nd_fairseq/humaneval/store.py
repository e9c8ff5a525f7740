"""The study file: one SQLite database holding a study's items, its annotators' views and judgments.

Tables:

* ``meta``: key/value facts of the study (format marker, version, seed, sampling, creation time);
* ``systems``, ``criteria``: the compared systems (never shown to annotators) and the criteria with
  the definitions shown on the page;
* ``items``: one query with the responses of a pair of systems (``system_a`` is the side whose
  win / tie / lose the report counts);
* ``assignments``: per annotator, the order in which the items are shown and whether
  ``system_a`` is on the left, drawn when the annotator first appears and kept from then on;
* ``judgments``: one row per annotator, item and criterion; ``choice`` is what was clicked
  (left / right / tie), ``outcome`` the same read for ``system_a`` (win / tie / lose);
* ``judge_answers``: each order an LLM judge was asked, with its raw answer and whether it parsed.

The database is in WAL mode and every judgment is its own transaction with ``synchronous=FULL``,
so a killed server or a closed tab loses nothing already answered, and readers (a report run while
people annotate) never block writers.
"""

import json
import os
import random
import sqlite3
import time
import urllib.parse
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..io_utils import InputError

FORMAT = "nd-humaneval study"
VERSION = 1
CHOICES = ("left", "tie", "right")
OUTCOMES = ("win", "tie", "lose")
JUDGE_PREFIX = "llm:"

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE systems (name TEXT PRIMARY KEY, path TEXT NOT NULL, position INTEGER NOT NULL);
CREATE TABLE criteria (name TEXT PRIMARY KEY, definition TEXT NOT NULL, position INTEGER NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    line INTEGER NOT NULL,              -- 1-based line of the test set
    query TEXT NOT NULL,
    system_a TEXT NOT NULL REFERENCES systems(name),
    system_b TEXT NOT NULL REFERENCES systems(name),
    response_a TEXT NOT NULL,
    response_b TEXT NOT NULL
);
CREATE TABLE assignments (
    annotator TEXT NOT NULL,
    position INTEGER NOT NULL,          -- 1-based place in this annotator's sequence
    item_id INTEGER NOT NULL REFERENCES items(id),
    a_on_left INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (annotator, position),
    UNIQUE (annotator, item_id)
);
CREATE TABLE judgments (
    annotator TEXT NOT NULL,
    item_id INTEGER NOT NULL REFERENCES items(id),
    criterion TEXT NOT NULL REFERENCES criteria(name),
    choice TEXT NOT NULL CHECK (choice IN ('left', 'tie', 'right')),
    a_on_left INTEGER NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('win', 'tie', 'lose')),
    source TEXT NOT NULL,               -- web, import, judge
    created REAL NOT NULL,
    PRIMARY KEY (annotator, item_id, criterion)
);
CREATE TABLE judge_answers (
    annotator TEXT NOT NULL,
    item_id INTEGER NOT NULL REFERENCES items(id),
    a_on_left INTEGER NOT NULL,
    criterion TEXT NOT NULL,
    choice TEXT,                        -- NULL when the answer could not be read
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    raw TEXT NOT NULL,
    error TEXT,
    created REAL NOT NULL,
    PRIMARY KEY (annotator, item_id, a_on_left, criterion)
);
"""


def outcome_of(choice: str, a_on_left: bool) -> str:
    """What a click on the blinded page means for ``system_a``."""
    if choice == "tie":
        return "tie"
    return "win" if (choice == "left") == bool(a_on_left) else "lose"


def choice_of(outcome: str, a_on_left: bool) -> str:
    """The click that gives ``outcome`` for ``system_a`` when it is shown on the left (or not)."""
    if outcome == "tie":
        return "tie"
    return "left" if (outcome == "win") == bool(a_on_left) else "right"


def balanced_sides(n: int, rng: random.Random) -> List[bool]:
    """``n`` left/right flags, half of each (one more of one side when n is odd), shuffled."""
    flags = [i % 2 == 0 for i in range(n)]
    if n % 2 and rng.random() < 0.5:
        flags = [not f for f in flags]
    rng.shuffle(flags)
    return flags


@dataclass
class Item:
    id: int
    line: int
    query: str
    system_a: str
    system_b: str
    response_a: str
    response_b: str


@dataclass
class View:
    """An item as one annotator sees it (position in their sequence, left and right responses)."""

    position: int
    item: Item
    a_on_left: bool

    @property
    def left(self) -> str:
        return self.item.response_a if self.a_on_left else self.item.response_b

    @property
    def right(self) -> str:
        return self.item.response_b if self.a_on_left else self.item.response_a


def connect(path: str, timeout: float = 30.0) -> sqlite3.Connection:
    """Open a study with the settings every writer uses (WAL, full sync, a wait on busy locks)."""
    con = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("PRAGMA foreign_keys=ON")
    return con


def read_meta(path: str) -> Dict[str, str]:
    """The ``meta`` table of a study, read without writing anything, or InputError."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    con = None
    try:
        con = sqlite3.connect(uri, uri=True)
        rows = dict(con.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError:
        raise InputError(f"{path} is not a study file (an SQLite database without the study tables); give "
                         f"the --db file written by nd-humaneval create") from None
    finally:
        if con is not None:
            con.close()
    if rows.get("format") != FORMAT:
        raise InputError(f"{path} is not a study file (no nd-humaneval marker); give the --db file written "
                         f"by nd-humaneval create")
    if int(rows.get("version", 0)) > VERSION:
        raise InputError(f"{path} was written by a newer nd-humaneval (study version {rows['version']}); "
                         f"upgrade nd_fairseq to read it")
    return rows


class Study:
    """An open study file. Use one per thread (the web server opens one per request)."""

    def __init__(self, path: str):
        if not os.path.isfile(path):
            raise InputError(f"study file {path} does not exist; create one with nd-humaneval create --db {path}")
        with open(path, "rb") as f:
            header = f.read(16)
        if header != b"SQLite format 3\x00":
            raise InputError(f"{path} is not a study file (not an SQLite database); give the --db file "
                             f"written by nd-humaneval create")
        self.path = path
        self.meta = read_meta(path)  # read-only: a file that is not a study is left exactly as it was
        self.con = connect(path)
        self.criteria: List[Tuple[str, str]] = self.con.execute(
            "SELECT name, definition FROM criteria ORDER BY position").fetchall()
        self.systems: List[str] = [r[0] for r in self.con.execute("SELECT name FROM systems ORDER BY position")]
        self.n_items = self.con.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def close(self) -> None:
        con = getattr(self, "con", None)
        if con is not None:
            con.close()
            self.con = None

    def __enter__(self) -> "Study":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def criterion_names(self) -> List[str]:
        return [c for c, _ in self.criteria]

    # items and views -----------------------------------------------------------------------------

    def items(self) -> List[Item]:
        rows = self.con.execute("SELECT id, line, query, system_a, system_b, response_a, response_b "
                                "FROM items ORDER BY id").fetchall()
        return [Item(*r) for r in rows]

    def item(self, item_id: int) -> Item:
        row = self.con.execute("SELECT id, line, query, system_a, system_b, response_a, response_b "
                               "FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise KeyError(item_id)
        return Item(*row)

    def ensure_assignments(self, annotator: str) -> None:
        """Draw the annotator's item order and sides once (reproducible from the study seed and name).

        Sides are balanced per system pair, so each system is on the left for half of its items.
        """
        if self.con.execute("SELECT 1 FROM assignments WHERE annotator = ? LIMIT 1", (annotator,)).fetchone():
            return
        rng = random.Random(f"{self.meta.get('seed', '0')}:{annotator}")
        items = self.items()
        order = [it.id for it in items]
        rng.shuffle(order)
        side: Dict[int, bool] = {}
        by_pair: Dict[Tuple[str, str], List[int]] = {}
        for it in items:
            by_pair.setdefault((it.system_a, it.system_b), []).append(it.id)
        for ids in by_pair.values():
            side.update(zip(ids, balanced_sides(len(ids), rng)))
        now = time.time()
        self.con.execute("BEGIN IMMEDIATE")
        try:
            if not self.con.execute("SELECT 1 FROM assignments WHERE annotator = ? LIMIT 1", (annotator,)).fetchone():
                self.con.executemany(
                    "INSERT INTO assignments (annotator, position, item_id, a_on_left, created) VALUES (?, ?, ?, ?, ?)",
                    [(annotator, pos, iid, int(side[iid]), now) for pos, iid in enumerate(order, 1)])
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise

    def view(self, annotator: str, position: int) -> Optional[View]:
        row = self.con.execute("SELECT item_id, a_on_left FROM assignments WHERE annotator = ? AND position = ?",
                               (annotator, position)).fetchone()
        if row is None:
            return None
        return View(position, self.item(row[0]), bool(row[1]))

    def assignment(self, annotator: str) -> Dict[int, Tuple[int, bool]]:
        """position -> (item id, system_a on the left) for one annotator."""
        return {pos: (iid, bool(left)) for pos, iid, left in self.con.execute(
            "SELECT position, item_id, a_on_left FROM assignments WHERE annotator = ?", (annotator,))}

    def annotators(self, humans_only: bool = False) -> List[str]:
        names = [r[0] for r in self.con.execute(
            "SELECT annotator FROM (SELECT annotator FROM assignments UNION SELECT annotator FROM judgments) "
            "ORDER BY annotator")]
        return [n for n in names if not (humans_only and n.startswith(JUDGE_PREFIX))]

    # judgments -----------------------------------------------------------------------------------

    def choices_at(self, annotator: str, item_id: int) -> Dict[str, str]:
        return dict(self.con.execute("SELECT criterion, choice FROM judgments WHERE annotator = ? AND item_id = ?",
                                     (annotator, item_id)).fetchall())

    def completed_positions(self, annotator: str) -> List[int]:
        """Positions whose item has a judgment on every criterion."""
        k = len(self.criteria)
        return [r[0] for r in self.con.execute(
            "SELECT a.position FROM assignments a JOIN judgments j ON j.annotator = a.annotator "
            "AND j.item_id = a.item_id WHERE a.annotator = ? GROUP BY a.position HAVING COUNT(*) = ? "
            "ORDER BY a.position", (annotator, k))]

    def resume_position(self, annotator: str) -> int:
        """The first position not fully judged (n_items + 1 when all are)."""
        done = set(self.completed_positions(annotator))
        for pos in range(1, self.n_items + 1):
            if pos not in done:
                return pos
        return self.n_items + 1

    def record(self, annotator: str, item_id: int, criterion: str, choice: str, a_on_left: bool,
               source: str) -> None:
        """Store (or change) one judgment in its own transaction."""
        self.record_many([(annotator, item_id, criterion, choice, a_on_left)], source)

    def record_many(self, rows: Sequence[Tuple[str, int, str, str, bool]], source: str) -> None:
        """Store judgments all together (one transaction), e.g. an imported file."""
        now = time.time()
        self.con.execute("BEGIN IMMEDIATE")
        try:
            self.con.executemany(
                "INSERT INTO judgments (annotator, item_id, criterion, choice, a_on_left, outcome, source, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (annotator, item_id, criterion) DO UPDATE SET "
                "choice = excluded.choice, a_on_left = excluded.a_on_left, outcome = excluded.outcome, "
                "source = excluded.source, created = excluded.created",
                [(a, iid, c, ch, int(left), outcome_of(ch, left), source, now) for a, iid, c, ch, left in rows])
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise

    def judgments(self, humans_only: bool = False):
        """All judgments as dicts, with the item's systems and line."""
        cur = self.con.execute(
            "SELECT j.annotator, j.item_id, i.line, i.system_a, i.system_b, j.criterion, j.choice, j.a_on_left, "
            "j.outcome, j.source, j.created FROM judgments j JOIN items i ON i.id = j.item_id "
            "ORDER BY j.annotator, j.item_id, j.criterion")
        keys = [d[0] for d in cur.description]
        out = [dict(zip(keys, r)) for r in cur]
        return [r for r in out if not (humans_only and r["annotator"].startswith(JUDGE_PREFIX))]


def create_study(path: str, meta: Dict[str, object], systems: Sequence[Tuple[str, str]],
                 criteria: Sequence[Tuple[str, str]], items: Sequence[Tuple[int, str, str, str, str, str]]) -> None:
    """Write a new study at ``path``: built under a temporary name in the same folder, then renamed.

    ``items``: (line, query, system_a, system_b, response_a, response_b).
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InputError(f"--db {path}: folder {directory} does not exist; create it first")
    if os.path.exists(path):
        raise InputError(f"--db {path} already exists; choose another name or delete it (a study's judgments "
                         f"are never overwritten)")
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        con = sqlite3.connect(tmp, isolation_level=None)
        try:
            con.executescript("BEGIN;" + SCHEMA + "COMMIT;")
            con.execute("BEGIN")
            facts = {"format": FORMAT, "version": str(VERSION), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                        time.gmtime())}
            facts.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})
            con.executemany("INSERT INTO meta VALUES (?, ?)", sorted(facts.items()))
            con.executemany("INSERT INTO systems VALUES (?, ?, ?)", [(n, p, i) for i, (n, p) in enumerate(systems)])
            con.executemany("INSERT INTO criteria VALUES (?, ?, ?)", [(n, d, i) for i, (n, d) in enumerate(criteria)])
            con.executemany("INSERT INTO items (line, query, system_a, system_b, response_a, response_b) "
                            "VALUES (?, ?, ?, ?, ?, ?)", items)
            con.execute("COMMIT")
            con.execute("PRAGMA journal_mode=WAL")  # stored in the file: every later connection uses WAL
        finally:
            con.close()
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp + "-wal", tmp + "-shm", tmp + "-journal"):
            if os.path.exists(leftover):
                os.remove(leftover)
