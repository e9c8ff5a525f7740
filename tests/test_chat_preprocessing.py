"""preprocessing.json: preprocess.sh records the preparation, and applying it to raw text gives
exactly what nd-prepare + nd-spm wrote for the training data."""

import hashlib
import json
import shutil
import subprocess
import sys

import pytest

from conftest import cli_env, run_cli
from helpers.chat_models import QUERIES
from nd_fairseq.data import preprocessing
from nd_fairseq.io_utils import InputError

pytestmark = pytest.mark.cli



def test_preprocess_sh_records_the_preparation(chat, data_bin):
    full = json.loads((chat.data / "preprocessing.json").read_text())
    negative = json.loads((chat.data.parent / "negative" / "preprocessing.json").read_text())
    sha = hashlib.sha256((chat.data / "spm.model").read_bytes()).hexdigest()
    # nd-prepare's defaults (chitchat_models runs it without options), preprocess.sh's options
    for record, subset in ((full, "all"), (negative, "top")):
        assert record["format_version"] == 1
        assert (record["tokenize"], record["lowercase"], record["max_length"], record["truncate"]) == \
            ("moses", True, 0, False)
        assert record["sentencepiece_model"] == "spm.model" and record["sentencepiece_sha256"] == sha
        assert record["vocab_size"] == 600
        assert record["filter"] == {"key": "prefix:3", "ratio": 0.5, "threshold": None, "base": "2",
                                    "subset": subset}
    assert (chat.data.parent / "negative" / "spm.model").read_bytes() == (chat.data / "spm.model").read_bytes()
    # conftest's data_bin: text without nd-prepare's prepare.json, built with --bottom
    bottom = json.loads((data_bin / "bottom" / "preprocessing.json").read_text())
    assert bottom["filter"]["subset"] == "bottom" and bottom["tokenize"] is None


def test_preparation_equals_nd_prepare_then_nd_spm(chat, tmp_path):
    raw = tmp_path / "raw.tsv"
    raw.write_text("".join(f"{q}\tok\n" for q in QUERIES), encoding="utf-8")
    run_cli(["nd-prepare", "--format", "tsv", "--input", raw, "--out-dir", tmp_path / "text", "--quiet",
             "--valid-fraction", "0", "--test-fraction", "0"])
    run_cli(["nd-spm", "encode", "--model", chat.data / "spm.model", "--input", tmp_path / "text" / "train.query",
             "--output", tmp_path / "pieces"])
    words = (tmp_path / "text" / "train.query").read_text(encoding="utf-8").splitlines()
    pieces = (tmp_path / "pieces").read_text(encoding="utf-8").splitlines()
    prep = preprocessing.load(str(chat.data))
    assert [prep.words(q) for q in QUERIES] == words
    assert [prep.encode(q) for q in QUERIES] == pieces
    # by hand: Moses splits the punctuation, then everything is lowercased
    assert prep.words(QUERIES[0]) == "hi ! how was your weekend ?"
    assert prep.words(QUERIES[1]) == "i 'm going to the café — want to come ?"
    assert "".join(pieces[0].split()).replace("▁", " ").strip() == words[0]


def test_decode_undoes_sentencepiece_and_moses(chat):
    prep = preprocessing.load(str(chat.data))
    assert prep.decode(prep.encode("I don't know, do you?")) == "i don't know, do you?"
    assert prep.decode(prep.encode("what's the café like ?")) == "what's the café like?"


def test_data_without_the_file_needs_the_settings(chat, data_bin, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(chat.data, old)
    (old / "preprocessing.json").unlink()
    with pytest.raises(InputError, match=r"has no preprocessing.json .* rerun preprocess.sh --force, or give it"):
        preprocessing.load(str(old))
    given = preprocessing.load(str(old), tokenize="moses")
    recorded = preprocessing.load(str(chat.data))
    assert [given.encode(q) for q in QUERIES] == [recorded.encode(q) for q in QUERIES]
    # a record whose text had no prepare.json does not guess the tokenisation
    with pytest.raises(InputError, match=r"does not record how the text was tokenised"):
        preprocessing.load(str(data_bin / "full"))
    assert preprocessing.load(str(data_bin / "full"), tokenize="whitespace").words("A  b") == "a b"


def test_a_different_sentencepiece_model_is_refused(chat, data_bin, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(chat.data, moved)
    shutil.copy(data_bin / "full" / "spm.model", moved / "spm.model")
    with pytest.raises(InputError, match=r"is not the one recorded in preprocessing.json \(SHA-256 differs\)"):
        preprocessing.load(str(moved)).encode("hello")
    (moved / "preprocessing.json").write_text("{not json")
    with pytest.raises(InputError, match=r"preprocessing.json is not valid JSON"):
        preprocessing.load(str(moved))


def test_nd_fairseq_imports_fairseq_only_for_the_model():
    code = ("import sys, nd_fairseq, nd_fairseq.data.preprocessing, nd_fairseq.chat.cli\n"
            "assert 'fairseq' not in sys.modules and 'torch' not in sys.modules, 'imported too early'\n"
            "from nd_fairseq import DialogueModel\n"
            "from fairseq.hub_utils import GeneratorHubInterface\n"
            "assert issubclass(DialogueModel, GeneratorHubInterface)\n"
            "from fairseq.data.encoders import TOKENIZER_REGISTRY\n"
            "assert 'nd_prepare' in TOKENIZER_REGISTRY\n"
            "try:\n    nd_fairseq.NoSuchThing\nexcept AttributeError:\n    print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_preprocess_sh_rebuilds_data_that_lacks_the_file(chat, tmp_path):
    dest = tmp_path / "data-bin"
    shutil.copytree(chat.data.parent, dest)
    # the work directory travels too: "up to date" also needs its sentencepiece model to be the data's
    shutil.copytree(chat.data.parent.parent / "work", tmp_path / "work")
    args = ["bash", "preprocess.sh", "--text-dir", chat.text, "--work-dir", tmp_path / "work", "--dest", dest,
            "--vocab-size", "600", "--key", "prefix:3", "--workers", "1"]
    assert "is up to date" in run_cli(args).stdout
    (dest / "full" / "preprocessing.json").unlink()  # as binarised by an older preprocess.sh
    proc = run_cli(args)
    assert "is up to date" not in proc.stdout and "== done" in proc.stdout
    assert json.loads((dest / "full" / "preprocessing.json").read_text())["tokenize"] == "moses"
