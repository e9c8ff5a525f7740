"""The tests' own runner (conftest.run_cli): a command that runs past its time-out is stopped with
every process it started, so a timed-out pipeline leaves no fairseq run behind."""

import os
import subprocess
import time

import pytest

from conftest import run_cli


def test_a_timed_out_command_leaves_no_process_behind(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    # bash starts a grandchild in the background, records its pid, and waits on it
    script = f"sleep 300 & echo $! > {pid_file}; wait"
    with pytest.raises(subprocess.TimeoutExpired):
        run_cli(["/bin/bash", "-c", script], timeout=2)
    pid = int(pid_file.read_text())
    for _ in range(50):  # SIGKILL is delivered at once; its parent, init, reaps it soon after
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        if open(f"/proc/{pid}/stat").read().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        raise AssertionError(f"the background sleep {pid} outlived run_cli's time-out")


def test_output_and_exit_code_come_back():
    proc = run_cli(["/bin/bash", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "out\n", "err\n")
    with pytest.raises(AssertionError, match=r"command failed \(3\)"):
        run_cli(["/bin/bash", "-c", "exit 3"])
