"""Criterion ``negative_training``: the NT baseline (He & Glass, ACL 2020), frequent-response variant.

"Negative Training for Neural Dialogue Response Generation", §3.3 (the frequent response problem),
as released by the authors (``cloudygoose/negativetraining_acl2020``,
``seq2seq/neg_freq_posttrain_seq2seq.py``, ``neg_d_train``). At every training batch:

1. decode the batch's queries greedily (eval mode, no gradient);
2. add the responses to a moving window of the last ``--nt-window`` batches of generated responses
   (200 in the authors' code) and compute each response's ratio r(y) = count(y) / (responses in
   the window);
3. once the window is full, every response of this batch with r(y) > r_thres (``--frequency-
   threshold``, 1% in the ND paper's Appendix B) is a negative example: its log-likelihood under
   the model (train mode) is *minimised*, the EOS token's term scaled by 0.1 as in the authors'
   code (``FREQ_AVOID_SCAL``);
4. the positive (MLE) update on the batch's references keeps the model a language model,
   weighted by λ_POS = 1 (ND paper, Appendix B).

Per-token loss, with the authors' normalisation of the negative term (all generated tokens of the
batch, EOS included)::

    L = λ_POS · L_mle  +  Σ_{y ∈ negatives} Σ_t m_t log p(y_t | y_<t, x) / (generated tokens)

The window of responses lives in the task's persistent state (``--task negative_distillation``),
so it is saved in every checkpoint and restored on resume. Validation reports the MLE loss only.

The greedy decoder (:func:`nd_fairseq.decoding.greedy_decode`, the choices of ``fairseq-generate --beam 1``)
is shared with ``unlikelihood_dialog``.
"""

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import torch
from fairseq.criterions import register_criterion
from torch import Tensor

from ..decoding import forward_on, greedy_decode
from .base import DialogueCriterion, DialogueCriterionConfig, at_least_one, require, task_running_state

logger = logging.getLogger(__name__)

STATE_KEY = "negative_training"


# -- NT maths -------------------------------------------------------------------------------------

def response_keys(responses: Tensor, eos: int, pad: int) -> List[str]:
    """One hashable key per generated response: its token ids up to (excluding) the first EOS."""
    keys = []
    for row in responses.tolist():
        out = []
        for tok in row:
            if tok == eos or tok == pad:
                break
            out.append(str(tok))
        keys.append(" ".join(out))
    return keys


def frequent_responses(keys: Sequence[str], counts: Dict[str, int], total: int, threshold: float) -> List[bool]:
    """r(y) = counts[y] / total > threshold, for each key: the responses that get a negative update."""
    if total <= 0:
        return [False] * len(keys)
    return [counts.get(k, 0) / total > threshold for k in keys]


def negative_log_likelihood_term(lprobs: Tensor, responses: Tensor, eos: int, pad: int,
                                 eos_weight: float = 0.1) -> Tensor:
    """``Σ_i Σ_t m_t log p(y_it)`` over the rows given, m_t = ``eos_weight`` on EOS and 1 elsewhere.

    Minimising it lowers the likelihood of the responses (the negative update, He & Glass 2020).
    ``lprobs`` ``(B, T, V)``, ``responses`` ``(B, T)`` EOS-terminated and right-padded.
    """
    token_lp = lprobs.gather(-1, responses.unsqueeze(-1)).squeeze(-1)
    weight = torch.where(responses.eq(eos), token_lp.new_tensor(eos_weight), token_lp.new_tensor(1.0))
    weight = weight.masked_fill(responses.eq(pad), 0.0)
    return (token_lp * weight).sum()


class ResponseWindow:
    """Moving window of the responses generated for the last ``size`` batches, in a plain dict.

    ``state`` holds only python lists, strings and ints, so fairseq can save and reload it
    (``torch.load(weights_only=True)``): ``history`` (one list of keys per batch), ``counts``
    (key -> occurrences in the window), ``total`` (responses in the window), ``batches`` (batches
    seen since the start of training).
    """

    def __init__(self, state: dict, size: int):
        self.state = state
        self.size = size

    @staticmethod
    def empty() -> dict:
        return {"history": [], "counts": {}, "total": 0, "batches": 0}

    def add(self, keys: List[str]) -> bool:
        """Add one batch; True once the window is full (the authors' code starts then)."""
        s = self.state
        s["history"].append(list(keys))
        counts = s["counts"]
        for k in keys:
            counts[k] = counts.get(k, 0) + 1
        s["total"] += len(keys)
        s["batches"] += 1
        full = len(s["history"]) > self.size
        while len(s["history"]) > self.size:
            for k in s["history"].pop(0):
                counts[k] -= 1
                if counts[k] == 0:
                    del counts[k]
            s["total"] = sum(len(h) for h in s["history"])
        return full

    def ratio_of_most_frequent(self) -> float:
        s = self.state
        return max(s["counts"].values()) / s["total"] if s["total"] else 0.0


