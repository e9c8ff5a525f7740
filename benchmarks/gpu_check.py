"""The parts of ``benchmarks/gpu_check.sh``; each writes one JSON record ``{"part", "ok", ...}``.

    python benchmarks/gpu_check.py components --data DIR --teacher PT --arch A --device cuda --out rec.json
    python benchmarks/gpu_check.py train --data DIR --teacher PT --arch A --precision fp16 --updates 200 ...
    python benchmarks/gpu_check.py bench --size paper --precision fp16 --device cuda --out rec.json
    python benchmarks/gpu_check.py generate --data DIR --checkpoint PT --beam 5 --device cuda --out rec.json
    python benchmarks/gpu_check.py summary --dir DIR --expect a,b,c --json gpu_check.json

A part that raises still writes its record (``ok: false`` and the error), so the summary can name
it; ``summary`` prints one table, writes every record into one JSON file and exits 1 if any
expected part failed or wrote nothing.
"""

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_DIR = os.path.join(REPO, "nd_fairseq")
NO_DROPOUT = ["--dropout", "0", "--attention-dropout", "0", "--activation-dropout", "0"]
# α fixed at 0.5 so that every ND term acts from the first update (the schedule starts near 0)
ND = ["--criterion", "negative_distillation", "--fixed-alpha", "0.5"]
COMPONENTS = ("loss", "mle", "pred", "hid", "att")
# float32 on both devices with TF32 off: what differs is summation order (and libm), ~1e-6 relative
COMPONENT_RTOL = 1e-4
# fp16 starts at loss scale 128; below 1/8 the scaler has halved ten times: the run is not training
MIN_LOSS_SCALE = 0.125


def env():
    e = dict(os.environ)
    e.setdefault("OMP_NUM_THREADS", "1")
    e["PYTHONWARNINGS"] = "ignore"
    e["PYTHONPATH"] = REPO + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def tool(name):
    path = os.path.join(os.path.dirname(sys.executable), name)
    return path if os.path.exists(path) else name


def run(cmd, timeout=900):
    return subprocess.run([str(c) for c in cmd], env=env(), capture_output=True, text=True, timeout=timeout)


def tail(proc, n=1500):
    return (proc.stderr or proc.stdout or "")[-n:]


def part_components(args):
    """Every loss component, the total and the gradient norm on one fixed batch: CPU vs ``--device``."""
    import torch
    from fairseq import options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    argv = [args.data, "--user-dir", USER_DIR, "--task", "negative_distillation", "--arch", args.arch,
            *shlex.split(args.model_args), *NO_DROPOUT, *ND, "--nd-teacher-path", args.teacher, "--optimizer", "adam", "--lr", "1e-4"]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(1)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    task.load_dataset("valid")
    itr = task.get_batch_iterator(dataset=task.dataset("valid"), max_tokens=2000, seed=1, num_workers=0)
    batch = next(iter(itr.next_epoch_itr(shuffle=False)))
    criterion.set_alpha(0.5)

    def evaluate(device):
        model.to(device).train()
        sample = utils.move_to_cuda(batch) if device.startswith("cuda") else batch
        model.zero_grad()
        loss, sample_size, log = criterion(model, sample)
        loss.backward()
        grad_norm = math.sqrt(sum(float(p.grad.double().square().sum()) for p in model.parameters()
                                  if p.grad is not None))
        values = {k: float(log[k]) / sample_size for k in COMPONENTS[1:]}
        values["loss"] = float(loss) / sample_size
        values["grad_norm"] = grad_norm
        return values

    ref = evaluate("cpu")
    got = evaluate(args.device)
    rel = {k: abs(got[k] - ref[k]) / max(abs(ref[k]), 1e-12) for k in ref}
    worst = max(rel, key=rel.get)
    ok = all(math.isfinite(v) for v in got.values()) and rel[worst] <= COMPONENT_RTOL
    return {"ok": ok, "cpu": ref, args.device: got, "max_rel_diff": rel[worst], "worst": worst,
            "rtol": COMPONENT_RTOL, "batch_tokens": int(batch["ntokens"]),
            "summary": f"max rel diff {rel[worst]:.1e} ({worst}), tol {COMPONENT_RTOL:g}"}


