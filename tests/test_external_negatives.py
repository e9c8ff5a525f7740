"""The external-negatives loader of the data code on the real output of preprocess.sh (its
sentencepiece model and dictionary); the task's use of it is tested in test_criterion.py."""

import pytest

from nd_fairseq.data.external_negatives import load_external_negatives
from nd_fairseq.io_utils import InputError


@pytest.fixture(scope="module")
def full(data_bin):
    from fairseq.data import Dictionary

    return data_bin / "full", Dictionary.load(str(data_bin / "full" / "dict.response.txt"))


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def test_each_line_becomes_the_tensors_of_its_responses(full, tmp_path):
    import sentencepiece
    import torch

    directory, dictionary = full
    path = _write(tmp_path / "neg.jsonl", ['["Hello, there!", "   "]', "", "[]", '["Sure, why not?"]'])
    out = load_external_negatives(path, dictionary, str(directory / "spm.model"), "moses", True, n_pairs=4)
    # "   " tokenises to nothing (only </s>): dropped; a blank line and [] have no negatives
    assert [len(x) for x in out] == [1, 0, 0, 1]
    spm = sentencepiece.SentencePieceProcessor(model_file=str(directory / "spm.model"))
    for encoded, text in ((out[0][0], "hello , there !"), (out[3][0], "sure , why not ?")):
        assert encoded.dtype == torch.long and int(encoded[-1]) == dictionary.eos()
        pieces = dictionary.string(encoded[:-1]).split()  # moses, lowercased, then sentencepiece
        assert spm.decode(pieces) == text


@pytest.mark.parametrize("lines, message", [
    (['["ok"]', "[1"], r"neg\.jsonl: line 2 is not JSON \("),
    (['{"a": "b"}'], r"neg\.jsonl: line 1 is not a JSON list of strings"),
    (['["ok", 3]'], r"neg\.jsonl: line 1 is not a JSON list of strings"),
    (['["ok"]', '["yes"]'], r"neg\.jsonl has 2 lines but the training set has 3 pairs"),
])
def test_malformed_or_misaligned_files_are_one_line_errors(full, tmp_path, lines, message):
    directory, dictionary = full
    path = _write(tmp_path / "neg.jsonl", lines)
    with pytest.raises(InputError, match=message):
        load_external_negatives(path, dictionary, str(directory / "spm.model"), n_pairs=3)


def test_missing_files_are_named(full, tmp_path):
    directory, dictionary = full
    with pytest.raises(InputError, match=r"external negatives file \S*absent\.jsonl does not exist; create it"):
        load_external_negatives(str(tmp_path / "absent.jsonl"), dictionary, str(directory / "spm.model"))
    path = _write(tmp_path / "neg.jsonl", ['["ok"]'])
    with pytest.raises(InputError, match=r"sentencepiece model \S*nope\.model does not exist; give the model"):
        load_external_negatives(path, dictionary, str(tmp_path / "nope.model"))
