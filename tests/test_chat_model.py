"""DialogueModel on tiny models trained with fairseq-train: replies, batching, decoding options,
parity with fairseq-generate, errors, and the README's Python example."""

import re
import shutil
import subprocess
import sys

import pytest
import sentencepiece
import torch
from sacremoses import MosesDetokenizer

from conftest import REPO, USER_DIR, cli_env, run_cli
from helpers.chat_models import MAX_LEN, QUERIES
from nd_fairseq import DialogueModel
from nd_fairseq.chat.model import CheckpointError, EmptyMessageError
from nd_fairseq.io_utils import InputError

pytestmark = pytest.mark.cli



@pytest.fixture(scope="module")
def bot(chat):
    return DialogueModel.from_pretrained(str(chat.checkpoints["standard"]), data=str(chat.data))


def by_hand(chat, pieces: str) -> str:
    """fairseq's piece string -> text, with sentencepiece and sacremoses directly."""
    sp = sentencepiece.SentencePieceProcessor(model_file=str(chat.data / "spm.model"))
    return MosesDetokenizer(lang="en").detokenize(sp.decode(pieces.split()).split())


def test_reply_is_detokenised_text(chat, bot):
    for query in QUERIES:
        text = bot.reply(query, max_len=MAX_LEN)
        hypo = bot.generate([bot.encode(query)], beam=1, max_len_a=0, max_len_b=MAX_LEN)[0][0]
        pieces = bot.string(hypo["tokens"])
        assert isinstance(text, str) and text.strip()
        assert "▁" in pieces and "▁" not in text
        assert text == by_hand(chat, pieces)


def test_reply_batch_equals_reply_item_by_item(bot):
    batch = bot.reply_batch(QUERIES, max_len=MAX_LEN)
    assert batch == [bot.reply(q, max_len=MAX_LEN) for q in QUERIES]
    assert bot.reply_batch([]) == []


def generate_on(chat, tmp_path, options):
    """fairseq-generate on QUERIES prepared by nd-prepare + nd-spm and binarised with the data's dictionary."""
    raw = tmp_path / "raw.tsv"
    raw.write_text("".join(f"{q}\tok\n" for q in QUERIES), encoding="utf-8")
    run_cli(["nd-prepare", "--format", "tsv", "--input", raw, "--out-dir", tmp_path / "text", "--quiet",
             "--valid-fraction", "0", "--test-fraction", "0"])
    for side in ("query", "response"):
        run_cli(["nd-spm", "encode", "--model", chat.data / "spm.model", "--input", tmp_path / "text" / f"train.{side}",
                 "--output", tmp_path / "pieces" / f"test.{side}"])
    run_cli(["fairseq-preprocess", "--source-lang", "query", "--target-lang", "response",
             "--testpref", tmp_path / "pieces" / "test", "--srcdict", chat.data / "dict.query.txt",
             "--tgtdict", chat.data / "dict.response.txt", "--destdir", tmp_path / "bin", "--workers", "1"])
    out = run_cli(["fairseq-generate", tmp_path / "bin", "--user-dir", USER_DIR, "--path",
                   chat.checkpoints["standard"] / "checkpoint_last.pt", "--gen-subset", "test", *options,
                   "--max-len-b", str(MAX_LEN), "--batch-size", "3"]).stdout
    hypos = dict((int(i), pieces) for i, _, pieces in re.findall(r"^H-(\d+)\t(\S+)\t(.*)$", out, re.M))
    assert sorted(hypos) == list(range(len(QUERIES))), out[-2000:]
    return [hypos[i] for i in range(len(QUERIES))]


@pytest.mark.parametrize("options, decoding", [
    (["--beam", "1"], {"beam": 1}),
    (["--beam", "5"], {"beam": 5}),
    (["--beam", "1", "--no-repeat-ngram-size", "2"], {"no_repeat_ngram_size": 2}),
], ids=["greedy", "beam5", "greedy-no-repeat-2"])
def test_same_reply_as_fairseq_generate(chat, bot, tmp_path, options, decoding):
    expected = [by_hand(chat, pieces) for pieces in generate_on(chat, tmp_path, options)]
    assert bot.reply_batch(QUERIES, max_len=MAX_LEN, **decoding) == expected
    assert [bot.reply(q, max_len=MAX_LEN, **decoding) for q in QUERIES] == expected


def test_beam_differs_from_greedy_somewhere(bot):
    # otherwise the beam-5 parity above could not tell the two apart
    assert bot.reply_batch(QUERIES, beam=5, max_len=MAX_LEN) != bot.reply_batch(QUERIES, max_len=MAX_LEN)


def test_sampling_with_a_seed_is_reproducible(bot):
    query = QUERIES[0]
    first = bot.reply(query, sampling=True, top_p=0.9, temperature=0.8, seed=1, max_len=MAX_LEN)
    assert bot.reply(query, sampling=True, top_p=0.9, temperature=0.8, seed=1, max_len=MAX_LEN) == first
    by_seed = {s: bot.reply(query, sampling=True, top_k=20, seed=s, max_len=MAX_LEN) for s in range(1, 6)}
    assert by_seed == {s: bot.reply(query, sampling=True, top_k=20, seed=s, max_len=MAX_LEN) for s in range(1, 6)}
    assert len(set(by_seed.values())) > 1  # sampling really samples
    assert bot.reply_batch(QUERIES, sampling=True, seed=4, max_len=MAX_LEN) == \
        bot.reply_batch(QUERIES, sampling=True, seed=4, max_len=MAX_LEN)
    # the caller's random stream is left as it was
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    bot.reply(query, sampling=True, seed=9, max_len=MAX_LEN)
    assert torch.equal(torch.rand(3), expected)


