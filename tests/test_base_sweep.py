"""examples/chitchat/base_sweep.sh (RESULTS.md §8.8) on the chitchat slice: both sweep points train
with their own setting, three checkpoints each are decoded with both searches, nd-eval scores all
twelve decodes; bad arguments stop it with a one-line error and exit code 2."""

import json
import re

import pytest

from conftest import REPO, run_cli

pytestmark = pytest.mark.cli

SCRIPT = REPO / "examples" / "chitchat" / "base_sweep.sh"


@pytest.fixture(scope="module")
def sweep(data_bin, chitchat_text, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "out"
    # 12 updates: validation every 12/12 = 1 update, checkpoints every 12/4 = 3, decoded at 6, 9, 12
    run_cli(["bash", SCRIPT, data_bin / "full", chitchat_text, out], env={"UPDATES": "12"}, timeout=900)
    return out


def test_both_points_train_with_their_setting_and_every_checkpoint_is_scored(sweep):
    out = sweep
    logs = {name: (out / f"{name}.train.log").read_text() for name in ("lr4e-3", "dropout0.3")}
    # the settings that differ from the recipe's Standard reached fairseq
    assert "'lr': [0.004]" in logs["lr4e-3"] and "warmup_updates': 400" in logs["lr4e-3"]
    assert " dropout=0.3," in logs["dropout0.3"] and " dropout=0.1," in logs["lr4e-3"]
    assert "'lr': [0.002]" in logs["dropout0.3"]
    for name, log in logs.items():
        updates = [int(u) for u in re.findall(r'"valid_num_updates": "(\d+)"', log)]
        assert set(range(1, 13)) <= set(updates), name  # a validation after every update
        for u in (6, 9, 12):
            assert list((out / name).glob(f"checkpoint_*_{u}.pt")), (name, u)
    systems = json.loads((out / "eval.json").read_text())["systems"]
    expected = {f"{name}.{u}.{mode}" for name in logs for u in (6, 9, 12) for mode in ("greedy", "beam5")}
    assert set(systems) == expected
    for name in expected:
        hyps = [l for l in (out / f"{name}.valid.txt").read_text().splitlines() if l.startswith("H-")]
        assert len(hyps) == 120  # every validation pair of the slice (conftest: 120)
        assert systems[name]["n"] == 120
    assert not list(out.glob("*.tmp"))


def test_a_second_run_keeps_what_is_done(sweep, data_bin, chitchat_text):
    out = sweep
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.valid.txt")}
    run_cli(["bash", SCRIPT, data_bin / "full", chitchat_text, out], env={"UPDATES": "12"}, timeout=900)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.valid.txt")} == before


@pytest.mark.parametrize("case", ["data", "text", "updates", "arguments"])
def test_bad_arguments_exit_2_with_one_line(case, data_bin, chitchat_text, tmp_path):
    args = {"data": [tmp_path / "nowhere", chitchat_text, tmp_path / "o"],
            "text": [data_bin / "full", tmp_path / "nowhere", tmp_path / "o"],
            "updates": [data_bin / "full", chitchat_text, tmp_path / "o"],
            "arguments": [data_bin / "full"]}[case]
    env = {"UPDATES": "10"} if case == "updates" else None
    proc = run_cli(["bash", SCRIPT, *args], env=env, check=False, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert {"data": "nowhere/dict.query.txt", "text": "nowhere/train.response", "updates": "UPDATES=10",
            "arguments": "usage"}[case] in lines[0]
    assert not (tmp_path / "o").exists()
