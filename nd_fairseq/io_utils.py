"""File helpers shared by the command-line tools: strict UTF-8 reading and atomic writing.

Every tool of the plugin writes its outputs through :class:`AtomicFiles`, so an interrupted or
failed run never leaves a half-written file where a finished one is expected.
"""

import contextlib
import multiprocessing
import os
import tempfile
from typing import Any, Callable, Dict, Iterable, Iterator, List, Sequence, Tuple


class InputError(ValueError):
    """Bad user input: the message is one sentence naming the file or option and the fix."""


def decode_utf8(data: bytes, path: str, first_line: int = 1) -> str:
    """Decode ``data`` as UTF-8, or raise :class:`InputError` naming ``path`` and the line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = first_line + data.count(b"\n", 0, err.start)
        raise InputError(
            f"{path}: line {line} is not valid UTF-8 (byte {data[err.start]:#04x}); "
            f"re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def iter_line_blocks(path: str, block_bytes: int = 1 << 23) -> Iterator[List[str]]:
    """Yield the lines of a UTF-8 text file in blocks (lists of str without the newline).

    Lines are split on ``\\n`` only (``\\r\\n`` is accepted), never on the other Unicode line
    separators, so line numbers agree with ``wc -l`` and with fairseq-preprocess.
    """
    line_no = 1
    rest = b""
    with open(path, "rb") as f:
        while True:
            data = f.read(block_bytes)
            if not data:
                break
            data = rest + data
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 1:]
            text = decode_utf8(data[:cut], path, line_no)
            lines = text.split("\n")
            line_no += len(lines)
            if "\r" in text:
                lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
            yield lines
    if rest:
        text = decode_utf8(rest, path, line_no)
        yield [text[:-1] if text.endswith("\r") else text]


def _line_of_offset(path: str, offset: int) -> int:
    """1-based number of the line holding byte ``offset`` of ``path``."""
    n = 1
    with open(path, "rb") as f:
        while offset > 0:
            data = f.read(min(offset, 1 << 24))
            if not data:
                break
            n += data.count(b"\n")
            offset -= len(data)
    return n


def iter_line_buffers(path: str, block_bytes: int = 1 << 23, validate: bool = True
                      ) -> Iterator[Tuple[bytes, int]]:
    """Yield ``(data, size)``: ``data[:size]`` is the next block of whole lines of a file.

    The block holds the lines joined by ``\n``, without the newline after the last one, so
    ``data[:size].split(b"\n")`` are exactly the lines that :func:`iter_line_blocks` yields
    (encoded): ``\r\n`` counts as ``\n`` and one ``\r`` before a newline (or at the end of the
    file) is dropped. ``data`` is what was read (the block is not copied out of it: each read
    starts at a line boundary, the tail after the block is read again). With ``validate`` each
    block is checked to be UTF-8 and :class:`InputError` names the file and line otherwise.
    """
    offset = 0  # of the block in the file
    with open(path, "rb") as f:
        while True:
            data = f.read(block_bytes)
            if not data:
                return
            cut = data.rfind(b"\n")
            while cut < 0 and len(data) >= block_bytes:  # a line longer than a block
                more = f.read(block_bytes)
                if not more:
                    break
                data += more
                cut = data.rfind(b"\n")
            size = cut if cut >= 0 else len(data)
            if size + 1 < len(data):
                f.seek(size + 1 - len(data), 1)
            if validate and not data.isascii():
                _validate(memoryview(data)[:size], path, offset)
            offset += size + 1
            if b"\r" in data:
                data = data[:size].replace(b"\r\n", b"\n")
                size = len(data) - data.endswith(b"\r")
            yield data, size
            if cut < 0:
                return


def _validate(block, path: str, offset: int) -> None:
    """Raise :class:`InputError` (file and line) unless ``block`` (bytes-like) is UTF-8.

    A multi-byte UTF-8 character is made of bytes >= 0x80 only, so a block is valid exactly when
    each maximal run of such bytes is: those runs are decoded (together), not the whole block,
    which for mostly-ASCII text is several times faster than decoding it.
    """
    import numpy as np  # here, not at the top: the tools that read only str do not need it

    high = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) >= 0x80)
    try:
        if high.size * 8 > len(block):
            str(block, "utf-8")
        elif high.size:
            cut = np.flatnonzero(np.diff(high) > 1)
            starts = high[np.concatenate(([0], cut + 1))].tolist()
            ends = (high[np.concatenate((cut, [high.size - 1]))] + 1).tolist()
            str(b"\n".join([block[a:b] for a, b in zip(starts, ends)]), "utf-8")
    except UnicodeDecodeError:
        decode_utf8(bytes(block), path, _line_of_offset(path, offset))
        raise AssertionError("unreachable")  # pragma: no cover - decode_utf8 raised


def read_lines(path: str) -> List[str]:
    """All lines of a UTF-8 file (strict), without newlines."""
    out: List[str] = []
    for block in iter_line_blocks(path):
        out.extend(block)
    return out


def count_lines(path: str) -> int:
    """Number of lines, counting a last line without a trailing newline."""
    n = 0
    last = b"\n"
    with open(path, "rb") as f:
        while True:
            data = f.read(1 << 24)
            if not data:
                break
            n += data.count(b"\n")
            last = data[-1:]
    return n + (last != b"\n")


def require_file(path: str, what: str, hint: str = "") -> None:
    if not os.path.isfile(path):
        raise InputError(f"{what} {path} does not exist" + (f"; {hint}" if hint else ""))


class AtomicFiles:
    """Open several output files as temporaries and rename them into place together on success.

    >>> with AtomicFiles(out_dir) as out:
    ...     f = out.open("scores.txt")
    ...     f.write("...")
    # on an exception nothing named scores.txt is created (an existing one is kept as it was)
    """

    def __init__(self, directory: str):
        self.directory = directory
        self._files: Dict[str, object] = {}
        self._tmp: Dict[str, str] = {}

    def __enter__(self) -> "AtomicFiles":
        os.makedirs(self.directory, exist_ok=True)
        return self

    def open(self, name: str, mode: str = "w"):
        final = os.path.join(self.directory, name)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.directory)
        f = os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8",
                      newline=None if "b" in mode else "\n")
        self._files[final] = f
        self._tmp[final] = tmp
        return f

    def temp_path(self, name: str) -> str:
        """Path of a new empty temporary file that becomes ``name`` on success (like :meth:`open`).

        For outputs written by another process, which opens the path itself.
        """
        final = os.path.join(self.directory, name)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.directory)
        os.close(fd)
        self._tmp[final] = tmp
        return tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        for f in self._files.values():
            with contextlib.suppress(Exception):
                f.close()
        if exc_type is None:
            for final, tmp in self._tmp.items():
                os.replace(tmp, final)
        else:
            for tmp in self._tmp.values():
                with contextlib.suppress(FileNotFoundError):
                    os.remove(tmp)


def write_lines_atomic(path: str, lines: Iterable[str]) -> None:
    """Write ``lines`` (one per line) to ``path`` through a temporary file and a rename."""
    directory, name = os.path.split(os.path.abspath(path))
    with AtomicFiles(directory) as out:
        f = out.open(name)
        for line in lines:
            f.write(line)
            f.write("\n")


def check_aligned(paths: Sequence[str]) -> int:
    """Return the common line count of ``paths`` or raise naming the files and their counts."""
    counts = [count_lines(p) for p in paths]
    if len(set(counts)) > 1:
        desc = ", ".join(f"{p} has {c} lines" for p, c in zip(paths, counts))
        raise InputError(f"misaligned inputs: {desc}; each line of one must pair with the same line of the other")
    return counts[0] if counts else 0


# Parallel work ----------------------------------------------------------------------------------


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_jobs() -> int:
    """Processes a tool may use by default: the usable cores, at most 2."""
    return max(1, min(2, usable_cores()))


def _child_main(conn, fn: Callable, args: tuple) -> None:
    try:
        result: Tuple[bool, Any] = (True, fn(*args))
    except BaseException as err:  # handed to the parent, which raises it
        result = (False, err)
    try:
        conn.send(result)
    except Exception as err:  # an unpicklable result or exception
        conn.send((False, RuntimeError(f"worker failed: {err!r}")))
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
            proc = ctx.Process(target=_child_main, args=(send, fn, args), daemon=True)
            proc.start()
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
