"""The CPU thread count the plugin picks on a shared machine."""

import os
import subprocess
import sys

from nd_fairseq.compat.threads import busy_cores, choose_threads


def test_choose_threads_by_hand():
    assert choose_threads(2, 2, 0.1) == 2      # idle machine: torch's default
    assert choose_threads(2, 2, 1.0) == 1      # one core busy elsewhere
    assert choose_threads(2, 2, 1.9) == 1      # never below 1
    assert choose_threads(8, 8, 3.4) == 5      # 4.6 free cores -> 5
    assert choose_threads(4, 16, 0.0) == 4     # never above torch's default
    assert choose_threads(2, 2, None) == 2     # unknown load: leave it


def test_busy_cores_sees_a_busy_process():
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = busy_cores(0.5)
    finally:
        spin.kill()
        spin.wait()
    assert busy is not None and 0.8 <= busy <= (os.cpu_count() or 1) + 0.01


def test_env_override_and_respect_for_omp_num_threads():
    code = ("import torch, nd_fairseq.compat.threads as t; torch.set_num_threads(2); "
            "print(t.configure(), torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ND_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env={**env, "ND_THREADS": "1"}, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["1", "1"]
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_NUM_THREADS": "2"}, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["None", "2"]
