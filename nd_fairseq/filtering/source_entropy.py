"""Compatibility module: the names that ``nd_fairseq.filtering.source_entropy`` held before the
filter was split, re-exported from their homes (new code imports from those, or from
:mod:`nd_fairseq.filtering`):

- :mod:`nd_fairseq.filtering.keys`: the grouping keys (``--key``);
- :mod:`nd_fairseq.filtering.hashing`: 64-bit hashes of the keys, a block at a time;
- :mod:`nd_fairseq.filtering.entropy`: Eq. 4 (:func:`~nd_fairseq.filtering.entropy.conditional_entropy`);
- :mod:`nd_fairseq.filtering.cut`: the top/bottom cut;
- :mod:`nd_fairseq.filtering.memory_scoring`: H_src and H_tgt of in-memory lists;
- :mod:`nd_fairseq.filtering.scored_corpus` and :mod:`nd_fairseq.filtering.file_scoring`: scoring
  files out of core.

The tuning constants (``BUCKET_LINES``, ``HASH_BLOCK_BYTES``, ``CHUNK_LINES``, ``LARGE_BUCKET``)
are copies here: set them on :mod:`nd_fairseq.filtering.file_scoring`. The reference key
functions (``key_function``, ``block_key_function``, ``normalize_block``) that only the tests used
now live with the tests (``tests/key_reference.py``).
"""

from .cut import (  # noqa: F401
    Selector,
    bottom_count,
    bottom_selector,
    check_ratio,
    select_indices,
    selectors_for,
    threshold_selectors,
    top_count,
    top_selector,
)
from .entropy import (  # noqa: F401
    RADIX_PASSES,
    SNAP_DECIMALS,
    GroupEntropy,
    conditional_entropy,
    group_entropy,
    log_base,
)
from .file_scoring import BUCKET_LINES, CHUNK_LINES, HASH_BLOCK_BYTES, LARGE_BUCKET, hash_file, score_files  # noqa: F401
from .hashing import block_hashes, hash_keys, hash_spans  # noqa: F401
from .keys import BLOCK_PATH_SHARE, KEY_CHOICES, line_bounds, normalize_line, parse_key  # noqa: F401
from .memory_scoring import source_entropy, target_entropy  # noqa: F401
from .scored_corpus import ScoredCorpus, weighted_median  # noqa: F401
