#!/usr/bin/env python
"""The Table 3/5/6/8 experiments on chitchat-dataset: train, decode and evaluate every system.

    python examples/chitchat/experiment.py --out results/chitchat --jobs 2 --seeds 1 2

Systems (``--systems``): ``standard`` (MLE), ``nd`` (negative distillation), the Table 5 ablations
``nd_no_pred``/``nd_no_att``/``nd_no_hid``, ``nd_fixed_alpha`` (Table 8), the negative teachers
``teacher_top``/``teacher_bottom`` (Table 6: trained on the top and the bottom half by source
entropy), and the baselines ``ul``/``nt``/``face`` (fine-tuned from ``standard``). Every system is
decoded greedily and with beam 5 and scored with nd-eval's metrics; seeds are averaged and their
spread reported.

With ``--subsets test valid`` every system is also decoded on the validation set, and one ND
configuration (``nd``, ``nd_fixed_alpha`` or a ``--variants`` entry) is chosen per decoding mode by a
rule fixed in advance (``select_on_valid``: validation BLEU-4 at most ``--select-margin`` below
Standard's, LF not below, then the highest validation Dist-2); results.md then shows the chosen
configuration's test row against Standard, so no configuration is picked by looking at the test set.

Outputs under ``--out``: ``results.md`` and ``results.json`` (the tables), ``plots/*.png`` (α and
the loss components over updates for ND, metric bars per system), and per system its checkpoint,
training log and generations. Every finished step is kept: rerunning the same command resumes.
Jobs run ``--jobs`` at a time, each with ``--threads`` torch threads (two single-threaded jobs use
2 cores better than one two-threaded job for models this small).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent

SYSTEM_ORDER = ["standard", "standard_ft", "nd", "nd_no_pred", "nd_no_att", "nd_no_hid", "nd_fixed_alpha",
                "teacher_top", "teacher_bottom", "ul", "nt", "face"]
# ND configurations the validation selection may choose from (with the --variants)
SELECTABLE = ["nd", "nd_fixed_alpha"]
LABELS = {"standard": "Standard", "standard_ft": "Standard + MLE fine-tune", "nd": "ND",
          "nd_no_pred": "ND w/o L_pred", "nd_no_att": "ND w/o L_att", "nd_no_hid": "ND w/o L_hid", "nd_fixed_alpha": "ND (fixed α)", "teacher_top": "teacher N_t (top)",
          "teacher_bottom": "teacher N_b (bottom)", "ul": "UL", "nt": "NT", "face": "FACE"}
MODES = {"greedy": ["--beam", "1"], "beam5": ["--beam", "5", "--lenpen", "1.0"]}
METRICS = ["dist-1", "dist-2", "dist-3", "lf", "kl-1", "kl-2", "bleu-3", "bleu-4", "length", "unique", "top_share"]


def short_label(system: str) -> str:
    # a variant's label holds its flags: too long for a tick or a table cell, its name is shown instead
    label = LABELS.get(system, system)
    return label if len(label) <= 26 else system


def generation_file(gen: Path, name: str, mode: str, subset: str = "test") -> Path:
    """Where the runner keeps a run's fairseq-generate output (``gen`` = OUT/generate). Test outputs
    keep their original names, so runs made before --subsets stay usable."""
    return gen / (f"{name}.{mode}.txt" if subset == "test" else f"{name}.{mode}.{subset}.txt")


def tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else (shutil.which(name) or name)


@dataclass
class Job:
    name: str
    system: str
    seed: int
    data: str
    args: List[str]
    updates: int
    deps: List[str] = field(default_factory=list)
    finetune_from: Optional[str] = None


class Experiment:
    def __init__(self, args):
        self.a = args
        self.out = Path(args.out).resolve()
        self.text = self.out / "text"
        self.data = self.out / "data-bin"
        self.ckpt = self.out / "checkpoints"
        self.gen = self.out / "generate"
        self.logs = self.out / "logs"
        for d in (self.ckpt, self.gen, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.t0 = time.time()
        self.lock = threading.Lock()
        # named ND variants: NAME=FLAGS, e.g. nd_l2="--alpha-lambda 2 --nd-attention standardized"
        self.variants = {}
        for spec in args.variants:
            name, _, flags = spec.partition("=")
            if not name or name in SYSTEM_ORDER:
                raise SystemExit(f"--variants {spec!r}: give NAME=FLAGS with a new name")
            self.variants[name] = flags.split()
            SYSTEM_ORDER.insert(SYSTEM_ORDER.index("nd") + 1, name)
            LABELS[name] = f"ND ({flags})"

    # -- helpers --------------------------------------------------------------------------------

    def say(self, msg: str) -> None:
        el = int(time.time() - self.t0)
        with self.lock:
            print(f"[{el // 3600}:{el % 3600 // 60:02d}:{el % 60:02d}] {msg}", flush=True)

    def env(self) -> dict:
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.a.threads)
        env["PYTHONWARNINGS"] = "ignore"
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        return env

    def run(self, cmd, log: Path) -> None:
        with open(log, "a") as f:
            f.write("$ " + " ".join(map(str, cmd)) + "\n")
            f.flush()
            proc = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, env=self.env(),
                                  cwd=REPO)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed (exit {proc.returncode}); see {log}")

    # -- data -----------------------------------------------------------------------------------

    def prepare(self) -> None:
        if not (self.text / "test.response").exists():
            self.say(f"nd-prepare -> {self.text}")
            self.run([tool("nd-prepare"), "--out-dir", self.text, "--seed", "1", "--max-length", self.a.max_length,
                      "--truncate", "--max-units", self.a.max_units, "--max-valid-pairs", self.a.valid_pairs,
                      "--max-test-pairs", self.a.test_pairs, "--quiet"], self.logs / "prepare.log")
        self.say(f"preprocess.sh (sentencepiece {self.a.vocab}, key {self.a.key}) -> {self.data}")
        self.run(["bash", REPO / "preprocess.sh", "--text-dir", self.text, "--work-dir", self.out / "prep",
                  "--dest", self.data, "--vocab-size", self.a.vocab, "--key", self.a.key, "--bottom"],
                 self.logs / "preprocess.log")
        summary = json.loads((self.data / "full" / "entropy.summary.json").read_text())
        self.say(f"data: {summary['pairs']} training pairs, negative set {summary['top']}, median H_src "
                 f"{summary['median']:.3f} bits, zeros {summary['zero_share']:.1%}")

    # -- jobs -----------------------------------------------------------------------------------

    def model_args(self) -> List[str]:
        a = self.a
        return ["--arch", "transformer_nd_dialog", "--encoder-layers", a.layers, "--decoder-layers", a.layers,
                "--encoder-embed-dim", a.dim, "--decoder-embed-dim", a.dim, "--encoder-ffn-embed-dim", a.ffn,
                "--decoder-ffn-embed-dim", a.ffn, "--encoder-attention-heads", a.heads,
                "--decoder-attention-heads", a.heads, "--dropout", "0.1"]

    def jobs(self) -> List[Job]:
        a = self.a
        ls = ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"]
        gamma = a.alpha_gamma if a.alpha_gamma is not None else a.updates // 2
        nd = ["--criterion", "negative_distillation", "--label-smoothing", "0.1", "--alpha-lambda", a.alpha_lambda,
              "--alpha-gamma", gamma, *(flag for group in a.nd_extra for flag in group.split())]
        first = a.seeds[0]
        out: List[Job] = []
        want = set(a.systems)
        teacher_seed = first
        nd_systems = {"nd", "nd_no_pred", "nd_no_att", "nd_no_hid", "nd_fixed_alpha"} | set(self.variants)
        from_standard = a.nd_init == "standard"
        for seed in a.seeds:
            fine_tuned = want & {"ul", "nt", "face", "standard_ft"} or (from_standard and want & nd_systems)
            if "standard" in want or fine_tuned:
                out.append(Job(f"standard.s{seed}", "standard", seed, "full", ls, a.updates))
            if "standard_ft" in want:
                # the compute-matched control of every fine-tuned system: the same extra updates, MLE only
                out.append(Job(f"standard_ft.s{seed}", "standard_ft", seed, "full", ls, a.finetune_updates,
                               deps=[f"standard.s{seed}"], finetune_from=f"standard.s{seed}"))

        teacher = f"teacher_top.s{teacher_seed}"
        teacher_path = self.ckpt / teacher / "checkpoint_best.pt"

        def nd_job(system: str, seed: int, extra: List[str]) -> Job:
            args = nd + extra + ["--teacher-path", teacher_path]
            if from_standard:
                # ND as a second phase of the Standard run (the progressive schedule's first half is
                # MLE anyway, α(s) < 0.05 for s < γ/2); compare with standard_ft, same updates
                return Job(f"{system}.s{seed}", system, seed, "full", args, a.finetune_updates,
                           deps=[teacher, f"standard.s{seed}"], finetune_from=f"standard.s{seed}")
            return Job(f"{system}.s{seed}", system, seed, "full", args, a.updates, deps=[teacher])

        if want & (nd_systems | {"teacher_top"}):
            out.append(Job(teacher, "teacher_top", teacher_seed, "negative", ls,
                           a.teacher_updates))
        if "teacher_bottom" in want:
            out.append(Job(f"teacher_bottom.s{teacher_seed}", "teacher_bottom", teacher_seed, "bottom", ls,
                           a.teacher_updates))
        variants = {"nd": [], "nd_no_pred": ["--no-pred-loss"], "nd_no_att": ["--no-att-loss"],
                    "nd_no_hid": ["--no-hid-loss"]}
        for system, extra in variants.items():
            if system not in want:
                continue
            for seed in (a.seeds if system == "nd" else a.seeds[:1]):
                out.append(nd_job(system, seed, extra))
        for system, extra in self.variants.items():
            if system in want:
                for seed in a.seeds:
                    out.append(nd_job(system, seed, extra))
        if "nd_fixed_alpha" in want:
            from nd_fairseq.losses import mean_alpha

            fixed = mean_alpha(a.updates, float(a.alpha_lambda), float(gamma))
            out.append(nd_job("nd_fixed_alpha", first, ["--fixed-alpha", f"{fixed:.6f}"]))
        baselines = {"ul": ["--criterion", "unlikelihood_dialog"], "nt": ["--criterion", "negative_training"],
                     "face": ["--criterion", "face"]}
        for system, crit in baselines.items():
            if system not in want:
                continue
            for seed in a.seeds:
                base = f"standard.s{seed}"
                out.append(Job(f"{system}.s{seed}", system, seed, "full", crit + ["--label-smoothing", "0.1"],
                               a.finetune_updates, deps=[base], finetune_from=base))
        return out

    def train(self, job: Job) -> None:
        save = self.ckpt / job.name
        if (save / ".done").exists():
            return
        # an interrupted run resumes from its checkpoint_last.pt (fairseq restores the update count,
        # so the α schedule continues exactly); anything else half written is started afresh
        if save.exists() and not (save / "checkpoint_last.pt").exists():
            shutil.rmtree(save)
        a = self.a
        interval = max(1, job.updates // (2 if job.finetune_from else a.validations))
        if job.finetune_from:
            # fine-tuning continues at a constant rate near where Standard's inverse-sqrt schedule ended
            schedule = ["--lr", a.finetune_lr, "--lr-scheduler", "fixed",
                        "--finetune-from-model", self.ckpt / job.finetune_from / "checkpoint_best.pt"]
        else:
            schedule = ["--lr", a.lr, "--lr-scheduler", "inverse_sqrt", "--warmup-updates", a.warmup]
        cmd = [tool("fairseq-train"), self.data / job.data, "--user-dir", REPO / "nd_fairseq",
               "--task", "negative_distillation", *self.model_args(), *job.args,
               "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", *schedule, "--clip-norm", "1.0",
               "--max-tokens", a.max_tokens,
               "--max-update", job.updates, "--max-epoch", "1000", "--seed", job.seed, "--save-dir", save,
               "--validate-interval-updates", interval, "--save-interval-updates", interval,
               "--keep-interval-updates", "1", "--no-epoch-checkpoints", "--log-format", "json",
               "--log-interval", a.log_interval, "--no-progress-bar", "--num-workers", "0"]
        self.run(cmd, self.logs / f"{job.name}.train.log")
        (save / ".done").touch()

    def checkpoint(self, job: Job) -> Path:
        """From-scratch runs: the lowest validation loss (the paper's selection). Fine-tuning runs: the
        last update, as UL and NT prescribe a fixed number of fine-tuning updates; selecting by
        validation MLE would pick whichever checkpoint moved least from the Standard model."""
        return self.ckpt / job.name / ("checkpoint_last.pt" if job.finetune_from else "checkpoint_best.pt")

    def generation(self, name: str, mode: str, subset: str = "test") -> Path:
        return generation_file(self.gen, name, mode, subset)

    def decoded(self, name: str) -> bool:
        return all(self.generation(name, mode, subset).exists() for mode in MODES for subset in self.a.subsets)

    def decode(self, job: Job) -> None:
        for subset in self.a.subsets:
            for mode, flags in MODES.items():
                out = self.generation(job.name, mode, subset)
                if out.exists():
                    continue
                tmp = out.with_suffix(".tmp")
                with open(tmp, "w") as f:
                    proc = subprocess.run([tool("fairseq-generate"), self.data / "full", "--user-dir",
                                           REPO / "nd_fairseq", "--path", self.checkpoint(job), "--gen-subset", subset,
                                           *flags, "--batch-size", "200", "--max-len-b", "40", "--remove-bpe",
                                           "sentencepiece"], stdout=f, stderr=subprocess.DEVNULL, env=self.env(),
                                          cwd=REPO)
                if proc.returncode != 0:
                    raise RuntimeError(f"fairseq-generate failed for {job.name} ({mode}, {subset})")
                tmp.rename(out)

    def progress(self, job: Job) -> str:
        log = self.logs / f"{job.name}.train.log"
        last = None
        if log.exists():
            with open(log, errors="replace") as f:
                for line in f:
                    if "| train_inner |" in line:
                        last = line
        if not last:
            return f"{job.name}: starting"
        rec = json.loads(last[last.index("{"):])
        return f"{job.name}: update {rec['num_updates']}/{job.updates} loss {rec['loss']}"

    def run_all(self, jobs: List[Job]) -> None:
        pending = {j.name: j for j in jobs}
        done = {j.name for j in jobs if (self.ckpt / j.name / ".done").exists() and self.decoded(j.name)}
        running: Dict[str, threading.Thread] = {}
        errors: Dict[str, str] = {}
        for name in done:
            pending.pop(name)
        self.say(f"{len(jobs)} jobs: {len(done)} done, {len(pending)} to run, {self.a.jobs} at a time")

        def work(job: Job) -> None:
            t = time.time()
            try:
                self.train(job)
                self.decode(job)
                self.say(f"finished {job.name} in {(time.time() - t) / 60:.1f} min")
            except Exception as err:  # reported, the scheduler stops depending jobs
                errors[job.name] = str(err)
                self.say(f"FAILED {job.name}: {err}")

        last_report = time.time()
        while pending or running:
            for name, th in list(running.items()):
                if not th.is_alive():
                    running.pop(name)
                    if name not in errors:
                        done.add(name)
            for name, job in list(pending.items()):
                if any(d in errors for d in job.deps):
                    errors[name] = "dependency failed"
                    pending.pop(name)
                    continue
                if len(running) < self.a.jobs and all(d in done for d in job.deps):
                    pending.pop(name)
                    self.say(f"start {name} ({job.updates} updates on {job.data})")
                    th = threading.Thread(target=work, args=(job,), daemon=True)
                    running[name] = th
                    th.start()
            if running and time.time() - last_report > self.a.report_every:
                self.say("; ".join(self.progress(jobs_by_name) for jobs_by_name in
                                   [j for j in jobs if j.name in running]))
                last_report = time.time()
            time.sleep(2)
        if errors:
            self.say(f"{len(errors)} jobs failed: {', '.join(errors)}")

    # -- evaluation -----------------------------------------------------------------------------

    def evaluate(self, jobs: List[Job]) -> dict:
        from nd_fairseq.evaluation import read_train_counts

        counts = read_train_counts(str(self.text / "train.response"))
        results = self.evaluate_subset(jobs, "test", counts)
        if "valid" in self.a.subsets:
            valid = self.evaluate_subset(jobs, "valid", counts)
            results["valid"] = valid
            candidates = [s for s in SELECTABLE + list(self.variants) if s in self.a.systems]
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
                path = self.generation(job.name, mode, subset)
                if not path.exists():
                    continue
                resp = read_responses(str(path))
                per_run[mode][job.name] = evaluate(resp.hypotheses, resp.references, counts)
        summary: Dict[str, Dict[str, dict]] = {}
        for mode, runs in per_run.items():
            summary[mode] = {}
            for system in SYSTEM_ORDER:
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

    def report(self, results: dict, jobs: List[Job]) -> None:
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
                cells = [LABELS[system], ",".join(map(str, row["seeds"]))]
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
            lines.extend(describe_selection(sel))
        lines.append("\nTop responses (first seed, greedy):\n")
        for system, row in results["systems"].get("greedy", {}).items():
            top = row.get("top_responses") or []
            shown = "; ".join(f"\"{t['response']}\" ×{t['count']}" for t in top[:3]) if top and isinstance(top[0], dict) \
                else "; ".join(map(str, top[:3]))
            lines.append(f"- {LABELS[system]}: {shown}")
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
            ticks = [short_label(s) for s in names]
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


def describe_selection(sel: dict) -> List[str]:
    lines = [f"Rule: {sel['rule']}.\n", "| candidate | valid dist-2 | valid lf | valid bleu-4 (× Standard) | eligible |",
             "|---|---|---|---|---|"]
    for name, c in sel["candidates"].items():
        mark = "**chosen**" if name == sel["chosen"] else ("yes" if c["eligible"] else "no")
        lines.append(f"| {short_label(name)} | {c['dist-2']:.4f} | {c['lf']:.5f} | {c['bleu-4']:.4f} "
                     f"(×{c['bleu-4_ratio']:.2f}) | {mark} |")
    t = sel.get("test")
    if t:
        lines.append(f"\nTest, {short_label(sel['chosen'])} vs Standard (seeds {t['seeds']}): "
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


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/chitchat")
    p.add_argument("--systems", nargs="+", default=["standard", "nd", "nd_no_pred", "nd_no_att", "nd_no_hid",
                                                   "teacher_top", "teacher_bottom"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--updates", type=int, default=4000, help="updates of Standard and ND students")
    p.add_argument("--teacher-updates", type=int, default=3000)
    p.add_argument("--finetune-updates", type=int, default=1000,
                   help="updates of UL/NT/FACE (and ND with --nd-init standard) from Standard")
    p.add_argument("--finetune-lr", default="4e-4", help="constant learning rate of fine-tuning runs")
    p.add_argument("--nd-init", choices=["scratch", "standard"], default="scratch",
                   help="ND students from scratch with the progressive schedule (the paper), or fine-tuned "
                        "from the same seed's Standard checkpoint for --finetune-updates")
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--lr", default="1e-3")
    p.add_argument("--warmup", type=int, default=400)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ffn", type=int, default=512)
    p.add_argument("--vocab", type=int, default=4000)
    p.add_argument("--key", default="prefix:3")
    p.add_argument("--max-units", type=int, default=3600, help="conversations sampled from chitchat-dataset")
    p.add_argument("--max-length", type=int, default=32)
    p.add_argument("--valid-pairs", type=int, default=2000)
    p.add_argument("--test-pairs", type=int, default=2000)
    p.add_argument("--alpha-lambda", default="4")
    p.add_argument("--alpha-gamma", type=int, default=None, help="default: half of --updates")
    p.add_argument("--nd-extra", nargs="*", default=[], help='more flags for every ND run, e.g. --nd-extra="--nd-attention probs"')
    p.add_argument("--variants", nargs="*", default=[],
                   help="named ND variants run like nd (all seeds): NAME=FLAGS, e.g. "
                        "'nd_l2=--alpha-lambda 2'; add NAME to --systems")
    p.add_argument("--validations", type=int, default=8, help="validations (and checkpoints) per run")
    p.add_argument("--log-interval", type=int, default=50)
    p.add_argument("--report-every", type=float, default=120.0, help="seconds between progress lines")
    p.add_argument("--subsets", nargs="+", choices=["test", "valid"], default=["test"],
                   help="sets to decode; with valid, one ND configuration is chosen on the validation decode "
                        "(see --select-margin) and its test row checked")
    p.add_argument("--select-margin", type=float, default=0.05,
                   help="validation selection: the largest relative BLEU-4 loss against Standard allowed")
    p.add_argument("--accept-margin", type=float, default=0.10,
                   help="test check: the largest relative BLEU-4 loss against Standard allowed (the issue's 10%%)")
    p.add_argument("--evaluate-only", action="store_true")
    args = p.parse_args(argv)
    names = set(SYSTEM_ORDER) | {v.partition("=")[0] for v in args.variants}
    unknown = [s for s in args.systems if s not in names]
    if unknown:
        p.error(f"unknown systems {unknown}; choose from {sorted(names)} (or define them with --variants)")
    for k in ("max_units", "max_length", "valid_pairs", "test_pairs", "vocab", "layers", "dim", "heads", "ffn",
              "max_tokens", "warmup"):
        setattr(args, k, str(getattr(args, k)))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    exp = Experiment(args)
    jobs = exp.jobs()
    if not args.evaluate_only:
        exp.prepare()
        exp.run_all(jobs)
    results = exp.evaluate(jobs)
    exp.report(results, jobs)
    exp.plots(results, jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
