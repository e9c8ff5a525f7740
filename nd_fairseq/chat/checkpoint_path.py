"""Where a model's checkpoint is: a file, or the ``--save-dir`` of fairseq-train (no fairseq import,
so a wrong path is reported before fairseq and torch are loaded)."""

import os

from ..io_utils import InputError

CHECKPOINT_NAMES = ("checkpoint_best.pt", "checkpoint_last.pt")


class CheckpointError(InputError):
    """A checkpoint that is missing or does not fit its data directory."""


def resolve_checkpoint(path: str) -> str:
    """A checkpoint file, or the ``--save-dir`` of fairseq-train (its best, else its last checkpoint)."""
    if os.path.isfile(path):
        return path
    if os.path.isdir(path):
        for name in CHECKPOINT_NAMES:
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                return candidate
        raise CheckpointError(f"checkpoint directory {path} holds neither {' nor '.join(CHECKPOINT_NAMES)}; "
                              f"give a checkpoint file or the --save-dir of a finished fairseq-train run")
    raise CheckpointError(f"checkpoint {path} does not exist; give a checkpoint file (e.g. "
                          f"checkpoints/nd/checkpoint_best.pt) or the --save-dir of fairseq-train")
