"""The job scheduler of the chitchat experiment: data preparation, then every :class:`Job` trained
(fairseq-train) and decoded (fairseq-generate, every mode of ``MODES``, every ``--subsets`` set),
``--jobs`` at a time, each job once its dependencies are done.

Every finished step is kept on disk (a ``.done`` marker per checkpoint folder, the generate outputs
renamed into place when complete), so rerunning the same command resumes; a failed job is
reported and the jobs that depend on it are not started.
"""

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

from experiment_systems import MODES, Job

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "examples"))

from runs import Clock, RunDir, RunError, child_env, run_logged, tool  # noqa: E402


def generation_file(gen: Path, name: str, mode: str, subset: str = "test") -> Path:
    """Where the runner keeps a run's fairseq-generate output (``gen`` = OUT/generate). Test outputs
    keep their original names, so runs made before --subsets stay usable."""
    return gen / (f"{name}.{mode}.txt" if subset == "test" else f"{name}.{mode}.{subset}.txt")


class Scheduler:
    """Runs the jobs of one experiment under ``args.out``; ``args``: the runner's parsed options."""

    def __init__(self, args):
        self.a = args
        dirs = RunDir(args.out)
        self.out, self.text, self.data = dirs.root, dirs.text, dirs.data
        self.ckpt, self.gen, self.logs = dirs.ckpt, dirs.gen, dirs.logs
        self.clock = Clock(hours=True)
        self.say = self.clock.say
        self.t0 = self.clock.t0

    # -- helpers --------------------------------------------------------------------------------

    def env(self) -> dict:
        return child_env(self.a.threads)

    def run(self, cmd, log: Path) -> None:
        try:
            run_logged(cmd, log, self.env(), REPO)
        except RunError as err:  # the scheduler reports it and skips the jobs that depend on it
            raise RuntimeError(str(err).splitlines()[0]) from None

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
