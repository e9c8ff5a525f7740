"""Parsing completions and the Appendix F error filter: one case per rejection reason, plus regeneration."""

import json
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from nd_fairseq.pneg.backends import OpenAICompletionsBackend
from nd_fairseq.pneg.data import read_dailydialog_pp, write_dailydialog_pp
from nd_fairseq.pneg.generate import GenerationConfig, generate_one
from nd_fairseq.pneg.parse import (REASONS, FilterConfig, check_items, completion_items, format_counts, has_repetition,
                                   is_copy, judge, single_item, words)
from nd_fairseq.pneg.prompt import PromptConfig, demonstration_pool

FIX = Path(__file__).parent / "fixtures" / "pneg"
sys.path.insert(0, str(FIX))
from completions_server import CompletionsServer, clean_completion  # noqa: E402

CLEAN = ["I never liked the smell of fresh paint.", "Could you water my plants on Sunday?",
         "The bakery on the corner closed last year.", "My brother plays chess with his friends.",
         "We watched a documentary about whales."]


@pytest.fixture(scope="module")
def ddpp():
    return {ex.id: ex for ex in read_dailydialog_pp(str(FIX / "dailydialog_pp_sample.jsonl"))}


def numbered(items, first_prefix=True):
    text = "\n".join(f"{i}. {t}" for i, t in enumerate(items, 1))
    return text[2:] if first_prefix else text  # a completion continues the prompt's "1."


def reasons(items, context=(), positives=()):
    return set(check_items(items, context, positives))


def test_appendix_g_completion_parses_into_five_clean_negatives(ddpp):
    completion = (FIX / "appendix_g_completion.txt").read_text(encoding="utf-8")
    v = judge([completion], ddpp["paul"].context, ddpp["paul"].positives)
    assert v.ok and v.negatives[0] == "I don't know how to handle an interview."
    assert v.negatives[4] == "Did you remember to register for the interview?"


def test_table_10_negatives_pass(ddpp):
    t10 = ddpp["t10"]
    pneg = ["If you spend most of your time on the phone, then you are certainly not unemployed.",
            "It is hard to tell the difference between our company's products and those of my friend's company.",
            "I have tried to keep track of cross-cultural communication skills through the internet.",
            "You are so resourceful that you can work with people from all over the world.",
            "My partner has no resources to go over the financial reports. I am confused why she wants to be a "
            "part of this company again."]
    assert check_items(pneg, t10.context, t10.positives) == {}
    assert check_items(t10.adversarial, t10.context, t10.positives) == {}


def test_stop_sequence_and_trailing_text_are_cut():
    items, structural = completion_items(numbered(CLEAN) + "\n###\nDialogue context:\n\"\"\"")
    assert items == CLEAN and not structural


def test_numbering_unnumbered_line():
    v = judge([numbered(CLEAN[:2]) + "\nand then some chatter\n3. x"], [], [])
    assert set(v.reasons) == {"numbering"}


def test_numbering_out_of_order():
    text = numbered(CLEAN)
    assert set(judge([text.replace("3. ", "4. ", 1)], [], []).reasons) == {"numbering"}
    assert set(judge([text.replace("3. ", "2. ", 1)], [], []).reasons) == {"numbering"}
    # a completion that restates the prompt's "1." is read as the list itself
    v = judge([" 1. " + CLEAN[0] + "\n" + "\n".join(f"{i}. {t}" for i, t in enumerate(CLEAN[1:], 2))], [], [])
    assert v.ok and v.negatives == CLEAN


def test_count_too_few_and_too_many():
    assert set(judge([numbered(CLEAN[:4])], [], []).reasons) == {"count"}
    assert set(judge([numbered(CLEAN + ["One more sentence about gardens."])], [], []).reasons) == {"count"}


def test_empty_item():
    assert reasons(CLEAN[:4] + ["..."]) == {"empty"}
    assert set(judge([numbered(CLEAN[:4]) + "\n5."], [], []).reasons) == {"empty"}


def test_prompt_leak():
    item = "I don't know why I failed to win the race. Maybe it is because my legs were too short. \"\"\","
    assert reasons(CLEAN[:4] + [item]) == {"prompt_leak"}
    assert reasons(CLEAN[:4] + ["Dialogue context: A: hello"]) == {"prompt_leak"}


@pytest.mark.parametrize("item", [
    "I am very very very tired of this.",                       # a word three times in a row
    "Let us go go go now.",
    "I think so I think so I think so.",                         # a 3-gram three times in a row
    "He said that the train was late and then he said that the train was late again.",  # a 4-gram twice
])
def test_repetition(item):
    assert has_repetition(words(item))
    assert reasons(CLEAN[:4] + [item]) == {"repetition"}


@pytest.mark.parametrize("item", ["Bye bye, see you tomorrow.", "I know, I know, it was my fault.",
                                  "He had had enough of the noise.", "That that is is that that is not is not."])
def test_natural_repeats_pass(item):
    if item.startswith("That that"):  # the classic garden path repeats a 2-gram only twice in a row
        assert not has_repetition(words(item))
    else:
        assert reasons(CLEAN[:4] + [item]) == set()


def test_duplicate_items():
    assert reasons(CLEAN[:4] + [CLEAN[0].upper()]) == {"duplicate"}


@pytest.mark.parametrize("item", ["I want to __ the __ tomorrow.", "Please fill in _ _ before noon.",
                                  "The word ___ is missing."])
