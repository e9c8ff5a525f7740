"""``--tokenizer nd_prepare``: nd-prepare's word tokenisation for fairseq-interactive and friends.

fairseq's own ``--tokenizer moses`` is not what nd-prepare did to the corpus: it does not
lowercase, it HTML-escapes quotes and splits dashes unless told otherwise, and fairseq hands it
the task's ``--source-lang`` (``query``) as its language, so Moses' English rules for abbreviations
are not used. This tokenizer applies nd-prepare's own function (Moses with English rules, no
escaping, lowercasing) and Moses-detokenises replies; with ``--nd-preprocessing
DATA/preprocessing.json`` it follows whatever that data directory records. Sentencepiece stays
fairseq's ``--bpe sentencepiece --sentencepiece-model DATA/spm.model``.
"""

from dataclasses import dataclass, field
from typing import Optional

from fairseq.data.encoders import register_tokenizer
from fairseq.dataclass import FairseqDataclass

from ..data import preprocessing


@dataclass
class NdPrepareTokenizerConfig(FairseqDataclass):
    nd_preprocessing: Optional[str] = field(
        default=None, metadata={"help": "the data directory's preprocessing.json (written by preprocess.sh): "
                                        "tokenise as it records; overrides --nd-tokenize and --nd-keep-case"})
    nd_tokenize: str = field(
        default="moses", metadata={"help": "word tokenisation nd-prepare applied: moses, whitespace, none"})
    nd_keep_case: bool = field(
        default=False, metadata={"help": "the text was not lowercased (nd-prepare --no-lowercase)"})


@register_tokenizer("nd_prepare", dataclass=NdPrepareTokenizerConfig)
class NdPrepareTokenizer:
    def __init__(self, cfg: NdPrepareTokenizerConfig):
        if cfg.nd_preprocessing:
            import os

            from ..io_utils import InputError

            path = cfg.nd_preprocessing
            data_dir = os.path.dirname(os.path.abspath(path))
            if os.path.basename(path) != preprocessing.FILE_NAME or not os.path.isfile(path):
                raise InputError(f"--nd-preprocessing {path} is not an existing {preprocessing.FILE_NAME}; give "
                                 f"DATA/{preprocessing.FILE_NAME} of the binarised data (preprocess.sh writes it)")
            self.preparation = preprocessing.load(data_dir)
        else:
            self.preparation = preprocessing.Preprocessing(tokenize=cfg.nd_tokenize, lowercase=not cfg.nd_keep_case)

    def encode(self, x: str) -> str:
        return self.preparation.words(x)

    def decode(self, x: str) -> str:
        return self.preparation.detokenize(x)
