"""Safe loading of fairseq checkpoints: ``torch.load(weights_only=True)``, whatever the environment says.

fairseq 0.12's ``checkpoint_utils.load_checkpoint_to_cpu`` calls ``torch.load`` without
``weights_only``. torch >= 2.6 then refuses every fairseq checkpoint (``Unsupported global:
argparse.Namespace``), and with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` set in the environment it
unpickles anything, so a checkpoint carrying an ``os.system`` reducer runs its payload. torch
honours that variable only where a caller did not pass ``weights_only``, so the plugin replaces
fairseq's loader with :func:`load_checkpoint_to_cpu`, which passes ``weights_only=True`` itself, and
allow-lists exactly the non-tensor types that fairseq checkpoints contain:

* ``argparse.Namespace``: the model config of legacy (argparse) architectures such as
  ``transformer`` is stored as a Namespace inside ``cfg``;
* numpy arrays and scalars (``ndarray``, ``dtype``, the dtype classes, ``_reconstruct``,
  ``scalar``): values of logging meters kept in ``extra_state["metrics"]`` (e.g. BLEU counts).

The allow-list is active only while a checkpoint is read (a ``safe_globals`` context), not
process-wide. Everything fairseq loads through ``checkpoint_utils`` goes through it: fairseq-generate
and fairseq-interactive ``--path``, fairseq-train's resume, ``--restore-file`` and
``--finetune-from-model``, the negative teacher and the PNEG language-model backend.

A file that is not a sound checkpoint is reported in one line naming it: a pickled object outside
the allow-list (:class:`UnsafeCheckpointError`), a zip archive cut off while being written, a
record whose CRC does not match (bytes damaged after writing), a text file, anything else torch
cannot read (:class:`CheckpointError`).
"""

import argparse
import os
import pickle
import re
import zipfile
from typing import List

import numpy as np
import torch

from ..io_utils import InputError


class CheckpointError(InputError):
    """A checkpoint file cannot be read: the message names the file, the cause and the fix."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
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
_ZIP_MAGIC = b"PK\x03\x04"
_USE_ANOTHER = ("use another checkpoint (checkpoint_best.pt, an epoch or update checkpoint) or "
                "write this one again")


def safe_globals():
    """Context manager allowing the fairseq checkpoint types in ``torch.load(weights_only=True)``."""
    return torch.serialization.safe_globals(FAIRSEQ_CHECKPOINT_GLOBALS)


def _refusal(path, err: Exception, what: str = "checkpoint") -> UnsafeCheckpointError:
    match = _GLOBAL_RE.search(str(err))
    found = f"the pickled object {match.group(1)!r}" if match else "a pickled object"
    allowed = "argparse.Namespace and numpy arrays/scalars"
    return UnsafeCheckpointError(
        f"refused to load {what} {path}: it contains {found}, which fairseq checkpoints never "
        f"hold (nd_fairseq loads with torch.load(weights_only=True), allowing tensors, {allowed}); "
        f"use a checkpoint written by fairseq-train, or re-save its state dict from a trusted source")


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:  # a multi-byte character cut by the 512-byte window is fine
        if err.start < len(head) - 3:
            return False
        text = head[:err.start].decode("utf-8")
    return all(ch.isprintable() or ch in "\n\r\t" for ch in text)


def _check_container(path: str, what: str) -> None:
    """One-line errors for an empty, truncated, damaged or text file, before unpickling it."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        raise CheckpointError(f"{what} {path} is empty (0 bytes); {_USE_ANOTHER}")
    if head.startswith(_ZIP_MAGIC):  # torch's format since 1.6: a zip archive of records
        if not zipfile.is_zipfile(path):
            raise CheckpointError(
                f"{what} {path} is truncated ({os.path.getsize(path)} bytes, a zip archive without "
                f"its central directory: it was cut off while being written); {_USE_ANOTHER}")
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()  # reads every record and compares its CRC-32
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise CheckpointError(f"{what} {path} is damaged ({err}); {_USE_ANOTHER}") from None
        if bad is not None:
            raise CheckpointError(f"{what} {path} is damaged (record {bad} fails its CRC check: "
                                  f"bytes changed after it was written); {_USE_ANOTHER}")
    elif _looks_like_text(head):
        first = head.decode("utf-8", errors="replace").splitlines()[0][:40] if head.strip() else ""
        raise CheckpointError(f"{what} {path} is a text file (it starts {first!r}), not a "
                              f"checkpoint; give a .pt file written by fairseq-train")


