"""Criterion ``negative_distillation``: push the student away from a frozen negative teacher.

Eq. 13 of Li et al. (NAACL 2022)::

    L = (1 - α) L_mle + α (L_pred + Σ_l L_hid^l + Σ_l L_att^l)

* ``L_mle``: label-smoothed cross-entropy (ε = 0.1);
* ``L_pred``: soft unlikelihood of the student's distribution under the teacher's (Eq. 6-7,
  temperature t on both; :func:`nd_fairseq.losses.soft_unlikelihood`);
* ``L_hid^l``: MRSE of the output of decoder layer l, teacher vs student (Eq. 8-9;
  :func:`nd_fairseq.losses.hidden_state_loss`);
* ``L_att^l``: MRSE of decoder layer l's pre-softmax self-attention scores QKᵀ/√d_k, per head
  (Eq. 10-12; :func:`nd_fairseq.losses.attention_loss`), over the positions the causal and
  padding masks leave.

The maths lives in :mod:`nd_fairseq.losses`; this module runs the two models, chooses the targets
and wires their outputs to it (docs/method.md, §4-7, gives the decisions).

Every term is at per-token scale (L_mle, L_pred averaged over real target tokens; each MRSE is a
mean over its unmasked elements); the loss handed to fairseq is that total times ``sample_size``,
so fairseq's division by ``sample_size`` yields it. α comes from the ``negative_distillation``
task (progressive schedule). Validation computes the MLE loss only, which is what the paper uses
to select checkpoints.
"""

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
from fairseq.dataclass import ChoiceEnum
from omegaconf import II
from torch import Tensor

from ..decoding import forward_on
from ..losses import (
    attention_loss,
    decoder_position_mask,
    hard_unlikelihood,
    hidden_state_loss,
    label_smoothed_nll_and_soft_unlikelihood,
    negative_distillation_loss,
    soft_unlikelihood,
    temperature_log_softmax,
)
from ..models.capture import attention_scores_for
from ..teacher import FrozenTeacher, check_architecture
from .base import AUX_SIZE, DialogueCriterion, DialogueCriterionConfig, require

logger = logging.getLogger(__name__)

NEGATIVE_TARGETS = ChoiceEnum(["soft", "hard", "random"])
ATTENTION_FEATURES = ChoiceEnum(["scores", "probs", "standardized"])
HIDDEN_FEATURES = ChoiceEnum(["raw", "normalized"])
# logged per token besides fairseq's loss and the base's mle
LOGGED_TERMS = ("alpha", "pred", "hid", "att", "ext")


@dataclass
class NegativeDistillationCriterionConfig(DialogueCriterionConfig):
    nd_teacher_path: Optional[str] = field(
        default=None, metadata={"help": "checkpoint of the frozen negative teacher (same dictionary and decoder "
                                        "shape as the student)"})
    nd_temperature: float = field(
        default=1.0, metadata={"help": "temperature t of L_pred (Eq. 7), on teacher and student"})
    nd_no_pred_loss: bool = field(default=False, metadata={"help": "drop L_pred (Table 5 ablation)"})
    nd_no_hid_loss: bool = field(default=False, metadata={"help": "drop L_hid (Table 5 ablation)"})
    nd_no_att_loss: bool = field(default=False, metadata={"help": "drop L_att (Table 5 ablation)"})
    nd_pred_weight: float = field(
        default=1.0, metadata={"help": "weight of L_pred inside Eq. 13 (paper: 1; docs/method.md §7)"})
    nd_pred_skip_eos: bool = field(
        default=False, metadata={"help": "leave </s> out of the negative targets of L_pred, i.e. "
                                         "--nd-pred-eos-weight 0 (docs/method.md §11)"})
    nd_pred_eos_weight: float = field(
        default=1.0, metadata={"help": "weight in [0, 1] of </s> as a negative target of L_pred: 1 (paper), "
                                       "0 = --nd-pred-skip-eos (docs/method.md §4)"})
    nd_negative_target: NEGATIVE_TARGETS = field(
        default="soft", metadata={"help": "L_pred's target (Table 9): the teacher's distributions (soft), its "
                                          "greedy tokens (hard), or a D_N response (random)"})
    nd_attention: ATTENTION_FEATURES = field(
        default="scores", metadata={"help": "L_att features: pre-softmax scores (paper), softmax probs, or "
                                            "scores standardized per query (docs/method.md §11)"})
    nd_hidden: HIDDEN_FEATURES = field(
        default="raw", metadata={"help": "L_hid features: raw layer outputs (paper) or normalized without affine "
                                         "parameters (docs/method.md §11)"})
    nd_external_negatives_weight: float = field(
        default=0.0, metadata={"help": "weight of token unlikelihood on the task's --external-negatives "
                                       "(e.g. PNEG's), added to Eq. 13; 0 = off"})
    nd_compile: bool = field(
        default=False, metadata={"help": "compute L_pred with torch.compile kernels (benchmarks/README.md)"})
    # the draws of --nd-negative-target random and of the external negatives follow fairseq's --seed
    seed: int = II("common.seed")


