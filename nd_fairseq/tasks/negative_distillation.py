"""Task ``negative_distillation``: query → response translation with the progressive α schedule.

A ``translation`` task (same data layout, same generation) that

* gives the criterion α(s) = λ e^-z / (e^-z + 1)^2, z = β (s - γ) for update s (Eq. 15-16), or a
  fixed α (Table 8). α is a pure function of the update number, so a resumed run continues the
  schedule exactly;
* can train on the top or bottom fraction of the training pairs by source entropy
  (``--entropy-subset top``: the negative teacher on D_N without a second binarised copy);
* records its dictionaries in every checkpoint it writes, so a teacher trained with it can be
  checked symbol by symbol against its student;
* loads the negative set's responses for the ``--nd-negative-target random`` ablation (Table 9);
* reads ``--external-negatives`` for the criterion's external-negatives term (the file format and
  the loading are :mod:`nd_fairseq.data.external_negatives`).
"""

import copy
import logging
import math
import os
import weakref
from dataclasses import dataclass, field
from typing import Optional

from fairseq.data import data_utils
from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

# the module, not its names: importing nd_fairseq.filtering.subset_dataset before fairseq imports
# fairseq from inside it, which registers this task while that module is still half-initialised
from ..data.external_negatives import load_external_negatives
from ..filtering import subset_dataset
from ..io_utils import InputError
from ..losses import alpha_at
from ..teacher import DICTIONARY_STATE_KEY, dictionary_symbols

logger = logging.getLogger(__name__)

ENTROPY_SUBSETS = ChoiceEnum(["all", "top", "bottom"])


@dataclass
class NegativeDistillationConfig(TranslationConfig):
    alpha_lambda: float = field(
        default=4.0, metadata={"help": "λ of the progressive α schedule (peak α = λ/4; Eq. 15)"})
    alpha_gamma: float = field(
        default=25600.0, metadata={"help": "γ: the update at which α peaks (Eq. 16)"})
    alpha_beta: Optional[float] = field(
        default=None, metadata={"help": "β: steepness of the schedule (default 6/γ)"})
    fixed_alpha: Optional[float] = field(
        default=None, metadata={"help": "use this constant α instead of the schedule (Table 8 ablation)"})
    entropy_scores: Optional[str] = field(
        default=None, metadata={"help": "per-pair source-entropy scores of the training set, one per "
                                        "line (default: DATA/train.entropy, written by preprocess.sh)"})
    entropy_subset: ENTROPY_SUBSETS = field(
        default="all", metadata={"help": "train on all pairs, or the top/bottom fraction by entropy "
                                         "(top = the negative set D_N)"})
    entropy_ratio: float = field(
        default=0.5, metadata={"help": "fraction of training pairs kept by --entropy-subset"})
    entropy_threshold: Optional[float] = field(
        default=None, metadata={"help": "entropy cut instead of a ratio: top = score > T, bottom = score <= T"})
    negative_data: Optional[str] = field(
        default=None, metadata={"help": "binarised negative set (e.g. data-bin/negative) whose training "
                                        "responses --nd-negative-target random draws from"})
    external_negatives: Optional[str] = field(
        default=None, metadata={"help": "externally supplied negative responses, aligned with the training "
                                        "pairs: line i is a JSON list of response strings for pair i (e.g. "
                                        "nd-pneg export-negatives); used with --nd-external-negatives-weight"})
    external_negatives_spm: Optional[str] = field(
        default=None, metadata={"help": "sentencepiece model that encodes --external-negatives "
                                        "(default: DATA/spm.model, which preprocess.sh writes)"})
    external_negatives_tokenize: str = field(
        default="moses", metadata={"help": "word tokenisation applied to --external-negatives before "
                                           "sentencepiece, as nd-prepare did to the corpus: moses, whitespace, none"})
    external_negatives_lowercase: bool = field(
        default=True, metadata={"help": "lowercase --external-negatives (nd-prepare's default)"})