def test_underscores(item):
    assert reasons(CLEAN[:4] + [item]) == {"underscore"}


def test_single_underscore_passes():
    assert reasons(CLEAN[:4] + ["My username is john_smith."]) == set()


def test_copies_of_context_turns_table_11_k0(ddpp):
    t10 = ddpp["t10"]
    k0 = ["I am sorry to tell you that you failed in the job interview in our company.",  # exact copy
          "Sir, I am sorry to tell you that you failed in the job interview in our company.",  # contains it
          "It is hard to tell . Maybe it is because you're not resourceful enough to be a manager.",  # spacing
          CLEAN[0], CLEAN[1]]
    counts = check_items(k0, t10.context, t10.positives)
    assert counts == {"copy_context": 3}
    assert set(check_items(k0, t10.context, t10.positives, FilterConfig(check_context=False))) == set()


def test_copies_of_a_positive_are_false_negatives(ddpp):
    paul = ddpp["paul"]
    items = CLEAN[:4] + ["you need to know something about the company"]
    assert check_items(items, paul.context, paul.positives) == {"copy_positive": 1}
    assert is_copy("You need to know something about this company!", paul.positives[0])
    assert not is_copy("Did you know something about it?", paul.positives[0])


def test_several_reasons_are_all_reported():
    items = ["very very very bad", "a __ b __", CLEAN[0], CLEAN[0], CLEAN[1]]
    assert set(check_items(items)) == {"repetition", "underscore", "duplicate"}
    assert format_counts({"underscore": 2, "repetition": 1}) == "repetition 1, underscore 2"
    assert set(REASONS) >= {"numbering", "count", "empty", "prompt_leak", "repetition", "duplicate", "underscore",
                            "copy_context", "copy_positive"}


def test_imp_completions_are_one_response_each(ddpp):
    texts = [f' "{t}"\nB: more' for t in CLEAN]
    v = judge(texts, ddpp["paul"].context, ddpp["paul"].positives, "imp")
    assert v.ok and v.negatives == CLEAN
    assert single_item(" ok then ### A: x") == "ok then"


def test_regenerates_until_clean_and_counts_reasons(ddpp):
    pool = demonstration_pool(list(ddpp.values()))
    bad_numbering = " first\n3. third"
    repeated = numbered(CLEAN[:4] + ["so so so so bad"])
    with CompletionsServer() as server:
        server.queue(("texts", [bad_numbering]), ("texts", [repeated]))
        b = OpenAICompletionsBackend(server.url, "m", backoff_base=0.0)
        rec = generate_one(ddpp["paul"], pool, b, GenerationConfig(prompt=PromptConfig(seed=1)))
        assert len(server.requests) == 3
        seeds = [r["body"].get("seed") for r in server.requests]
    assert rec["status"] == "ok" and rec["attempts"] == 3
    assert rec["rejections"] == {"numbering": 1, "repetition": 1}
    assert len(rec["negatives"]) == 5 and rec["raw"][0].startswith(" My neighbour")
    assert seeds == [None, None, None]  # no seed unless --send-seed


def test_records_a_failure_after_the_cap(ddpp):
    pool = demonstration_pool(list(ddpp.values()))
    copy = numbered(CLEAN[:4] + ["Paul, a company called me for an interview."])
    with CompletionsServer(responder=lambda body: copy) as server:
        b = OpenAICompletionsBackend(server.url, "m", backoff_base=0.0)
        rec = generate_one(ddpp["paul"], pool, b, GenerationConfig(prompt=PromptConfig(seed=1), max_attempts=3))
        assert len(server.requests) == 3
    assert rec["status"] == "failed" and rec["attempts"] == 3
    assert rec["rejections"] == {"copy_context": 3} and "3 attempts" in rec["error"]


@pytest.mark.cli
def test_cli_filter_rechecks_and_counts(tmp_path, ddpp):
    targets = tmp_path / "targets.jsonl"
    write_dailydialog_pp(str(targets), [ddpp["paul"], ddpp["t10"], ddpp["g1"]])
    gen = tmp_path / "gen.jsonl"
    rows = [{"id": "paul", "text": clean_completion('"""\nA: Paul, a company called me for an interview.\n"""')},
            {"id": "t10", "text": numbered(CLEAN[:4] + ["It is hard to tell. Maybe it is because you're not "
                                                        "resourceful enough to be a manager."])},
            {"id": "g1", "status": "ok", "negatives": CLEAN[:4] + ["a __ b"]}]
    gen.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = run_cli(["nd-pneg", "filter", "--input", targets, "--generated", gen, "--output", tmp_path / "f.jsonl"])
    assert "ok 1, rejected/failed 2" in out.stdout
    assert "underscore 1, copy_context 1" in out.stdout
    recs = {r["id"]: r for r in map(json.loads, (tmp_path / "f.jsonl").read_text().splitlines())}
    assert recs["paul"]["status"] == "ok" and len(recs["paul"]["negatives"]) == 5
    assert recs["t10"]["filter_reasons"] == {"copy_context": 1}
    # a looser filter keeps the copy
    out = run_cli(["nd-pneg", "filter", "--input", targets, "--generated", gen, "--output", tmp_path / "g.jsonl",
                   "--allow-context-copies", "--max-underscores", "5"])
    assert "ok 3" in out.stdout
