"""Resumable PNEG generation: prompt, sample, parse, filter, regenerate, record (§2.3, Appendix F).

Results go to an append-only JSON-lines file, one record per example id, each flushed and
fsync'd as soon as it is known, so an interrupted run over 10k contexts loses at most the
examples in flight. Restarting with the same command skips every id already recorded (``ok`` or
``failed``; ``--retry-failed`` redoes the failed ones, and the newer record wins). A torn last
line (the process died mid-write) is cut off on restart.

The first line is a ``{"meta": ...}`` record with the settings that determine the prompts
(instruction, k, seed); resuming with different ones is refused rather than mixing two
experiments in one file.

Records::

    {"id": "17", "status": "ok", "negatives": [5 strings], "attempts": 2,
     "rejections": {"repetition": 1}, "demos": ["4", "811"], "raw": ["<accepted completion>"]}
    {"id": "18", "status": "failed", "attempts": 5, "rejections": {...}, "error": "..."}
"""

import concurrent.futures as cf
import hashlib
import json
import logging
import os
import queue
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence

from ..io_utils import InputError, write_lines_atomic
from .backends import Backend, BackendError, RequestRejected
from .data import Example
from .parse import REASONS, FilterConfig, judge
from .prompt import N_NEGATIVES, SEPARATOR, PromptConfig, make_prompt

logger = logging.getLogger(__name__)

META_KEYS = ("instruction", "k", "seed")
INTERRUPT_GRACE = 2.0  # seconds a Ctrl-C waits for requests in flight before abandoning them


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during generation, after the records that completed in the grace period were saved."""

    def __init__(self, saved: int, abandoned: int):
        super().__init__(f"{saved} record(s) finished after the interrupt were saved, "
                         f"{abandoned} request(s) still in flight were abandoned")
        self.saved, self.abandoned = saved, abandoned


class DaemonWorkers:
    """A fixed set of daemon threads running submitted calls, returning :class:`cf.Future` objects.

    Unlike ``ThreadPoolExecutor`` (whose threads the interpreter joins at exit), these threads never
    keep the process alive: after Ctrl-C a request stuck on a slow server is abandoned, not waited for.
    """

    def __init__(self, workers: int, name: str = "pneg"):
        self._tasks: "queue.SimpleQueue" = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, fn, *args) -> cf.Future:
        fut: cf.Future = cf.Future()
        self._tasks.put((fut, fn, args))
        return fut

    def _work(self) -> None:
        while True:
            item = self._tasks.get()
            if item is None:
                return
            fut, fn, args = item
            if not fut.set_running_or_notify_cancel():  # cancelled while queued
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as err:  # handed to the caller through the future
                fut.set_exception(err)

    def shutdown(self) -> None:
        """Let idle threads end (a busy one ends after its call; nobody waits for it)."""
        for _ in self._threads:
            self._tasks.put(None)


def derive_seed(seed: int, example_id: str, attempt: int) -> int:
    digest = hashlib.sha256(f"pneg-sample\x1f{seed}\x1f{example_id}\x1f{attempt}".encode()).hexdigest()
    return int(digest[:12], 16)


def _decoded_lines(data: bytes) -> List[str]:
    """Lines of a results file's bytes; a leading UTF-8 BOM is not part of the first record."""
    text = data.decode("utf-8", "replace")
    return (text[1:] if text.startswith("\ufeff") else text).split("\n")


