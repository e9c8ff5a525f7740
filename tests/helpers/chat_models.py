"""Two tiny dialogue models for the chat tests, trained once per test session with the real tools.

nd-prepare (chitchat, which leaves its prepare.json beside the text) -> preprocess.sh (which
writes DEST/*/preprocessing.json) -> fairseq-train twice (different seeds and lengths, so the two
models answer differently). Built by the session fixture ``chat`` of tests/conftest.py, which every
chat test module uses.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Dict

from conftest import REPO, TINY_MODEL, TRAIN_COMMON, run_cli

# uppercase, punctuation, contractions and non-ASCII characters: what a user types
QUERIES = ["Hi! How was your WEEKEND?", "I'm going to the café — want to come?",
           "Naïve question: what's your favourite “movie”…", "do you like pizza"]
MAX_LEN = 24  # tokens per reply in the tests (the untrained-ish models babble up to 200)


@dataclass
class ChatModels:
    root: Path
    text: Path  # nd-prepare's output
    data: Path  # DEST/full
    checkpoints: Dict[str, Path]  # name -> fairseq-train --save-dir


def chat_models(tmp_path_factory) -> ChatModels:
    root = tmp_path_factory.getbasetemp() / "chat_models"
    built = ChatModels(root=root, text=root / "text", data=root / "data-bin" / "full",
                       checkpoints={"standard": root / "checkpoints" / "standard",
                                    "other": root / "checkpoints" / "other"})
    root.mkdir(parents=True, exist_ok=True)
    run_cli(["nd-prepare", "--out-dir", built.text, "--quiet", "--seed", "3", "--max-units", "120",
             "--valid-fraction", "0.1", "--test-fraction", "0.1"])
    run_cli(["bash", REPO / "preprocess.sh", "--text-dir", built.text, "--work-dir", root / "work",
             "--dest", root / "data-bin", "--vocab-size", "600", "--key", "prefix:3", "--workers", "1"])
    # ~300 updates: fewer leave the tiny model answering with the bare "▁" piece (an empty reply)
    for (name, save), seed, updates in zip(built.checkpoints.items(), (1, 2), (300, 200)):
        run_cli(["fairseq-train", built.data, *TRAIN_COMMON, *TINY_MODEL, "--seed", str(seed), "--lr", "5e-3",
                 "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "30",
                 "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
                 "--max-update", str(updates), "--save-dir", save, "--disable-validation",
                 "--no-epoch-checkpoints"])
    return built
