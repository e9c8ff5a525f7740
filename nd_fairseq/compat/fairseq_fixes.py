"""Fixes to fairseq 0.12 behaviour that would silently corrupt this plugin's results.

* ``data_utils.batch_by_size`` drops the last batch when it is not a multiple of
  ``--required-batch-size-multiple`` (default 8): fairseq-generate then skips up to 7 test
  sentences and every training epoch up to 7 pairs (fairseq issues #5036, #5351). Evaluation on a
  test set that silently loses sentences is wrong, so once the plugin is loaded the remainder is
  kept as a final, smaller batch (the batch the Cython batcher built before the wrapper dropped it).
* ``Trainer.load_checkpoint`` (resuming with ``checkpoint_last.pt`` or ``--restore-file``) never
  restores the ``task_state`` that ``Trainer.save_checkpoint`` writes, so state a task keeps for its
  criterion (e.g. the running statistics of the baseline criteria) would restart from zero on
  resume. The ``task_state`` of the checkpoint that call reads is handed back by the loader and
  given to ``task.load_state_dict`` after the trainer has loaded the rest.
* In multi-process training rank 0 loads a checkpoint and broadcasts it (``_broadcast_object_slow``),
  and the other ranks unpickle it with ``torch.load``, which on torch >= 2.6 refuses the OmegaConf
  config that the loaded state now holds: every distributed resume or ``--finetune-from-model``
  failed. The broadcast is unpickled with ``weights_only=True`` passed explicitly (so
  ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot turn it off) and the checkpoint allow-list plus exactly
  the types an OmegaConf config is made of and fairseq's tensor placeholder.
* ``checkpoint_utils`` writes the first checkpoint file of a save to ``NAME.tmp`` and renames it
  without ``fsync``, then ``shutil.copyfile``s it to the other names (``checkpoint_last.pt``,
  ``checkpoint_best.pt``): a kill during the copy leaves a truncated ``checkpoint_last.pt`` and the
  resume fails. Every file is now written to ``NAME.tmp``, flushed to disk and renamed over
  ``NAME`` (then the directory is synced), so a kill leaves the old file or the new one; the
  ``.tmp`` such a kill leaves is removed when training starts again.
* An error of the plugin about bad input (:class:`~nd_fairseq.io_utils.InputError`: a wrong option,
  a bad teacher or checkpoint file) raised inside a fairseq command-line tool would end in a Python
  traceback with exit code 1. In those tools it is printed as one line, ``PROG: error: MESSAGE``,
  with exit code 2, as argparse reports a bad option; other exceptions keep their traceback.
* ``--no-repeat-ngram-size`` did nothing without the CUDA extension (CPU decoding): the Python
  fallback of ``NGramRepeatBlock`` compared n-grams against the end of the whole, padded token
  buffer instead of the tokens generated so far. It now looks at ``tokens[:, :step + 1]``, as the
  CUDA kernel does (never banning the BOS at position 0, so ``--no-repeat-ngram-size 1`` can end).
"""

import functools
import os
import shutil
import sys


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
        from fairseq import checkpoint_utils

        # the trainer reads the file through checkpoint_utils.load_checkpoint_to_cpu and keeps
        # the state to itself: for the length of this call that loader also hands the state's
        # task_state back here (a rank that gets the state by broadcast reads no file and restores nothing)
        task_states = []
        load_to_cpu = checkpoint_utils.load_checkpoint_to_cpu

        @functools.wraps(load_to_cpu)
        def load_and_hand_back(*load_args, **load_kwargs):
            state = load_to_cpu(*load_args, **load_kwargs)
            task_states.append(state.get("task_state"))
            return state

        checkpoint_utils.load_checkpoint_to_cpu = load_and_hand_back
        try:
            extra_state = original(self, filename, *args, **kwargs)
        finally:
            checkpoint_utils.load_checkpoint_to_cpu = load_to_cpu
        task_state = task_states[-1] if task_states else None
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
    def _broadcast_object_slow(obj, src_rank, group, dist_device):
        import io

        import torch

        from fairseq.distributed.utils import _TensorPlaceholder  # broadcast_object's stand-in for tensors
        from fairseq.distributed.utils import broadcast, get_rank

        from .safe_load import FAIRSEQ_CHECKPOINT_GLOBALS

        # the same wire format as fairseq's: the length, then the torch.save bytes
        if get_rank(group) == src_rank:
            buffer = io.BytesIO()
            torch.save(obj, buffer)
            data = torch.ByteTensor(buffer.getbuffer()).to(dist_device)
            broadcast(torch.LongTensor([len(data)]).to(dist_device), src=src_rank, group=group)
            broadcast(data, src=src_rank, group=group)
            return obj
        length = torch.LongTensor([0]).to(dist_device)
        broadcast(length, src=src_rank, group=group)
        data = torch.ByteTensor(int(length.item())).to(dist_device)
        broadcast(data, src=src_rank, group=group)
        allowed = FAIRSEQ_CHECKPOINT_GLOBALS + _omegaconf_globals() + [_TensorPlaceholder]
        with torch.serialization.safe_globals(allowed):
            return torch.load(io.BytesIO(data.cpu().numpy()), map_location="cpu", weights_only=True)

    _broadcast_object_slow.__nd_fixed__ = True
    return _broadcast_object_slow


