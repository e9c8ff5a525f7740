"""nd-chat (in a pseudo-terminal, on stdin, on a file) and fairseq-interactive with the plugin, on
tiny models trained with fairseq-train; their replies are checked against DialogueModel's."""

import json
import os
import pty
import re
import select
import shlex
import shutil
import subprocess
import time

import pytest

from conftest import REPO, cli_env, run_cli, tool
from helpers.chat_models import MAX_LEN, QUERIES
from nd_fairseq import DialogueModel

pytestmark = pytest.mark.cli



@pytest.fixture(scope="module")
def bots(chat):
    return {name: DialogueModel.from_pretrained(str(path), data=str(chat.data))
            for name, path in chat.checkpoints.items()}


def model_args(chat):
    return [arg for name, path in chat.checkpoints.items() for arg in ("--model", f"{name}={path}")]


def replies_in(text: str, names) -> list:
    """The (name, reply) lines nd-chat printed, in order."""
    pattern = re.compile(r"^\s*(" + "|".join(names) + r")> (.*?)\s*$", re.M)
    return pattern.findall(text.replace("\r", ""))


class Terminal:
    """A process on a pseudo-terminal: write keystrokes, read the screen."""

    def __init__(self, args, env):
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
                                     start_new_session=True)
        os.close(slave)
        self.screen = ""

    def read_until(self, pattern: str, timeout: float = 180) -> str:
        start = len(self.screen)
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.screen[start:]):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {pattern!r} on the terminal; it shows:\n{self.screen[-3000:]}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    data = os.read(self.master, 4096)
                except OSError:  # the process closed the terminal
                    data = b""
                if not data:
                    raise AssertionError(f"the process ended before {pattern!r}:\n{self.screen[-3000:]}")
                self.screen += data.decode("utf-8", "replace")
        return self.screen[start:]

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode("utf-8"))

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            os.close(self.master)


def test_nd_chat_in_a_terminal(chat, bots, tmp_path):
    names = list(chat.checkpoints)
    history = tmp_path / "history"
    term = Terminal([tool("nd-chat"), *model_args(chat), "--max-len", str(MAX_LEN), "--history", str(history)],
                    env=cli_env({"TERM": "dumb"}))
    try:
        term.read_until(r"you> ")

        def say(message, decoding):
            term.type(message + "\r")
            shown = term.read_until(r"you> ")
            expected = [(name, bots[name].reply(message, max_len=MAX_LEN, **decoding)) for name in names]
            assert replies_in(shown, names) == expected
            return expected

        greedy = say(QUERIES[0], {})
        term.type("/beam 5\r")
        assert "decoding: beam 5" in term.read_until(r"you> ")
        say(QUERIES[1], {"beam": 5})
        term.type("/sample top_k=20 seed=3\r")
        assert "decoding: sampling top_k=20 temperature=1.0 (seed=3" in term.read_until(r"you> ")
        say(QUERIES[2], {"sampling": True, "top_k": 20, "seed": 3})
        term.type("/greedy\r")
        term.read_until(r"you> ")
        assert say(QUERIES[0], {}) == greedy
        term.type("\r")
        assert "nd-chat: empty message: type some text (/help for commands)" in term.read_until(r"you> ")
        term.type("/frobnicate\r")
        assert "unknown command /frobnicate; /help lists the commands" in term.read_until(r"you> ")
        term.type("/help\r")
        assert "/beam N" in term.read_until(r"you> ")
        term.type("\x04")  # Ctrl-D on an empty line
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
    assert QUERIES[0] in history.read_text(encoding="utf-8").splitlines()  # readline kept the history


