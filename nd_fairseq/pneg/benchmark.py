"""The response-selection benchmark (PNEG Table 1): one ranker per negative source, its report.

:func:`run_benchmark` trains a ranker of :mod:`.ranker` on each ``train.<source>.jsonl`` of a
candidates directory (``nd-pneg build-candidates``), scores it on the random and adversarial test
sets beside the shortcut baselines of :mod:`.shortcuts`, and writes ``report.json`` and
``report.md`` (:func:`format_report`). fairseq and torch are imported only by the ranker, when used.
"""

import concurrent.futures as cf
import json
import os
import time
from collections import Counter
from dataclasses import asdict
from typing import Dict, List, Optional, Sequence

from ..io_utils import InputError, write_lines_atomic
from .candidates import candidate_files, read_candidates
from .ranker import Ranker, RankerConfig, prepare_data, train_ranker, training_history
from .shortcuts import BASELINES, DESCRIPTIONS, NEAR_RATIO, baseline_metrics, length_profile, shortcut_warnings


VALIDATION_PROTOCOLS = {
    "source": "per source: each ranker's best checkpoint is chosen on held-out contexts with its own "
              "source's negatives (1 positive + 5 random + 5 of the source)",
    "random": "random negatives only: every ranker's best checkpoint is chosen on held-out contexts with "
              "1 positive + 10 random negatives",
    "shared": "one shared set for every source (valid.jsonl of an older build-candidates: 1 positive + "
              "5 random + 5 adversarial); rebuild the candidates for a per-source one",
    "none": "none: the last checkpoint is scored",
}


def _candidates_summary(candidates_dir: str) -> Dict[str, object]:
    path = os.path.join(candidates_dir, "summary.json")
    try:
        with open(path, encoding="utf-8-sig") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def run_benchmark(candidates_dir: str, work_dir: str, sources: Optional[Sequence[str]] = None,
                  cfg: Optional[RankerConfig] = None, progress: bool = True, jobs: int = 1) -> Dict[str, object]:
    """Train one ranker per ``train.<source>.jsonl`` and evaluate it on both test sets (Table 1).

    Each source validates on ``valid.<source>.jsonl`` (an older directory's shared ``valid.jsonl``
    is still accepted, and reported as such). Beside the rankers the report holds the shortcut
    baselines of :mod:`.shortcuts` on the same test sets and the candidates' length profile.
    ``jobs`` fairseq-train processes run at once (each single-threaded on CPU by default).
    """
    cfg = cfg or RankerConfig()
    files = candidate_files(candidates_dir)
    available = sorted(k.split(".", 1)[1] for k in files if k.startswith("train."))
    if not available:
        raise InputError(f"{candidates_dir} holds no train.<source>.jsonl; run nd-pneg build-candidates first")
    sources = list(sources) if sources else available
    missing = [s for s in sources if s not in available]
    if missing:
        raise InputError(f"{candidates_dir} has no train.{missing[0]}.jsonl (found: {', '.join(available)}); "
                         f"build it with nd-pneg build-candidates --sources")
    tests = {t: read_candidates(files[f"test.{t}"]) for t in ("random", "adversarial") if f"test.{t}" in files}
    if not tests:
        raise InputError(f"{candidates_dir} has no test.random.jsonl or test.adversarial.jsonl")
    built = _candidates_summary(candidates_dir)
    results: Dict[str, object] = {"config": asdict(cfg), "candidates": {k: built.get(k) for k in
                                  ("seed", "positive", "valid_protocol", "valid_from") if k in built},
                                  "tests": {}, "sources": {}, "baselines": {}, "lengths": {}}
    for name, sets in tests.items():  # what the test sets are made of (human or context-turn adversarials)
        kinds = Counter(k for cs in sets for k in cs.kinds if k != "positive")
        results["tests"][name] = {"contexts": len(sets), "negatives": dict(sorted(kinds.items()))}
        results["baselines"][name] = baseline_metrics(sets)
        results["lengths"][f"test.{name}"] = length_profile(sets)
    runs = {}
    for source in sources:  # binarise everything first (one process, fairseq imported once)
        t0 = time.perf_counter()
        train = read_candidates(files[f"train.{source}"])
        results["lengths"][f"train.{source}"] = length_profile(train)
        valid, protocol = None, "none"
        if cfg.validate and f"valid.{source}" in files:
            valid, protocol = read_candidates(files[f"valid.{source}"]), str(built.get("valid_protocol") or "source")
        elif cfg.validate and "valid" in files:
            valid, protocol = read_candidates(files["valid"]), "shared"
        run_dir = os.path.join(work_dir, source)
        data_dir = os.path.join(run_dir, "data")
        _, num_classes = prepare_data(train, valid, data_dir, cfg)
        use_valid = bool(valid) and all(len(cs.candidates) == num_classes for cs in valid)
        if not use_valid:
            protocol = "none"
        runs[source] = {"train_contexts": len(train), "data_dir": data_dir, "num_classes": num_classes,
                        "validated": use_valid, "validation": protocol, "valid_contexts": len(valid or []),
                        "save_dir": os.path.join(run_dir, "checkpoints"),
                        "prepare_seconds": time.perf_counter() - t0}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(sources), desc="training rankers", unit=" source", leave=False)

    def train(source):
        r = runs[source]
        t0 = time.perf_counter()
        r["checkpoint"] = train_ranker(r["data_dir"], r["save_dir"], r["num_classes"], cfg, r["validated"])
        r["train_seconds"] = round(time.perf_counter() - t0 + r.pop("prepare_seconds"), 2)
        r["history"] = training_history(os.path.join(r["save_dir"], "train.log"))
        if bar is not None:
            bar.update(1)

    try:
        # each fairseq-train is its own process: up to `jobs` of them at once
        with cf.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for fut in [pool.submit(train, s) for s in sources]:
                fut.result()
    finally:
        if bar is not None:
            bar.close()
    for source in sources:
        r = runs[source]
        t1 = time.perf_counter()
        ranker = Ranker(r["checkpoint"], r["data_dir"], cfg)
        entry = {"train_contexts": r["train_contexts"], "checkpoint": r["checkpoint"], "validated": r["validated"],
                 "validation": r["validation"], "valid_contexts": r["valid_contexts"], "seed": cfg.seed}
        for name, sets in tests.items():
            entry[name] = ranker.evaluate(sets)
        entry.update(r["history"])
        if not r["validated"]:
            entry["best_epoch"] = None  # the last checkpoint is scored
        entry["train_seconds"] = r["train_seconds"]
        entry["score_seconds"] = round(time.perf_counter() - t1, 2)
        results["sources"][source] = entry
    results["warnings"] = shortcut_warnings(results["baselines"], results["sources"])
    os.makedirs(work_dir, exist_ok=True)
    write_lines_atomic(os.path.join(work_dir, "report.json"), [json.dumps(results, indent=2)])
    write_lines_atomic(os.path.join(work_dir, "report.md"), format_report(results).splitlines())
    return results


