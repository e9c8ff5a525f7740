"""Running the command-line tools from the example drivers (examples/recipe.py, the chitchat
experiment runner): the tools of this Python's environment, single-threaded torch by default, each
run's output appended to its log, and every child stopped when the driver is interrupted, so
nothing is left running.
"""

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional, Sequence

BIN = Path(sys.executable).parent


class RunError(Exception):
    """A tool exited with an error; the message names it, its exit code and its log."""


def tool(name: str) -> str:
    """The console script ``name`` of this environment (else the one on PATH)."""
    path = BIN / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def child_env(threads: int) -> dict:
    """The environment of a child: ``threads`` torch threads (two single-threaded runs use 2 cores
    better than one two-threaded run for models this small), quiet warnings, this env's tools first."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["PYTHONWARNINGS"] = "ignore"
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


_children: List[subprocess.Popen] = []
_children_lock = threading.Lock()


def run_logged(cmd: Sequence, log: Path, env: dict, cwd: Path, stdout=None) -> None:
    """Run ``cmd`` with its output (or only its stderr, when ``stdout`` is a file) appended to ``log``;
    raise :class:`RunError` with the log's last lines when it fails."""
    cmd = [str(c) for c in cmd]
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=stdout or f, stderr=f if stdout else subprocess.STDOUT,
                                env=env, cwd=cwd)
        with _children_lock:
            _children.append(proc)
        try:
            proc.wait()
        finally:
            with _children_lock:
                _children.remove(proc)
    if proc.returncode != 0:
        tail = "".join(open(log, errors="replace").readlines()[-5:]).strip()
        raise RunError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}); see {log}\n{tail}")


def stop_children(timeout: Optional[float] = 20.0) -> None:
    """Terminate every running child (fairseq-train, fairseq-generate), then kill what is left."""
    with _children_lock:
        procs = list(_children)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


def recipe_generation_file(gen: Path, name: str, mode: str, subset: str) -> Path:
    """Where examples/recipe.py keeps a run's fairseq-generate output (``gen`` = WORK/generate):
    ``{name}.{mode}.{subset}.txt``, e.g. ``standard.s1.beam5.valid.txt``."""
    return gen / f"{name}.{mode}.{subset}.txt"


class RunDir:
    """The folders of one driver's output directory: text/, data-bin/, checkpoints/, generate/, logs/."""

    def __init__(self, root):
        self.root = Path(root).resolve()
        self.text, self.data = self.root / "text", self.root / "data-bin"
        self.ckpt, self.gen, self.logs = self.root / "checkpoints", self.root / "generate", self.root / "logs"
        for d in (self.ckpt, self.gen, self.logs):
            d.mkdir(parents=True, exist_ok=True)


class Clock:
    """Progress lines stamped with the time since the start, one at a time from any thread."""

    def __init__(self, hours: bool = False):
        self.t0 = time.time()
        self.hours = hours
        self._lock = threading.Lock()

    def stamp(self) -> str:
        el = int(time.time() - self.t0)
        return f"{el // 3600}:{el % 3600 // 60:02d}:{el % 60:02d}" if self.hours else f"{el // 60}m{el % 60:02d}s"

    def say(self, msg: str) -> None:
        with self._lock:
            print(f"[{self.stamp()}] {msg}", flush=True)
