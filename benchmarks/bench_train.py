"""End to end: ``fairseq-train`` updates/s, MLE vs ND, on real binarised data, runs interleaved.

    python benchmarks/bench_train.py --data data-bin/full --teacher checkpoints/teacher/checkpoint_last.pt \
        --arch transformer_nd_dialog_small --updates 60 --rounds 2

Each round runs MLE (label-smoothed CE) and ND (the default criterion options) for ``--updates``
updates each, alternating which goes first; the load average is printed before every run, and the
ratio of each round's two adjacent runs beside the ratio of the overall medians (on a shared
machine the load drifts between runs: the per-round ratios show by how much). The
updates/s are fairseq's own ``ups`` of each ``train_inner`` record (``--log-interval 10``), the first
record of a run left out (start-up, first batches); the medians over all rounds are compared.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def train(args, criterion, save_dir):
    exe = os.path.join(os.path.dirname(sys.executable), "fairseq-train")
    cmd = [exe if os.path.exists(exe) else "fairseq-train", args.data, "--user-dir", os.path.join(REPO, "nd_fairseq"),
           "--task", "negative_distillation", "--arch", args.arch, "--optimizer", "adam", "--lr", "5e-4",
           "--max-tokens", str(args.max_tokens), "--max-update", str(args.updates), "--log-format", "json",
           "--log-interval", "10", "--no-progress-bar", "--disable-validation", "--no-save", "--seed", "1",
           "--save-dir", save_dir, *criterion, *args.extra]
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"fairseq-train failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    ups = []
    for line in proc.stdout.splitlines() + proc.stderr.splitlines():
        start = line.find("{")
        if start >= 0 and "| train_inner |" in line[:start + 1]:
            ups.append(float(json.loads(line[start:])["ups"]))
    return ups[1:]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--teacher", required=True)
    p.add_argument("--arch", default="transformer_nd_dialog_small")
    p.add_argument("--updates", type=int, default=60)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=2000)
    p.add_argument("--json", default=None)
    p.add_argument("extra", nargs="*", help="more fairseq-train options, after --")
    args = p.parse_args(argv)
    configs = {"mle": ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"],
               "nd": ["--criterion", "negative_distillation", "--nd-teacher-path", args.teacher]}
    ups = {c: [] for c in configs}
    per_round = []
    loads = []
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = list(configs) if r % 2 == 0 else list(reversed(configs))
            for c in order:
                loads.append(load())
                got = train(args, configs[c], tmp)
                print(f"round {r + 1} {c:<4} load {loads[-1]}: ups {' '.join(f'{u:.2f}' for u in got)}", flush=True)
                ups[c] += got
                per_round.append((r, c, statistics.median(got)))
    rounds = {}
    for r, c, u in per_round:
        rounds.setdefault(r, {})[c] = u
    pairs = [v["mle"] / v["nd"] for v in rounds.values()]
    print(f"per round (adjacent runs), nd/mle update-time ratio: {' '.join(f'{x:.2f}' for x in pairs)}; "
          f"median {statistics.median(pairs):.2f}")
    med = {c: statistics.median(u) for c, u in ups.items()}
    print(f"median updates/s: mle {med['mle']:.3f}, nd {med['nd']:.3f}; load averages {', '.join(loads)}")
    print(f"nd/mle update-time ratio (fairseq-train): {med['mle'] / med['nd']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ups": ups, "median": med, "ratio": med["mle"] / med["nd"], "round_ratios": pairs,
                       "loads": loads}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
