"""``DialogueModel``: a trained dialogue checkpoint as a Python object that answers messages.

    from nd_fairseq import DialogueModel
    bot = DialogueModel.from_pretrained("checkpoints/nd", data="data-bin/full")
    bot.reply("hi ! how was your weekend ?")
    bot.reply_batch(["...", "..."], beam=5)
    bot.reply("...", sampling=True, top_p=0.9, temperature=0.8, seed=1)

It is fairseq's own :class:`~fairseq.hub_utils.GeneratorHubInterface` (the object behind
``torch.hub.load(...)``/``TransformerModel.from_pretrained``): decoding is fairseq's
``SequenceGenerator`` with the options of ``fairseq-generate`` (fairseq's defaults, not whatever
the training run's generation group held), so a reply is the hypothesis ``fairseq-generate`` prints
for the same query. Only the text preparation differs from stock fairseq: instead of ``--tokenizer``
and ``--bpe`` it applies the data directory's ``preprocessing.json`` (nd-prepare's tokenisation
and lowercasing, then the data's sentencepiece model) and undoes it on the way out.

Checkpoints load through the plugin's safe loader (``torch.load(weights_only=True)``); the
checkpoint's dictionaries are checked against the data directory's before any weights are used.
"""

import glob
import os
import warnings
from typing import List, Optional, Sequence

import fairseq  # noqa: F401  (imported first: the plugin registers itself with it)
import torch
from fairseq import checkpoint_utils, hub_utils, utils
from fairseq.data import Dictionary, data_utils
from fairseq.dataclass.configs import GenerationConfig
from omegaconf import OmegaConf, open_dict

import nd_fairseq

from ..data import preprocessing
from ..io_utils import InputError
from ..teacher import DICTIONARY_STATE_KEY, dictionary_symbols
from .checkpoint_path import CheckpointError, resolve_checkpoint  # noqa: F401  (part of this API)
from .generation import generation_options

INFERENCE_BATCH_SIZE = 64


class EmptyMessageError(InputError):
    """A message with nothing to answer."""


def _task_config(state):
    if state.get("args") is not None:  # checkpoints of fairseq < 0.10
        return state["args"]
    return state["cfg"].task


def resolve_data(data: Optional[str], state, checkpoint: str) -> str:
    """The binarised data directory: ``data``, else the one the checkpoint was trained on."""
    if data:
        if not os.path.isdir(data):
            raise InputError(f"data directory {data} does not exist; give the binarised data the model "
                             f"was trained on (preprocess.sh's DEST/full)")
        if not glob.glob(os.path.join(data, "dict.*.txt")):
            raise InputError(f"data directory {data} holds no dict.*.txt; give the binarised data the model "
                             f"was trained on (preprocess.sh's DEST/full), not its text")
        return os.path.abspath(data)
    recorded = str(getattr(_task_config(state), "data", "") or "").split(os.pathsep)[0]
    if recorded and os.path.isdir(recorded) and glob.glob(os.path.join(recorded, "dict.*.txt")):
        return os.path.abspath(recorded)
    raise InputError(f"cannot find the data directory of {checkpoint}: it was trained on {recorded!r}, which "
                     f"is not a data directory from here; give it with --data DIR (nd-chat) or data=... "
                     f"(DialogueModel.from_pretrained)")


def _difference(recorded: Sequence[str], here: Sequence[str], path: str) -> Optional[str]:
    if list(recorded) == list(here):
        return None
    if len(recorded) != len(here):
        return f"the checkpoint's has {len(recorded)} symbols, {path} {len(here)}"
    first = next(i for i, (a, b) in enumerate(zip(recorded, here)) if a != b)
    return f"symbol {first} is {recorded[first]!r} in the checkpoint's and {here[first]!r} in {path}"


def check_dictionaries(state, data: str, checkpoint: str) -> None:
    """Raise :class:`CheckpointError` unless the checkpoint was trained with ``data``'s dictionaries."""
    task_cfg = _task_config(state)
    langs = (getattr(task_cfg, "source_lang", None), getattr(task_cfg, "target_lang", None))
    if None in langs:  # the translation task infers them from the file names, as at training
        langs = data_utils.infer_language_pair(data)
    recorded = (state.get("task_state") or {}).get(DICTIONARY_STATE_KEY) or {}
    for side, lang, embed in (("source", langs[0], "encoder.embed_tokens.weight"),
                              ("target", langs[1], "decoder.embed_tokens.weight")):
        path = os.path.join(data, f"dict.{lang}.txt")
        if not lang or not os.path.isfile(path):
            raise CheckpointError(f"data directory {data} has no dict.{lang}.txt for checkpoint {checkpoint}; "
                                  f"give the binarised data the model was trained on with --data")
        here = dictionary_symbols(Dictionary.load(path))
        if side in recorded:
            diff = _difference(recorded[side], here, path)
        else:  # a checkpoint of a stock task: the embedding matrix still tells the size
            weight = state.get("model", {}).get(embed)
            diff = (None if weight is None or weight.shape[0] == len(here)
                    else f"the checkpoint's has {weight.shape[0]} symbols, {path} {len(here)}")
        if diff:
            raise CheckpointError(f"checkpoint {checkpoint} does not match data directory {data} ({side} "
                                  f"dictionary: {diff}); give the data the model was trained on with --data")


