"""Fixes to fairseq 0.12 behaviour that would silently corrupt this plugin's results.

* ``data_utils.batch_by_size`` drops the last batch when it is not a multiple of
  ``--required-batch-size-multiple`` (default 8): fairseq-generate then skips up to 7 test
  sentences and every training epoch up to 7 pairs (fairseq issues #5036, #5351). Evaluation on a
  test set that silently loses sentences is wrong, so once the plugin is loaded the remainder is
  kept as a final, smaller batch (the batch the Cython batcher built before the wrapper dropped it).
* ``Trainer.load_checkpoint`` (resuming with ``checkpoint_last.pt`` or ``--restore-file``) never
  restores the ``task_state`` that ``Trainer.save_checkpoint`` writes, so state a task keeps for its
  criterion (e.g. the running statistics of the baseline criteria) would restart from zero on
  resume. The loaded checkpoint's ``task_state`` is handed to ``task.load_state_dict`` after the
  trainer has loaded it.
* In multi-process training rank 0 loads a checkpoint and broadcasts it (``_broadcast_object_slow``),
  and the other ranks unpickle it with ``torch.load``, which on torch >= 2.6 refuses the OmegaConf
  config that the loaded state now holds: every distributed resume or ``--finetune-from-model``
  failed. The broadcast is unpickled with the checkpoint allow-list plus exactly the types an
  OmegaConf config is made of and fairseq's tensor placeholder (still ``weights_only=True``).
* ``--no-repeat-ngram-size`` did nothing without the CUDA extension (CPU decoding): the Python
  fallback of ``NGramRepeatBlock`` compared n-grams against the end of the whole, padded token
  buffer instead of the tokens generated so far. It now looks at ``tokens[:, :step + 1]``, as the
  CUDA kernel does (never banning the BOS at position 0, so ``--no-repeat-ngram-size 1`` can end).
"""

import functools


def keep_last_batch(original):
    @functools.wraps(original)
    def batch_by_size(indices, num_tokens_fn, num_tokens_vec=None, max_tokens=None, max_sentences=None,
                      required_batch_size_multiple=1, fixed_shapes=None):
        batches = original(indices, num_tokens_fn, num_tokens_vec=num_tokens_vec, max_tokens=max_tokens,
                           max_sentences=max_sentences,
                           required_batch_size_multiple=required_batch_size_multiple,
                           fixed_shapes=fixed_shapes)
        if fixed_shapes is not None or required_batch_size_multiple <= 1:
            return batches
        # the batches are consecutive slices of `indices`; whatever was dropped is the tail
        kept = sum(len(b) for b in batches)
        if kept < len(indices):
            batches = list(batches) + [indices[kept:]]
        return batches

    batch_by_size.__nd_fixed__ = True
    return batch_by_size


def restore_task_state(original):
    @functools.wraps(original)
    def load_checkpoint(self, filename, *args, **kwargs):
        from .safe_load import take_loaded_task_state

        take_loaded_task_state()  # forget anything loaded before this call
        extra_state = original(self, filename, *args, **kwargs)
        task_state = take_loaded_task_state()
        if task_state and self.task is not None:
            self.task.load_state_dict(task_state)
        return extra_state

    load_checkpoint.__nd_fixed__ = True
    return load_checkpoint


def _omegaconf_globals():
    import collections
    import typing

    from omegaconf import DictConfig, ListConfig
    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.nodes import AnyNode, BooleanNode, EnumNode, FloatNode, IntegerNode, StringNode

    return [DictConfig, ListConfig, ContainerMetadata, Metadata, AnyNode, BooleanNode, EnumNode, FloatNode,
            IntegerNode, StringNode, typing.Any, collections.defaultdict, dict, list, int, float, str, bool]


def safe_broadcast(original):
    @functools.wraps(original)
    def _broadcast_object_slow(*args, **kwargs):
        import torch

        from fairseq.distributed.utils import _TensorPlaceholder  # broadcast_object's stand-in for tensors

        from .safe_load import FAIRSEQ_CHECKPOINT_GLOBALS

        allowed = FAIRSEQ_CHECKPOINT_GLOBALS + _omegaconf_globals() + [_TensorPlaceholder]
        with torch.serialization.safe_globals(allowed):
            return original(*args, **kwargs)

    _broadcast_object_slow.__nd_fixed__ = True
    return _broadcast_object_slow


def block_repeated_ngrams(self, tokens, lprobs, bsz: int, beam_size: int, step: int):
    """``NGramRepeatBlock._no_repeat_ngram`` on the generated prefix ``tokens[:, :step + 1]``."""
    import math

    import torch

    n = self.no_repeat_ngram_size
    for row, prefix in enumerate(tokens[:, :step + 1].tolist()):
        last = prefix[len(prefix) - (n - 1):] if n > 1 else []
        # position 0 holds the BOS (</s>), not a generated token: it is never banned as a repeat
        banned = [prefix[i + n - 1] for i in range(max(0, 1 - (n - 1)), len(prefix) - n + 1)
                  if prefix[i:i + n - 1] == last]
        if banned:
            lprobs[row, torch.tensor(banned, dtype=torch.long)] = -math.inf
    return lprobs


block_repeated_ngrams.__nd_fixed__ = True


def install() -> None:
    from fairseq.data import data_utils
    from fairseq.trainer import Trainer

    if not getattr(data_utils.batch_by_size, "__nd_fixed__", False):
        data_utils.batch_by_size = keep_last_batch(data_utils.batch_by_size)
    if not getattr(Trainer.load_checkpoint, "__nd_fixed__", False):
        Trainer.load_checkpoint = restore_task_state(Trainer.load_checkpoint)
    from fairseq.ngram_repeat_block import NGramRepeatBlock

    NGramRepeatBlock._no_repeat_ngram = block_repeated_ngrams
    from fairseq.distributed import utils as distributed_utils

    if not getattr(distributed_utils._broadcast_object_slow, "__nd_fixed__", False):
        distributed_utils._broadcast_object_slow = safe_broadcast(distributed_utils._broadcast_object_slow)