def _metric_cells(entry: Dict[str, object]) -> List[str]:
    cells = []
    for t in ("random", "adversarial"):
        m = entry.get(t)
        cells += [f"{m['R@1']:.3f}", f"{m['MRR']:.3f}"] if m else ["-", "-"]
    return cells


def format_table(results: Dict[str, object]) -> str:
    """The rankers in the layout of PNEG's Table 1, with how each was trained."""
    lines = ["| Negatives | Random R@1 | Random MRR | Adversarial R@1 | Adversarial MRR | train contexts "
             "| seed | epochs run | best epoch | training time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for source, e in results["sources"].items():
        best = e.get("best_epoch")
        extra = [str(e["train_contexts"]), str(e.get("seed", "-")), str(e.get("epochs_run", "-")),
                 "last (no validation)" if best is None else str(best), f"{e.get('train_seconds', 0):.1f} s"]
        lines.append(f"| {source} | " + " | ".join(_metric_cells(e) + extra) + " |")
    return "\n".join(lines)


def format_report(results: Dict[str, object]) -> str:
    """``report.md``: settings, rankers, shortcut baselines (with the warning rule), candidate lengths."""
    cfg, built = results["config"], results.get("candidates") or {}
    protocols = sorted({e.get("validation", "none") for e in results["sources"].values()})
    lines = ["# PNEG response-selection benchmark", "",
             f"- ranker seed {cfg['seed']}; candidate sets built with seed {built.get('seed', '?')}, "
             f"positive: {built.get('positive', '?')}"
             + (" (one of each context's positives, drawn with the seed)" if built.get("positive") == "random" else ""),
             f"- validation protocol: " + "; ".join(VALIDATION_PROTOCOLS.get(p, p) for p in protocols)
             + (f" (held-out contexts: {built['valid_from']})" if built.get("valid_from") else ""),
             f"- training: at most {cfg['max_epoch']} epochs"
             + (f", {cfg['max_update']} updates" if cfg.get("max_update") else "")
             + (f", early stopping with patience {cfg['patience']} (validations without a lower loss)"
                if cfg.get("patience") and "none" not in protocols else ""),
             "", "## Rankers", "", format_table(results), "",
             "## Shortcut baselines (the same test sets, no training)", "",
             "| Baseline | Random R@1 | Random MRR | Adversarial R@1 | Adversarial MRR |", "|---|---|---|---|---|"]
    for name in BASELINES:
        entry = {t: b[name] for t, b in results["baselines"].items()}
        lines.append(f"| {DESCRIPTIONS[name]} | " + " | ".join(_metric_cells(entry)) + " |")
    lines.append("")
    rule = (f"rule: a warning when the best baseline's R@1 is at least {NEAR_RATIO:g} times the best ranker's "
            f"R@1 on the same test set")
    lines += results.get("warnings") or [f"No trivial baseline is near the best ranker ({rule})."]
    if results.get("warnings"):
        lines.append(f"({rule}.)")
    lines += ["", "## Candidate lengths (words per candidate)", "",
              "| Set | Kind | candidates | mean | median | 10th-90th percentile |", "|---|---|---|---|---|---|"]
    for set_name, profile in results["lengths"].items():
        for kind, p in profile.items():
            lines.append(f"| {set_name} | {kind} | {p['candidates']} | {p['mean']:.1f} | {p['median']:g} "
                         f"| {p['p10']:g}-{p['p90']:g} |")
    return "\n".join(lines)