def _in_range(value, low, high, low_open, high_open) -> bool:
    if value is None or not math.isfinite(value):
        return False
    above = value > low if low_open else value >= low
    below = high is None or (value < high if high_open else value <= high)
    return above and below


# option, config field, bounds (low, high, low open, high open), why the bound
_SCHEDULE_RANGES = (
    ("--alpha-lambda", "alpha_lambda", (0.0, 4.0, True, False),
     "λ/4 is the peak α, and the MLE weight 1-α turns negative above λ = 4; λ <= 0 switches ND off"),
    ("--alpha-gamma", "alpha_gamma", (0.0, None, False, False), "γ is the update at which α peaks"),
    ("--alpha-beta", "alpha_beta", (0.0, None, True, False), "β is the steepness of the schedule"),
    ("--fixed-alpha", "fixed_alpha", (0.0, 1.0, False, False), "α weighs the ND terms against MLE (1-α)"),
    ("--entropy-ratio", "entropy_ratio", (0.0, 1.0, True, True),
     "the fraction of training pairs --entropy-subset keeps"),
)


def _range_text(low, high, low_open, high_open) -> str:
    if high is None:
        return f"a finite number {'>' if low_open else '>='} {low:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def check_schedule_options(cfg) -> None:
    """One-line :class:`InputError` for a schedule or subset option outside its valid range."""
    for option, name, bounds, why in _SCHEDULE_RANGES:
        value = getattr(cfg, name, None)
        if value is None and name in ("alpha_beta", "fixed_alpha"):
            continue  # optional: 6/γ, and the schedule instead of a constant
        if not _in_range(value, *bounds):
            raise InputError(f"{option} {value} is out of range: it must be {_range_text(*bounds)} ({why})")


