"""PNEG prompts against fixtures written by hand from Appendix G and I; seeded demonstration sampling."""

from collections import Counter
from pathlib import Path

import pytest

from conftest import run_cli
from nd_fairseq.io_utils import InputError
from nd_fairseq.pneg.data import Example, read_dailydialog_pp, write_dailydialog_pp
from nd_fairseq.pneg.prompt import (PromptConfig, build_prompt, demonstration_pool, example_rng, make_prompt,
                                    sample_demonstrations)

FIX = Path(__file__).parent / "fixtures" / "pneg"


@pytest.fixture(scope="module")
def ddpp():
    return {ex.id: ex for ex in read_dailydialog_pp(str(FIX / "dailydialog_pp_sample.jsonl"))}


def fixture_text(name):
    return (FIX / name).read_text(encoding="utf-8")


def test_appendix_g_prompt_is_reproduced_exactly(ddpp):
    prompt = build_prompt(ddpp["paul"], [ddpp["g1"], ddpp["g2"]], "dir")
    assert prompt == fixture_text("appendix_g_prompt.txt")
    assert prompt.endswith("given dialogue context:\n1.")
    assert prompt.count("###") == 3 and prompt.count('"""') == 6


def test_appendix_i_instruction_variants(ddpp):
    assert build_prompt(ddpp["paul"], [ddpp["g1"], ddpp["g2"]], "pos") == fixture_text("appendix_i_pos_prompt.txt")
    assert build_prompt(ddpp["paul"], [], "imp") == fixture_text("appendix_i_imp_prompt.txt")


def test_imp_names_the_next_speaker(ddpp):
    two_turns = Example("x", ["Hello there.", "Hi, how are you?"], ["Fine."])
    prompt = build_prompt(two_turns, [], "imp")
    assert prompt.endswith("Suddenly, A makes an awkward response. The response appears to be okay at first "
                           "glance, but it's irrelevant to the conversation.\nA:")


def test_sampling_is_seeded_per_example_and_excludes_the_target(ddpp):
    pool = demonstration_pool(list(ddpp.values()))
    assert [p.id for p in pool] == ["g1", "g2", "t10"]  # 'paul' has no adversarial negatives
    cfg = PromptConfig(seed=3)
    a = make_prompt(ddpp["t10"], pool, cfg)
    assert a == make_prompt(ddpp["t10"], pool, PromptConfig(seed=3))
    assert "t10" not in a[1] and len(a[1]) == 2
    # a target's prompt does not depend on the other targets or their order
    other = make_prompt(ddpp["g1"], pool, cfg)
    assert make_prompt(ddpp["t10"], pool, cfg) == a and "g1" not in other[1]


def test_demonstrations_are_uniform_without_replacement():
    pool = [Example(f"p{i}", [f"context {i}"], ["pos"], [f"neg {j}" for j in range(5)]) for i in range(10)]
    counts = Counter()
    for n in range(2000):
        demos = sample_demonstrations(pool, 2, example_rng(1, str(n)))
        assert demos[0].id != demos[1].id
        counts.update(d.id for d in demos)
    assert set(counts) == {p.id for p in pool}
    assert max(counts.values()) / min(counts.values()) < 1.3  # 400 expected each


def test_seed_changes_the_demonstrations():
    pool = [Example(f"p{i}", [f"context {i}"], ["pos"], [f"neg {j}" for j in range(5)]) for i in range(50)]
    target = Example("t", ["target"], ["pos"])
    draws = {tuple(make_prompt(target, pool, PromptConfig(seed=s))[1]) for s in range(10)}
    assert len(draws) > 5


def test_prompt_errors(ddpp):
    with pytest.raises(InputError, match="zero-shot"):
        PromptConfig(instruction="imp", k=2)
    with pytest.raises(InputError, match="unknown"):
        PromptConfig(instruction="negative")
    assert PromptConfig(instruction="imp").k == 0 and PromptConfig().k == 2
    with pytest.raises(InputError, match="usable examples but k = 2"):
        make_prompt(ddpp["g1"], [ddpp["g1"], ddpp["g2"]], PromptConfig())
    with pytest.raises(InputError, match="positive"):
        build_prompt(Example("x", ["hi"], []), [], "pos")


@pytest.mark.cli
def test_cli_prompt_prints_the_appendix_g_prompt(tmp_path, ddpp):
    pool_file = tmp_path / "pool.jsonl"
    write_dailydialog_pp(str(pool_file), [ddpp["g1"], ddpp["g2"]])
    targets = tmp_path / "targets.jsonl"
    write_dailydialog_pp(str(targets), [ddpp["paul"]])
    # the seed whose draw is (g1, g2), the order of Appendix G
    pool = demonstration_pool([ddpp["g1"], ddpp["g2"]])
    seed = next(s for s in range(100) if make_prompt(ddpp["paul"], pool, PromptConfig(seed=s))[1] == ["g1", "g2"])
    out = run_cli(["nd-pneg", "prompt", "--examples", pool_file, "--input", targets, "--seed", seed])
    assert out.stdout == fixture_text("appendix_g_prompt.txt") + "\n"
    # all prompts as JSON lines
    run_cli(["nd-pneg", "prompt", "--examples", pool_file, "--input", targets, "--seed", seed,
             "--output", tmp_path / "prompts.jsonl"])
    import json

    rows = [json.loads(l) for l in (tmp_path / "prompts.jsonl").read_text().splitlines()]
    assert rows == [{"id": "paul", "prompt": fixture_text("appendix_g_prompt.txt"), "demos": ["g1", "g2"]}]
    bad = run_cli(["nd-pneg", "prompt", "--input", targets], check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--examples is required" in bad.stderr
