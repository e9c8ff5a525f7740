"""Source-entropy scoring and the negative-set cut (script side and in-fairseq dataset filter).

One module per step, from the bottom up: ``keys`` (what counts as the same utterance),
``hashing`` (64-bit hashes of the keys), ``entropy`` (Eq. 4), ``cut`` (top/bottom sets),
``memory_scoring`` (in-memory lists), ``scored_corpus`` and ``file_scoring`` (files, out of
core), ``auto_key`` (``--key auto``), ``cli`` (nd-filter), ``subset_dataset`` (the cut inside
fairseq); ``source_entropy`` re-exports the names it held before the split.
"""

# The compatibility module first: importing it binds the package attribute ``source_entropy`` to
# the module, and the import below rebinds it to the function, as before the split, whatever is
# imported later.
from . import source_entropy as _source_entropy_module  # noqa: F401
from .cut import Selector, select_indices, selectors_for  # noqa: F401
from .entropy import GroupEntropy, conditional_entropy, group_entropy, log_base  # noqa: F401
from .file_scoring import score_files  # noqa: F401
from .hashing import block_hashes, hash_keys  # noqa: F401
from .keys import KEY_CHOICES, normalize_line, parse_key  # noqa: F401
from .memory_scoring import source_entropy, target_entropy  # noqa: F401
from .scored_corpus import ScoredCorpus  # noqa: F401
