"""Shared fixtures: small real data (a slice of chitchat-dataset) and a CLI runner.

CLI tests run the real tools (nd-*, fairseq-*) in subprocesses. Subprocesses get
OMP_NUM_THREADS=1: tiny models gain nothing from more threads, and threads of concurrent torch
processes on 2 cores spin against each other.
"""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
USER_DIR = str(REPO / "nd_fairseq")
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """Path of a console script installed beside the running Python (the test venv)."""
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed; pip install -e '.[test]' first")
    return found


def cli_env(extra=None):
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    if extra:
        env.update(extra)
    return env


def run_cli(args, cwd=None, check=True, timeout=600, env=None):
    """Run a command; on failure (when check) show its output in the assertion message."""
    args = [str(a) for a in args]
    if not os.path.sep in args[0] and not args[0].endswith(".sh"):
        args[0] = tool(args[0])
    # its own process group, so that a command that runs past ``timeout`` is stopped with every
    # process it started (subprocess.run's own timeout kills the first one only, and a pipeline's
    # fairseq runs would go on in the background of the rest of the tests)
    with subprocess.Popen(args, cwd=cwd or REPO, env=cli_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True) as child:
        try:
            stdout, stderr = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            raise
    proc = subprocess.CompletedProcess(args, child.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"command failed ({proc.returncode}): {' '.join(args)}\n"
                             f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="session")
def chitchat_text(tmp_path_factory):
    """A small, real slice of chitchat-dataset as nd-prepare writes it (train ~1.2k pairs)."""
    out = tmp_path_factory.mktemp("chitchat_text")
    full = tmp_path_factory.mktemp("chitchat_full")
    run_cli(["nd-prepare", "--out-dir", full, "--quiet", "--seed", "3", "--max-units", "400",
             "--valid-fraction", "0.1", "--test-fraction", "0.1"])
    # the first lines of each split: real text, small enough for CPU tests
    sizes = {"train": 1200, "valid": 120, "test": 60}
    for split, n in sizes.items():
        for side in ("query", "response"):
            lines = (full / f"{split}.{side}").read_text(encoding="utf-8").splitlines()[:n]
            (out / f"{split}.{side}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def data_bin(chitchat_text, tmp_path_factory):
    """preprocess.sh on the chitchat slice: DEST/full, DEST/negative, DEST/bottom (shared dictionary)."""
    root = tmp_path_factory.mktemp("prep")
    dest = root / "data-bin"
    run_cli(["bash", REPO / "preprocess.sh", "--text-dir", chitchat_text, "--work-dir", root / "work",
             "--dest", dest, "--vocab-size", "600", "--key", "prefix:3", "--bottom", "--workers", "1"])
    return dest


TINY_MODEL = ["--arch", "transformer_nd_dialog_tiny", "--encoder-layers", "2", "--decoder-layers", "2",
              "--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
              "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"]
TRAIN_COMMON = ["--user-dir", USER_DIR, "--task", "negative_distillation", "--optimizer", "adam",
                "--lr", "1e-3", "--max-tokens", "1500", "--no-progress-bar", "--log-interval", "1",
                "--log-format", "json", "--seed", "1", "--num-workers", "0"]


@pytest.fixture(scope="session")
def teacher_checkpoint(data_bin, tmp_path_factory):
    """A negative teacher: a few MLE updates on DEST/negative with the tiny architecture."""
    save = tmp_path_factory.mktemp("teacher")
    run_cli(["fairseq-train", data_bin / "negative", *TRAIN_COMMON, *TINY_MODEL,
             "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
             "--max-update", "8", "--save-dir", save, "--disable-validation", "--no-epoch-checkpoints"])
    return save / "checkpoint_last.pt"


@pytest.fixture(scope="session")
def chat(tmp_path_factory):
    """Two tiny dialogue models trained once for the session (tests/helpers/chat_models.py)."""
    from helpers.chat_models import chat_models

    return chat_models(tmp_path_factory)


def build_training(argv):
    """In-process equivalent of fairseq-train's set-up: (cfg, task, model, criterion).

    Parses ``argv`` exactly as fairseq-train does (``--user-dir`` included), so the objects are the
    ones the CLI would build.
    """
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(a) for a in argv])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    return cfg, task, model, criterion


def first_batch(task, split="train", max_tokens=1500, seed=1):
    """The first batch of ``split`` as fairseq's iterator would produce it."""
    task.load_dataset(split)
    itr = task.get_batch_iterator(dataset=task.dataset(split), max_tokens=max_tokens, seed=seed,
                                  num_workers=0).next_epoch_itr(shuffle=False)
    return next(iter(itr))
