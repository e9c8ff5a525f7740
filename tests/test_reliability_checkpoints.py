"""Hostile, damaged and half-written checkpoints, through the real fairseq tools.

* a checkpoint carrying an ``os.system`` reducer is refused by every load the plugin governs, with
  ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` set (which makes torch unpickle anything where a caller does
  not pass ``weights_only``), and its payload never runs;
* a truncated, damaged or text file given as a checkpoint is one line naming it, exit code 2;
* fairseq-train killed with SIGKILL while it writes its checkpoints leaves complete files, and
  training resumes.
"""

import os
import signal
import socket
import subprocess
import sys
import zipfile

import pytest
import torch

from conftest import REPO, TINY_MODEL, TRAIN_COMMON, USER_DIR, cli_env, run_cli, tool
from nd_fairseq.compat.safe_load import CheckpointError, UnsafeCheckpointError, read_checkpoint

pytestmark = pytest.mark.cli

FORCE_UNSAFE = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


class Payload:
    """Unpickling this runs ``touch MARKER`` (what a hostile checkpoint would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _hostile_copy(checkpoint, path, marker):
    state = torch.load(checkpoint, weights_only=False)
    state["extra_state"]["payload"] = Payload(marker)
    torch.save(state, path)
    return path


def _last_line(proc):
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else ""


def _assert_one_line_error(proc, expected_start):
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert _last_line(proc).startswith(expected_start), _last_line(proc)


def _refusal(prog, path, what="checkpoint"):
    return (f"{prog}: error: refused to load {what} {path}: it contains the pickled object 'posix.system', "
            f"which fairseq checkpoints never hold (nd_fairseq loads with torch.load(weights_only=True), "
            f"allowing tensors, argparse.Namespace and numpy arrays/scalars); use a checkpoint written by "
            f"fairseq-train, or re-save its state dict from a trusted source")


def _train_args(data, save, *extra):
    return ["fairseq-train", data, *TRAIN_COMMON, *TINY_MODEL, "--criterion", "label_smoothed_cross_entropy",
            "--max-update", "2", "--save-dir", save, "--disable-validation", "--no-epoch-checkpoints", *extra]


# --- item 1: no environment variable turns safe loading off --------------------------------------

def test_generate_refuses_a_hostile_checkpoint_whatever_the_environment_says(data_bin, teacher_checkpoint, tmp_path):
    marker = tmp_path / "payload-ran"
    bad = _hostile_copy(teacher_checkpoint, tmp_path / "evil.pt", marker)
    generate = ["fairseq-generate", data_bin / "negative", "--path", bad, "--gen-subset", "test",
                "--batch-size", "8", "--max-len-b", "5"]
    # control: stock fairseq with the variable set runs the payload, so the file is really hostile
    run_cli(generate, check=False, env={FORCE_UNSAFE: "1"})
    assert marker.exists()
    marker.unlink()
    for value in ("1", "true", "yes"):
        proc = run_cli([*generate, "--user-dir", USER_DIR], check=False, env={FORCE_UNSAFE: value})
        assert not marker.exists(), value
        _assert_one_line_error(proc, _refusal("fairseq-generate", bad))
        assert _last_line(proc) == _refusal("fairseq-generate", bad)


def test_interactive_refuses_a_hostile_checkpoint_with_the_variable_set(data_bin, teacher_checkpoint, tmp_path):
    marker = tmp_path / "payload-ran"
    bad = _hostile_copy(teacher_checkpoint, tmp_path / "evil.pt", marker)
    proc = subprocess.run([tool("fairseq-interactive"), str(data_bin / "negative"), "--user-dir", USER_DIR,
                           "--path", str(bad)], input="hello\n", capture_output=True, text=True,
                          env=cli_env({FORCE_UNSAFE: "1"}), cwd=REPO, timeout=300)
    assert not marker.exists()
    _assert_one_line_error(proc, _refusal("fairseq-interactive", bad))


def test_training_refuses_hostile_resume_restore_finetune_and_teacher_files(data_bin, teacher_checkpoint, tmp_path):
    marker = tmp_path / "payload-ran"
    bad = _hostile_copy(teacher_checkpoint, tmp_path / "evil.pt", marker)
    resume_dir = tmp_path / "resume"
    resume_dir.mkdir()
    _hostile_copy(teacher_checkpoint, resume_dir / "checkpoint_last.pt", marker)
    cases = {
        "resume": (_train_args(data_bin / "negative", resume_dir), resume_dir / "checkpoint_last.pt", "checkpoint"),
        "--restore-file": (_train_args(data_bin / "negative", tmp_path / "r", "--restore-file", bad), bad,
                           "checkpoint"),
        "--finetune-from-model": (_train_args(data_bin / "negative", tmp_path / "f", "--finetune-from-model", bad),
                                  bad, "checkpoint"),
        "--nd-teacher-path": ([*_train_args(data_bin / "full", tmp_path / "t"), "--criterion", "negative_distillation",
                            "--nd-teacher-path", bad], bad, "teacher checkpoint"),
    }
    for name, (args, path, what) in cases.items():
        proc = run_cli(args, check=False, env={FORCE_UNSAFE: "1"})
        assert not marker.exists(), name
        _assert_one_line_error(proc, _refusal("fairseq-train", path, what))
    assert not any(tmp_path.glob("[rft]/checkpoint*.pt"))  # nothing was trained or written


def test_rank_broadcast_refuses_a_hostile_object_on_the_receiving_rank(tmp_path):
    """Two real gloo ranks: rank 0 broadcasts, rank 1 unpickles (fairseq's resume path)."""
    script = tmp_path / "broadcast.py"
    script.write_text(BROADCAST_PROBE, encoding="utf-8")
    results = {}
    for mode in ("stock", "plugin"):
        marker = tmp_path / f"{mode}-payload-ran"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.run([sys.executable, str(script), mode, str(marker), str(port), str(tmp_path)],
                              capture_output=True, text=True, env=cli_env({FORCE_UNSAFE: "1", "PYTHONPATH": str(REPO)}),
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[mode] = ((tmp_path / f"{mode}.rank1").read_text(), marker.exists())
    assert results["stock"] == ("payload accepted", True)  # the hostile object is real
    assert results["plugin"] == ("normal object ok; hostile object refused", False)


BROADCAST_PROBE = r'''
import os, sys
import torch, torch.distributed as dist, torch.multiprocessing as mp

class Payload:
    def __init__(self, marker):
        self.marker = marker
    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))

def rank_main(rank, mode, marker, port, out):
    import fairseq  # noqa: F401
    if mode == "plugin":
        import nd_fairseq
        nd_fairseq.register()
    from omegaconf import OmegaConf
    from fairseq.distributed import utils as du
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    cpu = torch.device("cpu")
    normal = {"model": {"w": torch.arange(3.0)}, "cfg": OmegaConf.create({"task": {"data": "x"}}), "n": 3}
    got = du.broadcast_object(normal if rank == 0 else None, src_rank=0, group=dist.group.WORLD, dist_device=cpu)
    ok = torch.equal(got["model"]["w"], torch.arange(3.0)) and got["cfg"].task.data == "x" and got["n"] == 3
    try:
        du.broadcast_object({"payload": Payload(marker)} if rank == 0 else None, src_rank=0,
                            group=dist.group.WORLD, dist_device=cpu)
        verdict = "payload accepted"
    except Exception as err:  # the unpickler's refusal
        verdict = ("normal object ok; " if ok else "normal object BROKEN; ") + "hostile object refused"
    if rank == 1:
        with open(os.path.join(out, f"{mode}.rank1"), "w") as f:
            f.write(verdict)
    dist.destroy_process_group()

if __name__ == "__main__":
    mode, marker, port, out = sys.argv[1:5]
    mp.spawn(rank_main, args=(mode, marker, int(port), out), nprocs=2, join=True)
'''


def test_pneg_language_model_backend_refuses_a_hostile_checkpoint(teacher_checkpoint, tmp_path, monkeypatch):
    from nd_fairseq.pneg.backends import FairseqLMBackend

    marker = tmp_path / "payload-ran"
    bad = _hostile_copy(teacher_checkpoint, tmp_path / "evil.pt", marker)
    monkeypatch.setenv(FORCE_UNSAFE, "1")
    with pytest.raises(UnsafeCheckpointError, match=r"^refused to load language-model checkpoint .*evil\.pt: "
                                                    r"it contains the pickled object 'posix\.system'"):
        FairseqLMBackend(str(bad))
    assert not marker.exists()


# --- items 9 and 14: truncated, damaged, text and foreign files -----------------------------------

def _damaged_files(good, tmp_path):
    data = good.read_bytes()
    with zipfile.ZipFile(good) as archive:  # a tensor record: flip one byte in the middle of its data
        info = max(archive.infolist(), key=lambda i: i.file_size)
    with open(good, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    body = info.header_offset + 30 + name_len + extra_len
    flipped = bytearray(data)
    flipped[body + info.file_size // 2] ^= 0xFF
    files = {
        "truncated": (data[:len(data) // 2], "is truncated ({} bytes, a zip archive without its central directory: "
                                             "it was cut off while being written)".format(len(data) // 2)),
        "damaged": (bytes(flipped), f"is damaged (record {info.filename} fails its CRC check: bytes changed "
                                    f"after it was written)"),
        "text": (b"model weights are in the other folder\n", "is a text file (it starts 'model weights are in "
                                                            "the other folder'), not a checkpoint"),
        "empty": (b"", "is empty (0 bytes)"),
    }
    out = {}
    for name, (content, cause) in files.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(content)
        out[name] = (path, cause)
    return out


def test_unreadable_checkpoints_are_one_line_errors_in_the_reader(teacher_checkpoint, tmp_path):
    for name, (path, cause) in _damaged_files(teacher_checkpoint, tmp_path).items():
        with pytest.raises(CheckpointError) as err:
            read_checkpoint(str(path))
        assert str(err.value).startswith(f"checkpoint {path} {cause}"), name
        assert "\n" not in str(err.value)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match=r"holds a dict without a 'model' entry, not a fairseq checkpoint"):
        read_checkpoint(str(tmp_path / "foreign.pt"))
    assert "model" in read_checkpoint(str(teacher_checkpoint))


def test_truncated_or_damaged_teacher_restore_and_generate_files_are_one_line_errors(data_bin, teacher_checkpoint,
                                                                                     tmp_path):
    files = _damaged_files(teacher_checkpoint, tmp_path)
    for name, (path, cause) in files.items():
        proc = run_cli([*_train_args(data_bin / "full", tmp_path / "t"), "--criterion", "negative_distillation",
                        "--nd-teacher-path", path], check=False)
        _assert_one_line_error(proc, f"fairseq-train: error: teacher checkpoint {path} {cause}")
    path, cause = files["truncated"]
    for option in ("--restore-file", "--finetune-from-model"):
        proc = run_cli(_train_args(data_bin / "negative", tmp_path / "r", option, path), check=False)
        _assert_one_line_error(proc, f"fairseq-train: error: checkpoint {path} {cause}")
    path, cause = files["damaged"]
    proc = run_cli(["fairseq-generate", data_bin / "negative", "--user-dir", USER_DIR, "--path", path,
                    "--gen-subset", "test", "--batch-size", "8"], check=False)
    _assert_one_line_error(proc, f"fairseq-generate: error: checkpoint {path} {cause}")
    assert not any(tmp_path.glob("[tr]/checkpoint*.pt"))


# --- item 9: SIGKILL while checkpoints are written --------------------------------------------------

# a model whose checkpoint (with Adam state) is ~48 MB, so that copying it to checkpoint_last.pt
# takes long enough for a kill to land in the middle
KILL_MODEL = ["--arch", "transformer_nd_dialog_tiny", "--encoder-layers", "2", "--decoder-layers", "2",
              "--encoder-embed-dim", "256", "--decoder-embed-dim", "256", "--encoder-ffn-embed-dim", "1024",
              "--decoder-ffn-embed-dim", "1024", "--encoder-attention-heads", "4", "--decoder-attention-heads", "4"]


def test_sigkill_while_saving_leaves_complete_checkpoints_and_training_resumes(data_bin, tmp_path):
    save = tmp_path / "ckpt"
    args = [tool("fairseq-train"), str(data_bin / "full"), *TRAIN_COMMON, *KILL_MODEL,
            "--criterion", "label_smoothed_cross_entropy", "--max-tokens", "300", "--max-update", "1000",
            "--save-interval-updates", "1", "--keep-interval-updates", "1", "--disable-validation",
            "--no-epoch-checkpoints", "--save-dir", str(save)]
    args = [str(a) for a in args]
    landed = 0
    for attempt in range(6):
        proc = subprocess.Popen(args, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        saves = 0
        try:
            for line in proc.stdout:
                # fairseq logs this after writing the first file of a save, right before it copies
                # that file to checkpoint_last.pt: kill it there, on the second save of each run
                if b"Finished saving checkpoint" in line:
                    saves += 1
                    if saves == 2:
                        proc.send_signal(signal.SIGKILL)
                        break
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
        assert saves == 2, f"attempt {attempt}: fairseq-train ended before its second save"
        landed += any(save.glob("*.tmp"))  # the kill interrupted a write
        for path in save.glob("checkpoint*.pt"):
            read_checkpoint(str(path))  # complete: a CheckpointError here is the bug
        if landed and attempt >= 1:
            break
    last = read_checkpoint(str(save / "checkpoint_last.pt"))
    done = last["optimizer_history"][-1]["num_updates"]
    resumed = args.copy()
    resumed[resumed.index("--max-update") + 1] = str(done + 1)
    proc = run_cli(resumed)
    out = proc.stdout + proc.stderr
    assert f"Loaded checkpoint {save / 'checkpoint_last.pt'}" in out and f"@ {done} updates" in out
    assert read_checkpoint(str(save / "checkpoint_last.pt"))["optimizer_history"][-1]["num_updates"] == done + 1
    assert not list(save.glob("*.tmp"))  # the resumed run removed what the kills left
    umask = os.umask(0)
    os.umask(umask)
    assert (save / "checkpoint_last.pt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_bad_teacher_in_spawned_distributed_workers_is_one_line_too(data_bin, tmp_path):
    """fairseq spawns the ranks (--distributed-world-size 2 on CPU) and re-raises a worker's error."""
    text = tmp_path / "teacher.pt"
    text.write_text("not a checkpoint\n")
    proc = run_cli([*_train_args(data_bin / "full", tmp_path / "t"), "--cpu", "--distributed-world-size", "2",
                    "--criterion", "negative_distillation", "--nd-teacher-path", text], check=False)
    _assert_one_line_error(proc, f"fairseq-train: error: teacher checkpoint {text} is a text file (it starts "
                                 f"'not a checkpoint'), not a checkpoint; give a .pt file written by fairseq-train")
