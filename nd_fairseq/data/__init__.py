"""Corpus preparation (nd-prepare) and sentencepiece helpers (nd-spm)."""