def test_nd_chat_on_stdin_stops_at_quit(chat, bots):
    lines = [QUERIES[3], "/beam 5", QUERIES[3], "/quit", QUERIES[0]]
    proc = subprocess.run([tool("nd-chat"), *model_args(chat), "--max-len", str(MAX_LEN)], input="\n".join(lines) + "\n",
                          env=cli_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = list(chat.checkpoints)
    expected = [(n, bots[n].reply(QUERIES[3], max_len=MAX_LEN)) for n in names] + \
               [(n, bots[n].reply(QUERIES[3], beam=5, max_len=MAX_LEN)) for n in names]
    assert replies_in(proc.stdout, names) == expected  # nothing after /quit
    assert "you> " not in proc.stdout  # no prompt when stdin is not a terminal


def test_nd_chat_input_file_to_jsonl(chat, bots, tmp_path):
    queries = tmp_path / "queries.txt"
    queries.write_text("\n".join(QUERIES) + "\n", encoding="utf-8")
    out = tmp_path / "replies.jsonl"
    run_cli(["nd-chat", *model_args(chat), "--input", queries, "--output", out, "--beam", "5", "--max-len", MAX_LEN])
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    per_model = {n: b.reply_batch(QUERIES, beam=5, max_len=MAX_LEN) for n, b in bots.items()}
    assert rows == [{"query": q, "replies": {n: per_model[n][i] for n in chat.checkpoints}}
                    for i, q in enumerate(QUERIES)]
    assert "café" in out.read_text(encoding="utf-8")  # UTF-8, not \\u escapes


def one_line_error(args):
    proc = run_cli(["nd-chat", *args], check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_nd_chat_errors(chat, data_bin, tmp_path):
    missing = tmp_path / "nope"
    assert one_line_error(["--model", f"nd={missing}"]) == (
        f"nd-chat: error: --model nd={missing}: checkpoint {missing} does not exist; give a checkpoint file "
        f"(e.g. checkpoints/nd/checkpoint_best.pt) or the --save-dir of fairseq-train")
    standard = f"standard={chat.checkpoints['standard']}"
    assert re.fullmatch(
        rf"nd-chat: error: --model {re.escape(standard)}: checkpoint .*checkpoint_last.pt does not match data "
        rf"directory {re.escape(str(data_bin / 'full'))} \(source dictionary: symbol \d+ is .*\); give the data "
        rf"the model was trained on with --data",
        one_line_error(["--model", standard, "--data", data_bin / "full"]))
    queries = tmp_path / "queries.txt"
    queries.write_text(f"{QUERIES[0]}\n\n{QUERIES[1]}\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert one_line_error(["--model", standard, "--input", queries, "--output", out]) == (
        f"nd-chat: error: {queries}: line 2 is an empty message; give one message per line")
    assert not out.exists() and not list(tmp_path.glob(".out.jsonl*"))
    assert one_line_error(["--model", standard, "--beam", "0"]) == "nd-chat: error: beam 0 must be >= 1 (1 = greedy)"
    # data binarised before preprocessing.json: refused, then accepted with the settings given
    old = tmp_path / "old"
    shutil.copytree(chat.data, old)
    (old / "preprocessing.json").unlink()
    assert "has no preprocessing.json" in one_line_error(["--model", standard, "--data", old])
    queries.write_text(f"{QUERIES[0]}\n", encoding="utf-8")
    run_cli(["nd-chat", "--model", standard, "--data", old, "--tokenize", "moses", "--input", queries,
             "--output", out, "--max-len", MAX_LEN])
    assert json.loads(out.read_text(encoding="utf-8"))["query"] == QUERIES[0]


def readme_interactive_command(chat):
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Talking to the models (nd-chat, Python, fairseq-interactive)"):
                   text.index("## What the plugin registers")]
    block = next(b for b in re.findall(r"```bash\n(.*?)```", section, re.S) if "fairseq-interactive" in b)
    args = shlex.split(block.replace("\\\n", " "))
    assert args[0] == "fairseq-interactive" and "--user-dir" in args and "nd_fairseq" in args
    checkpoint = chat.checkpoints["standard"] / "checkpoint_last.pt"
    return [tool(args[0])] + [str(checkpoint) if a == "checkpoints/nd/checkpoint_best.pt"
                              else a.replace("data-bin/full", str(chat.data), 1) for a in args[1:]]


def test_fairseq_interactive_readme_command(chat, bots):
    bot = bots["standard"]
    args = readme_interactive_command(chat) + ["--max-len-b", str(MAX_LEN)]
    proc = subprocess.run(args, cwd=REPO, input=f"{QUERIES[0]}\n{QUERIES[1]}\n", env=cli_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    source = dict(re.findall(r"^S-(\d+)\t(.*)$", proc.stdout, re.M))
    hypos = {i: pieces for i, _, pieces in re.findall(r"^H-(\d+)\t(\S+)\t(.*)$", proc.stdout, re.M)}
    detok = {i: text for i, _, text in re.findall(r"^D-(\d+)\t(\S+)\t(.*)$", proc.stdout, re.M)}
    assert sorted(hypos) == ["0", "1"] and sorted(detok) == ["0", "1"], proc.stdout[-3000:]
    assert source["0"].replace(" ", "").replace("▁", " ").strip() == "hi ! how was your weekend ?"
    for i, query in enumerate(QUERIES[:2]):
        # the plugin's tokenizer lowercases and Moses-tokenises as nd-prepare did (the S- line shows
        # the source after the dictionary: pieces it lacks as <unk>)
        assert source[str(i)] == bot.src_dict.string(bot.encode(query))
        tokens = bot.generate([bot.encode(query)], beam=1, max_len_a=0, max_len_b=MAX_LEN)[0][0]["tokens"]
        assert hypos[str(i)] == bot.string(tokens)
        assert "<unk>" not in hypos[str(i)]
        assert detok[str(i)] == bot.reply(query, max_len=MAX_LEN)