@register_criterion("negative_distillation", dataclass=NegativeDistillationCriterionConfig)
class NegativeDistillationCriterion(DialogueCriterion):
    NAME = "negative_distillation"
    SUPPORTS_IGNORE_PREFIX = True
    FLAG_ALIASES = {"--teacher-path": "nd_teacher_path", "--no-pred-loss": "nd_no_pred_loss",
                    "--no-hid-loss": "nd_no_hid_loss", "--no-att-loss": "nd_no_att_loss",
                    "--negative-target": "nd_negative_target",
                    "--external-negatives-weight": "nd_external_negatives_weight"}

    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0, report_accuracy=False,
                 nd_teacher_path=None, nd_temperature=1.0, nd_no_pred_loss=False, nd_no_hid_loss=False,
                 nd_no_att_loss=False, nd_pred_weight=1.0, nd_pred_skip_eos=False, nd_pred_eos_weight=1.0,
                 nd_negative_target="soft",
                 nd_attention="scores", nd_hidden="raw", nd_external_negatives_weight=0.0, nd_compile=False,
                 seed=1):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        require(hasattr(task, "alpha_at"), "--criterion negative_distillation needs --task negative_distillation "
                                           "(the task supplies the α schedule)")
        require(nd_temperature > 0, f"--nd-temperature {nd_temperature} must be > 0")
        require(nd_pred_weight >= 0, f"--nd-pred-weight must be >= 0, got {nd_pred_weight}")
        require(0.0 <= nd_pred_eos_weight <= 1.0,
                f"--nd-pred-eos-weight must be in [0, 1], got {nd_pred_eos_weight}")
        require(not (nd_pred_skip_eos and nd_pred_eos_weight != 1.0),
                "--nd-pred-skip-eos is --nd-pred-eos-weight 0: give one of the two")
        require(nd_external_negatives_weight >= 0,
                f"--nd-external-negatives-weight {nd_external_negatives_weight} must be >= 0")
        self.temperature = float(nd_temperature)
        self.use_pred = not nd_no_pred_loss
        self.use_hid = not nd_no_hid_loss
        self.use_att = not nd_no_att_loss
        self.pred_weight = float(nd_pred_weight)
        # the weight of </s> among the negative targets; --nd-pred-skip-eos is weight 0
        self.pred_eos_weight = 0.0 if nd_pred_skip_eos else float(nd_pred_eos_weight)
        self.negative_target = str(nd_negative_target)
        self.attention_features = str(nd_attention)
        self.hidden_features = str(nd_hidden)
        self.seed = seed
        self.compiled = bool(nd_compile)
        self.external_weight = float(nd_external_negatives_weight)
        if self.external_weight > 0:
            task.external_negatives()  # fail at start-up on a missing or malformed file
        self.alpha = task.alpha_at(0)
        self.num_updates = 0
        self._draws = 0
        self.teacher = FrozenTeacher(nd_teacher_path, task)
        self._checked = False
        student = getattr(task, "student_model", None)
        if student is not None:
            check_architecture(self.teacher.model, student, nd_teacher_path)
            self._checked = True
        if self.negative_target == "random" and self.use_pred:
            task.negative_responses()  # fail at start-up, not at the first update
        logger.info("negative distillation: teacher %s (trained %s updates), terms %s, target %s, t=%g",
                    nd_teacher_path, self.teacher.num_updates,
                    "+".join(n for n, on in (("pred", self.use_pred), ("hid", self.use_hid),
                                             ("att", self.use_att)) if on) or "none",
                    self.negative_target, self.temperature)

    # set by the task before every training step
    def set_alpha(self, alpha: float) -> None:
        self.alpha = float(alpha)

    def set_num_updates(self, num_updates: int) -> None:
        self.num_updates = int(num_updates)

    @property
    def needs_teacher_forward(self) -> bool:
        soft_or_hard = self.use_pred and self.negative_target in ("soft", "hard")
        return soft_or_hard or self.use_hid or self.use_att

    def forward(self, model, sample, reduce=True):
        distill = model.training and self.alpha > 0.0 and (self.use_pred or self.use_hid or self.use_att)
        if not distill:
            loss, sample_size, logging_output = super().forward(model, sample, reduce=reduce)
            if model.training and self.external_weight > 0:
                loss = loss + self._add_external(model, sample, sample_size, logging_output)
                logging_output["loss"] = loss.data
            return loss, sample_size, logging_output
        if not self._checked:
            check_architecture(self.teacher.model, model, self.teacher.path)
            self._checked = True

        net_input = sample["net_input"]
        if self.use_att:
            with attention_scores_for(model).capture() as student_scores:
                net_output = model(**net_input)
        else:
            student_scores = []
            net_output = model(**net_input)

        teacher_output, teacher_scores, teacher_targets = None, [], None
        if self.needs_teacher_forward:
            teacher = self.teacher.place_like(model)
            # inference mode: no graph and no version counters for the frozen teacher; its
            # outputs are only read (the soft-unlikelihood backward keeps them unsaved)
            with torch.inference_mode():
                # features only: the output layer runs on the real target positions alone
                if self.use_att:
                    with attention_scores_for(teacher).capture() as teacher_scores:
                        teacher_output = teacher(**net_input, features_only=True)
                else:
                    teacher_output = teacher(**net_input, features_only=True)
                teacher_targets = self._teacher_targets(teacher, teacher_output[0], sample)
                teacher_output = (None, teacher_output[1])  # the features are no longer needed
            if teacher_targets is not None and not teacher_targets.is_floating_point():
                # hard targets index the student's log-probabilities, and autograd saves that
                # index for the backward: an inference-mode tensor cannot be saved, a copy can
                teacher_targets = teacher_targets.clone()

        lprobs = model.get_normalized_probs(net_output, log_probs=True)
        target = model.get_targets(sample, net_output)
        skip = self.ignore_prefix_size
        pred_sum = None
        if self.shares_lprobs:
            # L_mle and L_pred read the same log-probabilities: one function, one gradient array
            mle_sum, nll_sum, pred_sum = label_smoothed_nll_and_soft_unlikelihood(
                lprobs.reshape(-1, lprobs.size(-1)), target.reshape(-1), teacher_targets, self.eps,
                self.padding_idx)
        else:
            mle_sum, nll_sum = label_smoothed_nll_loss(
                lprobs[:, skip:].reshape(-1, lprobs.size(-1)), target[:, skip:].reshape(-1), self.eps,
                ignore_index=self.padding_idx, reduce=True)
        sample_size = self.sample_size(sample)
        terms = self.distillation_terms(net_output, lprobs, target, teacher_output, teacher_targets,
                                        student_scores, teacher_scores, sample, pred_sum=pred_sum)
        mle = mle_sum / sample["ntokens"]
        # components are logged unweighted; only L_pred carries a weight in the sum
        loss = negative_distillation_loss(mle, terms, self.alpha, self.pred_weight) * sample_size
        logging_output = self.training_log(loss, nll_sum, mle, sample, sample_size, model, net_output,
                                           alpha=self.alpha * sample_size,
                                           **{name: value.data * sample_size for name, value in terms.items()})
        if self.external_weight > 0:
            loss = loss + self._add_external(model, sample, sample_size, logging_output)
            logging_output["loss"] = loss.data
        return loss, sample_size, logging_output

    @property
    def shares_lprobs(self) -> bool:
        """Soft L_pred at t = 1 reads L_mle's log-probabilities on the same positions."""
        return (self.use_pred and self.negative_target == "soft" and self.temperature == 1.0
                and self.ignore_prefix_size == 0 and not self.compiled)

    def _target_mask(self, target: Tensor) -> Tensor:
        mask = target.ne(self.padding_idx)
        if self.ignore_prefix_size > 0:
            mask[:, :self.ignore_prefix_size] = False
        return mask

    def _teacher_targets(self, teacher, features: Tensor, sample) -> Optional[Tensor]:
        """The prediction-layer negative targets, computed inside the teacher's inference mode.

        The teacher's output layer and softmax run only on the real target positions (padding
        contributes nothing to L_pred): soft targets are their probabilities, ``(N, V)`` for the
        N positions of :meth:`_target_rows`; hard targets the greedy tokens, ``(B, T)``.
        """
        if not self.use_pred or self.negative_target == "random":
            return None
        rows = self._target_rows(sample["target"])
        feats = features.reshape(-1, features.size(-1)).index_select(0, rows)
        logits = teacher.decoder.output_layer(feats)
        if self.negative_target == "hard":
            greedy = sample["target"].new_full((sample["target"].numel(),), self.padding_idx)
            greedy[rows] = logits.argmax(-1)
            return greedy.view_as(sample["target"])
        logits = logits.float()
        probs = torch.softmax(logits / self.temperature if self.temperature != 1.0 else logits, dim=-1)
        if self.pred_eos_weight != 1.0:
            probs[:, self.eos] *= self.pred_eos_weight
        return probs

    def _eos_weights(self, negative_tokens: Tensor) -> Optional[Tensor]:
        """Per-position weights of hard negatives: ``--nd-pred-eos-weight`` where the negative is </s>."""
        if self.pred_eos_weight == 1.0:
            return None
        weights = torch.ones(negative_tokens.shape, dtype=torch.float32, device=negative_tokens.device)
        return weights.masked_fill(negative_tokens.eq(self.eos), self.pred_eos_weight)

    def _target_rows(self, target: Tensor) -> Tensor:
        """Indices of the real target positions in ``target`` flattened to (B * T,)."""
        return self._target_mask(target).reshape(-1).nonzero().squeeze(1)

    def distillation_terms(self, net_output, lprobs: Tensor, target: Tensor, teacher_output,
                           teacher_targets: Optional[Tensor], student_scores: List[Tensor],
                           teacher_scores: List[Tensor], sample, pred_sum: Optional[Tensor] = None
                           ) -> Dict[str, Tensor]:
        """Per-token L_pred, Σ_l L_hid^l and Σ_l L_att^l for one batch (enabled terms only).

        ``lprobs`` are the student's log-probabilities at t = 1 (shared with L_mle);
        ``teacher_targets`` the teacher's probabilities at temperature t on the real target
        positions, ``(N, V)`` (soft), or its greedy tokens, ``(B, T)`` (hard); ``pred_sum``, when
        given, the soft unlikelihood already summed together with L_mle.
        """
        target_mask = self._target_mask(target)
        positions = decoder_position_mask(sample["net_input"]["prev_output_tokens"], self.padding_idx)
        if self.ignore_prefix_size > 0:
            positions = positions.clone()
            positions[:, :self.ignore_prefix_size] = False
        ntokens = target_mask.sum().clamp(min=1)
        terms: Dict[str, Tensor] = {}

        if self.use_pred and pred_sum is not None:
            terms["pred"] = pred_sum / ntokens
        elif self.use_pred:
            student_lp = lprobs if self.temperature == 1.0 else temperature_log_softmax(net_output[0], self.temperature)
            if self.negative_target == "soft":
                rows = self._target_rows(target)
                student_rows = student_lp.reshape(-1, student_lp.size(-1)).index_select(0, rows)
                terms["pred"] = soft_unlikelihood(student_rows, teacher_targets, compiled=self.compiled) / ntokens
            elif self.negative_target == "hard":
                terms["pred"] = hard_unlikelihood(student_lp, teacher_targets, target_mask,
                                                  self._eos_weights(teacher_targets)) / ntokens
            else:
                negative, has = self._random_negatives(target)
                terms["pred"] = hard_unlikelihood(student_lp, negative, has & target_mask,
                                                  self._eos_weights(negative)) / ntokens

        if self.use_hid:
            # inner_states: [embedding output, layer 1, ..., layer L], each T x B x C
            terms["hid"] = hidden_state_loss(net_output[1]["inner_states"][1:], teacher_output[1]["inner_states"][1:],
                                             positions, normalized=self.hidden_features == "normalized")
        if self.use_att:
            terms["att"] = attention_loss(student_scores, teacher_scores, positions, self.attention_features)
        return terms

    def _add_external(self, model, sample, sample_size, logging_output) -> Tensor:
        """W · token unlikelihood of one external negative per query (teacher-forced), × sample_size."""
        term, _ = self.external_negative_term(model, sample)
        logging_output["ext"] = term.data * sample_size
        logging_output[AUX_SIZE] = sample_size
        return self.external_weight * term * sample_size

    def external_negative_term(self, model, sample) -> Tuple[Tensor, int]:
        """Per-token ``-log(1 - p(y'_t | y'_<t, q))`` over one drawn negative y' per query that has any.

        The student reads the query and the negative response (teacher forcing), exactly as it reads
        a reference, and every token of the negative (its </s> included) is pushed down.
        """
        from fairseq.data import data_utils

        negatives = self.task.external_negatives()
        gen = torch.Generator().manual_seed(self.seed * 2_000_003 + self.num_updates * 104_729 + self._draws)
        self._draws += 1
        rows, picked = [], []
        for row, idx in enumerate(sample["id"].tolist()):
            options = negatives[idx] if idx < len(negatives) else []
            if options:
                rows.append(row)
                picked.append(options[int(torch.randint(len(options), (1,), generator=gen))])
        if not rows:
            return sample["net_input"]["src_tokens"].new_zeros((), dtype=torch.float), 0
        device = sample["net_input"]["src_tokens"].device
        pad, eos = self.padding_idx, self.eos
        target = data_utils.collate_tokens(picked, pad, eos).to(device)
        output = forward_on(model, sample, torch.tensor(rows, device=device), target, eos, pad)
        lprobs = model.get_normalized_probs(output, log_probs=True)
        mask = target.ne(pad)
        n_tokens = int(mask.sum())
        return hard_unlikelihood(lprobs, target, mask) / max(n_tokens, 1), n_tokens

    def _random_negatives(self, target: Tensor) -> Tuple[Tensor, Tensor]:
        """A random negative-set response per sentence, aligned to the target positions."""
        responses = self.task.negative_responses()
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.num_updates * 7919 + self._draws)
        self._draws += 1
        bsz, tgt_len = target.shape
        picks = torch.randint(len(responses), (bsz,), generator=gen).tolist()
        negative = target.new_full((bsz, tgt_len), self.padding_idx)
        for row, idx in enumerate(picks):
            tokens = responses[idx][:tgt_len]
            negative[row, :tokens.numel()] = tokens.to(negative.device)
        return negative, negative.ne(self.padding_idx)

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        cls.log_per_token(logging_outputs, LOGGED_TERMS)
