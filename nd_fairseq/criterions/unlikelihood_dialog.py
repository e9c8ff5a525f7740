"""Criterion ``unlikelihood_dialog``: the UL baseline (Li et al., ACL 2020, vocabulary unlikelihood).

"Don't Say That! Making Inconsistent Dialogue Unlikely with Unlikelihood Training" (Li, Roller,
Kulikov, Welleck, Boureau, Cho, Weston), the unlikelihood loss against over-used vocabulary, as
released by the authors in ParlAI (``projects/dialogue_unlikelihood/agents.py``,
``SequenceVocabUnlikelihoodAgentTrait.compute_loss`` with ``--weighting kldiv``). At every
training batch:

1. the model's greedy generations for the batch's queries and the batch's reference responses
   are counted, token by token (EOS included), into running counts over the last ``--ul-window``
   batches (ParlAI's ``--queue-size``, 32);
2. with p_model and p_* the relative frequencies of those counts, every token c with
   p_model(c) > p_*(c) > 0 gets the penalty::

       β(c) = p_model(c) · log(p_model(c) / p_*(c))

   (its term in KL(p_model ‖ p_*)); tokens with β(c) > ``--ul-threshold`` are the negative
   candidates;
3. the generations are teacher-forced through the model (train mode) and every generated token
   y_t that is a candidate is pushed down::

       L_UL = Σ_t β(y_t) · -log(1 - p(y_t | y_<t, x)) / (number of penalised tokens)

4. ``L = L_mle + α_UL · L_UL`` with α_UL = 1000 by default (the ND paper searched 1, 10, 100,
   1000 and chose 1000; Appendix B). Until the window is full only L_mle is used.

``--ul-source argmax`` is a cheaper variant (not in the paper): the model's tokens are the argmax
predictions of the gold-prefix forward pass, penalised at the positions where they are candidates.

The running counts live in the task's persistent state (``--task negative_distillation``): saved
in every checkpoint, restored on resume. Validation reports the MLE loss only.
"""

import logging
from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch
from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.dataclass import ChoiceEnum
from torch import Tensor

from ..decoding import forward_on, greedy_decode
from ..losses import hard_unlikelihood
from .base import (DialogueCriterion, DialogueCriterionConfig, at_least_one, count_tokens, require, summed,
                   task_running_state)

logger = logging.getLogger(__name__)

STATE_KEY = "unlikelihood_dialog"
UL_SOURCES = ChoiceEnum(["greedy", "argmax"])


def vocabulary_penalty(model_counts: Tensor, human_counts: Tensor, threshold: float = 1e-3) -> Tensor:
    """β(c) per vocabulary entry (float64, 0 for tokens that are not negative candidates).

    β(c) = p_model(c) log(p_model(c) / p_*(c)) where p_model(c) > p_*(c) > 0 and β(c) > threshold;
    p_model and p_* are the relative frequencies of ``model_counts`` and ``human_counts``. A token
    the references never used has no finite β and is not penalised (as the authors' code).
    """
    model_counts = model_counts.double()
    human_counts = human_counts.double()
    beta = torch.zeros_like(model_counts)
    m_total, h_total = model_counts.sum(), human_counts.sum()
    if m_total <= 0 or h_total <= 0:
        return beta
    p_model = model_counts / m_total
    p_human = human_counts / h_total
    over = (p_model > p_human) & (p_human > 0)
    beta[over] = p_model[over] * (p_model[over].log() - p_human[over].log())
    return beta.masked_fill(beta <= threshold, 0.0)


