#!/usr/bin/env python
"""Negative Distillation end to end, for any corpus nd-prepare reads (examples/pipeline.sh runs this).

    examples/pipeline.sh --recipe recommended                  # chitchat-dataset, CPU scale
    examples/pipeline.sh --format eou-pairs --input dialogues.txt --work work/mine

Recipes
-------
``recommended`` (the default; RESULTS.md, "the adopted configuration"):
  1. nd-prepare, then preprocess.sh (sentencepiece, the source-entropy filter with ``--key auto``,
     fairseq-preprocess into DATA/full and DATA/negative with one dictionary);
  2. Standard: MLE from scratch, the checkpoint with the lowest validation loss;
  3. the negative teacher: MLE on the top-50% source-entropy set D_N, lowest validation loss;
  4. a second phase from Standard's checkpoint, every run the same number of updates at the same
     constant learning rate: the MLE control (MLE only) and one ND student per candidate
     (``--fixed-alpha A --nd-pred-weight 10 --nd-attention standardized --nd-hidden normalized``
     at cpu scale: α 0.3; α 0.5 and 0.3 with ``--nd-pred-skip-eos``; α 0.3 with
     ``--nd-pred-eos-weight`` 0.25, 0.5 and 0.75), each decoded at its last update;
  5. every system decoded on the validation set; for each decoding mode one candidate is chosen,
     before any test output is decoded, by the rule of nd_fairseq.evaluation.selection
     (``--select-rule max-bleu``: Dist-2 at least 1.5 x Standard's and 1.3 x the control's; BLEU-4
     not shown by a 95% paired bootstrap over the validation sentences to be more than 5% below
     Standard's; against the MLE control: LF not lower beyond its noise, replies that loop no more
     often, are at most 1.5 x as long and are unique at least as often; then the highest BLEU-4.
     ``--select-rule max-dist2``, the rule before seeds 19-21: BLEU-4 within 5% of Standard's on the
     median seed, the same guards, then the highest Dist-2);
  6. the test set decoded by Standard, the control and the chosen ND student; nd-eval's Table 3,
     eight test queries with every system's reply, a verdict line, and ND's BLEU-4 ratios with their
     95% paired-bootstrap intervals over the test sentences (with and without the brevity penalty,
     ``nd_fairseq.evaluation.bootstrap``). Where no candidate meets the
     rule, the scale's reference candidate (``a0.3_noeos`` at cpu scale; the last one listed when it
     is not among them) is decoded and shown instead, marked "shown, not chosen".

``paper`` (the paper's setting, meant for paper-scale runs, ``--scale paper``): ND students from
scratch with the progressive α schedule (λ = 4, γ = half the run), the checkpoint with the lowest
validation loss. At CPU scale this does not raise diversity (RESULTS.md §4).

Baselines (``--baselines``, none by default) are trained on the same base and shown after the ND
row of every Table-3 block; they are never candidates of the validation rule:
  ``ul``, ``nt``, ``face``: UL, NT and FACE (docs/baselines.md) as second-phase runs exactly like the
    control (from the same seed's Standard checkpoint_best, ``--finetune-updates`` at the constant
    ``--finetune-lr``, read at checkpoint_last), with their criterion and ``--label-smoothing 0.1``;
  ``paper``: the paper-recipe ND student from scratch (what ``--recipe paper`` trains);
  ``ablations``: the ND candidate named by ``--ablate`` (default ``a0.3_noeos`` at cpu scale) again
    with ``--nd-no-pred-loss``, ``--nd-no-att-loss`` and ``--nd-no-hid-loss`` (Table 5), on ``--ablation-seeds``
    (default: the first seed); under ``--recipe paper`` the paper-recipe student is ablated.
Adding ``--baselines`` to a finished ``--work`` trains and decodes only the new runs.

Everything goes under ``--work``; every finished step is kept and a rerun resumes (an interrupted
fairseq-train continues from its checkpoint_last.pt). Runs go ``--jobs`` at a time.
"""

import argparse
import json
import random
import shutil
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # nd_fairseq of this checkout
sys.path.insert(0, str(REPO / "examples"))

from nd_fairseq.evaluation.bootstrap import ratio_intervals, sentence_rows  # noqa: E402
from nd_fairseq.evaluation.selection import RULES, choose_configuration, verdict  # noqa: E402
from runs import (Clock, RunDir, RunError, child_env, recipe_generation_file, run_logged, stop_children,  # noqa: E402
                  tool)

MODES = {"greedy": ["--beam", "1"], "beam5": ["--beam", "5", "--lenpen", "1.0"]}
BOOTSTRAP_SAMPLES = 2000  # resamples of the test sentences behind the BLEU-4 intervals
ND_FLAGS = ["--nd-pred-weight", "10", "--nd-attention", "standardized", "--nd-hidden", "normalized"]
METRICS = ["dist-1", "dist-2", "dist-3", "lf", "kl-1", "kl-2", "bleu-3", "bleu-4", "length", "unique",
           "top_share", "rep-3"]

