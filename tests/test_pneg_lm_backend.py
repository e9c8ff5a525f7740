"""The local fairseq language-model backend: a tiny language_modeling checkpoint trained by fairseq-train."""

from pathlib import Path

import pytest

from conftest import USER_DIR, run_cli
from nd_fairseq.io_utils import InputError
from nd_fairseq.pneg.backends import SamplingConfig
from nd_fairseq.pneg.data import Example, read_dailydialog_pp
from nd_fairseq.pneg.generate import GenerationConfig, generate, read_results
from nd_fairseq.pneg.prompt import demonstration_pool

FIX = Path(__file__).parent / "fixtures" / "pneg"
PROMPT = (FIX / "appendix_g_prompt.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def tiny_lm(chitchat_text, tmp_path_factory):
    """A 1-layer transformer_lm trained for a few updates on chitchat responses (seconds)."""
    work = tmp_path_factory.mktemp("tiny_lm")
    text = (chitchat_text / "train.response").read_text(encoding="utf-8").splitlines()[:400]
    (work / "train.txt").write_text("\n".join(text + ["###"] * 20) + "\n", encoding="utf-8")
    run_cli(["fairseq-preprocess", "--only-source", "--trainpref", work / "train.txt", "--destdir", work / "data",
             "--workers", "1"])
    # --sample-break-mode eos needs np.compat (gone in numpy 2); complete keeps whole lines too
    run_cli(["fairseq-train", work / "data", "--user-dir", USER_DIR, "--task", "language_modeling",
             "--arch", "transformer_lm", "--decoder-layers", "1", "--decoder-embed-dim", "32",
             "--decoder-ffn-embed-dim", "64", "--decoder-attention-heads", "2", "--tokens-per-sample", "64",
             "--sample-break-mode", "complete", "--max-tokens", "512", "--optimizer", "adam", "--lr", "0.005",
             "--max-update", "5", "--cpu", "--save-dir", work / "ckpt", "--no-epoch-checkpoints",
             "--disable-validation", "--no-save-optimizer-state", "--log-format", "simple"])
    return work


@pytest.fixture(scope="module")
def lm_backend(tiny_lm):
    from nd_fairseq.pneg.backends import FairseqLMBackend

    return FairseqLMBackend(str(tiny_lm / "ckpt" / "checkpoint_last.pt"), data=str(tiny_lm / "data"),
                            sampling=SamplingConfig(max_tokens=24), tokenizer="moses", lowercase=True)


@pytest.mark.cli
def test_prompt_is_a_stream_of_lines(lm_backend):
    ids = lm_backend.encode_prompt("###\nDialogue context:\n1.")
    eos = lm_backend.dictionary.eos()
    assert ids[0] == eos and ids.count(eos) == 3 and ids[-1] != eos  # the last line stays open


@pytest.mark.cli
def test_sampling_is_seeded_bounded_and_stops(lm_backend):
    a = lm_backend.complete(PROMPT, n=2, seed=11)
    assert len(a) == 2 and all(isinstance(t, str) for t in a)
    assert lm_backend.complete(PROMPT, n=2, seed=11) == a
    assert lm_backend.complete(PROMPT, n=2, seed=12) != a
    for text in a:
        assert "###" not in text and len(text.split()) <= 24
    one_line = lm_backend.complete(PROMPT, n=3, stop=("###", "\n"), seed=3)
    assert len(one_line) == 3 and not any("\n" in t for t in one_line)
    assert lm_backend.describe()["temperature"] == 0.8 and lm_backend.describe()["frequency_penalty"] == 0.4


@pytest.mark.cli
def test_generate_with_the_lm_records_failures_per_reason(lm_backend, tmp_path):
    pool = demonstration_pool(read_dailydialog_pp(str(FIX / "dailydialog_pp_sample.jsonl")))
    targets = [Example("a", ["how was your weekend ?"], ["great , thanks"]),
               Example("b", ["do you like music ?", "yes , a lot ."], ["me too"])]
    out = tmp_path / "lm.jsonl"
    summary = generate(targets, pool, lm_backend, str(out), GenerationConfig(max_attempts=2), progress=False)
    records = read_results(str(out))
    assert set(records) == {"a", "b"}
    total = summary["total"]
    assert total["ok"] + total["failed"] == 2
    # a barely trained LM rarely writes five numbered items: its failures carry reasons
    for rec in records.values():
        if rec["status"] == "failed":
            assert rec["attempts"] == 2 and sum(rec["rejections"].values()) >= 2


def test_missing_checkpoint_is_a_one_line_error(tmp_path):
    from nd_fairseq.pneg.backends import FairseqLMBackend

    with pytest.raises(InputError, match="language-model checkpoint .* does not exist"):
        FairseqLMBackend(str(tmp_path / "nope.pt"))
