"""External negatives of the ND criterion: a JSON-lines file, tokenised and binarised for one dictionary.

Line i of the file (e.g. written by ``nd-pneg export-negatives``) is a JSON list of bad responses
to training pair i. Each response goes through the word tokenisation of nd-prepare
(:func:`~.tokenize.make_tokenizer`), the data's sentencepiece model and the student's target
dictionary, as the training responses did. The task ``negative_distillation`` calls
:func:`load_external_negatives` for ``--external-negatives``; fairseq and torch are not imported
here (the dictionary makes the tensors).
"""

import json
import logging
from typing import List, Optional

from ..io_utils import InputError, iter_numbered_lines, require_file
from .tokenize import make_tokenizer

logger = logging.getLogger(__name__)


def load_external_negatives(path: str, dictionary, spm_model: str, tokenize: str = "moses",
                            lowercase: bool = True, n_pairs: Optional[int] = None) -> List[list]:
    """Per line of ``path``, the token tensors (each ending in </s>) of its negatives in ``dictionary``.

    ``spm_model`` is the sentencepiece model that encoded the training data, ``tokenize`` and
    ``lowercase`` nd-prepare's options for it. A response that encodes to nothing but </s> is
    dropped. With ``n_pairs`` (the training set's size) a file of another length is refused.
    """
    require_file(path, "external negatives file", "create it with nd-pneg export-negatives")
    require_file(spm_model, "sentencepiece model", "give the model that encoded the training data with "
                 "--external-negatives-spm")
    import sentencepiece

    spm = sentencepiece.SentencePieceProcessor(model_file=spm_model)
    tok = make_tokenizer(tokenize, lowercase)
    out = []
    for line_no, line in iter_numbered_lines(path):
        try:
            items = json.loads(line) if line.strip() else []
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: line {line_no} is not JSON ({err.msg}); each line must be a JSON "
                             f"list of response strings") from None
        if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
            raise InputError(f"{path}: line {line_no} is not a JSON list of strings")
        encoded = []
        for text in items:
            pieces = " ".join(spm.encode(tok(text), out_type=str))
            tokens = dictionary.encode_line(pieces, add_if_not_exist=False, append_eos=True).long()
            if tokens.numel() > 1:
                encoded.append(tokens)
        out.append(encoded)
    if n_pairs is not None and n_pairs != len(out):
        raise InputError(f"{path} has {len(out)} lines but the training set has {n_pairs} pairs; give one "
                         f"line per training pair, in the training order")
    logger.info("external negatives: %d responses for %d of %d training pairs from %s",
                sum(map(len, out)), sum(1 for x in out if x), len(out), path)
    return out