# The CPU-scale base (RESULTS.md §8 measures it against the earlier setup on the same data): pre-norm
# layers, all embeddings shared, a 2,000-piece vocabulary, lr 2e-3. At 1,500 updates its greedy
# replies repeat a 3-gram 4x less often (24% against 91%); neither setup has reached its plateau.
CPU_BASE = ["--encoder-normalize-before", "--decoder-normalize-before", "--share-all-embeddings"]
BASELINES = ["ul", "nt", "face", "paper", "ablations"]
BASELINE_CRITERIA = {"ul": "unlikelihood_dialog", "nt": "negative_training", "face": "face"}
ABLATIONS = {"no_pred": "--nd-no-pred-loss", "no_att": "--nd-no-att-loss", "no_hid": "--nd-no-hid-loss"}
ABLATION_LABELS = {"no_pred": "L_pred", "no_att": "L_att", "no_hid": "L_hid"}
# Candidates that leave </s> out of the negative targets (--nd-pred-skip-eos) or weigh it less
# (--nd-pred-eos-weight W): on the new base the plain candidates lengthen greedy replies and make
# them loop; those without </s> were chosen on the validation set of seeds 2-3 (RESULTS.md §8.4).
# Their beam-5 replies are short and less often unique than the control's (seeds 4-9). The </s>
# weight grades between the two (W = 1 is the plain candidate): 0.25 was added on the validation rows
# of seeds 1-3 (RESULTS.md §8.11), 0.5 and 0.75 on those of seeds 13-15 (§8.15), where the plain
# α 0.5, never eligible on the new base, was dropped; so the rule chooses the weight on validation.
EOS_WEIGHTS = ("0.25", "0.5", "0.75")
EOS_CANDIDATES = {**{f"a{x}_noeos": ["--fixed-alpha", x, "--nd-pred-skip-eos"] for x in ("0.5", "0.3")},
                  **{f"a0.3_eos{w}": ["--fixed-alpha", "0.3", "--nd-pred-eos-weight", w] for w in EOS_WEIGHTS}}
SCALES = {
    "cpu": dict(arch="transformer_nd_dialog_small", vocab=2000, updates=1500, teacher_updates=1000,
                finetune_updates=300, max_tokens=4096, lr="2e-3", warmup=200, finetune_lr="4e-4",
                base=CPU_BASE, alphas=["0.3"], candidates=EOS_CANDIDATES, reference="a0.3_noeos",
                prepare=["--max-units", "2500", "--max-length", "32", "--truncate", "--max-test-pairs", "1000",
                         "--max-valid-pairs", "1000"]),
    "paper": dict(arch="transformer_nd_dialog", vocab=16000, updates=50000, teacher_updates=50000,
                  finetune_updates=5000, max_tokens=8192, lr="5e-4", warmup=4000, finetune_lr="1e-4",
                  base=[], alphas=["0.5", "0.3", "0.1"], candidates={}, reference="a0.3",
                  prepare=["--max-length", "64", "--truncate"]),
}


def shown_candidate(chosen: Optional[str], candidates: List[str], reference: str) -> str:
    """The ND student a decoding mode's Table-3 block shows: the chosen one; where the rule chose
    none, the scale's reference candidate, or the last one listed when the reference is not among
    them. Fixed here, not by the validation rows, so that what is shown unchosen is the same run
    whatever the others did (a larger list of candidates does not change it)."""
    if chosen is not None:
        return chosen
    return reference if reference in candidates else candidates[-1]


def fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


@dataclass
class Run:
    name: str                      # e.g. "standard.s1", "nd_a0.3.s1"
    system: str                    # "standard", "teacher", "control", "nd_a0.3", "nd_paper"
    seed: int
    data: str                      # "full" or "negative"
    args: List[str]
    updates: int
    deps: List[str] = field(default_factory=list)
    finetune_from: Optional[str] = None

    @property
    def is_nd(self) -> bool:
        return self.system.startswith("nd_")


