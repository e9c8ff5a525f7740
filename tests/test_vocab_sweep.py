"""examples/chitchat/vocab_sweep.sh (RESULTS.md §8.16) on the chitchat slice: each vocabulary size gets
its own sentencepiece model and binarised data, the recipe's Standard trains on it through
base_sweep.sh's NAME=FLAGS points, three checkpoints each are decoded with both searches and scored;
bad arguments stop it, and base_sweep.sh, with a one-line error and exit code 2; a failed point
stops the others."""

import json
import re
import subprocess

import pytest

from conftest import REPO, run_cli

pytestmark = pytest.mark.cli

SCRIPT = REPO / "examples" / "chitchat" / "vocab_sweep.sh"
BASE_SWEEP = REPO / "examples" / "chitchat" / "base_sweep.sh"
SIZES = (300, 400)


@pytest.fixture(scope="module")
def sweep(chitchat_text, tmp_path_factory):
    out = tmp_path_factory.mktemp("vocab_sweep") / "out"
    # 12 updates: validation after every update, decodes at 6, 9 and 12 (base_sweep.sh)
    proc = run_cli(["bash", SCRIPT, chitchat_text, out, *SIZES], env={"UPDATES": "12"}, timeout=900)
    return out, proc.stdout


def test_each_size_has_its_own_vocabulary_and_its_scored_checkpoints(sweep):
    out, stdout = sweep
    for size in SIZES:
        # sentencepiece writes one line per piece: exactly the size asked for
        assert len((out / f"v{size}/prep/spm/spm.vocab").read_text().splitlines()) == size
        # fairseq's dictionary: the pieces seen in training, never sentencepiece's <unk>, <s>, </s>
        # (fairseq adds its own four specials), padded with madeupwords to a multiple of 8 with them
        dict_lines = (out / f"v{size}/data-bin/full/dict.query.txt").read_text().splitlines()
        pieces = [line for line in dict_lines if not line.startswith("madeupword")]
        assert size - 3 - 50 <= len(pieces) <= size - 3
        assert (len(dict_lines) + 4) % 8 == 0 and len(dict_lines) - len(pieces) < 8
        log = (out / f"v{size}/v{size}.train.log").read_text()
        assert "'lr': [0.002]" in log and "warmup_updates': 200" in log
        assert f"v{size}/data-bin/full" in log  # trained on its own data
        updates = [int(u) for u in re.findall(r'"valid_num_updates": "(\d+)"', log)]
        assert set(range(1, 13)) <= set(updates)
        systems = json.loads((out / f"v{size}/eval.json").read_text())["systems"]
        assert set(systems) == {f"v{size}.{u}.{mode}" for u in (6, 9, 12) for mode in ("greedy", "beam5")}
        assert all(row["n"] == 120 for row in systems.values())  # every validation pair of the slice
        assert f"== vocabulary {size}: " in stdout
    assert not list(out.glob("v*/*.tmp"))


def test_a_second_run_keeps_what_is_done(sweep, chitchat_text):
    out, _ = sweep
    before = {p: p.stat().st_mtime_ns for p in out.glob("v*/*.valid.txt")}
    assert len(before) == 12
    run_cli(["bash", SCRIPT, chitchat_text, out, *SIZES], env={"UPDATES": "12"}, timeout=900)
    assert {p: p.stat().st_mtime_ns for p in out.glob("v*/*.valid.txt")} == before


@pytest.mark.parametrize("case", ["size", "text", "arguments"])
def test_bad_arguments_exit_2_with_one_line(case, chitchat_text, tmp_path):
    args = {"size": [chitchat_text, tmp_path / "o", "300", "4k"],
            "text": [tmp_path / "nowhere", tmp_path / "o", "300"],
            "arguments": [chitchat_text, tmp_path / "o"]}[case]
    proc = run_cli(["bash", SCRIPT, *args], check=False, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert {"size": "'4k'", "text": "nowhere/train.response", "arguments": "usage"}[case] in lines[0]
    assert not (tmp_path / "o").exists()


def test_base_sweep_refuses_a_point_without_flags(data_bin, chitchat_text, tmp_path):
    proc = run_cli(["bash", BASE_SWEEP, data_bin / "full", chitchat_text, tmp_path / "o", "base"],
                   check=False, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "sweep point 'base'" in lines[0] and "NAME=FLAGS" in lines[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("broken_first", [True, False])
def test_base_sweep_stops_every_point_when_one_fails(broken_first, data_bin, chitchat_text, tmp_path):
    out = tmp_path / "o"
    # one point's fairseq-train refuses an unknown option at once; the other would train for hours,
    # so the sweep must not wait for it, whichever was started first
    points = ["broken=--no-such-option", "long=--lr 2e-3 --warmup-updates 200"]
    proc = run_cli(["bash", BASE_SWEEP, data_bin / "full", chitchat_text, out,
                    *(points if broken_first else points[::-1])],
                   env={"UPDATES": "1200000"}, check=False, timeout=300)
    assert proc.returncode != 0
    assert "--no-such-option" in (out / "broken.train.log").read_text()
    assert not (out / "eval.json").exists()
    # the EXIT trap killed the long point's fairseq-train, not only its subshell
    left = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout.split()
    assert left == []
