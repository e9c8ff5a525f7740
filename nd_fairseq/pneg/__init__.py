"""PNEG (Lee et al., 2022): prompt-based adversarial negative responses and response-selection rankers.

Pipeline (``nd-pneg`` subcommands in brackets):

* :mod:`.data`: DailyDialog++ JSON lines and nd-prepare's query/response pairs;
* :mod:`.prompt`: the Appendix G prompt and the I_dir / I_pos / I_imp instructions [prompt];
* :mod:`.backends`: OpenAI-compatible completions servers and local fairseq LMs;
* :mod:`.parse`: parsing the five numbered negatives and the Appendix F error filter [filter];
* :mod:`.generate`: resumable, concurrent generation with regeneration on rejection [generate];
* :mod:`.retrieval`, :mod:`.candidates`: BM25 negatives and the candidate sets [build-candidates];
* :mod:`.ranker`, :mod:`.metrics`: a fairseq ranker, R@1 and MRR [rank-benchmark];
* :mod:`.benchmark`: one ranker per negative source and the report (Table 1) [rank-benchmark];
* :mod:`.shortcuts`: trivial baselines (shortest, longest, overlap, random) and length profiles
  that the benchmark report sets beside the rankers [rank-benchmark];
* :mod:`.export`: negatives aligned with a training set, for the ND criterion [export-negatives];
* :mod:`.cli` (the commands, ``main``) and :mod:`.options` (the parser): ``nd-pneg`` itself.

Importing this package imports neither fairseq nor torch; the ranker and the fairseq-LM backend
import them when used.
"""

from .data import Example, load_examples, read_dailydialog_pp, read_pairs, write_dailydialog_pp  # noqa: F401
from .metrics import mrr, positive_rank, recall_at_1, selection_metrics  # noqa: F401
from .prompt import PromptConfig, build_prompt, make_prompt  # noqa: F401

__all__ = ["Example", "load_examples", "read_dailydialog_pp", "read_pairs", "write_dailydialog_pp", "mrr",
           "positive_rank", "recall_at_1", "selection_metrics", "PromptConfig", "build_prompt", "make_prompt"]