class ResultStore:
    """Append-only JSON-lines results keyed by ``id`` (the last record of an id wins)."""

    def __init__(self, path: str):
        self.path = path
        self.records: Dict[str, dict] = {}
        self.meta: Optional[dict] = None
        self.repaired = False
        self._f = None
        if os.path.exists(path):
            self._load()

    def _load(self) -> None:
        with open(self.path, "rb") as f:
            data = f.read()
        cut = data.rfind(b"\n") + 1
        if cut < len(data):
            # the process died while writing the last record: drop the fragment
            with open(self.path, "r+b") as f:
                f.truncate(cut)
                f.flush()
                os.fsync(f.fileno())
            self.repaired = True
            data = data[:cut]
        for no, line in enumerate(_decoded_lines(data), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise InputError(f"{self.path}: line {no} is not JSON; the results file is damaged "
                                 f"(repair or remove that line, or write to a new --output)") from None
            if "meta" in rec:
                self.meta = rec["meta"]
            elif "id" in rec:
                self.records[str(rec["id"])] = rec
            else:
                raise InputError(f"{self.path}: line {no} has no 'id'; this is not a nd-pneg results file")

    def _open(self):
        if self._f is None:
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8", newline="\n")
        return self._f

    def append(self, record: dict) -> None:
        f = self._open()
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
        if "meta" in record:
            self.meta = record["meta"]
        else:
            self.records[str(record["id"])] = record

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_results(path: str) -> Dict[str, dict]:
    """The records of a results file by id (read-only: a torn last line is ignored, not cut)."""
    from ..io_utils import require_file

    require_file(path, "results file", "write one with nd-pneg generate")
    records: Dict[str, dict] = {}
    with open(path, "rb") as f:
        data = f.read()
    data = data[:data.rfind(b"\n") + 1]
    for no, line in enumerate(_decoded_lines(data), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{path}: line {no} is not JSON; give a results file of nd-pneg generate") from None
        if isinstance(rec, dict) and "id" in rec:
            records[str(rec["id"])] = rec
    return records


@dataclass
class GenerationConfig:
    prompt: PromptConfig = field(default_factory=PromptConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    max_attempts: int = 5
    retry_failed: bool = False
    limit: Optional[int] = None  # generate at most this many new records in this run
    interrupt_grace: float = INTERRUPT_GRACE  # Ctrl-C: seconds to wait for requests in flight


def generate_one(example: Example, pool: Sequence[Example], backend: Backend, config: GenerationConfig) -> dict:
    """Prompt, sample and filter until five clean negatives or ``max_attempts`` (Appendix F)."""
    instruction = config.prompt.instruction
    if not example.context:
        return {"id": example.id, "status": "failed", "attempts": 0, "rejections": {},
                "error": "empty context"}
    if instruction == "pos" and not example.positives:
        return {"id": example.id, "status": "failed", "attempts": 0, "rejections": {},
                "error": "no positive response for I_pos"}
    prompt, demo_ids = make_prompt(example, pool, config.prompt)
    n = N_NEGATIVES if instruction == "imp" else 1
    stop = (SEPARATOR, "\n") if instruction == "imp" else (SEPARATOR,)
    tallies: Counter = Counter()
    for attempt in range(1, config.max_attempts + 1):
        try:
            texts = backend.complete(prompt, n=n, stop=stop, seed=derive_seed(config.prompt.seed, example.id, attempt))
        except RequestRejected as err:
            return {"id": example.id, "status": "failed", "attempts": attempt, "rejections": dict(tallies),
                    "demos": demo_ids, "error": str(err)}
        verdict = judge(texts, example.context, example.positives, instruction, config.filter)
        if verdict.ok:
            return {"id": example.id, "status": "ok", "negatives": verdict.negatives, "attempts": attempt,
                    "rejections": dict(tallies), "demos": demo_ids, "raw": texts}
        tallies.update(set(verdict.reasons))
    return {"id": example.id, "status": "failed", "attempts": config.max_attempts, "rejections": dict(tallies),
            "demos": demo_ids, "error": f"no clean completion in {config.max_attempts} attempts"}


def summarize(records: Iterable[dict]) -> Dict[str, object]:
    ok = failed = attempts = 0
    reasons: Counter = Counter()
    for rec in records:
        if rec.get("status") == "ok":
            ok += 1
        else:
            failed += 1
        attempts += int(rec.get("attempts", 0))
        reasons.update(rec.get("rejections") or {})
    ordered = {r: reasons[r] for r in REASONS if reasons.get(r)}
    ordered.update({r: c for r, c in sorted(reasons.items()) if r not in ordered and c})
    return {"ok": ok, "failed": failed, "attempts": attempts, "rejected_attempts_by_reason": ordered}


def _check_meta(store: ResultStore, meta: dict) -> None:
    if store.meta is None:
        return
    diff = [f"{k}={store.meta.get(k)!r} there, {meta.get(k)!r} now" for k in META_KEYS if store.meta.get(k) != meta.get(k)]
    if diff:
        raise InputError(f"{store.path} was generated with other settings ({'; '.join(diff)}); resume with "
                         f"the same --instruction/--k/--seed or write to a new --output")


def generate(examples: Sequence[Example], pool: Sequence[Example], backend: Backend, output: str,
             config: GenerationConfig, progress: bool = True) -> Dict[str, object]:
    """Generate negatives for every example not yet in ``output``; returns the run's summary."""
    if config.prompt.k and len(pool) < config.prompt.k:
        raise InputError(f"the demonstration pool has {len(pool)} usable examples but k = {config.prompt.k}; "
                         f"give DailyDialog++ records with 5 adversarial negatives as --examples")
    ids = [ex.id for ex in examples]
    if len(set(ids)) != len(ids):
        raise InputError("the input has repeated example ids; ids must be unique")
    meta = {"instruction": config.prompt.instruction, "k": config.prompt.k, "seed": config.prompt.seed,
            "max_attempts": config.max_attempts, **backend.describe()}
    with ResultStore(output) as store:
        _check_meta(store, meta)
        if store.repaired:
            logger.warning("%s: dropped an incomplete last line left by an interrupted run", output)
        done = {i for i, r in store.records.items() if r.get("status") == "ok" or not config.retry_failed}
        todo = [ex for ex in examples if ex.id not in done]
        skipped = len(examples) - len(todo)
        if config.limit is not None:
            todo = todo[: max(0, config.limit)]
        if store.meta is None:
            store.append({"meta": meta})
        new_records: List[dict] = []
        n_ok = 0
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc="generating", unit=" contexts", leave=False)
        workers = max(1, backend.max_concurrency)
        pending: Dict[cf.Future, Example] = {}
        queue_ = iter(todo)
        error: Optional[BaseException] = None
        interrupted: Optional[Interrupted] = None
        pool_exec = DaemonWorkers(workers)

        def record(fut: cf.Future) -> bool:
            nonlocal error, n_ok
            if fut.cancelled():  # queued when the run stopped
                return False
            try:
                rec = fut.result()
            except BackendError as err:
                if error is None:
                    error = err
                return False
            store.append(rec)
            new_records.append(rec)
            n_ok += rec["status"] == "ok"
            if bar is not None:
                bar.update(1)
                bar.set_postfix(ok=n_ok, refresh=False)
            return True

        def refill():
            while error is None and len(pending) < 2 * workers:
                ex = next(queue_, None)
                if ex is None:
                    return
                pending[pool_exec.submit(generate_one, ex, pool, backend, config)] = ex

        try:
            refill()
            while pending:
                finished, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    pending.pop(fut)
                    record(fut)
                if error is None:
                    refill()
                else:
                    for fut in pending:
                        fut.cancel()
        except KeyboardInterrupt:
            # keep what is about to complete, abandon what is not: the queued ones never start, the
            # ones in flight get a short grace (a second Ctrl-C ends it at once)
            for fut in pending:
                fut.cancel()
            running = [f for f in pending if not f.cancelled()]
            done, left = cf.wait(running, timeout=config.interrupt_grace) if running else (set(), set())
            saved = sum(record(fut) for fut in done)
            interrupted = Interrupted(saved, len(left))
        finally:
            pool_exec.shutdown()
            if bar is not None:
                bar.close()
        summary = {"targets": len(examples), "already_done": skipped, "new": summarize(new_records),
                   "total": summarize(store.records.values()), "output": output}
        summary["remaining"] = len(examples) - sum(1 for i in ids if i in store.records and
                                                   (store.records[i]["status"] == "ok" or not config.retry_failed))
    write_lines_atomic(output + ".summary.json", [json.dumps(summary, indent=2)])
    if interrupted is not None:
        raise interrupted
    if error is not None:
        raise error
    return summary


def refilter(records: Dict[str, dict], examples: Sequence[Example], instruction: str = "dir",
             config: Optional[FilterConfig] = None) -> List[dict]:
    """Re-check generated records (``raw`` completions, a ``text`` completion, or ``negatives``).

    Used to apply other filter settings after generation, or to filter completions produced by
    another tool (records ``{"id": ..., "text": "<completion after '1.'>"}``). Records of ids not
    in ``examples`` are refused: their context and positives are needed for the copy checks.
    """
    from .parse import check_items

    config = config or FilterConfig()
    by_id = {ex.id: ex for ex in examples}
    out = []
    for rid, rec in records.items():
        ex = by_id.get(rid)
        if ex is None:
            raise InputError(f"generated record id {rid!r} is not in the input examples; give the --input "
                             f"the negatives were generated for")
        if rec.get("raw"):
            verdict = judge(rec["raw"], ex.context, ex.positives, instruction, config)
            negs, reasons = verdict.negatives, verdict.reasons
        elif isinstance(rec.get("text"), str):
            verdict = judge([rec["text"]], ex.context, ex.positives, instruction, config)
            negs, reasons = verdict.negatives, verdict.reasons
        elif rec.get("status", "ok") == "ok" and rec.get("negatives"):
            negs = list(rec["negatives"])
            reasons = check_items(negs, ex.context, ex.positives, config)
        else:
            out.append(dict(rec, status="failed"))
            continue
        new = {k: v for k, v in rec.items() if k not in ("negatives", "error")}
        if reasons:
            new.update(status="failed", filter_reasons=dict(reasons), error="rejected by nd-pneg filter")
        else:
            new.update(status="ok", negatives=negs)
        out.append(new)
    return out
