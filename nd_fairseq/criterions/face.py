"""Criterion ``face``: the FACE baseline (Jiang, Ren, Monz, de Rijke, WWW 2019).

"Improving Neural Response Diversity with Frequency-Aware Cross-Entropy Loss", in the version the
ND paper used ("output frequency" + "pre-weight", Appendix B), as released by the authors
(``ShaojieJiang/FACE``, ``face/face.py``: ``update_frequency``, ``loss_weight``, ``train_step``
with ``--frequency-type out --weighing-time pre``). At every training batch:

1. *output frequency*: the model's predictions for the batch (argmax of the gold-prefix forward
   pass, up to and including the first predicted EOS) are added to running token counts
   ``freq(c)``, kept for the whole run (the authors' code never decays them);
2. frequency-aware weights over the vocabulary V::

       RF_i = freq(c_i) / Σ_j freq(c_j)               (relative frequency)
       w_i  = a · RF_i + 1,  a = -1 / max_j RF_j       (the most frequent token gets 0)
       w_i  ← w_i · |V| / Σ_j w_j                      (normalised: mean weight 1)

3. *pre-weight* (Eq. 10 of the paper): the cross-entropy of each target token is weighted by
   the weight of that token, ``L = Σ_t w_{y_t} · CE_t / (target tokens)``.

``--face-frequency target`` counts the reference tokens instead (the paper's "GT frequency").
The label smoothing of the ND paper's systems applies inside CE_t (``--label-smoothing 0`` gives
the paper's plain cross-entropy). The counts live in the task's persistent state
(``--task negative_distillation``): saved in every checkpoint, restored on resume. Validation
reports the unweighted MLE loss.
"""

import logging
from dataclasses import dataclass, field
from typing import Tuple

import torch
from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
from fairseq.dataclass import ChoiceEnum
from torch import Tensor

from .base import DialogueCriterion, DialogueCriterionConfig, count_tokens, summed, task_running_state

logger = logging.getLogger(__name__)

STATE_KEY = "face"
FREQUENCY_SOURCES = ChoiceEnum(["output", "target"])


def face_weights(counts: Tensor) -> Tensor:
    """Frequency-aware weights (float64, one per vocabulary entry) from token counts.

    ``RF = counts / Σ counts``; ``w = 1 - RF / max(RF)``; ``w · |V| / Σ w``. All ones while
    nothing has been counted, or when every entry has the same frequency (all weights would be 0).
    """
    counts = counts.double()
    total = counts.sum()
    if total <= 0:
        return torch.ones_like(counts)
    rf = counts / total
    a = -1.0 / rf.max()
    w = a * rf + 1.0
    w_sum = w.sum()
    if w_sum <= 0:
        return torch.ones_like(counts)
    return w / w_sum * counts.numel()


def output_tokens(predictions: Tensor, target: Tensor, eos: int, pad: int) -> Tensor:
    """The model's output tokens of a batch: per row, the predictions at the real target positions
    up to and including the first predicted EOS (the authors' ``clean_preds``)."""
    real = target.ne(pad)
    is_eos = predictions.eq(eos) & real
    # positions after the first predicted EOS of the row
    after_eos = (is_eos.long().cumsum(1) - is_eos.long()) > 0
    return predictions[real & ~after_eos]


def frequency_weighted_ce(lprobs: Tensor, target: Tensor, weights: Tensor, epsilon: float,
                          pad: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Pre-weighted (label-smoothed) cross-entropy: ``Σ_t w[y_t] · CE_t`` over non-pad targets.

    ``lprobs`` ``(N, V)``, ``target`` ``(N,)``, ``weights`` ``(V,)``. ``CE_t`` is fairseq's
    label-smoothed term (``label_smoothed_nll_loss`` per token; the plain cross-entropy with
    ``epsilon = 0``). Returns (the weighted sum, the unweighted sum, the NLL sum).
    """
    per_token, nll = label_smoothed_nll_loss(lprobs, target, epsilon, ignore_index=pad, reduce=False)
    per_token, nll = per_token.squeeze(-1), nll.squeeze(-1)
    real = target.ne(pad)
    w = weights.to(per_token.dtype)[target].masked_fill(~real, 0.0)
    return (w * per_token).sum(), per_token.sum(), nll.sum()


class TokenFrequency:
    """Running token counts for the whole run, in a plain dict saved with checkpoints:
    ``counts`` (int64 per vocabulary entry) and ``batches``."""

    def __init__(self, state: dict, vocab_size: int):
        self.state = state
        self.vocab_size = vocab_size

    @staticmethod
    def empty_factory(vocab_size: int):
        def factory():
            return {"counts": torch.zeros(vocab_size, dtype=torch.long), "batches": 0}
        return factory

    def add(self, tokens: Tensor) -> None:
        self.state["counts"] += count_tokens(tokens, self.vocab_size)
        self.state["batches"] += 1


@dataclass
class FaceCriterionConfig(DialogueCriterionConfig):
    face_frequency: FREQUENCY_SOURCES = field(
        default="output", metadata={"help": "token frequencies of the model's outputs (as the ND paper) or of "
                                            "the reference targets"})


@register_criterion("face", dataclass=FaceCriterionConfig)
class FaceCriterion(DialogueCriterion):
    NAME = "face"

    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0, report_accuracy=False,
                 face_frequency="output"):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        self.frequency_source = str(face_frequency)
        vocab = len(task.target_dictionary)
        self.frequency = TokenFrequency(task_running_state(task, STATE_KEY, TokenFrequency.empty_factory(vocab)),
                                        vocab)
        logger.info("FACE: %s frequency, pre-weight", self.frequency_source)

    def forward(self, model, sample, reduce=True):
        if not model.training:
            return super().forward(model, sample, reduce=reduce)
        net_output = model(**sample["net_input"])
        lprobs, target = self.get_lprobs_and_target(model, net_output, sample)
        pad = self.padding_idx
        if self.frequency_source == "output":
            predictions = net_output[0].argmax(-1)
            full_target = model.get_targets(sample, net_output)
            counted = output_tokens(predictions, full_target, self.eos, pad)
        else:
            counted = target[target.ne(pad)]
        # the authors count the current batch before weighting it
        self.frequency.add(counted)
        counts = self.frequency.state["counts"]
        weights = face_weights(counts).to(lprobs.device)
        face_sum, mle_sum, nll_sum = frequency_weighted_ce(lprobs, target, weights, self.eps, pad)

        ntokens = sample["ntokens"]
        sample_size = self.sample_size(sample)
        loss = face_sum / ntokens * sample_size
        real = target.ne(pad)
        total = counts.sum()
        logging_output = self.training_log(
            loss, nll_sum, mle_sum / ntokens, sample, sample_size, model, net_output, face_batches=1,
            face_w_target_sum=float(weights[target[real]].sum()), face_targets=int(real.sum()),
            w_max=float(weights.max()), top_rf=float(counts.max() / total) if total > 0 else 0.0)
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)  # mle: the unweighted label-smoothed CE, in bits
        targets = summed(logging_outputs, "face_targets")
        if targets:
            # mean weight of the target tokens: below 1 when the references use over-produced tokens
            metrics.log_scalar("w_target", summed(logging_outputs, "face_w_target_sum") / targets, targets, round=4)
        cls.log_per_batch(logging_outputs, "face_batches", {"w_max": 4, "top_rf": 4})
