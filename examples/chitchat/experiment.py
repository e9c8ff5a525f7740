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

The runner's parts sit beside this file: ``experiment_systems.py`` (the catalogue of systems and
the runs each needs), ``experiment_jobs.py`` (the scheduler: prepare, train, decode) and
``experiment_report.py`` (aggregation, the validation selection, tables, plots).
"""

import argparse
import sys
from pathlib import Path
from typing import List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # nd_fairseq of this checkout
sys.path.insert(0, str(HERE))  # the runner's modules beside this file

from experiment_jobs import Scheduler  # noqa: E402
from experiment_report import Report, describe_selection, read_log, select_on_valid  # noqa: E402,F401  (the tests read them here)
from experiment_systems import SYSTEM_ORDER, Catalogue, Job  # noqa: E402


class Experiment(Scheduler):
    """One experiment: its catalogue of systems (its own copy, with its ``--variants``), the jobs the
    scheduler runs for them, and the report of their outputs."""

    def __init__(self, args):
        super().__init__(args)
        self.systems = Catalogue(args.variants)
        self.variants = self.systems.variants
        self.results = Report(args, self.out, self.systems, self.say)

    def jobs(self) -> List[Job]:
        return self.systems.jobs(self.a, self.ckpt)

    def evaluate(self, jobs: List[Job]) -> dict:
        return self.results.evaluate(jobs)

    def report(self, results: dict, jobs: List[Job]) -> None:
        self.results.write(results, jobs)

    def plots(self, results: dict, jobs: List[Job]) -> None:
        self.results.plots(results, jobs)


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
