"""Train and score a response-selection ranker with fairseq (PNEG §3.1, §3.4, Table 1).

The ranker is fairseq's own ``sentence_ranking`` task and criterion (one score per candidate,
cross-entropy over the candidates of a context, Appendix A) on the ``roberta`` architecture,
shrunk for CPU (2 layers, d = 64) and trained from scratch: the paper fine-tunes pre-trained
cross-encoders (BERT, RoBERTa, ELECTRA), which this plugin does not download.

Data layout (what ``fairseq-train DATA --task sentence_ranking`` reads)::

    DATA/input0/{train,valid}.{bin,idx}, dict.txt  context
    DATA/input{1..11}/{train,valid}.{bin,idx}      candidate i of each context
    DATA/label/{train,valid}.label                 index of the positive (0-based)

Each input is ``<s> candidate </s> </s> context </s>`` (``--init-token 0 --separator-token 2``),
as RoBERTa's ranking recipes build it. The context is left-truncated to its most recent tokens
before binarising so that fairseq's right-truncation never cuts the turn being answered.
Scoring loads the checkpoint with ``checkpoint_utils`` and builds the same token sequences.

Each source's ranker validates on that source's ``valid.<source>.jsonl`` and keeps the checkpoint
of lowest validation loss (Appendix A); fairseq's ``--patience`` ends training once the loss has
stopped falling, and the epochs run and the best epoch are read back from the training log.
The benchmark that trains one ranker per source and writes the report is :mod:`.benchmark`.

fairseq and torch are imported inside the functions that need them.
"""

import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from ..io_utils import InputError, write_lines_atomic
from .candidates import CandidateSet
from .metrics import selection_metrics

logger = logging.getLogger(__name__)

TURN_SEPARATOR = "__eou__"
HEAD = "sentence_classification_head"
_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass
class RankerConfig:
    encoder_layers: int = 2
    encoder_embed_dim: int = 64
    encoder_ffn_embed_dim: int = 128
    encoder_attention_heads: int = 2
    max_positions: int = 256
    max_option_length: int = 64
    max_context_turns: int = 3
    dropout: float = 0.1
    lr: float = 5e-4
    warmup_updates: int = 0
    batch_size: int = 16
    max_epoch: int = 3
    max_update: int = 0  # 0: no limit (max_epoch decides)
    seed: int = 1
    min_count: int = 1
    validate: bool = True
    patience: int = 2  # stop after this many validations without a lower loss (0: never stop early)
    log_interval: int = 50
    extra_args: List[str] = field(default_factory=list)


def tokenize(text: str) -> str:
    """Lowercased words and punctuation, space-separated (idempotent on nd-prepare's text)."""
    return " ".join(_TOKEN.findall(text.lower()))


def context_text(context: Sequence[str], max_turns: int) -> str:
    turns = list(context)[-max_turns:] if max_turns > 0 else list(context)
    return f" {TURN_SEPARATOR} ".join(tokenize(t) for t in turns)


# Binarising ---------------------------------------------------------------------------------------


def build_dictionary(sets_list: Sequence[Sequence[CandidateSet]], cfg: RankerConfig):
    from fairseq.data import Dictionary

    d = Dictionary()
    for sets in sets_list:
        for cs in sets:
            for tok in context_text(cs.context, cfg.max_context_turns).split():
                d.add_symbol(tok)
            for cand in cs.candidates:
                for tok in tokenize(cand).split():
                    d.add_symbol(tok)
    d.finalize(threshold=cfg.min_count, nwords=-1, padding_factor=8)
    return d


class Encoder:
    """Token ids of contexts and candidates, exactly as the binarised data and the scorer need them."""

    def __init__(self, dictionary, cfg: RankerConfig):
        self.d = dictionary
        self.cfg = cfg
        # room left for the context after <s> candidate </s> and the separator
        self.context_budget = max(8, cfg.max_positions - cfg.max_option_length - 1)

    def candidate(self, text: str) -> List[int]:
        return self.d.encode_line(tokenize(text), add_if_not_exist=False, append_eos=True).tolist()

    def context(self, context: Sequence[str]) -> List[int]:
        ids = self.d.encode_line(context_text(context, self.cfg.max_context_turns), add_if_not_exist=False,
                                 append_eos=True).tolist()
        return ids[-self.context_budget:]

    def pair(self, context_ids: List[int], candidate_ids: List[int]) -> List[int]:
        """What sentence_ranking feeds the model: init + option (truncated) + sep + context, truncated."""
        option = ([self.d.bos()] + candidate_ids)[: self.cfg.max_option_length]
        return (option + [self.d.eos()] + context_ids)[: self.cfg.max_positions]