def test_decoding_options_reach_the_generator(bot):
    for query in QUERIES:
        plain = bot.generate([bot.encode(query)], beam=1, max_len_b=MAX_LEN)[0][0]["tokens"].tolist()
        hypo = bot.generate([bot.encode(query)], beam=1, no_repeat_ngram_size=2, max_len_b=MAX_LEN)[0][0]
        tokens = [bot.tgt_dict.eos()] + hypo["tokens"].tolist()  # decoding starts from </s>
        bigrams = list(zip(tokens[:-1], tokens[1:]))
        assert len(bigrams) == len(set(bigrams))  # (fairseq 0.12 on a CPU ignored the option)
        assert len(set(zip(plain[:-1], plain[1:]))) < len(plain) - 1  # without it, bigrams repeat
        assert bot.reply(query, no_repeat_ngram_size=2, max_len=MAX_LEN) == bot.decode(hypo["tokens"])
        once = bot.generate([bot.encode(query)], beam=3, no_repeat_ngram_size=1, max_len_b=MAX_LEN)[0][0]
        assert len(once["tokens"].tolist()[:-1]) == len(set(once["tokens"].tolist()[:-1]))
        short = bot.generate([bot.encode(query)], beam=1, max_len_a=0, max_len_b=3)[0][0]["tokens"]
        assert short.numel() <= 4 and bot.reply(query, max_len=3) == bot.decode(short)
    with pytest.raises(InputError, match=r"top_p 1.5 must lie in \(0, 1\]"):
        bot.reply("hi", sampling=True, top_p=1.5)
    with pytest.raises(InputError, match=r"beam 0 must be >= 1"):
        bot.reply("hi", beam=0)


def test_long_messages_are_cut_to_what_the_model_reads(bot):
    limit = bot.max_positions[0]
    tokens = bot.encode("hello " * (limit + 50))
    assert tokens.numel() == limit and tokens[-1].item() == bot.src_dict.eos()
    assert isinstance(bot.reply("hello " * (limit + 50), max_len=3), str)


def test_finds_checkpoint_and_data_from_the_save_dir(chat, bot):
    # the save dir alone: its last checkpoint, and the data directory fairseq-train was given
    other = DialogueModel.from_pretrained(str(chat.checkpoints["standard"]))
    assert other.checkpoint.endswith("checkpoint_last.pt") and other.data == str(chat.data)
    assert other.reply_batch(QUERIES, max_len=MAX_LEN) == bot.reply_batch(QUERIES, max_len=MAX_LEN)


def test_bfloat16_on_cpu(chat):
    # half precision proper (.half()) needs CUDA, which this machine lacks; bfloat16 runs on the CPU
    low = DialogueModel.from_pretrained(str(chat.checkpoints["standard"]), data=str(chat.data)).bfloat16()
    assert next(low.models[0].parameters()).dtype == torch.bfloat16
    assert all(isinstance(r, str) and r for r in low.reply_batch(QUERIES, max_len=MAX_LEN))


def test_errors(chat, bot, data_bin, tmp_path):
    for empty in ("", "   ", "\n"):
        with pytest.raises(EmptyMessageError, match=r"^empty message: there is nothing to answer; type some text$"):
            bot.reply(empty)
    with pytest.raises(CheckpointError, match=r"checkpoint .*nope does not exist; give a checkpoint file"):
        DialogueModel.from_pretrained(str(tmp_path / "nope"))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CheckpointError, match=r"holds neither checkpoint_best.pt nor checkpoint_last.pt"):
        DialogueModel.from_pretrained(str(tmp_path / "empty_dir"))
    with pytest.raises(CheckpointError, match=r"does not match data directory .*full \(source dictionary: "
                                              r"symbol \d+ is '.*' in the checkpoint's and '.*' in .*dict.query.txt\)"):
        DialogueModel.from_pretrained(str(chat.checkpoints["standard"]), data=str(data_bin / "full"))
    with pytest.raises(InputError, match=r"holds no dict.\*.txt; give the binarised data .* not its text"):
        DialogueModel.from_pretrained(str(chat.checkpoints["standard"]), data=str(chat.text))
    # moved checkpoint, data directory gone: told to give it
    moved = tmp_path / "moved"
    shutil.copytree(chat.data, moved / "data")
    shutil.copy(chat.checkpoints["standard"] / "checkpoint_last.pt", moved / "model.pt")
    (moved / "data" / "preprocessing.json").unlink()
    with pytest.raises(InputError, match=r"has no preprocessing.json"):
        DialogueModel.from_pretrained(str(moved / "model.pt"), data=str(moved / "data"))
    old = DialogueModel.from_pretrained(str(moved / "model.pt"), data=str(moved / "data"), tokenize="moses")
    assert old.reply_batch(QUERIES, max_len=MAX_LEN) == bot.reply_batch(QUERIES, max_len=MAX_LEN)


def readme_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("## Talking to the models (nd-chat, Python, fairseq-interactive)")
    assert text.index("## What the plugin registers") > start
    return text[start:text.index("## What the plugin registers")]


def test_readme_python_example_runs(chat):
    code = re.search(r"```python\n(.*?)```", readme_section(), re.S).group(1)
    assert len(code.strip().splitlines()) == 5 and "from nd_fairseq import DialogueModel" in code
    code = code.replace('"checkpoints/nd"', repr(str(chat.checkpoints["standard"]))).replace(
        '"data-bin/full"', repr(str(chat.data)))
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=cli_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3 and all(lines), proc.stdout
    assert lines[1].startswith("[") and lines[1].endswith("]")  # the batch's list of replies