@register_task("negative_distillation", dataclass=NegativeDistillationConfig)
class NegativeDistillationTask(TranslationTask):
    cfg: NegativeDistillationConfig

    @classmethod
    def setup_task(cls, cfg: NegativeDistillationConfig, **kwargs):
        if not kwargs.get("from_checkpoint", False):
            # a model loaded for generation does not use the schedule: checkpoints stay loadable
            check_schedule_options(cfg)
        return super().setup_task(cfg, **kwargs)

    def __init__(self, cfg: NegativeDistillationConfig, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        self.state.merge_state_dict({DICTIONARY_STATE_KEY: {
            "source": dictionary_symbols(src_dict), "target": dictionary_symbols(tgt_dict)}})
        self._student_ref = None
        self._negative_responses = None
        self._external_negatives = None
        self._persistent_names = set()

    # α --------------------------------------------------------------------------------------

    def alpha_at(self, update_num: int) -> float:
        if self.cfg.fixed_alpha is not None:
            return float(self.cfg.fixed_alpha)
        return alpha_at(update_num, self.cfg.alpha_lambda, self.cfg.alpha_gamma, self.cfg.alpha_beta)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        # the trainer hands update_num to the task only; the criterion needs it for α
        if hasattr(criterion, "set_alpha"):
            criterion.set_alpha(self.alpha_at(update_num))
        if hasattr(criterion, "set_num_updates"):
            criterion.set_num_updates(update_num)
        if not (ignore_grad and self._persistent_names):
            return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        # a filler batch (fairseq repeats a real one with zeroed gradients when a worker has none
        # left): it must not count in the criteria's running statistics
        saved = {name: copy.deepcopy(self.state.state_dict[name]) for name in self._persistent_names}
        try:
            return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        finally:
            self.load_state_dict(saved)

    # data -----------------------------------------------------------------------------------

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        super().load_dataset(split, epoch=epoch, combine=combine, **kwargs)
        if split != self.cfg.train_subset or self.cfg.entropy_subset == "all":
            return
        path = self.cfg.entropy_scores
        if path is None:
            path = os.path.join(self.cfg.data.split(os.pathsep)[0], "train.entropy")
        self.datasets[split] = subset_dataset.EntropySubsetDataset(
            self.datasets[split], subset_dataset.read_scores(path), self.cfg.entropy_subset,
            ratio=self.cfg.entropy_ratio, threshold=self.cfg.entropy_threshold, scores_path=path)

    def negative_responses(self):
        """Target side of the negative set's training split (for ``--nd-negative-target random``)."""
        if self._negative_responses is None:
            if not self.cfg.negative_data:
                raise InputError("--nd-negative-target random needs --negative-data DIR (the binarised "
                                 "negative set, e.g. data-bin/negative)")
            src, tgt = self.cfg.source_lang, self.cfg.target_lang
            prefix = os.path.join(self.cfg.negative_data, f"{self.cfg.train_subset}.{src}-{tgt}.{tgt}")
            dataset = data_utils.load_indexed_dataset(prefix, self.tgt_dict, self.cfg.dataset_impl)
            if dataset is None or len(dataset) == 0:
                raise InputError(f"no binarised negative responses at {prefix}.bin; binarise the "
                                 f"negative set with the student's dictionary (preprocess.sh)")
            neg_dict = os.path.join(self.cfg.negative_data, f"dict.{tgt}.txt")
            if os.path.isfile(neg_dict):
                from fairseq.data import Dictionary

                if dictionary_symbols(Dictionary.load(neg_dict)) != dictionary_symbols(self.tgt_dict):
                    raise InputError(f"{neg_dict} differs from the student's dictionary; binarise the "
                                     f"negative set with --srcdict/--tgtdict of the full set")
            self._negative_responses = dataset
        return self._negative_responses

    # state that survives checkpoints -------------------------------------------------------

    def persistent_state(self, name: str, factory):
        """A dict kept in the task state, hence in every checkpoint, and restored on resume.

        Criteria keep running statistics here (fairseq saves a criterion's state only when it has
        parameters). The same dict object lives for the whole run: a resumed checkpoint's values
        are copied into it, so a criterion may hold on to the reference.
        """
        if name not in self.state.state_dict:
            self.state.merge_state_dict({name: factory()})
        self._persistent_names.add(name)
        return self.state.state_dict[name]

    def load_state_dict(self, state_dict):
        current = self.state.state_dict
        for key, value in state_dict.items():
            if isinstance(current.get(key), dict) and isinstance(value, dict):
                current[key].clear()
                current[key].update(value)  # in place: holders of the dict see the restored values
            else:
                current[key] = value

    def external_negatives(self):
        """Per training pair, the token tensors (each ending in </s>) of its external negatives."""
        if self._external_negatives is None:
            self._external_negatives = self._load_external_negatives()
        return self._external_negatives

    def _load_external_negatives(self):
        cfg = self.cfg
        if not cfg.external_negatives:
            raise InputError("--nd-external-negatives-weight needs --external-negatives FILE (line i: JSON list of "
                             "negative responses for training pair i, e.g. from nd-pneg export-negatives)")
        n_pairs = None
        if cfg.train_subset in self.datasets:
            train = self.datasets[cfg.train_subset]
            n_pairs = len(getattr(train, "dataset", train)) if hasattr(train, "indices") else len(train)
        spm_model = cfg.external_negatives_spm or os.path.join(cfg.data.split(os.pathsep)[0], "spm.model")
        return load_external_negatives(cfg.external_negatives, self.tgt_dict, spm_model,
                                       cfg.external_negatives_tokenize, cfg.external_negatives_lowercase, n_pairs)

    # models ---------------------------------------------------------------------------------

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        if not from_checkpoint:
            # the model being trained: the criterion checks its teacher against it at start-up
            self._student_ref = weakref.ref(model)
        return model

    @property
    def student_model(self):
        return self._student_ref() if self._student_ref is not None else None
