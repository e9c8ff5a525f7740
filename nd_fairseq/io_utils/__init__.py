"""File helpers shared by the command-line tools: strict UTF-8 reading and atomic writing.

* :mod:`.errors`: :class:`InputError` (bad input, one line naming the file or option and the fix),
  :class:`OutputError`, :func:`output_error`, :func:`require_file`, :data:`NO_SPACE_ERRNOS`;
* :mod:`.lines`: reading UTF-8 text files line by line, in blocks (:func:`iter_line_blocks`,
  :func:`iter_numbered_lines`, :func:`iter_line_buffers`, :func:`read_lines`, :func:`count_lines`, :func:`check_aligned`);
* :mod:`.outputs`: writing (:class:`AtomicFiles`, :func:`write_lines_atomic`,
  :func:`check_output_dir`) and locked scratch space (:class:`ScratchDir`);
* :mod:`.workers`: processes (:func:`usable_cores`, :func:`default_jobs`, :func:`run_parallel`).

Every tool of the plugin writes its outputs through :class:`AtomicFiles`, so an interrupted or
failed run never leaves a half-written file where a finished one is expected. Nothing here
imports fairseq or torch.
"""

from .errors import NO_SPACE_ERRNOS, InputError, OutputError, output_error, require_file
from .lines import (UTF8_BOM, check_aligned, count_lines, decode_utf8, iter_line_blocks, iter_line_buffers,
                    iter_numbered_lines, read_lines)
from .outputs import (COMMIT_LIST, STAGING_PREFIX, AtomicFiles, ScratchDir, check_output_dir, remove_stale_scratch,
                      write_lines_atomic)
from .workers import default_jobs, run_parallel, usable_cores

__all__ = [
    "NO_SPACE_ERRNOS", "InputError", "OutputError", "output_error", "require_file",
    "UTF8_BOM", "check_aligned", "count_lines", "decode_utf8", "iter_line_blocks", "iter_line_buffers",
    "iter_numbered_lines", "read_lines",
    "COMMIT_LIST", "STAGING_PREFIX", "AtomicFiles", "ScratchDir", "check_output_dir", "remove_stale_scratch",
    "write_lines_atomic",
    "default_jobs", "run_parallel", "usable_cores",
]