def _fsync_directory(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - a platform without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def write_then_rename(filename: str, write) -> None:
    """``write(f)`` into ``filename + ".tmp"``, fsync it, rename it over ``filename``, sync the directory.

    A kill at any moment leaves ``filename`` as it was or complete (and at most a stale ``.tmp``,
    which the next write of that name replaces). The file gets the permissions ``open(..., "wb")``
    gives (the umask applies).
    """
    tmp = filename + ".tmp"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filename)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(os.path.dirname(os.path.abspath(filename)))


def atomic_checkpoint_save(original):
    @functools.wraps(original)
    def torch_persistent_save(obj, filename, async_write: bool = False):
        from fairseq.file_io import PathManager

        if async_write or PathManager.path_requires_pathmanager(filename) or not isinstance(filename, str):
            return original(obj, filename, async_write=async_write)
        from fairseq import checkpoint_utils

        write_then_rename(filename, lambda f: checkpoint_utils._torch_persistent_save(obj, f))

    torch_persistent_save.__nd_fixed__ = True
    return torch_persistent_save


def remove_stale_temporaries(original):
    @functools.wraps(original)
    def load_checkpoint(cfg, trainer, **kwargs):
        # a kill during a save leaves NAME.pt.tmp beside the intact NAME.pt: remove it at start-up
        save_dir = getattr(cfg, "save_dir", None)
        if save_dir and os.path.isdir(save_dir) and trainer.should_save_checkpoint_on_current_rank:
            for name in os.listdir(save_dir):
                if name.startswith("checkpoint") and name.endswith(".pt.tmp"):
                    try:
                        os.remove(os.path.join(save_dir, name))
                    except OSError:
                        pass
        return original(cfg, trainer, **kwargs)

    load_checkpoint.__nd_fixed__ = True
    return load_checkpoint


def _atomic_copy_path_manager():
    """fairseq's ``PathManager`` whose ``copy`` of a local file is write-then-rename."""
    from fairseq.file_io import PathManager

    class AtomicCopyPathManager(PathManager):
        __nd_fixed__ = True

        @staticmethod
        def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
            if PathManager.path_requires_pathmanager(src_path) or PathManager.path_requires_pathmanager(dst_path):
                return PathManager.copy(src_path, dst_path, overwrite=overwrite)
            if not overwrite and os.path.exists(dst_path):
                return False
            with open(src_path, "rb") as src:
                write_then_rename(dst_path, lambda f: shutil.copyfileobj(src, f, 1 << 22))
            return True

    return AtomicCopyPathManager


def _running_a_fairseq_tool() -> bool:
    if hasattr(sys, "ps1") or sys.flags.interactive:
        return False  # an interactive session must not exit on an error
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and (spec.name or "").startswith("fairseq_cli."):
        return True
    return os.path.basename(sys.argv[0] if sys.argv else "").startswith("fairseq-")


def _input_error_message(value):
    """The message of a plugin :class:`InputError`, also one re-raised from a spawned worker; else None."""
    from ..io_utils import InputError

    if isinstance(value, InputError):
        return str(value)
    if type(value).__name__ == "ProcessRaisedException":
        # torch.multiprocessing.spawn re-raises a worker's error as the text of its traceback,
        # whose last line is "module.Class: message"
        lines = str(value).strip().splitlines()
        name, _, message = lines[-1].partition(": ") if lines else ("", "", "")
        module, _, class_name = name.rpartition(".")
        kind = getattr(sys.modules.get(module), class_name, None) if module.startswith("nd_fairseq") else None
        if isinstance(kind, type) and issubclass(kind, InputError):
            return message
    return None


def report_input_errors(previous_hook):
    def excepthook(kind, value, traceback):
        message = _input_error_message(value)
        if message is not None:
            sys.stdout.flush()
            prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "fairseq"
            message = " ".join(message.split("\n"))
            sys.stderr.write(f"{prog}: error: {message}\n")
            sys.stderr.flush()
            sys.exit(2)  # raised from the hook, SystemExit sets the process's exit status
        previous_hook(kind, value, traceback)

    excepthook.__nd_fixed__ = True
    return excepthook
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
    from fairseq import checkpoint_utils
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
    if not getattr(checkpoint_utils.torch_persistent_save, "__nd_fixed__", False):
        checkpoint_utils.torch_persistent_save = atomic_checkpoint_save(checkpoint_utils.torch_persistent_save)
    if not getattr(checkpoint_utils.load_checkpoint, "__nd_fixed__", False):
        checkpoint_utils.load_checkpoint = remove_stale_temporaries(checkpoint_utils.load_checkpoint)
    if not getattr(checkpoint_utils.PathManager, "__nd_fixed__", False):
        checkpoint_utils.PathManager = _atomic_copy_path_manager()  # the copies of checkpoint_utils only
    if _running_a_fairseq_tool() and not getattr(sys.excepthook, "__nd_fixed__", False):
        sys.excepthook = report_input_errors(sys.excepthook)
