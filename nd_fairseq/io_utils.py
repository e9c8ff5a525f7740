"""File helpers shared by the command-line tools: strict UTF-8 reading and atomic writing.

Every tool of the plugin writes its outputs through :class:`AtomicFiles`, so an interrupted or
failed run never leaves a half-written file where a finished one is expected.
"""

import contextlib
import errno
import multiprocessing
import os
import shutil
import signal
import stat
import tempfile
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple


class InputError(ValueError):
    """Bad user input: the message is one sentence naming the file or option and the fix."""


#: Editors on Windows start UTF-8 files with it; it is no part of the text (a first utterance
#: that kept it would be a different utterance from the same words elsewhere).
UTF8_BOM = b"\xef\xbb\xbf"


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
    separators, so line numbers agree with ``wc -l`` and with fairseq-preprocess. A UTF-8 byte
    order mark at the start of the file is not part of the first line.
    """
    line_no = 1
    rest = b""
    first = True
    with open(path, "rb") as f:
        while True:
            data = f.read(block_bytes)
            if not data:
                break
            data = rest + data
            if first and not UTF8_BOM.startswith(data):  # else: too short to tell yet
                first = False
                if data.startswith(UTF8_BOM):
                    data = data[len(UTF8_BOM):]
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
    if first and rest.startswith(UTF8_BOM):  # a file shorter than one block
        rest = rest[len(UTF8_BOM):]
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
            if offset == 0 and data.startswith(UTF8_BOM):  # not part of the first line
                data, size, offset = data[len(UTF8_BOM):], size - len(UTF8_BOM), len(UTF8_BOM)
                if cut < 0 and not size:  # the file holds nothing else
                    return
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


# Output side ------------------------------------------------------------------------------------

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: scratch directories are not locked
    fcntl = None

#: errno values that mean the disk (or the quota, or the process's file size limit) is full.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)})


class OutputError(InputError):
    """An output cannot be written: the message names the path, the cause and the fix."""


def output_error(err: OSError, path: str) -> OutputError:
    """The one-line :class:`OutputError` for an ``OSError`` met while writing ``path``."""
    cause = err.strerror or str(err)
    if err.errno in NO_SPACE_ERRNOS:
        return OutputError(f"cannot write {path}: {cause} (the disk is full, or a quota or file size "
                           f"limit was reached); free some space or write to another directory")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"cannot write {path}: {cause}; choose a directory you can write to")
    if err.errno in (errno.ENOTDIR, errno.EEXIST):
        return OutputError(f"cannot write {path}: {_file_in_the_way(path)} is a file, not a directory; "
                           f"choose another output directory")
    if err.errno == errno.EISDIR:
        return OutputError(f"cannot write {path}: it is a directory; remove it or choose another "
                           f"output directory")
    return OutputError(f"cannot write {path}: {cause}")


def _file_in_the_way(path: str) -> str:
    """The nearest existing ancestor of ``path`` (or ``path``), which is expected to be a file."""
    existing = os.path.abspath(path)
    while not os.path.lexists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    return existing


def check_output_dir(directory: str, option: str = "--out-dir") -> None:
    """Fail early, with :class:`OutputError`, when outputs cannot be written in ``directory``.

    Tries for real (a file is created and removed in the nearest existing ancestor), because
    permission bits do not tell: root ignores them, a read-only mount does not show them.
    """
    existing = _file_in_the_way(directory)
    if not os.path.isdir(existing):
        raise OutputError(f"{option} {directory}: {existing} is a file, not a directory; choose "
                          f"another {option}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".nd-write-test-", dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise output_error(err, directory) from None


def remove_stale_scratch(parent: str, prefix: str, finish: Optional[Callable[[str], None]] = None) -> None:
    """Remove the directories named ``prefix*`` inside ``parent`` of runs that were killed (see :class:`ScratchDir`).

    A live run holds a lock on its directory, so only directories nobody holds are removed;
    ``finish(path)`` is called on each (holding its lock) before it is removed.
    """
    if fcntl is None:  # pragma: no cover
        return
    try:
        names = [n for n in os.listdir(parent) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        path = os.path.join(parent, name)
        try:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                continue
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live run's
            os.close(fd)
            continue
        try:
            if finish is not None:
                with contextlib.suppress(OSError):
                    finish(path)
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)


class ScratchDir:
    """A private temporary directory, locked (``flock``) for as long as it is in use.

    The lock goes with the process (and the workers it forks): a run that is killed leaves its
    directory unlocked, and the next run in the same place removes it. Like
    ``tempfile.TemporaryDirectory``: :attr:`name` and :meth:`cleanup`.
    """

    def __init__(self, parent: str, prefix: str, finish: Optional[Callable[[str], None]] = None):
        remove_stale_scratch(parent, prefix, finish)
        self._fd: Optional[int] = None
        while True:
            path = tempfile.mkdtemp(prefix=prefix, dir=parent)
            if fcntl is None:  # pragma: no cover
                break
            fd = os.open(path, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits while another run is removing it as stale
            try:
                if os.path.samestat(os.fstat(fd), os.stat(path)):
                    self._fd = fd
                    break
            except FileNotFoundError:
                pass
            os.close(fd)  # it was removed before it was locked: make another
        self.name = path

    def cleanup(self) -> None:
        if self.name is None:
            return
        shutil.rmtree(self.name, ignore_errors=True)
        self.name = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "ScratchDir":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()


#: Name prefix of the directory in which :class:`AtomicFiles` builds its outputs.
STAGING_PREFIX = ".nd-staging-"
#: In a staging directory: the names being renamed into place (written before the first rename).
COMMIT_LIST = ".commit"


def _finish_commit(staging: str) -> None:
    """Rename into place what a killed :class:`AtomicFiles` commit had not renamed yet."""
    try:
        with open(os.path.join(staging, COMMIT_LIST), encoding="utf-8") as f:
            names = f.read().split("\n")
    except FileNotFoundError:  # killed before the commit: nothing of it is in place
        return
    for name in names:
        staged = os.path.join(staging, name)
        if name and os.path.exists(staged):
            os.replace(staged, os.path.join(os.path.dirname(staging), name))


class AtomicFiles:
    """Write several output files of one directory so that they appear together or not at all.

    >>> with AtomicFiles(out_dir) as out:
    ...     f = out.open("scores.txt")
    ...     f.write("...")
    # on an exception nothing named scores.txt is created (an existing one is kept as it was)

    The files are built in a hidden staging directory inside ``directory`` (:data:`STAGING_PREFIX`)
    and renamed into place on success. The old files are kept (hard-linked) until every rename
    has succeeded, so when one fails, the ones already renamed are put back: the directory then
    holds exactly the files of the previous run. A staging directory left by a killed run is
    removed by the next one writing there; a run killed while renaming leaves the list of its
    outputs, and the next one completes those renames first, so the directory holds either run's
    files, never a mix of both. Files get the permissions of a plain ``open(path, "w")``: the
    umask's for a new file, the existing file's own for a replaced one.

    ``OSError`` while creating or renaming the outputs, or a full disk while writing them, is
    raised as :class:`OutputError` naming the path.
    """

    def __init__(self, directory: str):
        self.directory = directory
        self._files: List[object] = []
        self._names: List[str] = []
        self._staging: Optional[ScratchDir] = None
        self._made_dir: Optional[str] = None  # the topmost directory this created

    def __enter__(self) -> "AtomicFiles":
        directory = os.path.abspath(self.directory)
        try:
            top = directory
            while not os.path.lexists(os.path.dirname(top)) and os.path.dirname(top) != top:
                top = os.path.dirname(top)
            made = not os.path.lexists(top)
            os.makedirs(directory, exist_ok=True)
            if made:
                self._made_dir = top
            self._staging = ScratchDir(directory, STAGING_PREFIX, finish=_finish_commit)
        except OSError as err:
            self._discard()
            raise output_error(err, self.directory) from None
        return self

    def _new(self, name: str) -> str:
        if os.path.basename(name) != name or name in self._names:
            raise ValueError(f"{name!r} must be a new plain file name of {self.directory}")
        self._names.append(name)
        return os.path.join(self._staging.name, name)

    def open(self, name: str, mode: str = "w"):
        path = self._new(name)
        try:
            f = open(path, mode, encoding=None if "b" in mode else "utf-8",
                     newline=None if "b" in mode else "\n")
        except OSError as err:
            raise output_error(err, os.path.join(self.directory, name)) from None
        self._files.append(f)
        return f

    def temp_path(self, name: str) -> str:
        """Path of a new empty temporary file that becomes ``name`` on success (like :meth:`open`).

        For outputs written by another process, which opens the path itself.
        """
        path = self._new(name)
        try:
            open(path, "wb").close()
        except OSError as err:
            raise output_error(err, os.path.join(self.directory, name)) from None
        return path

    def _commit(self) -> None:
        """Rename every staged file into place, or (on a failure) none."""
        keep = os.path.join(self._staging.name, ".old")
        commit_list = os.path.join(self._staging.name, COMMIT_LIST)
        done: List[Tuple[str, Optional[str]]] = []  # (final path, its old file's copy or None)
        final = self.directory
        try:
            os.mkdir(keep)
            olds: Dict[str, str] = {}
            for name in self._names:  # keep each file about to be replaced, and its mode
                final = os.path.join(self.directory, name)
                try:
                    st = os.stat(final)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    os.chmod(os.path.join(self._staging.name, name), stat.S_IMODE(st.st_mode))
                    olds[name] = os.path.join(keep, name)
                    try:
                        os.link(final, olds[name])
                    except OSError:  # a file system without hard links
                        shutil.copy2(final, olds[name])
            with open(commit_list + ".tmp", "w", encoding="utf-8") as f:
                f.write("\n".join(self._names))
            os.replace(commit_list + ".tmp", commit_list)  # from here on a killed run is completed
            for name in self._names:
                final = os.path.join(self.directory, name)
                os.replace(os.path.join(self._staging.name, name), final)
                done.append((final, olds.get(name)))
        except BaseException as err:
            with contextlib.suppress(OSError):
                os.remove(commit_list)  # a kill while undoing must not complete the rest
            for path, old in reversed(done):  # put the previous outputs back
                with contextlib.suppress(OSError):
                    if old is None:
                        os.remove(path)
                    else:
                        os.replace(old, path)
            if isinstance(err, OSError):
                raise output_error(err, final) from None
            raise

    def _discard(self) -> None:
        if self._staging is not None:
            self._staging.cleanup()
            self._staging = None
        if self._made_dir is not None:  # nothing was written: leave no empty directories behind
            path = os.path.abspath(self.directory)
            while True:
                try:
                    os.rmdir(path)
                except OSError:
                    break
                if path == self._made_dir:
                    break
                path = os.path.dirname(path)
            self._made_dir = None

    def __exit__(self, exc_type, exc, tb) -> None:
        closing: Optional[OSError] = None
        for f in self._files:
            try:
                f.close()  # flushes: a full disk may show only now
            except OSError as err:
                closing = closing or err
            except Exception:  # pragma: no cover - the exception in flight says more
                pass
        if exc_type is None and closing is None:
            try:
                self._commit()
            except BaseException:
                self._discard()
                raise
            self._made_dir = None
            self._discard()
            return
        self._discard()
        err = exc if exc_type is not None else closing
        if isinstance(err, OSError) and (err.errno in NO_SPACE_ERRNOS or exc_type is None):
            raise output_error(err, self.directory) from None


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
