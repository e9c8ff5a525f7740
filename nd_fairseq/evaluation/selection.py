"""Choosing an ND configuration on the validation set, and the verdict line of a comparison.

The rule is fixed before any test output is read (it is the recipe's, not the corpus's). Two rules
share their guards; ``max-bleu`` is the recipe's default:

1. a candidate is eligible when, on the validation set, against the MLE control (the
   compute-matched run that isolates what ND adds):
   - its LF is not below the control's by more than two standard errors of the control's mean LF
     (``lf_not_lower``);
   - its share of looping replies (rep-3) is not above the control's;
   - its mean reply length is at most ``length_ratio`` times the control's (the guard against
     replies that grow long and loop, seen on a held-out corpus);
   - its share of unique replies is not below the control's (the guard against short, generic
     replies: a few short replies given to many queries raise Dist-2 while the model answers
     more queries alike, which is what ND is meant to undo);
   and, by rule:
   - ``max-bleu``: its Dist-2 is at least ``dist2_floors`` times Standard's and the control's
     (``dist2_floors_met``), and the 95% paired-bootstrap interval of its BLEU-4 ratio to Standard
     reaches ``1 - bleu_margin`` (``bleu_interval_reaches``: not shown to be further below);
   - ``max-dist2``: its BLEU-4 is at most ``bleu_margin`` (relative) below Standard's on the median
     seed (``median_seed_ratio``: the median over the seeds of the per-seed ratio; with one seed, or
     seeds that cannot be paired, the ratio of the means);
2. among the eligible candidates, ``max-bleu`` chooses the highest validation BLEU-4 ratio to
   Standard, ``max-dist2`` the highest validation Dist-2 (ties: the first listed).

Why ``max-bleu``: at the CPU scale Dist-2 differs between the systems by x1.5-x3 and moves little
with the sentences, while BLEU-4 is about 0.01 and one seed's ratio moves by +-16% over 1,000
validation sentences. A hard BLEU-4 cut at x0.95 then falls inside the noise and decides by chance,
and taking the most diverse candidate that passes it favours the one whose BLEU-4 was overestimated.
``max-bleu`` cuts on the measure that is precise (Dist-2, at the acceptance's own multiples), keeps
the noisy one as a floor only where the data show it broken, and ranks by it.

Rows are nd-eval metric dicts (``evaluate`` output, or means over seeds with the same keys); a
row's optional ``tokens`` is how many tokens its replies have in all (over its seeds), its
optional ``lf_sd`` and ``seeds`` give the spread of LF between seeds, and its optional
``bleu-4_runs`` and ``seed_ids`` each seed's BLEU-4 and which seed it is.
"""

import math
import statistics
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

Row = Mapping[str, Optional[float]]
Interval = Tuple[float, float, float]  # (ratio, 2.5th percentile, 97.5th percentile)
RULES = ("max-bleu", "max-dist2")


def ratio(value: Optional[float], base: Optional[float]) -> Optional[float]:
    """value / base; ``None`` when either is missing or the base is 0 (a ratio to 0 says nothing)."""
    if value is None or base is None or base == 0:
        return None
    return value / base


def median_seed_ratio(row: Row, base: Row, metric: str = "bleu-4") -> Optional[float]:
    """The median over seeds of ``row``'s ``metric`` / ``base``'s, seed paired with seed.

    Per-seed values come from ``{metric}_runs`` and ``seed_ids``; where either row has fewer than
    two, the seeds differ, or a per-seed ratio is undefined, this is the ratio of the means. At
    BLEU-4 near 0.01 one seed whose replies are short moves the mean by 20-40%; the median seed
    does not follow it."""
    values, base_values = row.get(f"{metric}_runs"), base.get(f"{metric}_runs")
    ids, base_ids = row.get("seed_ids"), base.get("seed_ids")
    if values and base_values and ids and base_ids and len(values) == len(ids) > 1 \
            and len(base_values) == len(base_ids) and sorted(ids) == sorted(base_ids):
        by_seed = dict(zip(base_ids, base_values))
        ratios = [ratio(v, by_seed[i]) for i, v in zip(ids, values)]
        if all(r is not None for r in ratios):
            return statistics.median(ratios)
    return ratio(row[metric], base[metric])