def binarize(sets: Sequence[CandidateSet], split: str, data_dir: str, encoder: Encoder, num_classes: int) -> None:
    import torch
    from fairseq.data import indexed_dataset

    sets = [cs for cs in sets if len(cs.candidates) == num_classes]
    if not sets:
        raise InputError(f"no {num_classes}-candidate sets for the {split} split")
    vocab = len(encoder.d) + 1  # the task adds <mask>
    for i in range(num_classes + 1):
        os.makedirs(os.path.join(data_dir, f"input{i}"), exist_ok=True)
        prefix = os.path.join(data_dir, f"input{i}", split)
        builder = indexed_dataset.make_builder(indexed_dataset.data_file_path(prefix), impl="mmap", vocab_size=vocab)
        for cs in sets:
            ids = encoder.context(cs.context) if i == 0 else encoder.candidate(cs.candidates[i - 1])
            builder.add_item(torch.tensor(ids, dtype=torch.int32))
        builder.finalize(indexed_dataset.index_file_path(prefix))
    os.makedirs(os.path.join(data_dir, "label"), exist_ok=True)
    write_lines_atomic(os.path.join(data_dir, "label", f"{split}.label"), [str(cs.label) for cs in sets])


def prepare_data(train: Sequence[CandidateSet], valid: Optional[Sequence[CandidateSet]], data_dir: str,
                 cfg: RankerConfig):
    """Write the sentence_ranking data directory; returns (dictionary, num_classes)."""
    if not train:
        raise InputError("the training candidate set is empty")
    num_classes = len(train[0].candidates)
    if any(len(cs.candidates) != num_classes for cs in train):
        raise InputError("training candidate sets differ in size; build them with nd-pneg build-candidates")
    d = build_dictionary([train], cfg)
    os.makedirs(os.path.join(data_dir, "input0"), exist_ok=True)
    d.save(os.path.join(data_dir, "input0", "dict.txt"))
    enc = Encoder(d, cfg)
    binarize(train, "train", data_dir, enc, num_classes)
    if valid:
        binarize(valid, "valid", data_dir, enc, num_classes)
    return d, num_classes


# Training -----------------------------------------------------------------------------------------


def fairseq_train_executable() -> List[str]:
    script = os.path.join(os.path.dirname(sys.executable), "fairseq-train")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "fairseq_cli.train"]


def user_dir() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../nd_fairseq


def train_command(data_dir: str, save_dir: str, num_classes: int, cfg: RankerConfig, validate: bool) -> List[str]:
    cmd = fairseq_train_executable() + [
        data_dir, "--user-dir", user_dir(),
        "--task", "sentence_ranking", "--criterion", "sentence_ranking", "--num-classes", str(num_classes),
        "--init-token", "0", "--separator-token", "2", "--max-option-length", str(cfg.max_option_length),
        "--shorten-method", "truncate",
        "--arch", "roberta", "--encoder-layers", str(cfg.encoder_layers),
        "--encoder-embed-dim", str(cfg.encoder_embed_dim), "--encoder-ffn-embed-dim", str(cfg.encoder_ffn_embed_dim),
        "--encoder-attention-heads", str(cfg.encoder_attention_heads), "--max-positions", str(cfg.max_positions),
        "--dropout", str(cfg.dropout), "--attention-dropout", str(cfg.dropout),
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--adam-eps", "1e-06", "--clip-norm", "0.0",
        "--lr", str(cfg.lr), "--batch-size", str(cfg.batch_size), "--required-batch-size-multiple", "1",
        "--max-epoch", str(cfg.max_epoch), "--seed", str(cfg.seed), "--cpu", "--num-workers", "0",
        "--save-dir", save_dir, "--no-epoch-checkpoints", "--log-format", "simple",
        "--log-interval", str(cfg.log_interval), "--dataset-impl", "mmap",
    ]
    if cfg.warmup_updates:
        cmd += ["--lr-scheduler", "inverse_sqrt", "--warmup-updates", str(cfg.warmup_updates)]
    if cfg.max_update:
        cmd += ["--max-update", str(cfg.max_update)]
    if validate:
        cmd += ["--best-checkpoint-metric", "loss", "--no-last-checkpoints"]
        if cfg.patience > 0:
            cmd += ["--patience", str(cfg.patience)]
    else:
        cmd += ["--disable-validation"]
    return cmd + list(cfg.extra_args)


