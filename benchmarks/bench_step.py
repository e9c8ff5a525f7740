"""Seconds per update and peak memory: MLE vs negative distillation (and its ablations).

Every configuration trains the same model on the same synthetic batches in one process; the
configurations are interleaved step by step, so background load affects them alike, and the
script prints ratios to the MLE step (never absolute timings as pass/fail).

    python benchmarks/bench_step.py --size tiny                 # CPU, ends with "nd/mle step ratio: X.XX"
    python benchmarks/bench_step.py --size paper --device cuda --fp16
    python benchmarks/bench_step.py --size small --profile      # torch.profiler table of the ND step

An update is what fairseq's trainer does: zero_grad, task.train_step (forward + backward),
gradient scaling by 1/sample_size, clip-norm, Adam step. Memory: each configuration runs once
more in a fresh process, first a two-sentence update (allocating Adam state, gradients, the
teacher's placement), then one full update; reported is what the full update adds at its peak (CUDA:
``max_memory_allocated`` growth; CPU: peak RSS growth).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

SIZES = {
    # name: (layers, embed dim, heads, ffn, vocab, batch sentences, src len, tgt len)
    "tiny": (2, 64, 4, 256, 4000, 64, 24, 20),
    "small": (3, 256, 4, 1024, 8000, 96, 24, 20),
    "paper": (6, 512, 8, 2048, 16000, 256, 24, 20),
}

CONFIGS = {
    "mle": ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"],
    "nd": ["--criterion", "negative_distillation"],
    "nd_no_pred": ["--criterion", "negative_distillation", "--nd-no-pred-loss"],
    "nd_no_hid": ["--criterion", "negative_distillation", "--nd-no-hid-loss"],
    "nd_no_att": ["--criterion", "negative_distillation", "--nd-no-att-loss"],
    "nd_compiled": ["--criterion", "negative_distillation", "--nd-compile"],
}


def write_dictionary(path, vocab):
    with open(path, "w") as f:
        for i in range(vocab - 4):  # fairseq adds <s> <pad> </s> <unk>
            f.write(f"w{i} {vocab - i}\n")


def model_args(size):
    layers, dim, heads, ffn, *_ = SIZES[size]
    return ["--arch", "transformer_nd_dialog", "--encoder-layers", str(layers), "--decoder-layers", str(layers),
            "--encoder-embed-dim", str(dim), "--decoder-embed-dim", str(dim), "--encoder-attention-heads", str(heads),
            "--decoder-attention-heads", str(heads), "--encoder-ffn-embed-dim", str(ffn),
            "--decoder-ffn-embed-dim", str(ffn)]


def build(size, config, data_dir, teacher, device, precision):
    import torch
    from fairseq import optim, options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    argv = [data_dir, "--user-dir", os.path.join(repo, "nd_fairseq"), "--task", "negative_distillation",
            "--source-lang", "query", "--target-lang", "response", *model_args(size), *CONFIGS[config],
            "--optimizer", "adam", "--lr", "1e-4", "--alpha-gamma", "0", "--alpha-lambda", "2"]
    if config != "mle":
        argv += ["--nd-teacher-path", teacher]
    parser = options.get_training_parser()
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, argv))
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(1)
    model = task.build_model(cfg.model)
    if precision != "fp32":
        model = model.to(dtype=torch.float16 if precision == "fp16" else torch.bfloat16)
    model = model.to(device)
    criterion = task.build_criterion(cfg.criterion).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if precision == "fp16":
        cfg.common.fp16 = True
        optimizer = optim.MemoryEfficientFP16Optimizer.build_optimizer(cfg, params)
    else:
        optimizer = optim.build_optimizer(cfg.optimizer, params)
    return task, model, criterion, optimizer


def save_teacher(size, data_dir, path):
    """A checkpoint of the benchmark architecture, as fairseq-train writes it (random weights)."""
    import torch
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    argv = [data_dir, "--user-dir", os.path.join(repo, "nd_fairseq"), "--task", "negative_distillation",
            "--source-lang", "query", "--target-lang", "response", *model_args(size), *CONFIGS["mle"],
            "--optimizer", "adam", "--lr", "1e-4"]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(2)
    model = task.build_model(cfg.model)
    torch.save({"cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), "args": None,
                "model": model.state_dict(), "criterion": None,
                "optimizer_history": [{"criterion_name": "LabelSmoothedCrossEntropyCriterion",
                                       "optimizer_name": "FairseqAdam", "lr_scheduler_state": {},
                                       "num_updates": 0}],
                "task_state": task.state_dict(), "extra_state": {"train_iterator": {"epoch": 1}},
                "last_optimizer_state": None}, path)


def make_batches(size, n, device, pad=1, eos=2, seed=0, shape=None):
    import torch

    _, _, _, _, vocab, bsz, src_len, tgt_len = SIZES[size]
    if shape is not None:
        bsz, src_len, tgt_len = shape
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        src = torch.randint(4, vocab, (bsz, src_len), generator=gen)
        tgt = torch.randint(4, vocab, (bsz, tgt_len), generator=gen)
        src_lens = torch.randint(src_len // 3, src_len + 1, (bsz,), generator=gen)
        tgt_lens = torch.randint(tgt_len // 3, tgt_len + 1, (bsz,), generator=gen)
        for i in range(bsz):  # left-padded source, right-padded target, as LanguagePairDataset
            src[i, : src_len - src_lens[i]] = pad
            src[i, src_len - 1] = eos
            tgt[i, tgt_lens[i] - 1] = eos
            tgt[i, tgt_lens[i]:] = pad
        prev = torch.full_like(tgt, pad)
        prev[:, 0] = eos
        prev[:, 1:] = tgt[:, :-1]
        prev[prev == eos] = pad
        prev[:, 0] = eos
        ntokens = int(tgt.ne(pad).sum())
        batches.append({"id": torch.arange(bsz), "nsentences": bsz, "ntokens": ntokens,
                        "net_input": {"src_tokens": src.to(device), "src_lengths": src_lens.to(device),
                                      "prev_output_tokens": prev.to(device)},
                        "target": tgt.to(device)})
    return batches


def one_update(task, model, criterion, optimizer, sample, update_num):
    optimizer.zero_grad()
    loss, sample_size, _ = task.train_step(sample, model, criterion, optimizer, update_num)
    optimizer.multiply_grads(1.0 / float(sample_size))
    optimizer.clip_grad_norm(1.0)
    optimizer.step()


def sync(device):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_memory_child(args):
    """Run in a fresh process: peak memory growth of one configuration's updates."""
    import torch

    task, model, criterion, optimizer = build(args.size, args.child, args.data, args.teacher, args.device,
                                              args.precision)
    full = make_batches(args.size, 1, args.device)[0]
    small = make_batches(args.size, 1, args.device, shape=(2, 4, 4))[0]
    # a two-sentence update first: Adam state, gradients and the teacher's placement are allocated
    # now, so what the full update adds is its own activations and temporaries
    one_update(task, model, criterion, optimizer, small, 0)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        one_update(task, model, criterion, optimizer, full, 1)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        # peak RSS growth, sampled every 0.2 ms from a thread (tensors this size are mmap'd by
        # the allocator, so RSS follows live tensor memory; ru_maxrss cannot, it remembers start-up)
        import threading

        page = os.sysconf("SC_PAGE_SIZE")

        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * page

        before = rss()
        top = [before]
        done = threading.Event()

        def sample():
            while not done.is_set():
                top[0] = max(top[0], rss())
                time.sleep(0.0002)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        one_update(task, model, criterion, optimizer, full, 1)
        done.set()
        th.join()
        peak = max(top[0], rss()) - before
    print(json.dumps({"peak_bytes": int(peak)}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--steps", type=int, default=None, help="timed updates per configuration")
    p.add_argument("--configs", default="mle,nd,nd_compiled,nd_no_pred,nd_no_hid,nd_no_att")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table of the ND update")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--data", default=None, help=argparse.SUPPRESS)
    p.add_argument("--teacher", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.precision = "fp16" if args.fp16 else "bf16" if args.bf16 else "fp32"
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return measure_memory_child(args)

    configs = args.configs.split(",")
    steps = args.steps or {"tiny": 30, "small": 12, "paper": 6}[args.size]
    if args.device.startswith("cuda"):
        steps *= 5
    with tempfile.TemporaryDirectory() as tmp:
        for side in ("query", "response"):
            write_dictionary(os.path.join(tmp, f"dict.{side}.txt"), SIZES[args.size][4])
        teacher = os.path.join(tmp, "teacher.pt")
        save_teacher(args.size, tmp, teacher)
        built = {c: build(args.size, c, tmp, teacher, args.device, args.precision) for c in configs}
        batches = make_batches(args.size, steps + 2, args.device)
        times = {c: [] for c in configs}
        for c in configs:  # warm-up: teacher placement, Adam state, allocator
            one_update(*built[c], batches[0], 0)
            one_update(*built[c], batches[1], 1)
        for i, sample in enumerate(batches[2:]):
            for c in configs:  # interleaved: background load hits every configuration alike
                sync(args.device)
                t0 = time.perf_counter()
                one_update(*built[c], sample, 2 + i)
                sync(args.device)
                times[c].append(time.perf_counter() - t0)
        if args.profile and "nd" in built:
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
            with profile(activities=acts) as prof:
                for i, sample in enumerate(batches[2:6]):
                    one_update(*built["nd"], sample, 100 + i)
            key = "cuda_time_total" if args.device.startswith("cuda") else "cpu_time_total"
            print(prof.key_averages().table(sort_by=key, row_limit=25))

        memory = {}
        if not args.no_memory:
            for c in configs:
                cmd = [sys.executable, os.path.abspath(__file__), "--size", args.size, "--device", args.device,
                       "--child", c, "--data", tmp, "--teacher", teacher]
                cmd += ["--fp16"] if args.fp16 else ["--bf16"] if args.bf16 else []
                cmd += ["--threads", str(args.threads)] if args.threads else []
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    print(out.stderr[-2000:], file=sys.stderr)
                    continue
                memory[c] = json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]

    med = {c: statistics.median(t) for c, t in times.items()}
    layers, dim, heads, ffn, vocab, bsz, sl, tl = SIZES[args.size]
    print(f"size {args.size}: {layers}+{layers} layers, d={dim}, {heads} heads, ffn {ffn}, vocab {vocab}, "
          f"batch {bsz} x ({sl} src, {tl} tgt) tokens; device {args.device} {args.precision}; "
          f"{steps} interleaved updates; torch threads {torch.get_num_threads()}")
    print(f"{'config':<12} {'s/update':>9} {'ratio':>7} {'peak MB':>9} {'mem ratio':>9}")
    for c in configs:
        mem = memory.get(c)
        mem_s = f"{mem / 2**20:9.1f}" if mem is not None else f"{'-':>9}"
        mr = f"{mem / memory['mle']:9.2f}" if mem is not None and memory.get("mle") else f"{'-':>9}"
        print(f"{c:<12} {med[c]:9.4f} {med[c] / med['mle']:7.2f} {mem_s} {mr}")
    result = {"size": args.size, "device": args.device, "precision": args.precision, "steps": steps,
              "seconds": med, "ratio": {c: med[c] / med["mle"] for c in configs},
              "peak_bytes": memory}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    if "nd" in med:
        print(f"nd/mle step ratio: {med['nd'] / med['mle']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