def lf_standard_error(row: Row) -> float:
    """The standard error of a system's mean LF: the larger of its counting noise and its spread
    between seeds.

    LF is a count k of rare tokens over the system's ``tokens``; as a Poisson count, k has a
    standard deviation of sqrt(k), so LF's is sqrt(LF / tokens). At the CPU scale k is a handful
    of tokens in tens of thousands, and one seed's model can give 10 where the others give 0: the
    between-seed standard error ``lf_sd / sqrt(seeds)`` covers that. Without either, 0.
    """
    lf = row.get("lf") or 0.0
    counting = math.sqrt(lf / row["tokens"]) if row.get("tokens") else 0.0
    sd, seeds = row.get("lf_sd"), row.get("seeds") or 1
    between = sd / math.sqrt(seeds) if sd is not None and seeds > 1 else 0.0
    return max(counting, between)


def lf_not_lower(lf: Optional[float], reference: Row, z: float = 2.0) -> bool:
    """LF not below ``reference``'s by more than ``z`` standard errors of the reference's mean LF
    (``lf_standard_error``). Missing LF counts as 0."""
    lf, reference_lf = lf or 0.0, reference.get("lf") or 0.0
    return lf >= reference_lf - z * lf_standard_error(reference) - 1e-15


def dist2_floors_met(row: Row, standard: Row, control: Row, floors: Tuple[float, float] = (1.5, 1.3)) -> bool:
    """Dist-2 at least ``floors[0]`` x Standard's and ``floors[1]`` x the control's (missing = 0)."""
    dist2 = row.get("dist-2") or 0.0
    return (dist2 >= floors[0] * (standard.get("dist-2") or 0.0) - 1e-15
            and dist2 >= floors[1] * (control.get("dist-2") or 0.0) - 1e-15)


def bleu_interval_reaches(interval: Optional[Interval], margin: float = 0.05) -> bool:
    """The upper end of BLEU-4's ratio interval to Standard at least ``1 - margin``: the sentences do
    not show the candidate more than ``margin`` below Standard. No interval (a Standard at BLEU-4 0
    everywhere has no ratio): not met."""
    return interval is not None and interval[2] >= 1 - margin - 1e-12


def check_candidate(row: Row, standard: Row, control: Row, bleu_margin: float = 0.05,
                    length_ratio: float = 1.5, bleu: Optional[float] = None, rule: str = "max-dist2",
                    interval: Optional[Interval] = None,
                    dist2_floors: Tuple[float, float] = (1.5, 1.3)) -> Dict[str, bool]:
    """Each condition of ``rule`` for one candidate (True = met); ``bleu``: its ``median_seed_ratio``
    to Standard where the caller has it already (``max-dist2``); ``interval``: its BLEU-4 ratio to
    Standard with the 95% interval (``max-bleu``)."""
    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r}; one of {', '.join(RULES)}")
    if rule == "max-bleu":
        checks = {"dist-2": dist2_floors_met(row, standard, control, dist2_floors),
                  "bleu-4": bleu_interval_reaches(interval, bleu_margin)}
    else:
        bleu = median_seed_ratio(row, standard) if bleu is None else bleu
        checks = {"bleu-4": bleu is not None and bleu >= 1 - bleu_margin - 1e-12}  # x0.90 at a 10% margin passes
    return {**checks,
            "lf": lf_not_lower(row.get("lf"), control),
            "rep-3": row["rep-3"] <= control["rep-3"],
            "length": row["length"] <= length_ratio * control["length"],
            "unique": row["unique"] >= control["unique"]}


def rule_text(rule: str, bleu_margin: float = 0.05, length_ratio: float = 1.5,
              dist2_floors: Tuple[float, float] = (1.5, 1.3)) -> str:
    guards = (f"LF >= control less 2 standard errors, rep-3 <= control, length <= {length_ratio:g} x control, "
              f"unique replies >= control")
    if rule == "max-bleu":
        return (f"validation Dist-2 >= {dist2_floors[0]:g} x Standard and >= {dist2_floors[1]:g} x control, "
                f"the 95% interval of BLEU-4 / Standard's reaching {1 - bleu_margin:g}, {guards}; "
                f"then the highest BLEU-4")
    return f"validation BLEU-4 >= {1 - bleu_margin:g} x Standard on the median seed, {guards}; then the highest Dist-2"


