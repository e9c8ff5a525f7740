"""Atomic writing: outputs appear together or not at all, and scratch space a killed run left is reclaimed.

Every tool of the plugin writes its outputs through :class:`AtomicFiles`, so an interrupted or
failed run never leaves a half-written file where a finished one is expected.
"""

import contextlib
import os
import shutil
import stat
import tempfile
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from .errors import NO_SPACE_ERRNOS, OutputError, file_in_the_way, output_error

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: scratch directories are not locked
    fcntl = None


def check_output_dir(directory: str, option: str = "--out-dir") -> None:
    """Fail early, with :class:`OutputError`, when outputs cannot be written in ``directory``.

    Tries for real (a file is created and removed in the nearest existing ancestor), because
    permission bits do not tell: root ignores them, a read-only mount does not show them.
    """
    existing = file_in_the_way(directory)
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