@dataclass
class NegativeTrainingCriterionConfig(DialogueCriterionConfig):
    nt_frequency_threshold: float = field(
        default=0.01, metadata={"help": "r_thres: a generated response above this share of the window is a "
                                        "negative example (ND paper: 1%)"})
    nt_lambda_pos: float = field(
        default=1.0, metadata={"help": "λ_POS, weight of the positive MLE update (ND paper: 1)"})
    nt_window: int = field(
        default=200, metadata={"help": "window of generated responses, in batches; negative updates start once "
                                       "it is full (authors' code: 200)"})
    nt_eos_weight: float = field(
        default=0.1, metadata={"help": "scale of </s>'s term in the negative update (authors' code: 0.1)"})
    nt_decode_max_len: int = field(
        default=40, metadata={"help": "longest greedy response decoded in training, tokens before </s>"})


@register_criterion("negative_training", dataclass=NegativeTrainingCriterionConfig)
class NegativeTrainingCriterion(DialogueCriterion):
    NAME = "negative_training"
    FLAG_ALIASES = {"--frequency-threshold": "nt_frequency_threshold", "--lambda-pos": "nt_lambda_pos",
                    "--decode-max-len": "nt_decode_max_len"}

    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0, report_accuracy=False,
                 nt_frequency_threshold=0.01, nt_lambda_pos=1.0, nt_window=200, nt_eos_weight=0.1,
                 nt_decode_max_len=40):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        require(0.0 <= nt_frequency_threshold < 1.0,
                f"--nt-frequency-threshold {nt_frequency_threshold} must lie in [0, 1)")
        window = at_least_one(nt_window, "--nt-window", " (batches)")
        self.max_len = at_least_one(nt_decode_max_len, "--nt-decode-max-len")
        self.threshold = float(nt_frequency_threshold)
        self.lambda_pos = float(nt_lambda_pos)
        self.eos_weight = float(nt_eos_weight)
        self.window = ResponseWindow(task_running_state(task, STATE_KEY, ResponseWindow.empty), window)
        logger.info("negative training: r_thres %g, λ_POS %g, window %d batches, EOS weight %g",
                    self.threshold, self.lambda_pos, nt_window, self.eos_weight)

    def forward(self, model, sample, reduce=True):
        if not model.training:
            return super().forward(model, sample, reduce=reduce)
        net_input = sample["net_input"]
        responses = greedy_decode(model, net_input["src_tokens"], net_input["src_lengths"],
                                  self.max_len, self.eos, self.padding_idx)
        keys = response_keys(responses, self.eos, self.padding_idx)
        full = self.window.add(keys)
        state = self.window.state
        negative = (frequent_responses(keys, state["counts"], state["total"], self.threshold)
                    if full else [False] * len(keys))

        net_output = model(**net_input)
        mle_sum, nll_sum = self.compute_loss(model, net_output, sample, reduce=True)
        mle = mle_sum / sample["ntokens"]
        generated_tokens = int(responses.ne(self.padding_idx).sum())
        neg = mle.new_zeros(())
        rows = torch.tensor([i for i, n in enumerate(negative) if n], dtype=torch.long,
                            device=responses.device)
        if rows.numel():
            chosen = responses.index_select(0, rows)
            keep = int(chosen.ne(self.padding_idx).sum(1).max())
            chosen = chosen[:, :keep]
            neg_output = forward_on(model, sample, rows, chosen, self.eos, self.padding_idx)
            lprobs = model.get_normalized_probs(neg_output, log_probs=True)
            neg = negative_log_likelihood_term(lprobs, chosen, self.eos, self.padding_idx,
                                               self.eos_weight) / max(generated_tokens, 1)

        sample_size = self.sample_size(sample)
        loss = (self.lambda_pos * mle + neg) * sample_size
        logging_output = self.training_log(loss, nll_sum, mle, sample, sample_size, model, net_output,
                                           neg=neg.data * sample_size, nt_batches=1, n_neg=int(rows.numel()),
                                           max_ratio=self.window.ratio_of_most_frequent())
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        cls.log_per_token(logging_outputs, ["neg"])
        # per batch: negative responses, and the share of the window's most frequent response
        cls.log_per_batch(logging_outputs, "nt_batches", {"n_neg": 2, "max_ratio": 4})