def choose_configuration(valid: Mapping[str, Row], candidates: Sequence[str], standard: str = "standard",
                         control: str = "control", bleu_margin: float = 0.05, length_ratio: float = 1.5,
                         rule: str = "max-dist2", bleu_intervals: Optional[Mapping[str, Interval]] = None,
                         dist2_floors: Tuple[float, float] = (1.5, 1.3)) -> dict:
    """Apply ``rule`` to the validation rows; returns the conditions per candidate and ``chosen``
    (``None`` when no candidate is eligible). ``bleu_intervals`` (``max-bleu``): per candidate, its
    BLEU-4 ratio to Standard with the 95% paired-bootstrap interval over the validation sentences."""
    intervals = dict(bleu_intervals or {})
    out = {"rule": rule_text(rule, bleu_margin, length_ratio, dist2_floors), "name": rule,
           "candidates": {}, "chosen": None}
    base, ctrl = valid[standard], valid[control]
    for name in candidates:
        row, interval = valid[name], intervals.get(name)
        if rule == "max-bleu":
            bleu = interval[0] if interval is not None else ratio(row["bleu-4"], base["bleu-4"])
        else:
            bleu = median_seed_ratio(row, base)
        checks = check_candidate(row, base, ctrl, bleu_margin, length_ratio, bleu, rule, interval, dist2_floors)
        out["candidates"][name] = {"dist-2": row["dist-2"], "bleu-4_ratio": bleu,
                                   "bleu-4_interval": list(interval) if interval is not None else None,
                                   "dist-2_ratios": [ratio(row["dist-2"], base["dist-2"]),
                                                     ratio(row["dist-2"], ctrl["dist-2"])],
                                   "lf": row.get("lf"), "rep-3": row["rep-3"], "length": row["length"],
                                   "unique": row["unique"],
                                   "checks": checks, "eligible": all(checks.values())}
    eligible = [n for n in candidates if out["candidates"][n]["eligible"]]
    if eligible:
        if rule == "max-bleu":
            key = lambda n: (out["candidates"][n]["bleu-4_ratio"] or 0.0, valid[n]["dist-2"] or 0.0,  # noqa: E731
                             -eligible.index(n))
        else:
            key = lambda n: (valid[n]["dist-2"] or 0.0, -eligible.index(n))  # noqa: E731
        out["chosen"] = max(eligible, key=key)
    return out


def _times(value: Optional[float], base: Optional[float], digits: int = 2) -> str:
    r = ratio(value, base)
    if r is not None:
        return f"x{r:.{digits}f}"
    if value is None or base is None:
        return "n/a"
    return f"{value:.5f} vs {base:.5f}"


def verdict(rows: Mapping[str, Row], nd: str, others: Sequence[str], labels: Optional[Mapping[str, str]] = None) -> str:
    """One line: ND's Dist-2, LF and BLEU-4 as multiples of each other system's, and the loop shares.

    e.g. ``ND vs Standard: Dist-2 x2.40, LF x1.30, BLEU-4 x0.98; vs MLE control: ...; rep-3 ND 2.0%,
    Standard 31.0%, MLE control 5.0%``."""
    labels = dict(labels or {})
    name = lambda s: labels.get(s, s)  # noqa: E731
    parts: List[str] = []
    for i, other in enumerate(others):
        a, b = rows[nd], rows[other]
        head = f"{name(nd)} vs {name(other)}" if i == 0 else f"vs {name(other)}"
        parts.append(f"{head}: Dist-2 {_times(a['dist-2'], b['dist-2'])}, LF {_times(a.get('lf'), b.get('lf'))}, "
                     f"BLEU-4 {_times(a['bleu-4'], b['bleu-4'])}")
    loops = ", ".join(f"{name(s)} {rows[s]['rep-3']:.1%}" for s in [nd, *others])
    return "; ".join(parts) + f"; replies repeating a 3-gram: {loops}"
