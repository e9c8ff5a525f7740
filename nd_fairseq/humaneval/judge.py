"""``nd-humaneval judge``: an LLM as one more (optional) annotator, ``llm:MODEL``.

Each item is put to the model twice, once in a random left/right order and once reversed, so the
report can show how much the verdict depends on the order (position bias). Both answers are kept
(``judge_answers``); the judgment stored for the item is the outcome both orders agree on, and a
tie when they disagree. An answer that cannot be read (a criterion missing or not one of 1 / 2 /
tie) is recorded as failed for that criterion, never as a tie, and is asked again on the next run.

Requests go through nd-pneg's :class:`~nd_fairseq.pneg.backends.OpenAICompletionsBackend` (any
OpenAI-compatible ``/v1/completions`` endpoint, retries with back-off on 429/5xx and time-outs,
``--concurrency`` requests in flight); the run stops on a configuration error or when the retries
run out, and a rerun continues where it stopped.
"""

import concurrent.futures as cf
import random
import re
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..pneg.backends import Backend, RequestRejected
from . import store
from .study import display_query

ANSWER_END = "###"
_LINE = re.compile(r"^\s*[-*]?\s*([A-Za-z_-]+)\s*[:=]\s*\**\s*(response\s*)?(1|2|tie|equal|same)\b", re.I)


def build_prompt(query: str, first: str, second: str, criteria: Sequence[Tuple[str, str]]) -> str:
    """The question for one order; the model continues after ``Answer:``."""
    lines = ["You compare two responses to the same query from a conversation, for a human evaluation.",
             "For each criterion, answer 1 if Response 1 is better, 2 if Response 2 is better, or tie if "
             "they are equally good. Judge each response on its own merits; their order is random.", "",
             "Criteria:"]
    lines += [f"- {name}: {definition}" for name, definition in criteria]
    lines += ["", "Query: " + display_query(query).replace("\n", " / "),
              f"Response 1: {first or '(empty response)'}",
              f"Response 2: {second or '(empty response)'}", "",
              "Answer with one line per criterion, in this form, then " + ANSWER_END + ":"]
    lines += [f"{name}: 1, 2 or tie" for name, _ in criteria]
    lines += ["", "Answer:"]
    return "\n".join(lines) + "\n"


def parse_answer(text: str, criteria: Sequence[str]) -> Dict[str, Optional[str]]:
    """criterion -> ``left`` / ``right`` / ``tie``, or None where the answer does not say."""
    found: Dict[str, Optional[str]] = {c: None for c in criteria}
    seen = set()
    for line in text.split(ANSWER_END, 1)[0].splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        name, value = m.group(1).lower(), m.group(3).lower()
        if name not in found:
            continue
        choice = {"1": "left", "2": "right"}.get(value, "tie")
        if name in seen and found[name] != choice:
            found[name] = None  # two different answers for one criterion: unreadable
            continue
        seen.add(name)
        found[name] = choice
    return found


@dataclass
class JudgeSummary:
    asked: int = 0
    failed_answers: int = 0
    stored: int = 0
    skipped: int = 0


def judge_study(study: store.Study, backend: Backend, name: str, seed: int = 0, limit: Optional[int] = None,
                progress=None) -> JudgeSummary:
    """Ask ``backend`` about every item still lacking a readable answer in either order."""
    annotator = store.JUDGE_PREFIX + name
    criteria = study.criteria
    crit_names = [c for c, _ in criteria]
    rng = random.Random(f"{study.meta.get('seed', '0')}:{annotator}:{seed}")
    done = {(iid, left, crit) for iid, left, crit in study.con.execute(
        "SELECT item_id, a_on_left, criterion FROM judge_answers WHERE annotator = ? AND status = 'ok'",
        (annotator,))}
    jobs: List[Tuple[store.Item, bool]] = []
    summary = JudgeSummary()
    for item in study.items():
        first_left = rng.random() < 0.5  # drawn for every item so the order does not depend on resumption
        for a_on_left in (first_left, not first_left):
            if all((item.id, int(a_on_left), c) in done for c in crit_names):
                summary.skipped += 1
            else:
                jobs.append((item, a_on_left))
    if limit is not None:
        jobs = jobs[:limit]

    def ask(job):
        item, a_on_left = job
        first, second = (item.response_a, item.response_b) if a_on_left else (item.response_b, item.response_a)
        prompt = build_prompt(item.query, first, second, criteria)
        try:
            return job, backend.complete(prompt, n=1, stop=(ANSWER_END,), seed=seed)[0], None
        except RequestRejected as err:
            return job, "", str(err)

    workers = max(1, backend.max_concurrency)
    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="judge") as pool:
        futures = [pool.submit(ask, job) for job in jobs]
        try:
            for fut in cf.as_completed(futures):
                (item, a_on_left), text, error = fut.result()
                summary.asked += 1
                summary.failed_answers += _store_answer(study, annotator, item, a_on_left, text, error, crit_names)
                summary.stored += _combine(study, annotator, item.id, crit_names)
                if progress is not None:
                    progress(summary.asked, len(jobs))
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return summary


def _store_answer(study: store.Study, annotator: str, item: store.Item, a_on_left: bool, text: str,
                  error: Optional[str], criteria: Sequence[str]) -> int:
    """Record one order's answer (one transaction); returns how many criteria failed."""
    parsed = parse_answer(text, criteria) if error is None else {c: None for c in criteria}
    now = time.time()
    rows = []
    for c in criteria:
        choice = parsed[c]
        why = error or (None if choice else f"no readable '{c}: 1 / 2 / tie' line in the answer")
        rows.append((annotator, item.id, int(a_on_left), c, choice, "ok" if choice else "failed", text, why, now))
    con = study.con
    con.execute("BEGIN IMMEDIATE")
    try:
        # a readable answer is never replaced by a later failed one
        con.executemany(
            "INSERT INTO judge_answers (annotator, item_id, a_on_left, criterion, choice, status, raw, error, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (annotator, item_id, a_on_left, criterion) DO UPDATE SET "
            "choice = excluded.choice, status = excluded.status, raw = excluded.raw, error = excluded.error, "
            "created = excluded.created WHERE judge_answers.status != 'ok'", rows)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return sum(1 for r in rows if r[5] == "failed")


def _combine(study: store.Study, annotator: str, item_id: int, criteria: Sequence[str]) -> int:
    """Store the judge's judgment where both orders have a readable answer; returns how many were stored."""
    answers: Dict[str, Dict[int, str]] = {}
    for crit, a_on_left, choice in study.con.execute(
            "SELECT criterion, a_on_left, choice FROM judge_answers WHERE annotator = ? AND item_id = ? "
            "AND status = 'ok'", (annotator, item_id)):
        answers.setdefault(crit, {})[a_on_left] = choice
    existing = study.choices_at(annotator, item_id)
    rows = []
    for crit in criteria:
        both = answers.get(crit, {})
        if len(both) < 2 or crit in existing:
            continue
        with_a_left = store.outcome_of(both[1], True)
        with_a_right = store.outcome_of(both[0], False)
        outcome = with_a_left if with_a_left == with_a_right else "tie"
        rows.append((annotator, item_id, crit, store.choice_of(outcome, True), True))
    if rows:
        study.record_many(rows, "judge")
    return len(rows)
