"""The catalogue of the chitchat experiment's systems: their names, labels and decoding modes, and
the training runs (:class:`Job`) that each needs.

The module-level tables are the catalogue without ``--variants``; a :class:`Catalogue` copies them
and adds the variants of one experiment, so no run changes what another sees.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

SYSTEM_ORDER = ["standard", "standard_ft", "nd", "nd_no_pred", "nd_no_att", "nd_no_hid", "nd_fixed_alpha",
                "teacher_top", "teacher_bottom", "ul", "nt", "face"]
# ND configurations the validation selection may choose from (with the --variants)
SELECTABLE = ["nd", "nd_fixed_alpha"]
LABELS = {"standard": "Standard", "standard_ft": "Standard + MLE fine-tune", "nd": "ND",
          "nd_no_pred": "ND w/o L_pred", "nd_no_att": "ND w/o L_att", "nd_no_hid": "ND w/o L_hid", "nd_fixed_alpha": "ND (fixed α)", "teacher_top": "teacher N_t (top)",
          "teacher_bottom": "teacher N_b (bottom)", "ul": "UL", "nt": "NT", "face": "FACE"}
MODES = {"greedy": ["--beam", "1"], "beam5": ["--beam", "5", "--lenpen", "1.0"]}


def short_label(system: str, labels: Dict[str, str] = LABELS) -> str:
    # a variant's label holds its flags: too long for a tick or a table cell, its name is shown instead
    label = labels.get(system, system)
    return label if len(label) <= 26 else system


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


class Catalogue:
    """The systems of one experiment: the built-in ones and its ``--variants`` (NAME=FLAGS, e.g.
    ``nd_l2="--alpha-lambda 2 --nd-attention standardized"``), each inserted after ``nd``."""

    def __init__(self, variants: List[str]):
        self.order = list(SYSTEM_ORDER)
        self.labels = dict(LABELS)
        self.variants: Dict[str, List[str]] = {}
        for spec in variants:
            name, _, flags = spec.partition("=")
            if not name or name in self.order:
                raise SystemExit(f"--variants {spec!r}: give NAME=FLAGS with a new name")
            self.variants[name] = flags.split()
            self.order.insert(self.order.index("nd") + 1, name)
            self.labels[name] = f"ND ({flags})"

    def short_label(self, system: str) -> str:
        return short_label(system, self.labels)

    def jobs(self, a, ckpt: Path) -> List[Job]:
        """The runs that the systems ``a.systems`` need (``a``: the parsed options), in the order the
        scheduler starts them once their ``deps`` are done;
        ``ckpt``: the folder of the checkpoints (the ND students read the teacher's from there)."""
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
        teacher_path = ckpt / teacher / "checkpoint_best.pt"

        def nd_job(system: str, seed: int, extra: List[str]) -> Job:
            args = nd + extra + ["--nd-teacher-path", teacher_path]
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
        variants = {"nd": [], "nd_no_pred": ["--nd-no-pred-loss"], "nd_no_att": ["--nd-no-att-loss"],
                    "nd_no_hid": ["--nd-no-hid-loss"]}
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
