"""Safe loading of fairseq checkpoints on torch >= 2.6 (``torch.load(weights_only=True)``).

fairseq 0.12's ``checkpoint_utils.load_checkpoint_to_cpu`` calls ``torch.load`` without
``weights_only``; torch >= 2.6 then refuses every fairseq checkpoint (``Unsupported global:
argparse.Namespace``). Upstream fairseq switched to ``weights_only=False``, which lets a checkpoint
run arbitrary code. We keep the safe unpickler and allow-list exactly the non-tensor types that
fairseq checkpoints contain:

* ``argparse.Namespace``: the model config of legacy (argparse) architectures such as
  ``transformer`` is stored as a Namespace inside ``cfg``;
* numpy arrays and scalars (``ndarray``, ``dtype``, the dtype classes, ``_reconstruct``,
  ``scalar``): values of logging meters kept in ``extra_state["metrics"]`` (e.g. BLEU counts).

The allow-list is active only while fairseq loads a checkpoint (a ``safe_globals`` context), not
process-wide. Anything else in the pickle is refused with :class:`UnsafeCheckpointError`.
"""

import argparse
import functools
import pickle
import re
from typing import List

import numpy as np
import torch


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds a pickled object outside the fairseq allow-list."""


def _numpy_globals() -> List[object]:
    try:
        multiarray = np._core.multiarray  # numpy >= 2
    except AttributeError:  # pragma: no cover - numpy 1.x
        multiarray = np.core.multiarray
    dtype_classes = {type(np.dtype(t)) for t in (
        np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
        np.uint8, np.uint16, np.uint32, np.uint64, np.bool_)}
    return [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar,
            *sorted(dtype_classes, key=lambda c: c.__name__)]


FAIRSEQ_CHECKPOINT_GLOBALS: List[object] = [argparse.Namespace, *_numpy_globals()]

_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")


def safe_globals():
    """Context manager allowing the fairseq checkpoint types in ``torch.load(weights_only=True)``."""
    return torch.serialization.safe_globals(FAIRSEQ_CHECKPOINT_GLOBALS)


def _refusal(path, err: Exception) -> UnsafeCheckpointError:
    match = _GLOBAL_RE.search(str(err))
    what = f"the pickled object {match.group(1)!r}" if match else "a pickled object"
    allowed = "argparse.Namespace and numpy arrays/scalars"
    return UnsafeCheckpointError(
        f"refused to load checkpoint {path}: it contains {what}, which fairseq checkpoints never "
        f"hold (nd_fairseq loads with torch.load(weights_only=True), allowing tensors, {allowed}); "
        f"use a checkpoint written by fairseq-train, or re-save its state dict from a trusted source")


_loaded_task_state = [None]


def take_loaded_task_state():
    """The ``task_state`` of the checkpoint loaded last (then forgotten); see fairseq_fixes."""
    state, _loaded_task_state[0] = _loaded_task_state[0], None
    return state


def safe_load_checkpoint_to_cpu(original):
    """Wrap fairseq's ``load_checkpoint_to_cpu`` with the allow-list and a clear refusal."""

    @functools.wraps(original)
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        with safe_globals():
            try:
                state = original(path, *args, **kwargs)
            except UnsafeCheckpointError:
                raise
            except pickle.UnpicklingError as err:
                raise _refusal(path, err) from None
        _loaded_task_state[0] = state.get("task_state") if isinstance(state, dict) else None
        return state

    load_checkpoint_to_cpu.__nd_safe__ = True
    return load_checkpoint_to_cpu


def install() -> None:
    """Route fairseq's checkpoint loading through the safe loader (idempotent)."""
    from fairseq import checkpoint_utils

    if not getattr(checkpoint_utils.load_checkpoint_to_cpu, "__nd_safe__", False):
        checkpoint_utils.load_checkpoint_to_cpu = safe_load_checkpoint_to_cpu(
            checkpoint_utils.load_checkpoint_to_cpu)
