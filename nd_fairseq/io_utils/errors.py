"""The errors of bad input and of outputs that cannot be written, as one-line messages.

:class:`InputError` is what every tool raises for a wrong option or file (its message names the
file or option and the fix; the tools report it in one line and exit with code 2);
:class:`OutputError` is its kind for an output that cannot be written.
"""

import errno
import os


class InputError(ValueError):
    """Bad user input: the message is one sentence naming the file or option and the fix."""


def require_file(path: str, what: str, hint: str = "") -> None:
    if not os.path.isfile(path):
        raise InputError(f"{what} {path} does not exist" + (f"; {hint}" if hint else ""))


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
        return OutputError(f"cannot write {path}: {file_in_the_way(path)} is a file, not a directory; "
                           f"choose another output directory")
    if err.errno == errno.EISDIR:
        return OutputError(f"cannot write {path}: it is a directory; remove it or choose another "
                           f"output directory")
    return OutputError(f"cannot write {path}: {cause}")


def file_in_the_way(path: str) -> str:
    """The nearest existing ancestor of ``path`` (or ``path``), which is expected to be a file."""
    existing = os.path.abspath(path)
    while not os.path.lexists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    return existing
