"""Where a fairseq CPU training update goes, compared with plain PyTorch, and thread settings under load.

    python benchmarks/bench_fairseq_cpu.py                 # all measurements, tiny model
    python benchmarks/bench_fairseq_cpu.py --only threads  # just the contention measurement

Three measurements, each printed as ratios from one run:

1. **fairseq vs plain PyTorch**: the same-size encoder-decoder (2+2 layers, d=64, 4 heads, FFN 256,
   vocabulary 5.5k, batches of ~2000 tokens) as ``torch.nn.Transformer`` with embeddings, output
   layer, label-smoothed cross-entropy and Adam, against fairseq's ``transformer`` through
   ``task.train_step`` + optimizer step, and through fairseq's full ``Trainer.train_step`` (logging,
   metrics, gradient clipping, ...). Identical batches, interleaved.
2. **torch.profiler breakdown** of the fairseq update (top operators).
3. **Threads under contention**: fairseq updates with 1 and 2 torch threads, alone and beside one
   busy process (a second process doing matrix products on 2 threads), as ratios to the idle
   single-thread update.
"""

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_step import build, make_batches, one_update, write_dictionary  # noqa: E402

VOCAB = 5500
SIZE = "tiny"


def plain_torch_model(vocab, dim=64, heads=4, ffn=256, layers=2):
    class Seq2Seq(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(vocab, dim, padding_idx=1)
            self.transformer = torch.nn.Transformer(dim, heads, layers, layers, ffn, dropout=0.1)
            self.out = torch.nn.Linear(dim, vocab, bias=False)
            self.out.weight = self.embed.weight

        def forward(self, src, prev):
            s = self.embed(src).transpose(0, 1) * dim ** 0.5
            t = self.embed(prev).transpose(0, 1) * dim ** 0.5
            mask = self.transformer.generate_square_subsequent_mask(t.size(0))
            h = self.transformer(s, t, tgt_mask=mask, src_key_padding_mask=src.eq(1),
                                 tgt_key_padding_mask=prev.eq(1), memory_key_padding_mask=src.eq(1))
            return self.out(h.transpose(0, 1))

    return Seq2Seq()


def plain_update(model, opt, sample):
    opt.zero_grad()
    logits = model(sample["net_input"]["src_tokens"], sample["net_input"]["prev_output_tokens"])
    loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)).float(), sample["target"].view(-1),
                                             ignore_index=1, label_smoothing=0.1, reduction="sum")
    (loss / sample["ntokens"]).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def fairseq_trainer(data_dir):
    """fairseq's Trainer around the same model (the code path of fairseq-train)."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    argv = [data_dir, "--user-dir", os.path.join(repo, "nd_fairseq"), "--task", "negative_distillation",
            "--source-lang", "query", "--target-lang", "response", "--arch", "transformer_nd_dialog_tiny",
            "--encoder-ffn-embed-dim", "256", "--decoder-ffn-embed-dim", "256",
            "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--optimizer", "adam",
            "--lr", "1e-4", "--clip-norm", "1.0", "--cpu"]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    return Trainer(cfg, task, model, criterion)


def timed(fn, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def busy(stop, threads):
    torch.set_num_threads(threads)
    a = torch.randn(512, 512)
    while not stop.is_set():
        a = (a @ a).tanh_()


def compare(steps):
    with tempfile.TemporaryDirectory() as tmp:
        for side in ("query", "response"):
            write_dictionary(os.path.join(tmp, f"dict.{side}.txt"), VOCAB)
        import bench_step

        bench_step.SIZES["tiny"] = (2, 64, 4, 256, VOCAB, 96, 22, 20)  # ~2000 tokens a batch
        task, model, criterion, optimizer = build(SIZE, "mle", tmp, None, "cpu", "fp32")
        trainer = fairseq_trainer(tmp)
        plain = plain_torch_model(VOCAB)
        popt = torch.optim.Adam(plain.parameters(), lr=1e-4)
        batches = make_batches(SIZE, steps + 2, "cpu")
        res = {"plain": [], "task": [], "trainer": []}
        for i, b in enumerate(batches):
            t0 = time.perf_counter()
            plain_update(plain, popt, b)
            t1 = time.perf_counter()
            one_update(task, model, criterion, optimizer, b, i)
            t2 = time.perf_counter()
            trainer.train_step([b])
            t3 = time.perf_counter()
            if i >= 2:
                res["plain"].append(t1 - t0)
                res["task"].append(t2 - t1)
                res["trainer"].append(t3 - t2)
        med = {k: statistics.median(v) for k, v in res.items()}
        print(f"\n1. one update, median of {steps} (threads {torch.get_num_threads()}):")
        for k, label in (("plain", "plain PyTorch nn.Transformer"), ("task", "fairseq model+criterion+Adam"),
                         ("trainer", "fairseq Trainer.train_step")):
            print(f"   {label:<34} {med[k]:.4f} s   {med[k] / med['plain']:.2f}x plain")
        print(f"fairseq/plain update ratio: {med['trainer'] / med['plain']:.2f}")
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for b in batches[:4]:
                trainer.train_step([b])
        print("\n2. torch.profiler, fairseq Trainer.train_step x4:")
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=18))


def threads_under_load(steps):
    with tempfile.TemporaryDirectory() as tmp:
        for side in ("query", "response"):
            write_dictionary(os.path.join(tmp, f"dict.{side}.txt"), VOCAB)
        import bench_step

        bench_step.SIZES["tiny"] = (2, 64, 4, 256, VOCAB, 96, 22, 20)
        task, model, criterion, optimizer = build(SIZE, "mle", tmp, None, "cpu", "fp32")
        batches = make_batches(SIZE, 4, "cpu")
        k = [0]

        def step():
            one_update(task, model, criterion, optimizer, batches[k[0] % 4], k[0])
            k[0] += 1

        results = {}
        ctx = mp.get_context("spawn")
        for load in (False, True):
            stop = ctx.Event()
            proc = None
            if load:
                proc = ctx.Process(target=busy, args=(stop, 2), daemon=True)
                proc.start()
                time.sleep(2.0)
            for threads in (1, 2):
                torch.set_num_threads(threads)
                step()
                results[(load, threads)] = timed(step, steps)
            if proc is not None:
                stop.set()
                proc.join(10)
        base = results[(False, 1)]
        print(f"\n3. fairseq update vs torch threads, alone and beside one busy 2-thread process "
              f"(ratios to idle, 1 thread = {base:.4f} s):")
        for (load, threads), t in results.items():
            print(f"   {'busy neighbour' if load else 'idle':<15} threads={threads}: {t:.4f} s  {t / base:.2f}x")
        print(f"busy/idle ratio with 1 thread: {results[(True, 1)] / base:.2f}; "
              f"with 2 threads: {results[(True, 2)] / results[(False, 2)]:.2f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=("compare", "threads"), default=None)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    if args.only in (None, "compare"):
        compare(args.steps)
    if args.only in (None, "threads"):
        threads_under_load(args.steps)


if __name__ == "__main__":
    main()
