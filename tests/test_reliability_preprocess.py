"""preprocess.sh under concurrency and interruption, on paths holding commas, spaces and non-ASCII
characters (sentencepiece and fairseq-preprocess split some of their path options on commas):
a second run into the same destination fails at once with one line while the first holds the lock;
a destination whose sets come from different builds is rebuilt, not "up to date"; every split's
alignment is checked before anything runs."""

import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, cli_env, run_cli

TRAIN, VALID, TEST = 300, 30, 20
WORDS = ("hi there how are you doing today fine thanks what about the weather cold warm nice "
         "i like tea coffee me too sure ok no yes maybe later see you").split()


def write_text(directory: Path) -> None:
    r = random.Random(11)
    generic = ["i don't know", "ok", "yes"]
    directory.mkdir(parents=True)
    for split, n in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        q = [" ".join(r.choice(WORDS) for _ in range(r.randrange(2, 8))) for _ in range(n)]
        a = [r.choice(generic) if r.random() < 0.3 else " ".join(r.choice(WORDS) for _ in range(r.randrange(2, 8)))
             for _ in range(n)]
        (directory / f"{split}.query").write_text("\n".join(q) + "\n", encoding="utf-8")
        (directory / f"{split}.response").write_text("\n".join(a) + "\n", encoding="utf-8")


def args(text, work, dest, *extra):
    return ["bash", str(REPO / "preprocess.sh"), "--text-dir", str(text), "--work-dir", str(work),
            "--dest", str(dest), "--vocab-size", "120", "--key", "exact", "--workers", "1", *extra]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A build into paths with commas, spaces and non-ASCII characters, with a second run started
    into the same destination while the first one holds its lock."""
    root = tmp_path_factory.mktemp("prep") / "da,ta ü"
    text, work, dest = root / "te,xt ü", root / "wo,rk ü", root / "de,st ü"
    write_text(text)
    first = subprocess.Popen(args(text, work, dest), env=cli_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(dest.glob(".preprocess.??????")) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the build directory appears once the lock is held
    assert first.poll() is None, first.communicate()
    second = subprocess.run(args(text, work, dest), env=cli_env(), capture_output=True, text=True, timeout=120)
    first_running = first.poll() is None
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    return {"text": text, "work": work, "dest": dest, "second": second, "first_running": first_running,
            "first_out": out}


def test_second_concurrent_run_fails_with_one_line_while_the_first_holds_the_lock(built):
    second, dest = built["second"], built["dest"]
    assert built["first_running"], "the first run ended before the second one was refused"
    assert second.returncode == 2, second.stderr
    assert second.stdout == ""
    assert second.stderr == (f"preprocess.sh: error: another preprocess.sh is writing to {dest} (it holds the "
                             f"lock {dest}/.preprocess.lock); wait for it to finish, or choose another --dest\n")
    # the first run's outputs are whole: nothing nested, no build directory left
    work = built["work"]
    assert not (work / "filter" / "filter").exists() and not (work / "spm" / "spm").exists()
    assert sorted(p.name for p in dest.iterdir()) == [".preprocess.lock", "full", "negative"]


def test_paths_with_commas_spaces_and_non_ascii_work_end_to_end(built):
    dest, work = built["dest"], built["work"]
    for name in ("full", "negative"):
        for split in ("train", "valid", "test"):
            for side in ("query", "response"):
                assert (dest / name / f"{split}.query-response.{side}.bin").stat().st_size > 0
    assert (dest / "full" / "dict.query.txt").read_bytes() == (dest / "negative" / "dict.query.txt").read_bytes()
    assert len((dest / "full" / "train.entropy").read_text().splitlines()) == TRAIN
    assert len((work / "filter" / "top.query").read_text().splitlines()) == TRAIN // 2
    assert (work / "spm" / "spm.model").read_bytes() == (dest / "full" / "spm.model").read_bytes()
    # the encoded valid set (fairseq-preprocess was given its path) holds every valid pair
    assert len((work / "spm" / "valid.query").read_text(encoding="utf-8").splitlines()) == VALID


def test_sets_of_different_builds_are_rebuilt_not_up_to_date(built, tmp_path):
    text = built["text"]
    work, dest = tmp_path / "work", tmp_path / "dest"
    shutil.copytree(built["work"], work)
    shutil.copytree(built["dest"], dest)
    again = run_cli(args(text, work, dest))
    assert "is up to date" in again.stdout
    # as after a run interrupted between moving full and negative into place: negative is another
    # build's (its stamp has the same fingerprint but another build)
    fingerprint, build = (dest / "negative" / ".nd-stamp").read_text().split()
    (dest / "negative" / ".nd-stamp").write_text(f"{fingerprint} older\n")
    rebuilt = run_cli(args(text, work, dest))
    assert "is up to date" not in rebuilt.stdout and "== done" in rebuilt.stdout
    stamps = {(dest / name / ".nd-stamp").read_text() for name in ("full", "negative")}
    assert len(stamps) == 1 and stamps.pop().split()[0] == fingerprint
    # a set missing its stamp (killed between removing the old set and moving the new one in) too
    (dest / "negative" / ".nd-stamp").unlink()
    assert "is up to date" not in run_cli(args(text, work, dest)).stdout


@pytest.mark.parametrize("split", ["valid", "test"])
def test_every_split_is_checked_for_alignment(tmp_path, split):
    text = tmp_path / "text"
    write_text(text)
    lines = (text / f"{split}.response").read_text().splitlines()
    (text / f"{split}.response").write_text("\n".join(lines[:-1]) + "\n")
    n = VALID if split == "valid" else TEST
    proc = run_cli(args(text, tmp_path / "work", tmp_path / "dest"), check=False)
    assert proc.returncode == 2
    assert proc.stderr == (f"preprocess.sh: error: misaligned {split} split: {text}/{split}.query has {n} lines, "
                           f"{text}/{split}.response has {n - 1}; each query line must pair with the same "
                           f"response line (recreate the text with nd-prepare --out-dir {text})\n")
    assert not (tmp_path / "dest").exists()


def test_nd_spm_trains_on_paths_with_commas_as_on_plain_ones(tmp_path):
    odd, plain = tmp_path / "a,b ü", tmp_path / "plain"
    write_text(odd)
    shutil.copytree(odd, plain)
    for d in (odd, plain):
        run_cli(["nd-spm", "train", "--input", d / "train.query", d / "train.response",
                 "--model-prefix", d / "m,odel" / "spm", "--vocab-size", "80"])
        # nothing else is left beside the model (the scratch directory is gone)
        assert sorted(p.name for p in (d / "m,odel").iterdir()) == ["spm.model", "spm.vocab"]
    assert (odd / "m,odel" / "spm.vocab").read_text() == (plain / "m,odel" / "spm.vocab").read_text()
