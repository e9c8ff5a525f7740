"""File helpers shared by the command-line tools: strict UTF-8 reading and atomic writing.

Every tool of the plugin writes its outputs through :class:`AtomicFiles`, so an interrupted or
failed run never leaves a half-written file where a finished one is expected.
"""

import contextlib
import os
import tempfile
from typing import Dict, Iterable, Iterator, List, Sequence


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
