"""The maths of Negative Distillation as small pure functions (tensors in, tensors out).

Equation numbers are those of Li et al., NAACL 2022; docs/method.md gives every decision taken
where the paper is vague. The criteria in :mod:`nd_fairseq.criterions` only wire model outputs to
these functions (the baselines' own losses sit beside their criteria, as fairseq's do).

    Eq.    what                                  function                                  tests (tests/...)
    1      L_mle, label-smoothed MLE             fairseq's label_smoothed_nll_loss         test_label_smoothing.py
    1 + 6  L_mle and L_pred in one pass          label_smoothed_nll_and_soft_unlikelihood  test_losses_fused.py
    2      token unlikelihood                    hard_unlikelihood, log1mexp               test_losses.py
    6      L_pred, soft unlikelihood             soft_unlikelihood                         test_losses.py, test_losses_fused.py
    7      temperature softmax                   temperature_log_softmax                   test_losses.py
    8      MRSE                                  mrse                                      test_losses.py
    9      L_hid, every decoder layer            hidden_state_loss                         test_losses.py, test_criterion.py
    10-12  L_att, pre-softmax self-attention     attention_loss, self_attention_mask       test_losses.py, test_capture.py
    13     the total                             negative_distillation_loss                test_losses.py, test_criterion.py
    14-16  progressive α                         alpha_at                                  test_losses.py
    T. 8   fixed α, the mean of the schedule     mean_alpha                                test_losses.py

Eq. 4 (source entropy) is counted in :func:`nd_fairseq.filtering.entropy.conditional_entropy`. The
baselines: UL's vocabulary penalty and weighted unlikelihood
(:func:`nd_fairseq.criterions.unlikelihood_dialog.vocabulary_penalty`, then :func:`hard_unlikelihood`
with weights), NT's negative update
(:func:`nd_fairseq.criterions.negative_training.negative_log_likelihood_term`), FACE's weights and
weighted cross-entropy (:func:`nd_fairseq.criterions.face.face_weights`,
:func:`nd_fairseq.criterions.face.frequency_weighted_ce`); tests in tests/test_baselines_losses.py.
"""

from .features import (  # noqa: F401
    ATTENTION_FEATURES,
    attention_loss,
    decoder_position_mask,
    hidden_state_loss,
    mrse,
    normalize_features,
    self_attention_mask,
    standardize_rows,
)
from .objective import negative_distillation_loss  # noqa: F401
from .schedule import alpha_at, mean_alpha  # noqa: F401
from .unlikelihood import (  # noqa: F401
    UNLIKELIHOOD_MIN_ONE_MINUS_P,
    compile_soft_unlikelihood,
    hard_unlikelihood,
    label_smoothed_nll_and_soft_unlikelihood,
    log1mexp,
    soft_unlikelihood,
    temperature_log_softmax,
)