def train_ranker(data_dir: str, save_dir: str, num_classes: int, cfg: RankerConfig, validate: bool,
                 log_path: Optional[str] = None) -> str:
    """Run fairseq-train in a subprocess; returns the checkpoint to score (best, or last)."""
    os.makedirs(save_dir, exist_ok=True)
    cmd = train_command(data_dir, save_dir, num_classes, cfg, validate)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    log_path = log_path or os.path.join(save_dir, "train.log")
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            tail = [ln.strip() for ln in f.read().strip().splitlines()[-3:]]
        raise InputError(f"fairseq-train failed (exit {proc.returncode}); see {log_path}: {' | '.join(tail)}")
    ckpt = os.path.join(save_dir, "checkpoint_best.pt" if validate else "checkpoint_last.pt")
    if not os.path.exists(ckpt):
        raise InputError(f"fairseq-train wrote no {os.path.basename(ckpt)} in {save_dir}; see {log_path}")
    return ckpt


_END_OF_EPOCH = re.compile(r"end of epoch (\d+) ")
_VALID = re.compile(r"epoch (\d+) \| valid on '[^']+' subset \| loss ([^ |]+)")
_SAVED_BEST = re.compile(r"Saved checkpoint \S*checkpoint_best\.pt \(epoch (\d+) @")


def training_history(log_path: str) -> Dict[str, object]:
    """What a fairseq-train log says about a run: epochs run, validation loss per epoch, the best one.

    The best epoch is the one fairseq saved ``checkpoint_best.pt`` at last; for a log without
    that line, the last epoch with the lowest validation loss (fairseq's ``<=`` rule).
    """
    with open(log_path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    epochs = [int(m.group(1)) for m in _END_OF_EPOCH.finditer(text)]
    valid: Dict[int, float] = {}
    for m in _VALID.finditer(text):
        try:
            valid[int(m.group(1))] = float(m.group(2))
        except ValueError:
            continue
    saved = [int(m.group(1)) for m in _SAVED_BEST.finditer(text)]
    best = saved[-1] if saved else None
    if best is None and valid:
        low = min(valid.values())
        best = max(e for e, v in valid.items() if v == low)
    return {"epochs_run": max(epochs) if epochs else 0, "best_epoch": best,
            "valid_loss": {str(e): v for e, v in sorted(valid.items())},
            "early_stopped": "early stop since valid performance" in text}


# Scoring ------------------------------------------------------------------------------------------


class Ranker:
    """A trained sentence_ranking model that scores (context, candidate) pairs."""

    def __init__(self, checkpoint: str, data_dir: str, cfg: RankerConfig):
        import torch
        import fairseq  # noqa: F401  (import before registering the plugin)
        from fairseq import checkpoint_utils

        import nd_fairseq

        nd_fairseq.register()  # safe (weights_only) checkpoint loading
        models, _, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides={"data": data_dir})
        self.torch = torch
        self.model = models[0].eval()
        self.encoder = Encoder(task.source_dictionary, cfg)

    def score(self, sets: Sequence[CandidateSet], batch_size: int = 64) -> List[List[float]]:
        torch = self.torch
        pad = self.encoder.d.pad()
        flat, owners = [], []
        for k, cs in enumerate(sets):
            ctx = self.encoder.context(cs.context)
            for cand in cs.candidates:
                flat.append(self.encoder.pair(ctx, self.encoder.candidate(cand)))
                owners.append(k)
        scores: List[float] = []
        with torch.no_grad():
            for a in range(0, len(flat), batch_size):
                batch = flat[a:a + batch_size]
                width = max(len(x) for x in batch)
                tokens = torch.full((len(batch), width), pad, dtype=torch.long)
                for i, x in enumerate(batch):
                    tokens[i, :len(x)] = torch.tensor(x, dtype=torch.long)
                out, _ = self.model(tokens, classification_head_name=HEAD)
                scores.extend(out.view(-1).float().tolist())
        result: List[List[float]] = [[] for _ in sets]
        for k, s in zip(owners, scores):
            result[k].append(s)
        return result

    def evaluate(self, sets: Sequence[CandidateSet]) -> Dict[str, float]:
        return selection_metrics(self.score(sets), [cs.label for cs in sets])