class DialogueModel(hub_utils.GeneratorHubInterface):
    """One dialogue model: ``reply``/``reply_batch`` turn messages into replies (see the module doc).

    The decoding keywords of :meth:`reply_batch` map onto fairseq's generation options: ``beam``
    (``--beam``; 1 = greedy, the default), ``sampling`` (``--sampling``), ``top_k``
    (``--sampling-topk``), ``top_p`` (``--sampling-topp``), ``temperature``, ``no_repeat_ngram_size``,
    ``max_len`` (``--max-len-b`` with ``--max-len-a 0``; default fairseq's 200), ``min_len``,
    ``lenpen``; ``seed`` makes sampling reproducible (the global RNG is restored afterwards).
    """

    def __init__(self, cfg, task, models, preparation: preprocessing.Preprocessing, checkpoint: str):
        super().__init__(cfg, task, models)
        for model in self.models:
            model.eval()
        self.preparation = preparation
        self.checkpoint = checkpoint
        self.data = preparation.data_dir

    @classmethod
    def from_pretrained(cls, path: str, data: Optional[str] = None, tokenize: Optional[str] = None,
                        lowercase: Optional[bool] = None, max_length: Optional[int] = None,
                        sentencepiece_model: Optional[str] = None) -> "DialogueModel":
        """Load a checkpoint file or a fairseq-train ``--save-dir`` (its best, else last, checkpoint).

        ``data`` is the binarised data directory (default: the one the checkpoint was trained on,
        when it exists from here). ``tokenize``/``lowercase``/``max_length``/``sentencepiece_model``
        override the data's ``preprocessing.json``, and are needed for data binarised without one.
        """
        nd_fairseq.register()  # safe checkpoint loading, the plugin's task and architectures
        checkpoint = resolve_checkpoint(path)
        state = checkpoint_utils.load_checkpoint_to_cpu(checkpoint)
        data = resolve_data(data, state, checkpoint)
        check_dictionaries(state, data, checkpoint)
        preparation = preprocessing.load(data, tokenize=tokenize, lowercase=lowercase, max_length=max_length,
                                         sentencepiece_model=sentencepiece_model)
        if state.get("args") is not None:
            state["args"].data = data
        else:
            with open_dict(state["cfg"]):
                state["cfg"].task.data = data
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint], state=state)
        with open_dict(cfg):
            # fairseq-generate's defaults; the text preparation is ours, not --tokenizer/--bpe
            cfg.generation = OmegaConf.structured(GenerationConfig)
            cfg.tokenizer = None
            cfg.bpe = None
            cfg.dataset.max_tokens = None
            cfg.dataset.batch_size = INFERENCE_BATCH_SIZE
        return cls(cfg, task, models, preparation, checkpoint)

    # text <-> tokens: the data directory's preparation (hooks of GeneratorHubInterface) -----

    def tokenize(self, sentence: str) -> str:
        return self.preparation.words(sentence)

    def apply_bpe(self, sentence: str) -> str:
        return self.preparation.encode_words(sentence)

    def remove_bpe(self, sentence: str) -> str:
        return self.preparation.decode_pieces(sentence)

    def detokenize(self, sentence: str) -> str:
        return self.preparation.detokenize(sentence)

    def encode(self, sentence: str) -> torch.LongTensor:
        """A message -> the source tokens the model reads (ending in ``</s>``)."""
        if not isinstance(sentence, str):
            raise TypeError(f"a message is a str, not {type(sentence).__name__}")
        pieces = self.apply_bpe(self.tokenize(sentence))
        if not pieces.strip():
            raise EmptyMessageError("empty message: there is nothing to answer; type some text")
        tokens = self.binarize(pieces)
        limit = self.max_positions[0] if isinstance(self.max_positions, tuple) else self.max_positions
        if limit and tokens.numel() > limit:  # longer than the model reads: keep the start (as nd-prepare --truncate)
            tokens = torch.cat([tokens[:limit - 1], tokens[-1:]])
        return tokens

    # replies ---------------------------------------------------------------------------------

    def reply(self, message: str, **decoding) -> str:
        """The model's reply to one message, detokenised (keywords as :meth:`reply_batch`)."""
        return self.reply_batch([message], **decoding)[0]

    def reply_batch(self, messages: Sequence[str], beam: int = 1, sampling: bool = False,
                    top_k: Optional[int] = None, top_p: Optional[float] = None, temperature: float = 1.0,
                    seed: Optional[int] = None, no_repeat_ngram_size: int = 0, max_len: Optional[int] = None,
                    min_len: Optional[int] = None, lenpen: Optional[float] = None) -> List[str]:
        """Replies to several messages, decoded together in batches (one call, input order kept)."""
        if isinstance(messages, str):
            raise TypeError("reply_batch takes a list of messages; use reply() for one")
        tokens = [self.encode(m) for m in messages]
        if not tokens:
            return []
        options = generation_options(beam=beam, sampling=sampling, top_k=top_k, top_p=top_p,
                                     temperature=temperature, no_repeat_ngram_size=no_repeat_ngram_size,
                                     max_len=max_len, min_len=min_len, lenpen=lenpen)
        with torch.no_grad(), warnings.catch_warnings():
            # fairseq's inference batches ask for pinned memory, which a CPU-only torch warns about
            warnings.filterwarnings("ignore", message=".*pin_memory.*")
            if seed is not None:
                with utils.set_torch_seed(int(seed)):
                    hypos = self.generate(tokens, **options)
            else:
                hypos = self.generate(tokens, **options)
        return [self.decode(h[0]["tokens"]) for h in hypos]
