"""CPU thread count for training and generation on a shared machine.

torch starts one intra-op thread per core. When other processes keep cores busy, those threads
spin waiting for each other (OpenMP) and an update gets several times slower than with fewer
threads: measured on 2 cores beside one busy 2-thread process (benchmarks/bench_fairseq_cpu.py),
a tiny fairseq update took 2.33x its idle time with 2 threads, 1.35x with 1 thread.

So on a machine without CUDA, unless the user chose (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` or
``ND_THREADS`` set), the plugin samples the machine's CPU use for 0.2 s when it is loaded and gives
torch the cores that are free: ``round(available cores - busy cores)``, at least 1 and at most
torch's default. ``ND_THREADS=N`` sets the count; ``ND_THREADS=0`` leaves torch's default alone.
"""

import logging
import os
import time
from typing import Optional

from ..io_utils import usable_cores

logger = logging.getLogger(__name__)


def _cpu_times():
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    values = [int(x) for x in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values[:8]), idle


def busy_cores(interval: float = 0.2) -> Optional[float]:
    """Cores' worth of CPU time other processes used over ``interval`` seconds (None off Linux)."""
    try:
        total0, idle0 = _cpu_times()
        time.sleep(interval)
        total1, idle1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    ncpu = os.cpu_count() or 1
    total = total1 - total0
    if total <= 0:
        return None
    return ncpu * (1.0 - (idle1 - idle0) / total)


def choose_threads(default: int, available: int, busy: Optional[float]) -> int:
    """The free cores, between 1 and torch's default."""
    if busy is None:
        return default
    free = int(round(available - busy))
    return max(1, min(default, free))


def configure() -> Optional[int]:
    """Set torch's thread count as described above; returns the count set (None if untouched)."""
    import torch

    if torch.cuda.is_available():
        return None
    explicit = os.environ.get("ND_THREADS")
    if explicit is not None:
        try:
            n = int(explicit)
        except ValueError:
            logger.warning("ND_THREADS=%r is not a number; left torch's thread count alone", explicit)
            return None
        if n > 0:
            torch.set_num_threads(n)
            return n
        return None
    if "OMP_NUM_THREADS" in os.environ or "MKL_NUM_THREADS" in os.environ:
        return None
    default = torch.get_num_threads()
    if default <= 1:
        return None
    available = usable_cores()
    n = choose_threads(default, available, busy_cores())
    if n != default:
        torch.set_num_threads(n)
        logger.info("other processes keep %d of %d cores busy: using %d torch threads (set ND_THREADS to "
                    "choose)", available - n, available, n)
    return n
