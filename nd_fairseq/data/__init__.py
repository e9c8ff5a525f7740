"""Corpus preparation (nd-prepare: ``prepare.py``), word tokenisation (``tokenize.py``), sentencepiece
helpers (nd-spm: ``spm.py``), a data directory's ``preprocessing.json`` (``preprocessing.py``) and
the ND criterion's external negatives (``external_negatives.py``). Only the last needs a fairseq
dictionary, given by its caller; nothing here imports fairseq or torch."""
