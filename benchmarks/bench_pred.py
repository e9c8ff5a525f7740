"""L_pred alone: the soft-unlikelihood sweep (value + gradient) against the alternatives, on the
(positions x vocabulary) arrays of bench_step's sizes, and the top-k truncation's error.

    python benchmarks/bench_pred.py --size tiny        # milliseconds per forward + backward, best of --repeat

Rows: ``sweep`` (the default: value and gradient in one eager sweep), ``compiled`` (torch.compile
kernels, --nd-compile), ``topk K`` (what a top-K truncation of the teacher would cost: top-K of the
teacher's logits, their log-sum-exp, a gather of the student's log-probabilities and the K-term
unlikelihood with its backward), and the teacher's full softmax for reference. The truncation
error is measured on teacher distributions of a given sharpness (``--teacher-scale``: logits
N(0, s²); a trained teacher is sharper than a random one), with its bound: the dropped teacher mass
times -log(1 - max p_S) per position.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SIZES = {"tiny": (64 * 20, 4000), "small": (96 * 20, 8000), "paper": (256 * 20, 16000)}


def best(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def main(argv=None):
    import torch

    from nd_fairseq.losses import compile_soft_unlikelihood, log1mexp, soft_unlikelihood

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--topk", default="32,256")
    p.add_argument("--teacher-scale", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n, v = SIZES[args.size]
    gen = torch.Generator().manual_seed(0)
    student_logits = torch.randn(n, v, generator=gen) * 2
    teacher_logits = torch.randn(n, v, generator=gen) * args.teacher_scale
    lp = torch.log_softmax(student_logits, -1)
    q = torch.softmax(teacher_logits, -1)

    def run(compiled):
        x = lp.clone().requires_grad_(True)
        soft_unlikelihood(x, q, compiled=compiled).backward()

    def topk(k):
        vals, idx = teacher_logits.topk(k, -1)
        qk = (vals - teacher_logits.logsumexp(-1, keepdim=True)).exp()
        x = lp.clone().requires_grad_(True)
        (-(qk * log1mexp(x.gather(-1, idx))).sum()).backward()

    rows = [("teacher softmax (reference)", best(lambda: torch.softmax(teacher_logits, -1), args.repeat)),
            ("copy of the array (reference)", best(lambda: lp.clone(), args.repeat)),
            ("sweep (default)", best(lambda: run(False), args.repeat))]
    if compile_soft_unlikelihood():
        rows.append(("compiled (--nd-compile)", best(lambda: run(True), args.repeat)))
    ks = [int(k) for k in args.topk.split(",") if k]
    for k in ks:
        rows.append((f"topk {k}", best(lambda: topk(k), args.repeat)))
    print(f"size {args.size}: {n} positions x {v} vocabulary; torch threads {torch.get_num_threads()}; "
          f"best of {args.repeat}")
    for name, ms in rows:
        print(f"  {name:<32} {ms:8.2f} ms")
    exact = float(soft_unlikelihood(lp, q))
    p_max = lp.max(-1).values.exp().clamp(max=1 - 1e-5)
    for k in ks:
        vals, idx = teacher_logits.topk(k, -1)
        qk = (vals - teacher_logits.logsumexp(-1, keepdim=True)).exp()
        approx = float(-(qk * log1mexp(lp.gather(-1, idx))).sum())
        bound = float(((1 - qk.sum(-1)).clamp(min=0) * -torch.log1p(-p_max)).sum())
        print(f"  topk {k}: teacher mass kept {float(qk.sum(-1).mean()):.3f}; L_pred {approx:.4g} vs exact "
              f"{exact:.4g}: error {exact - approx:.3g} ({(exact - approx) / exact:.1%}), bound {bound:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
