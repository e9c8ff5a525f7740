"""Architectures registered with fairseq (transformer_nd_dialog*) and decoder-capture helpers."""

from . import transformer_nd_dialog  # noqa: F401
