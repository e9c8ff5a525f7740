"""The frozen negative teacher: loaded once from a fairseq checkpoint, checked, held off the books.

The teacher is deliberately *not* an ``nn.Module`` attribute of the criterion. fairseq's trainer
calls ``criterion.train()`` every step (dropout would come back on), halves the criterion under
``--fp16``, saves ``criterion.state_dict()`` into every checkpoint, and wraps a criterion that has
parameters in DDP. Held in a plain object, the teacher avoids all four: it stays in eval mode with
``requires_grad=False``, moves to the student's device and dtype on first use, and never appears
in the student's parameters, optimiser state or checkpoint.
"""

import logging
import os
from typing import List, Optional, Sequence

import torch
from torch import nn

from .io_utils import InputError

logger = logging.getLogger(__name__)

# Key under which the negative_distillation task stores its dictionaries' symbols in the task
# state of every checkpoint it writes, so a teacher can be checked symbol by symbol later.
DICTIONARY_STATE_KEY = "nd_dictionary_symbols"


class TeacherMismatchError(InputError):
    """Teacher and student disagree on dictionary or architecture."""


def dictionary_symbols(dictionary) -> List[str]:
    return list(dictionary.symbols)


def describe_dictionary_difference(teacher: Sequence[str], student: Sequence[str]) -> Optional[str]:
    """None if equal, else a short description of the first difference."""
    if list(teacher) == list(student):
        return None
    if len(teacher) != len(student):
        return f"the teacher's has {len(teacher)} symbols, the student's {len(student)}"
    for i, (a, b) in enumerate(zip(teacher, student)):
        if a != b:
            return f"symbol {i} is {a!r} in the teacher's and {b!r} in the student's"
    return "they differ"  # pragma: no cover


def _teacher_dictionary(state: dict, side: str) -> Optional[List[str]]:
    """The teacher's ``side`` ('source'/'target') dictionary symbols, if the checkpoint tells."""
    stored = (state.get("task_state") or {}).get(DICTIONARY_STATE_KEY)
    if stored and side in stored:
        return list(stored[side])
    # a teacher trained with a stock task: its dictionaries may still sit in its data directory
    cfg = state.get("cfg")
    task_cfg = getattr(cfg, "task", None) if cfg is not None else None
    data = getattr(task_cfg, "data", None) if task_cfg is not None else None
    if not data:
        return None
    data_dir = str(data).split(os.pathsep)[0]
    lang = getattr(task_cfg, "source_lang" if side == "source" else "target_lang", None)
    if lang is None:
        # the translation task infers the languages from the file names and stores None in the
        # config (the usual case): infer them again from the teacher's data directory
        lang = _inferred_language(data_dir, side)
    if lang:
        from fairseq.data import Dictionary

        path = os.path.join(data_dir, f"dict.{lang}.txt")
        if os.path.isfile(path):
            return dictionary_symbols(Dictionary.load(path))
    return None


def _inferred_language(data_dir: str, side: str) -> Optional[str]:
    """The source or target language fairseq's translation task infers from ``data_dir``."""
    if not os.path.isdir(data_dir):
        return None
    from fairseq.data import data_utils

    src, tgt = data_utils.infer_language_pair(data_dir)
    return src if side == "source" else tgt


def check_dictionaries(state: dict, task, path: str) -> None:
    """Raise a one-line :class:`TeacherMismatchError` unless the teacher's dictionaries are the student's."""
    for side, student_dict in (("source", task.source_dictionary), ("target", task.target_dictionary)):
        if student_dict is None:
            continue
        teacher_symbols = _teacher_dictionary(state, side)
        if teacher_symbols is None:
            # last resort: the embedding matrix tells the size
            key = "decoder.embed_tokens.weight" if side == "target" else "encoder.embed_tokens.weight"
            weight = state.get("model", {}).get(key)
            if weight is not None and weight.shape[0] != len(student_dict):
                raise TeacherMismatchError(
                    f"teacher {path} has a {side} dictionary of {weight.shape[0]} symbols, the student "
                    f"{len(student_dict)}; train the teacher on data binarised with the student's "
                    f"dictionary (preprocess.sh builds both with one)")
            logger.warning("teacher %s records no %s dictionary; only its size was checked", path, side)
            continue
        diff = describe_dictionary_difference(teacher_symbols, dictionary_symbols(student_dict))
        if diff:
            raise TeacherMismatchError(
                f"teacher {path} was trained with a different {side} dictionary ({diff}); train the "
                f"teacher on data binarised with the student's dictionary (preprocess.sh builds both with one)")


def architecture_signature(model: nn.Module) -> dict:
    from .models.capture import decoder_of

    decoder = decoder_of(model)
    layers = getattr(decoder, "layers", [])
    heads = layers[0].self_attn.num_heads if len(layers) else None
    return {"decoder layers": len(layers), "embed dim": getattr(decoder, "embed_dim", None),
            "attention heads": heads}


def check_architecture(teacher: nn.Module, student: nn.Module, path: str) -> None:
    t, s = architecture_signature(teacher), architecture_signature(student)
    for name in t:
        if t[name] != s[name]:
            raise TeacherMismatchError(
                f"teacher {path} has {t[name]} {name}, the student {s[name]}; negative distillation "
                f"matches layer by layer, so train the teacher with the student's --arch and sizes")


class FrozenTeacher:
    """A fairseq model loaded from ``path`` for inference only (see the module docstring)."""

    def __init__(self, path: str, task):
        if not path:
            raise InputError("--nd-teacher-path is required: give the negative teacher's checkpoint "
                             "(train it on the negative set, e.g. data-bin/negative)")
        if not os.path.isfile(path):
            raise InputError(f"teacher checkpoint {path} does not exist; train the negative teacher "
                             f"first (fairseq-train data-bin/negative ...) or fix --nd-teacher-path")
        from .compat.safe_load import install, load_checkpoint_to_cpu

        install()
        # weights_only=True whatever the environment says; a truncated, damaged, text or foreign
        # file is a one-line CheckpointError naming it
        state = load_checkpoint_to_cpu(path, what="teacher checkpoint")
        if "model" not in state or "cfg" not in state or state["cfg"] is None:
            raise InputError(f"teacher checkpoint {path} has no model or config; give a checkpoint "
                             f"written by fairseq-train")
        check_dictionaries(state, task, path)
        cfg = state["cfg"]
        from fairseq import models

        # not task.build_model: translation's build_model would also point the task's BLEU
        # generator at this model
        model = models.build_model(cfg.model, task, from_checkpoint=True)
        try:
            model.load_state_dict(state["model"], strict=True, model_cfg=cfg.model)
        except RuntimeError as err:
            first = str(err).splitlines()[0]
            raise TeacherMismatchError(f"teacher {path} does not fit its own architecture ({first})") from None
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.path = path
        self.model = model
        self.num_updates = (state.get("optimizer_history") or [{}])[-1].get("num_updates")
        self._placed = (torch.device("cpu"), next(model.parameters()).dtype)

    def place_like(self, student: nn.Module) -> nn.Module:
        """Move the teacher to the student's device and dtype (once; later calls are free)."""
        ref = next(student.parameters())
        if (ref.device, ref.dtype) != self._placed:
            self.model.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else None)
            self._placed = (ref.device, ref.dtype)
        self.model.eval()
        return self.model
