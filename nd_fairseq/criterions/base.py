"""What the plugin's four criteria share: label-smoothed MLE plus a term of their own.

Each of ``negative_distillation``, ``unlikelihood_dialog``, ``negative_training`` and ``face``
subclasses :class:`DialogueCriterion`, as fairseq's ``label_smoothed_cross_entropy_with_rdrop``
subclasses the label-smoothed criterion: validation is fairseq's label-smoothed MLE (the loss that
selects checkpoints), training adds the criterion's term, and ``reduce_metrics`` calls
``super().reduce_metrics()`` and logs only the extras.

Logging convention: every training step logs ``mle`` (the label-smoothed MLE, per token) and the
criterion's terms multiplied by ``sample_size``, with that size once more under
``aux_sample_size``; :meth:`DialogueCriterion.reduce_metrics` divides by the summed size, so a
term is a per-token mean over the steps that logged it (``mle`` in bits, as fairseq's ``loss``).

Flags: each criterion's own options carry its prefix (``--nd-``, ``--ul-``, ``--nt-``,
``--face-``); the names they had before are kept as hidden aliases (:attr:`DialogueCriterion.
FLAG_ALIASES`), so existing commands still run.
"""

import argparse
import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Optional

import torch
from fairseq import metrics, utils
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)
from torch import Tensor

from ..io_utils import InputError

logger = logging.getLogger(__name__)

AUX_SIZE = "aux_sample_size"


@dataclass
class DialogueCriterionConfig(LabelSmoothedCrossEntropyCriterionConfig):
    label_smoothing: float = field(
        default=0.1, metadata={"help": "ε of the label-smoothed MLE term (0.1, as every system of the ND paper)"})


def task_running_state(task, name: str, factory: Callable[[], dict]) -> dict:
    """A criterion's running statistics: the task's persistent state if it offers one.

    ``--task negative_distillation`` keeps the dict in its state, saves it in every checkpoint and
    restores it in place on resume. Other tasks (e.g. ``translation``) get a plain dict: training
    works, but the statistics restart from zero when a run is resumed.
    """
    getter = getattr(task, "persistent_state", None)
    if getter is None:
        logger.warning("task %s keeps no criterion state in checkpoints: the running statistics of "
                       "%s restart from zero on resume (use --task negative_distillation)",
                       type(task).__name__, name)
        return factory()
    return getter(name, factory)


def count_tokens(tokens: Tensor, vocab_size: int) -> Tensor:
    """Occurrences of each vocabulary entry in ``tokens`` (any shape), int64 on the CPU."""
    return torch.bincount(tokens.reshape(-1).long().cpu(), minlength=vocab_size)


def require(ok: bool, message: str) -> None:
    """Refuse a bad option value at start-up with a one-line error."""
    if not ok:
        raise InputError(message)


def at_least_one(value: int, flag: str, unit: str = "") -> int:
    """A count option (a window, a length) checked at start-up."""
    require(value >= 1, f"{flag} {value} must be >= 1{unit}")
    return int(value)


def summed(logging_outputs: Iterable[dict], key: str) -> float:
    return sum(log.get(key, 0) for log in logging_outputs)


class DialogueCriterion(LabelSmoothedCrossEntropyCriterion):
    """fairseq's label-smoothed cross-entropy with the plugin's shared conventions (module docstring)."""

    #: ``--criterion`` name, for messages
    NAME = ""
    #: old flag -> field name; parsed as hidden aliases of the prefixed flags
    FLAG_ALIASES: Dict[str, str] = {}
    #: whether ``--ignore-prefix-size`` is supported (the baselines decode whole responses)
    SUPPORTS_IGNORE_PREFIX = False

    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0, report_accuracy=False):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        require(not ignore_prefix_size or self.SUPPORTS_IGNORE_PREFIX,
                f"--criterion {self.NAME} does not support --ignore-prefix-size")
        self.eos = task.target_dictionary.eos()

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        for old, dest in cls.FLAG_ALIASES.items():
            new = parser._option_string_actions["--" + dest.replace("_", "-")]
            if new.nargs == 0:  # a boolean flag
                parser.add_argument(old, dest=dest, action="store_true", default=argparse.SUPPRESS,
                                    help=argparse.SUPPRESS)
            else:
                parser.add_argument(old, dest=dest, type=new.type, choices=new.choices,
                                    default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    def sample_size(self, sample) -> int:
        return sample["target"].size(0) if self.sentence_avg else sample["ntokens"]

    def training_log(self, loss: Tensor, nll_sum: Tensor, mle: Tensor, sample, sample_size, model, net_output,
                     **extras) -> dict:
        """The logging output of a training step: fairseq's entries, ``mle`` (per token) × size, the
        extras as given, and ``--report-accuracy``'s counts."""
        out = {
            "loss": loss.data,
            "nll_loss": nll_sum.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
            AUX_SIZE: sample_size,
            "mle": mle.data * sample_size,
            **extras,
        }
        self.log_accuracy(out, model, net_output, sample)
        return out

    def log_accuracy(self, logging_output: dict, model, net_output, sample) -> None:
        """``--report-accuracy``: the counts fairseq's label-smoothed criterion logs."""
        if self.report_accuracy:
            n_correct, total = self.compute_accuracy(model, net_output, sample)
            logging_output["n_correct"] = utils.item(n_correct.data)
            logging_output["total"] = utils.item(total.data)

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        size = summed(logging_outputs, AUX_SIZE)
        if size and any("mle" in log for log in logging_outputs):
            # label-smoothed CE, in bits like fairseq's loss
            metrics.log_scalar("mle", summed(logging_outputs, "mle") / size / math.log(2), size, round=4)

    @staticmethod
    def log_per_token(logging_outputs, names: Iterable[str]) -> Optional[float]:
        """Log each of ``names`` that some step logged, as a per-token mean (× size convention)."""
        size = summed(logging_outputs, AUX_SIZE)
        if not size:
            return None
        for name in names:
            if any(name in log for log in logging_outputs):
                metrics.log_scalar(name, summed(logging_outputs, name) / size, size, round=4)
        return size

    @staticmethod
    def log_per_batch(logging_outputs, batch_key: str, rounding: Dict[str, int]) -> int:
        """Log each name of ``rounding`` as a mean per training batch (``batch_key`` counts the
        batches, 1 per training step), rounded to its digits; returns the number of batches."""
        batches = summed(logging_outputs, batch_key)
        for name, digits in rounding.items() if batches else ():
            metrics.log_scalar(name, summed(logging_outputs, name) / batches, batches, round=digits)
        return batches
