"""Parallel work of the tools: how many processes to use, and calls run in forked workers."""

import multiprocessing
import os
import signal
from typing import Any, Callable, List, Sequence, Tuple


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_jobs() -> int:
    """Processes a tool may use by default: the usable cores, at most 2."""
    return max(1, min(2, usable_cores()))


def _die_with_parent(parent: int) -> None:
    """Make this forked worker exit when its parent process dies, however it dies.

    Linux delivers SIGKILL to the worker when the parent exits (``PR_SET_PDEATHSIG``); a parent
    that died before that took effect is caught by comparing the parent's pid.
    """
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux: the pipes still break
        pass
    if os.getppid() != parent:
        os._exit(1)


def _child_main(conn, fn: Callable, args: tuple, parent: int = 0, inherited: Sequence = ()) -> None:
    if parent:
        _die_with_parent(parent)
        # Ctrl-C reaches the whole process group: the parent alone handles it (and stops the
        # workers with SIGTERM, which must then end them whatever handler the parent installed)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})  # blocked across the fork
    # The read ends of the pipes were inherited by the fork: holding them, a worker whose parent
    # died would block forever writing a large result into its own pipe instead of failing.
    for reader in inherited:
        reader.close()
    try:
        result: Tuple[bool, Any] = (True, fn(*args))
    except BaseException as err:  # handed to the parent, which raises it
        result = (False, err)
    try:
        try:
            conn.send(result)
        except (BrokenPipeError, ConnectionResetError):
            return  # the parent stopped listening (interrupted or failed): nobody needs the result
        except Exception as err:  # an unpicklable result or exception
            conn.send((False, RuntimeError(f"worker failed: {err!r}")))
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        conn.close()


def run_parallel(calls: Sequence[Tuple[Callable, tuple]], jobs: int) -> List[Any]:
    """Run ``fn(*args)`` for each call and return the results in order.

    With ``jobs`` > 1 (and the ``fork`` start method, i.e. on Linux) ``calls[1:]`` run in forked
    child processes while ``calls[0]`` runs here; otherwise all run here, one after the other.
    Children inherit the parent's memory, so arguments are not copied; results come back pickled.
    An exception raised by a call is raised here (the first in call order).
    """
    calls = list(calls)
    if jobs <= 1 or len(calls) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [fn(*args) for fn, args in calls]
    if len(calls) > jobs:
        out: List[Any] = []
        for a in range(0, len(calls), jobs):
            out.extend(run_parallel(calls[a:a + jobs], jobs))
        return out
    ctx = multiprocessing.get_context("fork")
    children = []
    finished = False
    try:
        for fn, args in calls[1:]:
            recv, send = ctx.Pipe(duplex=False)
            readers = [r for _, r in children] + [recv]
            proc = ctx.Process(target=_child_main, args=(send, fn, args, os.getpid(), readers), daemon=True)
            # SIGINT and SIGTERM are blocked across the fork: one sent in that instant stays pending in
            # the child until it has its own dispositions (SIGINT ignored, SIGTERM the default), so
            # no handler inherited from this process runs there; here it arrives right after
            masked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            try:
                proc.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, masked)
            send.close()
            children.append((proc, recv))
        results: List[Any] = [calls[0][0](*calls[0][1])]
        failure = None
        for proc, recv in children:
            try:
                ok, value = recv.recv()
            except EOFError:
                proc.join()
                ok, value = False, RuntimeError(f"a worker process died (exit code {proc.exitcode})")
            if not ok and failure is None:
                failure = value
            results.append(value)
        finished = True
        if failure is not None:
            raise failure
        return results
    finally:
        for proc, recv in children:
            if not finished:  # this process failed: the children's work is not needed
                proc.terminate()
            proc.join()
            recv.close()