def weighted_token_unlikelihood(lprobs: Tensor, tokens: Tensor, weights: Tensor,
                                mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """Σ_t β(y_t) · -log(1 - p(y_t)) over the positions whose token has β > 0: Eq. 2 with β as the
    per-position weight (:func:`nd_fairseq.losses.hard_unlikelihood`).

    ``lprobs`` ``(..., V)``, ``tokens`` ``(...)``, ``weights`` ``(V,)`` (β per vocabulary entry),
    ``mask`` ``(...)`` the real positions. Returns (the sum, the number of penalised positions, the
    sum of their β).
    """
    beta = weights.to(lprobs.dtype)[tokens]
    penalised = beta > 0
    if mask is not None:
        penalised = penalised & mask
    total = hard_unlikelihood(lprobs, tokens, penalised, weights=beta)
    return total, penalised.sum(), beta.masked_fill(~penalised, 0.0).sum()


class TokenCounts:
    """Running token counts of the model's outputs and of the references over the last batches.

    ``state`` (a plain dict of tensors, lists and ints, saved in checkpoints): ``model`` and
    ``human`` (dense counts over the vocabulary, int64), ``history`` (per batch ``[model ids,
    model counts, human ids, human counts]``, sparse, to drop the oldest batch), ``batches``.
    With ``cumulative`` no batch is ever dropped.
    """

    def __init__(self, state: dict, vocab_size: int, window: int, cumulative: bool = False):
        self.state = state
        self.vocab_size = vocab_size
        self.window = window
        self.cumulative = cumulative

    @staticmethod
    def empty_factory(vocab_size: int):
        def factory():
            return {"model": torch.zeros(vocab_size, dtype=torch.long),
                    "human": torch.zeros(vocab_size, dtype=torch.long),
                    "history": [], "batches": 0}
        return factory

    def add(self, model_tokens: Tensor, human_tokens: Tensor) -> bool:
        """Count one batch; True once more than ``window`` batches were seen (UL applies then)."""
        s = self.state
        m, h = count_tokens(model_tokens, self.vocab_size), count_tokens(human_tokens, self.vocab_size)
        s["model"] += m
        s["human"] += h
        s["batches"] += 1
        if not self.cumulative:
            m_ids, h_ids = m.nonzero().squeeze(1), h.nonzero().squeeze(1)
            s["history"].append([m_ids, m[m_ids], h_ids, h[h_ids]])
            while len(s["history"]) > self.window:
                old_m_ids, old_m, old_h_ids, old_h = s["history"].pop(0)
                s["model"].index_add_(0, old_m_ids, -old_m)
                s["human"].index_add_(0, old_h_ids, -old_h)
        return s["batches"] > self.window


@dataclass
class UnlikelihoodDialogCriterionConfig(DialogueCriterionConfig):
    ul_alpha: float = field(
        default=1000.0, metadata={"help": "α_UL, weight of the unlikelihood term (ND paper: 1000)"})
    ul_window: int = field(
        default=32, metadata={"help": "running counts over the last N batches; unlikelihood starts after N"})
    ul_cumulative: bool = field(
        default=False, metadata={"help": "never drop old batches from the counts (as ParlAI in training)"})
    ul_threshold: float = field(
        default=1e-3, metadata={"help": "tokens with β(c) above this are candidates"})
    ul_source: UL_SOURCES = field(
        default="greedy", metadata={"help": "model tokens: greedy responses to the batch's queries (paper) or "
                                            "argmax predictions of the gold-prefix pass"})
    ul_decode_max_len: int = field(
        default=40, metadata={"help": "longest greedy response decoded in training, tokens before </s>"})


@register_criterion("unlikelihood_dialog", dataclass=UnlikelihoodDialogCriterionConfig)
class UnlikelihoodDialogCriterion(DialogueCriterion):
    NAME = "unlikelihood_dialog"
    FLAG_ALIASES = {"--decode-max-len": "ul_decode_max_len"}

    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0, report_accuracy=False,
                 ul_alpha=1000.0, ul_window=32, ul_cumulative=False, ul_threshold=1e-3,
                 ul_source="greedy", ul_decode_max_len=40):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        require(ul_alpha >= 0, f"--ul-alpha {ul_alpha} must be >= 0")
        window = at_least_one(ul_window, "--ul-window", " (batches)")
        self.max_len = at_least_one(ul_decode_max_len, "--ul-decode-max-len")
        self.ul_alpha = float(ul_alpha)
        self.threshold = float(ul_threshold)
        self.source = str(ul_source)
        vocab = len(task.target_dictionary)
        state = task_running_state(task, STATE_KEY, TokenCounts.empty_factory(vocab))
        self.counts = TokenCounts(state, vocab, window, bool(ul_cumulative))
        logger.info("vocabulary unlikelihood: α_UL %g, %s counts over %d batches, threshold %g, source %s",
                    self.ul_alpha, "cumulative" if ul_cumulative else "window", ul_window,
                    self.threshold, self.source)

    def forward(self, model, sample, reduce=True):
        if not model.training:
            return super().forward(model, sample, reduce=reduce)
        net_input = sample["net_input"]
        pad = self.padding_idx
        net_output = model(**net_input)
        mle_sum, nll_sum = self.compute_loss(model, net_output, sample, reduce=True)
        target = model.get_targets(sample, net_output)
        target_mask = target.ne(pad)
        mle = mle_sum / sample["ntokens"]

        if self.source == "greedy":
            responses = greedy_decode(model, net_input["src_tokens"], net_input["src_lengths"],
                                      self.max_len, self.eos, pad)
            model_tokens = responses[responses.ne(pad)]
        else:
            predictions = net_output[0].argmax(-1)
            model_tokens = predictions[target_mask]
        active = self.counts.add(model_tokens, target[target_mask])

        ul = mle.new_zeros(())
        n_penalised, beta_sum, n_candidates = 0, 0.0, 0
        if active:
            beta = vocabulary_penalty(self.counts.state["model"], self.counts.state["human"], self.threshold)
            n_candidates = int((beta > 0).sum())
            beta = beta.to(net_output[0].device)
            if self.source == "greedy":
                rows = beta[responses].gt(0).any(1).nonzero().squeeze(1)
                if rows.numel():
                    chosen = responses.index_select(0, rows)
                    chosen = chosen[:, :int(chosen.ne(pad).sum(1).max())]
                    out = forward_on(model, sample, rows, chosen, self.eos, pad)
                    lprobs = model.get_normalized_probs(out, log_probs=True)
                    ul_sum, n, b = weighted_token_unlikelihood(lprobs, chosen, beta, chosen.ne(pad))
                    n_penalised, beta_sum = int(n), float(b)
                    ul = ul_sum / max(n_penalised, 1)
            else:
                lprobs = model.get_normalized_probs(net_output, log_probs=True)
                ul_sum, n, b = weighted_token_unlikelihood(lprobs, predictions, beta, target_mask)
                n_penalised, beta_sum = int(n), float(b)
                ul = ul_sum / max(n_penalised, 1)

        sample_size = self.sample_size(sample)
        loss = (mle + self.ul_alpha * ul) * sample_size
        logging_output = self.training_log(loss, nll_sum, mle, sample, sample_size, model, net_output,
                                           ul=ul.data * sample_size, ul_batches=1, n_candidates=n_candidates,
                                           ul_tokens=n_penalised, ul_beta_sum=beta_sum)
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        cls.log_per_token(logging_outputs, ["ul"])
        # per batch: candidate vocabulary entries and penalised positions; mean β of those positions
        if cls.log_per_batch(logging_outputs, "ul_batches", {"n_candidates": 2, "ul_tokens": 2}):
            penalised = summed(logging_outputs, "ul_tokens")
            if penalised:
                metrics.log_scalar("ul_beta", summed(logging_outputs, "ul_beta_sum") / penalised, penalised, round=5)