def part_train(args):
    """fairseq-train ND for ``--updates`` updates in ``--precision``: finite losses, loss scale alive."""
    flags = {"fp32": [], "fp16": ["--fp16"], "bf16": ["--bf16"], "amp": ["--amp"]}[args.precision]
    cmd = [tool("fairseq-train"), args.data, "--user-dir", USER_DIR, "--task", "negative_distillation",
           "--arch", args.arch, *shlex.split(args.model_args), *ND, "--nd-teacher-path", args.teacher, "--optimizer", "adam", "--lr", "5e-4",
           "--lr-scheduler", "inverse_sqrt", "--warmup-updates", str(max(args.updates // 4, 1)),
           "--clip-norm", "1.0", "--max-tokens", str(args.max_tokens), "--max-update", str(args.updates),
           "--log-format", "json", "--log-interval", str(max(args.updates // 20, 1)), "--no-progress-bar",
           "--disable-validation", "--no-epoch-checkpoints", "--save-dir", args.save_dir, "--seed", "1",
           *flags, *(["--cpu"] if args.device == "cpu" else [])]
    t0 = time.perf_counter()
    proc = run(cmd)
    wall = time.perf_counter() - t0
    records = []
    for line in proc.stdout.splitlines() + proc.stderr.splitlines():
        start = line.find("{")
        if start >= 0 and "| train_inner |" in line[:start + 1]:
            records.append(json.loads(line[start:]))
    losses = [float(r["loss"]) for r in records]
    scales = [float(r["loss_scale"]) for r in records if "loss_scale" in r]
    updates = int(records[-1]["num_updates"]) if records else 0
    ups = [float(r["ups"]) for r in records if "ups" in r]
    problems = []
    if proc.returncode != 0:
        problems.append(f"exit {proc.returncode}: {tail(proc, 400)}")
    if not records:
        problems.append("no train_inner records")
    if any(not math.isfinite(v) for v in losses):
        problems.append("non-finite loss")
    if updates < args.updates * 0.9:
        problems.append(f"{updates} of {args.updates} updates")
    if scales and min(scales) < MIN_LOSS_SCALE:
        problems.append(f"loss scale fell to {min(scales):g}")
    first, last = (losses[0], losses[-1]) if losses else (float("nan"), float("nan"))
    return {"ok": not problems, "precision": args.precision, "updates": updates, "wall_s": wall,
            "loss_first": first, "loss_last": last, "loss_scale_min": min(scales) if scales else None,
            "loss_scale_last": scales[-1] if scales else None, "ups_median": sorted(ups)[len(ups) // 2] if ups else None,
            "problems": problems,
            "summary": (f"{updates} updates, loss {first:.2f} -> {last:.2f}"
                        + (f", loss scale min {min(scales):g}" if scales else "")
                        + (f"; {'; '.join(problems)}" if problems else ""))}


def part_bench(args):
    """bench_step.py: ND/MLE step ratio, peak-memory ratio, updates/s."""
    out = os.path.join(args.work, f"bench_{args.size}_{args.precision}.json")
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", "bench_step.py"), "--size", args.size,
           "--device", args.device, "--configs", args.configs, "--json", out]
    if args.precision in ("fp16", "bf16"):
        cmd.append("--" + args.precision)
    if args.steps:
        cmd += ["--steps", str(args.steps)]
    proc = run(cmd)
    if proc.returncode != 0 or not os.path.exists(out):
        return {"ok": False, "summary": f"bench_step.py exit {proc.returncode}", "error": tail(proc)}
    with open(out) as f:
        res = json.load(f)
    ratio = res["ratio"].get("nd")
    mem = res["peak_bytes"]
    mem_ratio = mem["nd"] / mem["mle"] if mem.get("nd") and mem.get("mle") else None
    ups = {c: 1.0 / s for c, s in res["seconds"].items()}
    ok = ratio is not None and math.isfinite(ratio) and mem_ratio is not None
    return {"ok": ok, "size": args.size, "precision": args.precision, "nd_mle_ratio": ratio,
            "mem_ratio": mem_ratio, "updates_per_s": ups, "bench": res,
            "summary": (f"nd/mle {ratio:.2f}, memory {mem_ratio:.2f}x, "
                        f"{ups.get('nd', 0):.1f} ND / {ups.get('mle', 0):.1f} MLE updates/s")
            if ok else f"missing figures: ratio {ratio}, memory {mem}"}


def part_generate(args):
    """fairseq-generate with the plugin: a hypothesis for every test sentence."""
    cmd = [tool("fairseq-generate"), args.data, "--user-dir", USER_DIR, "--path", args.checkpoint,
           "--gen-subset", "test", "--beam", str(args.beam), "--max-len-b", "30", "--batch-size", "64",
           *(["--cpu"] if args.device == "cpu" else []), *(["--lenpen", "1.2"] if args.beam > 1 else [])]
    t0 = time.perf_counter()
    proc = run(cmd)
    wall = time.perf_counter() - t0
    lines = proc.stdout.splitlines()
    sources = sum(1 for line in lines if line.startswith("S-"))
    hyps = sum(1 for line in lines if line.startswith("H-"))
    ok = proc.returncode == 0 and sources > 0 and hyps == sources
    return {"ok": ok, "beam": args.beam, "sentences": sources, "hypotheses": hyps, "wall_s": wall,
            "summary": f"{hyps}/{sources} hypotheses in {wall:.1f} s" + ("" if ok else f"; {tail(proc, 300)}")}


def summary(args):
    expected = [p for p in args.expect.split(",") if p]
    records = {}
    for name in expected:
        path = os.path.join(args.dir, f"{name}.json")
        if os.path.exists(path):
            with open(path) as f:
                records[name] = json.load(f)
        else:
            records[name] = {"part": name, "ok": False, "summary": "no record (the part did not run to its end)"}
    width = max([len(n) for n in expected + args.skipped.split(",")] + [4])
    print(f"\n{'part':<{width}}  {'result':<6}  details")
    for name in expected:
        r = records[name]
        label = f" [{r['label']}]" if r.get("label") else ""
        print(f"{name:<{width}}  {'ok' if r['ok'] else 'FAIL':<6}  {r.get('summary', '')}{label}")
    for name in [n for n in args.skipped.split(",") if n]:
        print(f"{name:<{width}}  {'skip':<6}  {args.skip_reason}")
        records[name] = {"part": name, "ok": None, "skipped": True, "summary": args.skip_reason}
    failed = [n for n in expected if not records[n]["ok"]]
    result = {"device": args.device, "ok": not failed, "failed": failed, "parts": records}
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\n{'all parts passed' if not failed else 'FAILED: ' + ', '.join(failed)}; written {args.json}")
    return 0 if not failed else 1


PARTS = {"components": part_components, "train": part_train, "bench": part_bench, "generate": part_generate}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=sorted(PARTS) + ["summary"])
    p.add_argument("--device", default="cuda")
    p.add_argument("--data")
    p.add_argument("--teacher")
    p.add_argument("--arch", default="transformer_nd_dialog")
    p.add_argument("--model-args", default="", help="more model options (the teacher's sizes), one string")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16", "amp"])
    p.add_argument("--updates", type=int, default=200)
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--save-dir")
    p.add_argument("--size", default="small")
    p.add_argument("--configs", default="mle,nd,nd_no_pred")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--work", default=".")
    p.add_argument("--checkpoint")
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--label", default="", help="a note printed beside the part in the summary")
    p.add_argument("--out", help="where the part writes its JSON record")
    p.add_argument("--dir", help="summary: the directory of the records")
    p.add_argument("--expect", default="", help="summary: comma-separated record names")
    p.add_argument("--json", default="gpu_check.json", help="summary: the combined JSON")
    p.add_argument("--skipped", default="", help="summary: comma-separated parts not run here")
    p.add_argument("--skip-reason", default="needs CUDA")
    args = p.parse_args(argv)
    if args.part == "summary":
        return summary(args)
    name = os.path.splitext(os.path.basename(args.out))[0] if args.out else args.part
    t0 = time.perf_counter()
    try:
        record = PARTS[args.part](args)
    except Exception as err:  # the record says what failed; the summary turns it into exit 1
        record = {"ok": False, "summary": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                  "error": traceback.format_exc()[-3000:]}
    record.update({"part": name, "label": args.label, "seconds": time.perf_counter() - t0})
    if args.out:
        with open(args.out, "w") as f:
            json.dump(record, f, indent=2)
    print(f"{name}: {'ok' if record['ok'] else 'FAIL'} {record.get('summary', '')}", flush=True)
    return 0 if record["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
