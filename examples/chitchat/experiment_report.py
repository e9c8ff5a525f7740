"""The report of the chitchat experiment: nd-eval's metrics of every run aggregated per system
(mean and sd over seeds), the ND configuration chosen on the validation set
(:func:`select_on_valid`), the tables of ``results.md`` and ``results.json``, and the plots.
"""

import json
import statistics
from pathlib import Path
from typing import Callable, Dict, List

from experiment_jobs import generation_file
from experiment_systems import LABELS, MODES, SELECTABLE, Catalogue, Job, short_label

METRICS = ["dist-1", "dist-2", "dist-3", "lf", "kl-1", "kl-2", "bleu-3", "bleu-4", "length", "unique", "top_share"]


class Report:
    """Reads the outputs of one experiment under ``out``; ``systems``: its catalogue (labels, order,
    variants); ``say``: where progress lines go."""

    def __init__(self, args, out: Path, systems: Catalogue, say: Callable[[str], None]):
        self.a = args
        self.out = out
        self.text = out / "text"
        self.gen = out / "generate"
        self.logs = out / "logs"
        self.systems = systems
        self.say = say

    def evaluate(self, jobs: List[Job]) -> dict:
        """nd-eval's metrics of every generate output, per run and per system (mean and sd over seeds),
        and with ``--subsets valid`` the validation decode and the ND configuration chosen on it."""
        from nd_fairseq.evaluation import read_train_counts

        counts = read_train_counts(str(self.text / "train.response"))
        results = self.evaluate_subset(jobs, "test", counts)
        if "valid" in self.a.subsets:
            valid = self.evaluate_subset(jobs, "valid", counts)
            results["valid"] = valid
            candidates = [s for s in SELECTABLE + list(self.systems.variants) if s in self.a.systems]
            results["selection"] = {
                mode: select_on_valid(valid["systems"].get(mode, {}), results["systems"].get(mode, {}), candidates,
                                      self.a.select_margin, self.a.accept_margin)
                for mode in MODES}
        return results

    def evaluate_subset(self, jobs: List[Job], subset: str, counts) -> dict:
        from nd_fairseq.evaluation import evaluate, read_responses

        per_run: Dict[str, Dict[str, dict]] = {mode: {} for mode in MODES}
        for job in jobs:
            for mode in per_run:
                path = generation_file(self.gen, job.name, mode, subset)
                if not path.exists():
                    continue
                resp = read_responses(str(path))
                per_run[mode][job.name] = evaluate(resp.hypotheses, resp.references, counts)
        summary: Dict[str, Dict[str, dict]] = {}
        for mode, runs in per_run.items():
            summary[mode] = {}
            for system in self.systems.order:
                names = [j.name for j in jobs if j.system == system and j.name in runs]
                if not names:
                    continue
                row = {"seeds": [int(n.rsplit(".s", 1)[1]) for n in names]}
                for m in METRICS:
                    vals = [runs[n][m] for n in names if runs[n].get(m) is not None]
                    if vals:
                        row[m] = statistics.fmean(vals)
                        row[m + "_sd"] = statistics.stdev(vals) if len(vals) > 1 else None
                        row[m + "_runs"] = vals
                row["top_responses"] = runs[names[0]].get("top_responses")
                summary[mode][system] = row
        return {"per_run": per_run, "systems": summary}

    def write(self, results: dict, jobs: List[Job]) -> None:
        """results.md (the tables, the validation selection, the top responses) and results.json."""
        from nd_fairseq.evaluation.metrics import DIRECTIONS

        lines = ["# chitchat-dataset experiments\n",
                 f"Settings: {json.dumps(self.settings())}\n"]
        tables = [("test", mode, systems) for mode, systems in results["systems"].items()]
        tables += [("validation", mode, systems) for mode, systems in results.get("valid", {}).get("systems", {}).items()]
        for subset, mode, systems in tables:
            if not systems:
                continue
            lines.append(f"\n## {mode} decoding ({subset} set, mean ± sd over seeds)\n")
            head = ["system", "seeds"] + METRICS
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "---|" * len(head))
            best = {}
            for m in METRICS:
                sign = DIRECTIONS.get(m, 0)
                cands = {s: r[m] for s, r in systems.items() if m in r and not s.startswith("teacher")}
                if sign and cands:
                    best[m] = (max if sign > 0 else min)(cands.values())
            for system, row in systems.items():
                cells = [self.systems.labels[system], ",".join(map(str, row["seeds"]))]
                for m in METRICS:
                    if m not in row:
                        cells.append("n/a")
                        continue
                    digits = 4 if m.startswith(("dist", "lf", "bleu", "unique", "top")) else 3
                    v = f"{row[m]:.{digits}f}"
                    if row.get(m + "_sd") is not None:
                        v += f" ± {row[m + '_sd']:.{digits}f}"
                    if best.get(m) == row[m]:
                        v = f"**{v}**"
                    cells.append(v)
                lines.append("| " + " | ".join(cells) + " |")
        for mode, sel in results.get("selection", {}).items():
            lines.append(f"\n## ND configuration chosen on the validation set ({mode})\n")
            lines.extend(describe_selection(sel, self.systems.labels))
        lines.append("\nTop responses (first seed, greedy):\n")
        for system, row in results["systems"].get("greedy", {}).items():
            top = row.get("top_responses") or []
            shown = "; ".join(f"\"{t['response']}\" ×{t['count']}" for t in top[:3]) if top and isinstance(top[0], dict) \
                else "; ".join(map(str, top[:3]))
            lines.append(f"- {self.systems.labels[system]}: {shown}")
        (self.out / "results.md").write_text("\n".join(lines) + "\n")
        payload = {"settings": self.settings(), **results}
        (self.out / "results.json").write_text(json.dumps(payload, indent=2))
        self.say(f"results: {self.out / 'results.md'}")
        print("\n".join(lines))

    def settings(self) -> dict:
        keys = ["seeds", "systems", "variants", "updates", "teacher_updates", "finetune_updates", "finetune_lr", "nd_init", "max_tokens", "lr", "warmup",
                "layers", "dim", "heads", "ffn", "vocab", "key", "max_units", "max_length", "alpha_lambda",
                "alpha_gamma", "nd_extra", "jobs", "threads", "subsets", "select_margin", "accept_margin"]
        return {k: getattr(self.a, k) for k in keys}

    def plots(self, results: dict, jobs: List[Job]) -> None:
        """plots/: α and the loss components over updates of the first ND run, metric bars per system."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        plots = self.out / "plots"
        plots.mkdir(exist_ok=True)
        nd_jobs = [j for j in jobs if j.system == "nd"]
        if nd_jobs:
            recs = read_log(self.logs / f"{nd_jobs[0].name}.train.log", "train_inner")
            if recs:
                x = [r["num_updates"] for r in recs]
                fig, ax = plt.subplots(figsize=(6, 3.2))
                ax.plot(x, [r["alpha"] for r in recs])
                ax.set_xlabel("update")
                ax.set_ylabel("α")
                ax.set_title("α over updates (Eq. 15, or --fixed-alpha)")
                fig.tight_layout()
                fig.savefig(plots / "alpha.png", dpi=110)
                plt.close(fig)
                fig, axes = plt.subplots(1, 4, figsize=(13, 3.2))
                for ax, key, title in zip(axes, ("mle", "pred", "hid", "att"),
                                          ("L_mle (bits)", "L_pred", "Σ L_hid (MRSE)", "Σ L_att (MRSE)")):
                    ys = [(r["num_updates"], r[key]) for r in recs if key in r]
                    if ys:
                        ax.plot(*zip(*ys))
                    ax.set_title(title)
                    ax.set_xlabel("update")
                fig.tight_layout()
                fig.savefig(plots / "nd_components.png", dpi=110)
                plt.close(fig)
        systems = results["systems"].get("greedy", {})
        if systems:
            names = list(systems)
            fig, axes = plt.subplots(1, 4, figsize=(15, 4.8))
            ticks = [self.systems.short_label(s) for s in names]
            for ax, m in zip(axes, ("dist-2", "lf", "bleu-4", "kl-2")):
                vals = [systems[s].get(m, 0) or 0 for s in names]
                errs = [systems[s].get(m + "_sd") or 0 for s in names]
                ax.bar(range(len(names)), vals, yerr=errs, color="tab:blue")
                ax.set_xticks(range(len(names)))
                ax.set_xticklabels(ticks, rotation=60, ha="right", fontsize=7)
                ax.set_title(f"{m} (greedy)")
            fig.tight_layout()
            fig.savefig(plots / "metrics.png", dpi=110)
            plt.close(fig)


def relative(value: float, base: float) -> float:
    return value / base if base else float("inf")


def select_on_valid(valid: Dict[str, dict], test: Dict[str, dict], candidates: List[str], margin: float,
                    accept_margin: float) -> dict:
    """Choose one ND configuration on the validation decode, then read its test row.

    The rule, fixed before the test set is looked at: among the candidates, keep those whose mean
    validation BLEU-4 is at most ``margin`` (relative) below Standard's and whose mean validation LF
    is at least Standard's; choose the highest mean validation Dist-2. The test check is the
    issue's: Dist-2 and LF above Standard's, BLEU-4 at most ``accept_margin`` (relative) below."""
    out = {"rule": f"validation BLEU-4 >= (1 - {margin}) x Standard, LF >= Standard; highest Dist-2",
           "candidates": {}, "chosen": None}
    base = valid.get("standard")
    if not base:
        return out
    for name in candidates:
        row = valid.get(name)
        if not row:
            continue
        bleu_ratio = relative(row["bleu-4"], base["bleu-4"])
        eligible = bleu_ratio >= 1 - margin and row["lf"] >= base["lf"]
        out["candidates"][name] = {"dist-2": row["dist-2"], "lf": row["lf"], "bleu-4": row["bleu-4"],
                                   "bleu-4_ratio": bleu_ratio, "eligible": eligible}
    eligible = {n: c for n, c in out["candidates"].items() if c["eligible"]}
    if not eligible:
        return out
    chosen = max(eligible, key=lambda n: eligible[n]["dist-2"])
    out["chosen"] = chosen
    if chosen in test and "standard" in test:
        t, b = test[chosen], test["standard"]
        ratio = relative(t["bleu-4"], b["bleu-4"])
        out["test"] = {"dist-2": [t["dist-2"], b["dist-2"]], "lf": [t["lf"], b["lf"]],
                       "bleu-4": [t["bleu-4"], b["bleu-4"]], "bleu-4_ratio": ratio, "seeds": t["seeds"],
                       "passes": t["dist-2"] > b["dist-2"] and t["lf"] > b["lf"] and ratio >= 1 - accept_margin}
    return out


def describe_selection(sel: dict, labels: Dict[str, str] = LABELS) -> List[str]:
    lines = [f"Rule: {sel['rule']}.\n", "| candidate | valid dist-2 | valid lf | valid bleu-4 (× Standard) | eligible |",
             "|---|---|---|---|---|"]
    for name, c in sel["candidates"].items():
        mark = "**chosen**" if name == sel["chosen"] else ("yes" if c["eligible"] else "no")
        lines.append(f"| {short_label(name, labels)} | {c['dist-2']:.4f} | {c['lf']:.5f} | {c['bleu-4']:.4f} "
                     f"(×{c['bleu-4_ratio']:.2f}) | {mark} |")
    t = sel.get("test")
    if t:
        lines.append(f"\nTest, {short_label(sel['chosen'], labels)} vs Standard (seeds {t['seeds']}): "
                     f"Dist-2 {t['dist-2'][0]:.4f} vs {t['dist-2'][1]:.4f}, LF {t['lf'][0]:.5f} vs {t['lf'][1]:.5f}, "
                     f"BLEU-4 {t['bleu-4'][0]:.4f} vs {t['bleu-4'][1]:.4f} (×{t['bleu-4_ratio']:.2f}): "
                     f"{'passes' if t['passes'] else 'fails'} the acceptance check.")
    elif sel["chosen"] is None:
        lines.append("\nNo candidate meets the rule on the validation set.")
    return lines


def read_log(path: Path, tag: str) -> List[dict]:
    """The JSON records of one kind in a fairseq log, one per update number: a resumed run logs
    again the updates after its last checkpoint, and the later record is the one that counts."""
    by_update: Dict[float, dict] = {}
    if not path.exists():
        return []
    for line in open(path, errors="replace"):
        if f"| {tag} |" in line and "{" in line:
            rec = json.loads(line[line.index("{"):])
            rec = {k: (float(v) if isinstance(v, str) and k != "epoch" else v) for k, v in rec.items()}
            by_update[rec.get("num_updates", len(by_update))] = rec
    return [by_update[k] for k in sorted(by_update)]