def read_checkpoint(path: str, what: str = "checkpoint") -> dict:
    """``torch.load(path, weights_only=True)`` with the fairseq allow-list; one-line errors.

    ``weights_only=True`` is passed explicitly, so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot turn
    the safe unpickler off. ``what`` names the file in messages (e.g. "teacher checkpoint").
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} {path} does not exist or is not a file; check the path")
    with safe_globals():
        try:
            _check_container(path, what)
            with open(path, "rb") as f:
                state = torch.load(f, map_location=torch.device("cpu"), weights_only=True)
        except CheckpointError:  # from _check_container: already one line naming the file
            raise
        except OSError as err:
            raise CheckpointError(f"{what} {path} cannot be read ({err.strerror or err}); check its "
                                  f"permissions and the disk") from None
        except pickle.UnpicklingError as err:
            if _GLOBAL_RE.search(str(err)):
                raise _refusal(path, err, what) from None
            reason = "its pickle stream is malformed"
        except (RuntimeError, EOFError, KeyError, IndexError, ValueError, TypeError, AttributeError,
                OverflowError, UnicodeDecodeError) as err:
            first = str(err).splitlines()[0][:120] if str(err) else ""
            reason = f"{type(err).__name__}: {first}" if first else type(err).__name__
        else:
            if not isinstance(state, dict) or "model" not in state:
                content = "a dict without a 'model' entry" if isinstance(state, dict) else f"a {type(state).__name__}"
                raise CheckpointError(f"{what} {path} holds {content}, not a fairseq checkpoint; give a "
                                      f".pt file written by fairseq-train")
            return state
    raise CheckpointError(f"{what} {path} cannot be read as a torch checkpoint ({reason}): it is "
                          f"corrupt or not a checkpoint; {_USE_ANOTHER}")


def _as_config(state: dict, arg_overrides) -> None:
    """What fairseq's loader does after ``torch.load``: overrides, ``cfg`` as an OmegaConf config."""
    from omegaconf import OmegaConf
    from omegaconf import __version__ as omegaconf_version

    from fairseq.dataclass.utils import overwrite_args_by_name

    if state.get("args") is not None and arg_overrides is not None:
        for name, value in arg_overrides.items():
            setattr(state["args"], name, value)
    if state.get("cfg") is None:
        return
    # the config holds argparse.Namespace objects (legacy model configs)
    if tuple(int(x) for x in omegaconf_version.split(".")[:2]) >= (2, 2):
        state["cfg"] = OmegaConf.create(state["cfg"], flags={"allow_objects": True})
    else:  # pragma: no cover - omegaconf 2.0/2.1 have no allow_objects flag
        from omegaconf import _utils

        is_primitive = _utils.is_primitive_type
        _utils.is_primitive_type = lambda _: True
        try:
            state["cfg"] = OmegaConf.create(state["cfg"])
        finally:
            _utils.is_primitive_type = is_primitive
        OmegaConf.set_struct(state["cfg"], True)
    if arg_overrides is not None:
        overwrite_args_by_name(state["cfg"], arg_overrides)


def load_checkpoint_to_cpu(path, arg_overrides=None, load_on_all_ranks=False, *, what="checkpoint"):
    """Drop-in for fairseq's ``checkpoint_utils.load_checkpoint_to_cpu``, reading with
    :func:`read_checkpoint` (``weights_only=True``, one-line errors)."""
    from fairseq import checkpoint_utils
    from fairseq.file_io import PathManager

    local_path = PathManager.get_local_path(path)
    if local_path != path and PathManager.path_requires_pathmanager(path):
        # a remote file (e.g. checkpoint_last.pt) may have changed since it was cached: fetch again
        try:
            os.remove(local_path)
        except FileNotFoundError:
            pass
        if load_on_all_ranks:
            torch.distributed.barrier()
        local_path = PathManager.get_local_path(path)
    state = read_checkpoint(local_path, what)
    _as_config(state, arg_overrides)
    try:
        state = checkpoint_utils._upgrade_state_dict(state)
    except (KeyError, AttributeError, TypeError) as err:
        raise CheckpointError(f"{what} {path} is not a fairseq checkpoint (upgrading its state failed: "
                              f"{type(err).__name__} {err}); give a .pt file written by fairseq-train") from None
    return state


load_checkpoint_to_cpu.__nd_safe__ = True


def install() -> None:
    """Route fairseq's checkpoint loading through the safe loader (idempotent)."""
    from fairseq import checkpoint_utils

    if not getattr(checkpoint_utils.load_checkpoint_to_cpu, "__nd_safe__", False):
        checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu
