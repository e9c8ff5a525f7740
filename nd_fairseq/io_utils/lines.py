"""Strict UTF-8 reading of line-aligned text files, in blocks, with the file and line in every error."""

from typing import Iterator, List, Sequence, Tuple

from .errors import InputError


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


def iter_numbered_lines(path: str) -> Iterator[Tuple[int, str]]:
    """``(line number, line)`` for every line of ``path``, numbered from 1 as :func:`iter_line_blocks`
    splits them: the numbers the one-line errors of the readers name."""
    line_no = 0
    for block in iter_line_blocks(path):
        for line in block:
            line_no += 1
            yield line_no, line


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


def check_aligned(paths: Sequence[str]) -> int:
    """Return the common line count of ``paths`` or raise naming the files and their counts."""
    counts = [count_lines(p) for p in paths]
    if len(set(counts)) > 1:
        desc = ", ".join(f"{p} has {c} lines" for p, c in zip(paths, counts))
        raise InputError(f"misaligned inputs: {desc}; each line of one must pair with the same line of the other")
    return counts[0] if counts else 0