class Recipe:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        dirs = RunDir(a.work)
        self.work, self.text, self.data = dirs.root, dirs.text, dirs.data
        self.ckpt, self.gen, self.logs = dirs.ckpt, dirs.gen, dirs.logs
        self.clock = Clock()
        self.say = self.clock.say
        self.valid_tables: Dict[str, Dict[str, dict]] = {}  # per decoding mode, once all are decoded
        self.scored: Dict[tuple, tuple] = {}  # (system, mode, subset): its sentence scores, every seed decoded

    # -- running -----------------------------------------------------------------------------------

    def run(self, cmd: List, log: Path, stdout=None) -> None:
        run_logged(cmd, log, child_env(self.a.threads), REPO, stdout=stdout)

    # -- data --------------------------------------------------------------------------------------

    def prepare(self) -> None:
        a = self.a
        if a.force or not (self.text / "test.response").exists():
            self.say(f"nd-prepare {' '.join(a.prepare_input) or '(chitchat-dataset)'} -> {self.text}")
            self.run([tool("nd-prepare"), "--out-dir", self.text, "--seed", "1", *a.prepare, *a.prepare_input],
                     self.logs / "prepare.log")
        self.say(f"preprocess.sh: sentencepiece ({a.vocab}), source-entropy filter (key {a.key}), fairseq-preprocess")
        self.run(["bash", REPO / "preprocess.sh", "--text-dir", self.text, "--work-dir", self.work / "prep",
                  "--dest", self.data, "--vocab-size", a.vocab, "--key", a.key, *(["--force"] if a.force else [])],
                 self.logs / "preprocess.log")
        s = json.loads((self.data / "full" / "entropy.summary.json").read_text())
        self.say(f"data: {s['pairs']} training pairs; key {s['key']}, H_src median {s['median']:.2f} bits, "
                 f"{s['zero_share']:.1%} at zero; negative set {s['top']} pairs")

    # -- runs --------------------------------------------------------------------------------------

    def runs(self) -> List[Run]:
        a = self.a
        ls = ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"]
        # one teacher for every seed, whichever seeds a run asks for (a rerun with --seeds 2 3
        # reuses it), so the students of all seeds learn from the same negative teacher
        teacher = f"teacher.s{a.teacher_seed}"
        teacher_ckpt = self.ckpt / teacher / "checkpoint_best.pt"
        nd = ["--criterion", "negative_distillation", "--label-smoothing", "0.1", "--nd-teacher-path", teacher_ckpt]
        out = [Run(teacher, "teacher", a.teacher_seed, "negative", ls, a.teacher_updates)]
        gamma = a.alpha_gamma if a.alpha_gamma is not None else a.updates // 2
        paper = nd + ["--alpha-lambda", a.alpha_lambda, "--alpha-gamma", gamma]
        for seed in a.seeds:
            std = f"standard.s{seed}"
            out.append(Run(std, "standard", seed, "full", ls, a.updates))
            if a.recipe == "recommended":
                out.append(Run(f"control.s{seed}", "control", seed, "full", ls, a.finetune_updates,
                               deps=[std], finetune_from=std))
                for system, flags in a.candidates.items():
                    out.append(Run(f"{system}.s{seed}", system, seed, "full", nd + flags, a.finetune_updates,
                                   deps=[teacher, std], finetune_from=std))
            else:
                out.append(Run(f"nd_paper.s{seed}", "nd_paper", seed, "full", paper, a.updates, deps=[teacher]))
        return out + self.baseline_runs(out, paper)

    def baseline_runs(self, main: List[Run], paper: List) -> List[Run]:
        """The runs of ``--baselines``, after the recipe's own so that those start first."""
        a = self.a
        out = []
        for seed in a.seeds:
            std = f"standard.s{seed}"
            for b in a.baselines:
                if b in BASELINE_CRITERIA:  # the control's run with another criterion
                    out.append(Run(f"{b}.s{seed}", b, seed, "full",
                                   ["--criterion", BASELINE_CRITERIA[b], "--label-smoothing", "0.1"],
                                   a.finetune_updates, deps=[std], finetune_from=std))
                elif b == "paper":
                    out.append(Run(f"nd_paper.s{seed}", "nd_paper", seed, "full", paper, a.updates,
                                   deps=[f"teacher.s{a.teacher_seed}"]))
        if "ablations" in a.baselines:
            byname = {r.name: r for r in main + out}
            for seed in a.ablation_seeds:
                target = byname[f"{a.ablate}.s{seed}"]
                for suffix, flag in ABLATIONS.items():
                    system = f"{a.ablate}_{suffix}"
                    out.append(Run(f"{system}.s{seed}", system, seed, target.data, [*target.args, flag],
                                   target.updates, deps=list(target.deps), finetune_from=target.finetune_from))
        return out

    def baseline_systems(self) -> List[str]:
        """The systems of ``--baselines``, in the order of the tables."""
        out = []
        for b in self.a.baselines:
            if b == "ablations":
                out += [f"{self.a.ablate}_{suffix}" for suffix in ABLATIONS]
            else:
                out.append("nd_paper" if b == "paper" else b)
        return out

    def checkpoint(self, run: Run) -> Path:
        # second-phase runs are read at their last update (a fixed number of updates, as UL and NT
        # prescribe); selecting them by validation MLE would pick the one that moved least
        return self.ckpt / run.name / ("checkpoint_last.pt" if run.finetune_from else "checkpoint_best.pt")

    def train(self, run: Run) -> None:
        a = self.a
        save = self.ckpt / run.name
        if (save / ".done").exists() and not a.force:
            return
        if a.force or (save.exists() and not (save / "checkpoint_last.pt").exists()):
            shutil.rmtree(save, ignore_errors=True)
        interval = max(1, run.updates // (2 if run.finetune_from else a.validations))
        if run.finetune_from:
            schedule = ["--lr", a.finetune_lr, "--lr-scheduler", "fixed",
                        "--finetune-from-model", self.ckpt / run.finetune_from / "checkpoint_best.pt"]
        else:
            schedule = ["--lr", a.lr, "--lr-scheduler", "inverse_sqrt", "--warmup-updates", a.warmup]
        cmd = [tool("fairseq-train"), self.data / run.data, "--user-dir", REPO / "nd_fairseq",
               "--task", "negative_distillation", "--arch", a.arch, *a.base, *run.args, *a.batch_size,
               "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", *schedule, "--clip-norm", "1.0",
               "--max-tokens", a.max_tokens, "--max-update", run.updates, "--max-epoch", "1000",
               "--seed", run.seed, "--save-dir", save, "--validate-interval-updates", interval,
               "--save-interval-updates", interval, "--keep-interval-updates", "1", "--no-epoch-checkpoints",
               "--log-format", "json", "--log-interval", "25", "--no-progress-bar", "--num-workers", "0",
               *a.fp16, *a.extra]
        self.run(cmd, self.logs / f"{run.name}.train.log")
        (save / ".done").touch()

    def generation(self, run: Run, mode: str, subset: str) -> Path:
        return recipe_generation_file(self.gen, run.name, mode, subset)

    def decode(self, run: Run, subset: str, modes=tuple(MODES)) -> None:
        for mode in modes:
            out = self.generation(run, mode, subset)
            if out.exists() and not self.a.force:
                continue
            tmp = out.with_suffix(".tmp")
            with open(tmp, "w") as f:
                self.run([tool("fairseq-generate"), self.data / "full", "--user-dir", REPO / "nd_fairseq",
                          "--path", self.checkpoint(run), "--gen-subset", subset, *MODES[mode],
                          "--batch-size", "200", "--max-len-b", "40", "--remove-bpe", "sentencepiece", *self.a.fp16],
                         self.logs / f"{run.name}.generate.log", stdout=f)
            tmp.rename(out)

    def progress(self, run: Run) -> str:
        last = None
        log = self.logs / f"{run.name}.train.log"
        if log.exists():
            for line in open(log, errors="replace"):
                if "| train_inner |" in line:
                    last = line
        if not last:
            return f"{run.name} starting"
        rec = json.loads(last[last.index("{"):])
        return f"{run.name} {rec['num_updates']}/{run.updates} loss {rec['loss']}"

    def schedule(self, runs: List[Run], work) -> None:
        """Run ``work(run)`` for every run, ``--jobs`` at a time, each after its dependencies."""
        pending = {r.name: r for r in runs}
        done, running, errors = set(), {}, {}

        def target(run: Run) -> None:
            t = time.time()
            try:
                work(run)
                self.say(f"finished {run.name} in {(time.time() - t) / 60:.1f} min")
            except Exception as err:
                errors[run.name] = err

        last = time.time()
        while pending or running:
            for name, th in list(running.items()):
                if not th.is_alive():
                    running.pop(name)
                    done.add(name)
            if errors:
                for th in running.values():
                    th.join()
                raise next(iter(errors.values()))
            for name, run in list(pending.items()):
                if len(running) < self.a.jobs and all(d in done or d not in pending and d not in running
                                                       for d in run.deps):
                    pending.pop(name)
                    th = threading.Thread(target=target, args=(run,), daemon=True)
                    running[name] = th
                    th.start()
            if running and time.time() - last > self.a.report_every:
                self.say("; ".join(self.progress(r) for r in runs if r.name in running))
                last = time.time()
            time.sleep(1)

    # -- evaluation --------------------------------------------------------------------------------

    def table(self, runs: List[Run], subset: str, mode: str) -> Dict[str, dict]:
        """Per system: nd-eval's metrics, the mean over its seeds (and ``_sd``, ``_runs``)."""
        from nd_fairseq.evaluation import evaluate, read_responses, read_train_counts

        if not hasattr(self, "_counts"):
            self._counts = read_train_counts(str(self.text / "train.response"))
        # per system, (seed, nd-eval result) in the order of ``runs``
        systems: Dict[str, List[tuple]] = {}
        for run in runs:
            path = self.generation(run, mode, subset)
            if path.exists():
                resp = read_responses(str(path))
                systems.setdefault(run.system, []).append((run.seed, evaluate(resp.hypotheses, resp.references,
                                                                              self._counts)))
        rows = {}
        for system, seeded in systems.items():
            results = [result for _, result in seeded]
            # the rule's LF check needs the token count and the seeds' spread behind the control's LF (its
            # noise); its BLEU-4 check pairs the seeds (``seed_ids``, in the order of the ``_runs`` lists)
            row = {"seeds": len(results), "seed_ids": [seed for seed, _ in seeded],
                   "top_responses": results[0]["top_responses"], "tokens": sum(r["n"] * r["length"] for r in results)}
            for m in METRICS:
                vals = [r[m] for r in results if r.get(m) is not None]
                row[m] = statistics.fmean(vals) if vals else None
                row[m + "_sd"] = statistics.stdev(vals) if len(vals) > 1 else None
                row[m + "_runs"] = vals
            rows[system] = row
        return rows

    def label(self, system: str) -> str:
        for suffix, loss in ABLATION_LABELS.items():
            if system.startswith("nd_") and system.endswith("_" + suffix):
                return f"{self.label(system[:-len(suffix) - 1])} w/o {loss}"
        if system.startswith("nd_a") and system[4:].replace(".", "").isdigit():
            return f"ND (α {system[4:]})"
        if system.startswith("nd_a") and system.endswith("_noeos"):
            return f"ND (α {system[4:-6]}, no </s>)"
        alpha, _, weight = system[4:].partition("_eos")
        if system.startswith("nd_a") and all(x and x.replace(".", "").isdigit() for x in (alpha, weight)):
            return f"ND (α {alpha}, </s> x {weight})"
        if system.startswith("nd_") and system != "nd_paper":
            return f"ND ({system[3:]})"
        return {"standard": "Standard", "control": "MLE control", "teacher": "teacher (D_N)",
                "nd_paper": "ND, paper recipe", "ul": "UL", "nt": "NT", "face": "FACE"}.get(system, system)

    def bleu_intervals(self, runs: List[Run], mode: str, nd: str, others: List[str],
                       samples: int = BOOTSTRAP_SAMPLES, subset: str = "test") -> Dict[str, dict]:
        """ND's BLEU-4 over each other system's on ``subset``, with 95% paired-bootstrap intervals over
        its sentences (seeds paired, their spread not resampled), for BLEU-4 and for its precisions
        without the brevity penalty. A system without every seed's decode is left out."""
        from nd_fairseq.evaluation import read_responses

        def scores(system: str) -> Optional[tuple]:
            """Its sentence scores, read and scored once per report (each candidate is compared
            with Standard, and ND with every other system)."""
            if (system, mode, subset) in self.scored:
                return self.scored[system, mode, subset]
            mine = sorted((r for r in runs if r.system == system), key=lambda r: r.seed)  # seeds paired
            paths = [self.generation(r, mode, subset) for r in mine]
            if len(paths) != len(self.a.seeds) or not all(p.exists() for p in paths):
                return None  # not kept: a later call may find the decodes done
            found = self.scored[system, mode, subset] = sentence_rows(
                [(r.hypotheses, r.references) for r in map(read_responses, map(str, paths))])
            return found

        out: Dict[str, dict] = {}
        nd_scores = scores(nd)
        if nd_scores is None:
            return out
        for other in others:
            other_scores = scores(other)
            if other_scores is None:
                continue
            try:
                found = ratio_intervals(other_scores, nd_scores, samples)
            except ValueError:  # a reference system with BLEU-4 0 everywhere has no ratio
                continue
            out[other] = {what: dict(zip(("ratio", "low", "high"), v)) for what, v in found.items()}
        return out

    def interval_line(self, intervals: Dict[str, dict], nd: str, samples: int = BOOTSTRAP_SAMPLES) -> str:
        """One line: ND / each other system, BLEU-4 and its precisions alone, each ratio [low, high]."""
        parts = [f"{self.label(nd)} / {self.label(other)} x{iv['bleu-4']['ratio']:.2f} "
                 f"[{iv['bleu-4']['low']:.2f}, {iv['bleu-4']['high']:.2f}], without the brevity penalty "
                 f"x{iv['precisions']['ratio']:.2f} [{iv['precisions']['low']:.2f}, {iv['precisions']['high']:.2f}]"
                 for other, iv in intervals.items()]
        return (f"BLEU-4 (mean sentence BLEU-4), 95% intervals over {samples} paired resamples of the test "
                f"sentences: " + "; ".join(parts))

    def markdown(self, rows: Dict[str, dict], title: str) -> List[str]:
        cols = [("dist-1", 4), ("dist-2", 4), ("dist-3", 4), ("lf", 5), ("kl-1", 3), ("kl-2", 3), ("bleu-3", 4),
                ("bleu-4", 4), ("length", 1), ("unique", 3), ("top_share", 3), ("rep-3", 3)]
        heads = {"dist-1": "Dist-1 ↑", "dist-2": "Dist-2 ↑", "dist-3": "Dist-3 ↑", "lf": "LF ↑", "kl-1": "KL-1 ↓",
                 "kl-2": "KL-2 ↓", "bleu-3": "BLEU-3 ↑", "bleu-4": "BLEU-4 ↑", "length": "Len", "unique": "Unique ↑",
                 "top_share": "Top-10 ↓", "rep-3": "Rep-3 ↓"}
        out = [f"\n### {title}\n", "| system | " + " | ".join(heads[c] for c, _ in cols) + " |",
               "|---|" + "---:|" * len(cols)]
        for system, row in rows.items():
            cells = []
            for m, d in cols:
                v = row.get(m)
                cell = "n/a" if v is None else f"{v:.{d}f}"
                if v is not None and row.get(m + "_sd") is not None:
                    cell += f" ± {row[m + '_sd']:.{d}f}"
                cells.append(cell)
            out.append(f"| {self.label(system)} | " + " | ".join(cells) + " |")
        return out

    def samples(self, runs: List[Run], systems: List[str], mode: str, k: int) -> List[str]:
        from nd_fairseq.evaluation import read_responses

        seed = self.a.seeds[0]
        by_system = {}
        for run in runs:
            if run.system in systems and run.seed == seed:
                by_system[run.system] = read_responses(str(self.generation(run, mode, "test"))).hypotheses
        queries = (self.text / "test.query").read_text(encoding="utf-8").splitlines()
        refs = (self.text / "test.response").read_text(encoding="utf-8").splitlines()
        picks = sorted(random.Random(0).sample(range(len(queries)), min(k, len(queries))))
        width = max(len(self.label(s)) for s in systems + ["reference"])
        out = [f"\n### {k} test queries, {mode} replies (seed {seed})\n", "```"]
        for i in picks:
            out.append(f"{'query':>{width}}: {queries[i].split(' __eou__ ')[-1]}")
            for s in systems:
                out.append(f"{self.label(s):>{width}}: {by_system[s][i]}")
            out.append(f"{'reference':>{width}}: {refs[i]}")
            out.append("")
        out[-1] = "```"
        return out

    # -- the recipe --------------------------------------------------------------------------------

    def main(self) -> dict:
        a = self.a
        self.prepare()
        runs = self.runs()
        self.say(f"recipe {a.recipe}: {len(runs)} training runs ({', '.join(r.name for r in runs)}), {a.jobs} at a time")
        modes = list(MODES) if a.modes == ["all"] else a.modes
        extra = self.baseline_systems()
        if a.recipe == "recommended":
            # decode the validation set as soon as a run ends: the choice needs nothing from the test set
            self.schedule(runs, lambda r: (self.train(r), r.system != "teacher" and self.decode(r, "valid", modes)))
            choice = {}
            cands = list(a.candidates)
            for mode in modes:
                valid = self.valid_tables[mode] = self.table(runs, "valid", mode)
                choice[mode] = self.choose(runs, valid, mode, cands)
                choice[mode]["valid"] = {s: {m: valid[s][m] for m in METRICS} for s in ["standard", "control", *cands]}
                picked = choice[mode]["chosen"]
                self.say(f"{mode}: chosen on the validation set: {picked and self.label(picked) or 'none'} "
                         f"({choice[mode]['rule']})")
            shown = {mode: ["standard", "control", shown_candidate(choice[mode]["chosen"], cands, a.reference)]
                     for mode in modes}
        else:
            self.schedule(runs, lambda r: (self.train(r), r.system in extra and self.decode(r, "valid", modes)))
            choice = {}
            shown = {mode: ["standard", "nd_paper"] for mode in modes}
        # the baselines are decoded in every mode, after the systems the recipe shows
        test_runs = [r for r in runs if r.system in extra or any(r.system in s for s in shown.values())]
        self.schedule([Run(r.name, r.system, r.seed, r.data, r.args, r.updates, finetune_from=r.finetune_from)
                       for r in test_runs],
                      lambda r: self.decode(r, "test", [m for m in modes if r.system in shown[m] + extra]))
        return self.report(runs, modes, shown, choice, extra)

    def choose(self, runs: List[Run], valid: Dict[str, dict], mode: str, cands: List[str]) -> dict:
        """The validation rule's choice for one decoding mode (``--select-rule``), and beside it, for
        the record, what the other rule would choose (``other_rule``)."""
        a = self.a
        intervals = {}
        for cand in cands:  # each candidate's validation BLEU-4 over Standard's, sentences resampled
            found = self.bleu_intervals(runs, mode, cand, ["standard"], subset="valid").get("standard")
            if found:
                iv = found["bleu-4"]
                intervals[cand] = (iv["ratio"], iv["low"], iv["high"])
        by_rule = {rule: choose_configuration(valid, cands, bleu_margin=a.select_margin, length_ratio=a.length_ratio,
                                              rule=rule, bleu_intervals=intervals,
                                              dist2_floors=tuple(a.select_dist2))
                   for rule in RULES}
        out = by_rule[a.select_rule]
        other = next(r for r in RULES if r != a.select_rule)
        out["other_rule"] = {"name": other, "rule": by_rule[other]["rule"], "chosen": by_rule[other]["chosen"]}
        return out

    def report(self, runs: List[Run], modes: List[str], shown: Dict[str, List[str]], choice: dict,
               extra: List[str] = ()) -> dict:
        a = self.a
        lines = [f"# Negative Distillation, recipe {a.recipe} ({a.scale} scale)\n",
                 f"Data: {self.text}; seeds {', '.join(map(str, a.seeds))}; test set; mean ± sd over seeds.\n"]
        results = {"settings": {k: v for k, v in vars(a).items() if k != "extra"}, "modes": {}}
        verdicts = []
        for mode in modes:
            rows = self.table(runs, "test", mode)
            rows = {s: rows[s] for s in [*shown[mode], *extra] if s in rows}
            sel = choice.get(mode)
            if sel is not None and sel["chosen"] is None:
                lines.append(f"\n**{mode}: no α met the validation rule; {self.label(shown[mode][-1])} is shown, "
                             f"not chosen.**")
            lines += self.markdown(rows, f"{mode} decoding")
            nd = shown[mode][-1]
            others = [s for s in shown[mode] if s != nd]
            line = verdict(rows, nd, others, {s: self.label(s) for s in rows})
            verdicts.append(f"{mode}: {line}")
            lines.append(f"\nVerdict ({mode}): {line}")
            # at BLEU-4 near 0.01 a ratio moves by +-15% over the sentences: show how far, and how much is length
            intervals = self.bleu_intervals(runs, mode, nd, others)
            if intervals:
                lines.append(f"\n{self.interval_line(intervals, nd)}")
            against = [s for s in extra if s in rows]
            baseline_line = None
            if against:  # the same multiples against each baseline, on a line of its own
                baseline_line = verdict(rows, nd, against, {s: self.label(s) for s in rows})
                lines.append(f"\nAgainst the baselines ({mode}): {baseline_line}")
            if sel is not None:
                lines.append(f"\nα chosen on the validation set by the rule: {sel['rule']}.")
                for name, c in sel["candidates"].items():
                    failed = [k for k, ok in c["checks"].items() if not ok]
                    d2, iv = c["dist-2_ratios"], c["bleu-4_interval"]
                    lines.append(f"- {self.label(name)}: valid Dist-2 {fmt(c['dist-2'], '.4f')} (x{fmt(d2[0], '.2f')} "
                                 f"Standard, x{fmt(d2[1], '.2f')} control), BLEU-4 x{fmt(c['bleu-4_ratio'], '.2f')}"
                                 + (f" [{iv[1]:.2f}, {iv[2]:.2f}]" if iv else "")
                                 + f", rep-3 {fmt(c['rep-3'], '.1%')}, "
                                 f"length {fmt(c['length'], '.1f')}, unique {fmt(c['unique'], '.1%')}: "
                                 + ("**chosen**" if name == sel["chosen"] else
                                    "eligible" if c["eligible"] else f"out ({', '.join(failed)})"))
                other = sel["other_rule"]
                picked = other["chosen"] and self.label(other["chosen"]) or "none"
                lines.append(f"- (for the record, the {other['name']} rule, {other['rule']}, would choose: {picked})")
            results["modes"][mode] = {"test": rows, "selection": sel, "shown": shown[mode], "verdict": line,
                                      "bleu-4_intervals": intervals,
                                      "baselines": against, "baselines_verdict": baseline_line}
            if against:
                # every validation decode was done before the test ones: the table of the choice serves
                valid = self.valid_tables.get(mode) or self.table(runs, "valid", mode)
                results["modes"][mode]["baselines_valid"] = {s: {m: valid[s][m] for m in METRICS}
                                                             for s in against if s in valid}
        # the replies of a decoding mode whose ND student was chosen, if there is one
        sample_mode = next((m for m in modes if (choice.get(m) or {}).get("chosen")), modes[0])
        lines += self.samples(runs, [*shown[sample_mode], *extra], sample_mode, a.samples)
        (self.work / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (self.work / "results.json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
        print("\n".join(lines))
        print()
        for v in verdicts:
            print(v)
        nd = shown[sample_mode][-1]  # the chosen student, where one was chosen
        seed = a.seeds[0]
        models = {"standard": f"standard.s{seed}", nd: f"{nd}.s{seed}"}
        if "control" in shown[sample_mode]:
            models["control"] = f"control.s{seed}"
        byname = {r.name: r for r in runs}
        chat = " ".join(f"--model {s if s != nd else 'nd'}={self.checkpoint(byname[n])}" for s, n in models.items())
        print(f"\nDone in {(time.time() - self.clock.t0) / 60:.1f} min. Results: {self.work / 'results.md'} and .json.")
        print(f"Talk to the models:\n  nd-chat {chat} --data {self.data / 'full'}")
        return results


class OneLineErrors(argparse.ArgumentParser):
    """An option parser whose errors are one line (the usage of this many options fills a screen)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineErrors(prog="pipeline.sh", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Everything after -- goes to every fairseq-train run.")
    p.add_argument("--recipe", choices=["recommended", "paper"], default="recommended")
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu",
                   help="cpu: transformer_nd_dialog_small on a capped corpus; paper: transformer_nd_dialog, "
                        "the full corpus")
    p.add_argument("--work", default="work/chitchat", help="everything goes under this directory")
    for opt in ("--format", "--input", "--response-input", "--valid-input", "--test-input",
                "--valid-response-input", "--test-response-input"):
        p.add_argument(opt, dest="prep_" + opt[2:].replace("-", "_"), default=None, metavar=opt[2:].upper().replace("-", "_"),
                       help="the corpus, as nd-prepare takes it (default: chitchat-dataset, no path)"
                       if opt == "--format" else "passed to nd-prepare")
    p.add_argument("--seeds", nargs="+", type=int, default=[1])
    p.add_argument("--teacher-seed", type=int, default=1, help="seed of the one negative teacher all seeds share")
    p.add_argument("--updates", type=int, help="Standard (and paper-recipe ND) updates")
    p.add_argument("--teacher-updates", type=int)
    p.add_argument("--finetune-updates", type=int, help="updates of the second phase (control and ND)")
    p.add_argument("--alphas", nargs="+", help="candidate fixed α of the second phase (default: the scale's, "
                                                "at cpu scale 0.3, then 0.5 and 0.3 without </s> as a "
                                                "negative target and 0.3 with </s> weighing 0.25, 0.5, "
                                                "0.75; given, only these α)")
    p.add_argument("--candidate", action="append", default=[], metavar="NAME=FLAGS",
                   help="another second-phase ND candidate: criterion flags added to the recipe's, e.g. "
                        "'a0.3_noeos=--fixed-alpha 0.3 --nd-pred-skip-eos' (repeatable)")
    p.add_argument("--baselines", nargs="+", choices=BASELINES, default=[], metavar="NAME",
                   help="also train and show, on the same base: ul, nt, face (second phase of Standard, "
                        "like the control), paper (the paper-recipe ND student), ablations (the --ablate "
                        "candidate without L_pred, L_att, L_hid)")
    p.add_argument("--ablate", metavar="CANDIDATE",
                   help="the ND candidate that --baselines ablations ablates (default: a0.3_noeos at cpu scale, "
                        "a0.3 at paper scale; under --recipe paper the paper-recipe student)")
    p.add_argument("--ablation-seeds", nargs="+", type=int, metavar="SEED", help="seeds of the ablations (default: the first seed)")
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--lr")
    p.add_argument("--warmup", type=int)
    p.add_argument("--finetune-lr")
    p.add_argument("--vocab", type=int, help="sentencepiece vocabulary size")
    p.add_argument("--key", default="auto", help="nd-filter grouping key (auto: chosen on the corpus)")
    p.add_argument("--alpha-lambda", default="4", help="paper recipe: λ, peak α = λ/4 (Eq. 15)")
    p.add_argument("--alpha-gamma", type=int, help="paper recipe: update of the α peak (default half the run)")
    p.add_argument("--batch-size", type=int, help="sentences per batch (with or instead of --max-tokens)")
    p.add_argument("--arch", help="fairseq architecture (default: the scale's)")
    p.add_argument("--max-units", type=int, help="nd-prepare: conversations to use (cpu scale: 2500)")
    p.add_argument("--max-valid-pairs", type=int, help="nd-prepare: cap of the validation set (cpu scale: 1000)")
    p.add_argument("--max-test-pairs", type=int, help="nd-prepare: cap of the test set (cpu scale: 1000)")
    p.add_argument("--modes", nargs="+", default=["all"], choices=["all", *MODES],
                   help="decoding modes (greedy, beam5 or all)")
    p.add_argument("--select-rule", choices=RULES, default="max-bleu",
                   help="the validation rule (nd_fairseq.evaluation.selection): max-bleu (default) cuts on Dist-2 "
                        "and chooses the highest BLEU-4; max-dist2 cuts on BLEU-4 and chooses the highest Dist-2")
    p.add_argument("--select-margin", type=float, default=0.05, help="largest relative BLEU-4 loss vs Standard")
    p.add_argument("--select-dist2", type=float, nargs=2, default=[1.5, 1.3], metavar=("X_STANDARD", "X_CONTROL"),
                   help="max-bleu: least validation Dist-2, as multiples of Standard's and the control's")
    p.add_argument("--length-ratio", type=float, default=1.5, help="longest mean reply, x the control's")
    p.add_argument("--samples", type=int, default=8, help="test queries shown with every system's reply")
    p.add_argument("--validations", type=int, default=10, help="validations per from-scratch run")
    p.add_argument("--jobs", type=int, default=2, help="training runs at a time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--fp16", action="store_const", const=["--fp16"], default=[], help="mixed precision (GPU)")
    p.add_argument("--report-every", type=float, default=60.0, help="seconds between progress lines")
    p.add_argument("--force", action="store_true", help="redo every step")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    a = p.parse_args(argv)
    a.extra = extra
    scale = SCALES[a.scale]
    a.base = scale["base"]
    a.arch = a.arch or scale["arch"]
    a.batch_size = [] if a.batch_size is None else ["--batch-size", str(a.batch_size)]
    a.prepare = list(scale["prepare"])
    for opt in ("max_units", "max_valid_pairs", "max_test_pairs"):
        flag = "--" + opt.replace("_", "-")
        if getattr(a, opt) is not None:
            if flag in a.prepare:
                a.prepare[a.prepare.index(flag) + 1] = str(getattr(a, opt))
            else:
                a.prepare += [flag, str(getattr(a, opt))]
    alphas_given = a.alphas is not None
    for k in ("vocab", "updates", "teacher_updates", "finetune_updates", "max_tokens", "lr", "warmup",
              "finetune_lr", "alphas"):
        if getattr(a, k) is None:
            setattr(a, k, scale[k])
    a.prepare_input = [x for opt in ("format", "input", "response_input", "valid_input", "test_input",
                                     "valid_response_input", "test_response_input")
                       if getattr(a, "prep_" + opt) is not None
                       for x in (f"--{opt.replace('_', '-')}", getattr(a, "prep_" + opt))]
    for k in ("updates", "teacher_updates", "finetune_updates", "jobs", "threads", "samples"):
        if getattr(a, k) < 1:
            p.error(f"--{k.replace('_', '-')} must be at least 1")
    if not 0 <= a.select_margin < 1:
        p.error(f"--select-margin {a.select_margin:g}: give a share in [0, 1), e.g. 0.05")
    if min(a.select_dist2) < 0:
        p.error("--select-dist2: give two multiples of at least 0, e.g. 1.5 1.3")
    for x in a.alphas:
        if not 0 < float(x) <= 1:
            p.error(f"--alphas {x}: each α must be in (0, 1]")
    a.candidates = {f"nd_a{x}": ["--fixed-alpha", x, *ND_FLAGS] for x in a.alphas}
    if not alphas_given:  # the scale's own candidates come with its α list, not with one given
        a.candidates.update({f"nd_{name}": [*flags, *ND_FLAGS] for name, flags in scale["candidates"].items()})
    for spec in a.candidate:
        name, _, flags = spec.partition("=")
        if not name or not flags.split() or not name.replace(".", "").replace("_", "").isalnum():
            p.error(f"--candidate {spec!r}: give NAME=FLAGS, NAME of letters, digits, '.' and '_'")
        a.candidates[f"nd_{name}"] = [*flags.split(), *ND_FLAGS]
    a.baselines = list(dict.fromkeys(a.baselines))
    if a.recipe == "paper" and "paper" in a.baselines:
        p.error("--baselines paper: under --recipe paper the paper-recipe student is the recipe's own; leave it out")
    a.reference = f"nd_{scale['reference']}"  # shown where the rule chooses no candidate
    if a.recipe == "paper":
        a.ablate = "nd_paper"
    else:
        name = a.ablate or scale["reference"]
        a.ablate = name if name.startswith("nd_") else f"nd_{name}"
        if "ablations" in a.baselines and a.ablate not in a.candidates:
            given = ", ".join(c[3:] for c in a.candidates)
            p.error(f"--ablate {name}: not an ND candidate of this run ({given}); name one of them")
    a.ablation_seeds = list(dict.fromkeys(a.ablation_seeds or a.seeds[:1]))
    for seed in a.ablation_seeds:
        if seed not in a.seeds:
            p.error(f"--ablation-seeds {seed}: each must be one of --seeds ({' '.join(map(str, a.seeds))})")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    import signal

    # SIGTERM (a job scheduler, a closed terminal) stops the children as Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        Recipe(a).main()
    except RunError as err:
        stop_children()
        print(f"pipeline.sh: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        stop_children()
        print("pipeline.sh: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
