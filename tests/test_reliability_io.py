"""Reliability of the file side of nd-filter, nd-prepare and nd-eval, with real processes, signals
and file-system failures: workers die with a killed parent and a killed run leaves only a scratch
directory that the next run removes; a multi-file output appears whole or not at all; output-side
errors are one line naming the path and the cause (exit code 2, nothing left); outputs get the
umask's permissions; a UTF-8 byte order mark is no part of the first line."""

import ctypes
import json
import os
import random
import resource
import signal
import stat
import subprocess
import sys
import time

import pytest

from conftest import REPO, cli_env, run_cli, tool

BOM = "\ufeff"


def write_pairs(directory, n, seed=0, width=0):
    """n (query, response) lines: a few hundred distinct responses, each answering many queries."""
    r = random.Random(seed)
    pad = " " + "x" * width if width else ""
    q = "".join(f"how about {r.randrange(5000)} then{pad}\n" for _ in range(n))
    a = "".join(f"reply {r.randrange(400)}{pad}\n" for _ in range(n))
    (directory / "q.txt").write_text(q, encoding="utf-8")
    (directory / "r.txt").write_text(a, encoding="utf-8")
    return directory / "q.txt", directory / "r.txt"


def run_tool(args, preexec_fn=None):
    return subprocess.run([tool(args[0])] + [str(a) for a in args[1:]], env=cli_env(), capture_output=True,
                          text=True, timeout=600, preexec_fn=preexec_fn)


def assert_one_line_error(proc, prog, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    err = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert err.startswith(f"{prog}: error: "), proc.stderr
    assert proc.stderr.count(f"{prog}: error") == 1
    for needle in needles:
        assert needle in err, (needle, err)


# ------------------------------------------------------------------ item 10: kills and workers


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False


def _hidden(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"),
                    reason="needs Linux /proc/PID/task/PID/children to find the workers")
def test_sigkill_of_nd_filter_leaves_no_worker_and_only_one_scratch_dir(tmp_path):
    n = 400_000
    query, response = write_pairs(tmp_path, n)
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    args = [tool("nd-filter"), "--query", query, "--response", response, "--out-dir", out,
            "--scratch-dir", scratch, "--jobs", "2", "--bottom", "--quiet"]
    # kill once while the workers hash (before any output exists), once while they write the outputs
    for stage in ("hashing", "writing"):
        proc = subprocess.Popen([str(a) for a in args], env=cli_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        workers = []
        while proc.poll() is None:
            workers = _children(proc.pid)
            writing = out.is_dir() and any(p.name.startswith(".nd-staging-") for p in out.iterdir())
            if workers and (stage == "hashing") != writing:
                break
            time.sleep(0.002)
        assert proc.poll() is None and workers, f"nd-filter finished before the {stage} stage could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(_alive, workers)), f"workers {workers} outlived their killed parent ({stage})"
        # no outputs, no stray temporary files: at most one staging directory and one scratch directory
        visible = sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) if out.exists() else []
        assert visible == []
        hidden = _hidden(out) if out.exists() else []
        assert len(hidden) <= 1 and all(h.startswith(".nd-staging-") for h in hidden), hidden
        assert not [p for p in tmp_path.rglob("*.tmp")]
        left = sorted(p.name for p in scratch.iterdir())
        assert len(left) <= 1 and all(name.startswith("nd-filter-") for name in left), left
    # the next run removes what the killed ones left, and writes complete outputs
    run_cli(args)
    assert _hidden(out) == [] and list(scratch.iterdir()) == []
    scores = (out / "scores.txt").read_text().splitlines()
    assert len(scores) == n
    summary = json.loads((out / "summary.json").read_text())
    assert summary["top"] + summary["bottom"] == n
    assert len((out / "top.query").read_text().splitlines()) == summary["top"]


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"),
                    reason="needs Linux /proc/PID/task/PID/children to find the workers")
@pytest.mark.parametrize("how", ["Ctrl-C", "SIGTERM"])
def test_interrupted_nd_filter_stops_its_workers_and_leaves_nothing(tmp_path, how):
    query, response = write_pairs(tmp_path, 400_000)
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    args = [tool("nd-filter"), "--query", query, "--response", response, "--out-dir", out,
            "--scratch-dir", scratch, "--jobs", "2", "--quiet"]
    # in a session of its own, so that Ctrl-C can go to its whole process group as a terminal's does
    # with SIGINT's default disposition: a suite started in the background inherits it ignored
    proc = subprocess.Popen([str(a) for a in args], env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    workers = []
    while proc.poll() is None and not (workers := _children(proc.pid)):
        time.sleep(0.002)
    assert proc.poll() is None and workers, "nd-filter finished before it could be interrupted"
    if how == "Ctrl-C":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        os.kill(proc.pid, signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == (130 if how == "Ctrl-C" else 128 + signal.SIGTERM), stderr
    if how == "Ctrl-C":
        assert stderr == f"nd-filter: interrupted; nothing was written to {out}\n"
    # a worker the parent did not wait for gets SIGKILL from the kernel as the parent exits
    deadline = time.monotonic() + 5
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_alive, workers))
    assert not out.exists() or list(out.iterdir()) == []
    assert list(scratch.iterdir()) == []


# ------------------------------------------------------------------ item 11: all or nothing


def test_failed_rename_puts_back_every_previous_output(tmp_path):
    query, response = write_pairs(tmp_path, 3000)
    out = tmp_path / "out"
    base = ["nd-filter", "--query", query, "--response", response, "--out-dir", out, "--quiet"]
    run_cli(base + ["--ratio", "0.5"])
    # summary.json, the last output renamed into place, has become a non-empty directory
    (out / "summary.json").unlink()
    (out / "summary.json").mkdir()
    (out / "summary.json" / "keep.txt").write_text("mine\n")
    before = {name: (out / name).read_bytes() for name in ("scores.txt", "top.query", "top.response")}
    proc = run_tool(base + ["--ratio", "0.2", "--bottom"])
    assert_one_line_error(proc, "nd-filter", f"cannot write {out}/summary.json: it is a directory")
    # top.* and scores.txt were renamed before the failure: all are the previous run's again
    assert {name: (out / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in out.iterdir()) == ["scores.txt", "summary.json", "top.query", "top.response"]
    assert (out / "summary.json" / "keep.txt").read_text() == "mine\n"


KILLED_WHILE_RENAMING = """
import os, signal, sys
from nd_fairseq.io_utils import AtomicFiles

rename = os.replace


def rename_then_die(src, dst):  # a real SIGKILL, at the instant between two renames
    rename(src, dst)
    if os.path.basename(dst) == "a.txt":
        os.kill(os.getpid(), signal.SIGKILL)


os.replace = rename_then_die
with AtomicFiles(sys.argv[1]) as out:
    out.open("a.txt").write("new a\\n")
    out.open("b.txt").write("new b\\n")
"""


def test_a_run_killed_while_renaming_is_completed_by_the_next_one(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("old a\n")
    (out / "b.txt").write_text("old b\n")
    proc = subprocess.run([sys.executable, "-c", KILLED_WHILE_RENAMING, str(out)], env=cli_env(), cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (out / "a.txt").read_text() == "new a\n" and (out / "b.txt").read_text() == "old b\n"
    # the next tool writing there (nd-eval --json) first completes the killed run's renames
    (tmp_path / "h.txt").write_text("a b\n")
    run_cli(["nd-eval", "--hyp", tmp_path / "h.txt", "--ref", tmp_path / "h.txt", "--train-responses",
             tmp_path / "h.txt", "--json", out / "scores.json", "--quiet"])
    assert (out / "a.txt").read_text() == "new a\n" and (out / "b.txt").read_text() == "new b\n"
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt", "scores.json"]


# ------------------------------------------------------------------ item 14: output-side errors


def _file_size_limit(limit):
    def set_limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return set_limit


def _without_dac_override():
    """As root, drop the capabilities that let root write where the permission bits say no."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: gone for the exec'd tool
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _read_only_dir(tmp_path):
    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() != 0:
        return ro, None
    # root ignores permission bits; without CAP_DAC_OVERRIDE it does not (the check below proves it)
    probe = subprocess.run(["touch", str(ro / "probe")], preexec_fn=_without_dac_override, capture_output=True)
    if probe.returncode == 0:
        pytest.skip("cannot make a directory read-only for root here (capabilities cannot be dropped)")
    return ro, _without_dac_override


def _tool_args(name, tmp_path, out):
    query, response = write_pairs(tmp_path, 2000, width=100)  # 2 x 230 kB of text
    if name == "nd-filter":
        scratch = tmp_path / "scratch"
        scratch.mkdir(exist_ok=True)
        return ["nd-filter", "--query", query, "--response", response, "--out-dir", out,
                "--scratch-dir", scratch, "--quiet"]
    return ["nd-prepare", "--format", "parallel", "--input", query, "--response-input", response,
            "--tokenize", "whitespace", "--out-dir", out, "--quiet"]


@pytest.mark.parametrize("name", ["nd-filter", "nd-prepare"])
@pytest.mark.parametrize("case", ["out-dir is a file", "read-only directory", "disk full"])
def test_output_side_errors_are_one_line_and_leave_nothing(tmp_path, name, case):
    preexec = None
    if case == "out-dir is a file":
        out = tmp_path / "taken"
        out.write_text("a file\n")
        needles = [f"--out-dir {out}: {out} is a file, not a directory"]
    elif case == "read-only directory":
        ro, preexec = _read_only_dir(tmp_path)
        out = ro / "out"
        needles = [f"cannot write {out}: Permission denied", "choose a directory you can write to"]
    else:
        out = tmp_path / "out"
        preexec = _file_size_limit(64 << 10)  # a disk with 64 KiB left, for every file written
        needles = [f"cannot write {out}: File too large (the disk is full", "free some space"]
    args = _tool_args(name, tmp_path, out)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    proc = run_tool(args, preexec_fn=preexec)
    assert_one_line_error(proc, name, *needles)
    # nothing partial: no output directory made, no temporary or scratch file left
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    if case == "out-dir is a file":
        assert out.read_text() == "a file\n"


def test_full_scratch_disk_is_one_line_naming_the_scratch_dir(tmp_path):
    # 20000 short lines: the outputs would fit in 100 KiB, the 8-byte-a-line hash files do not
    (tmp_path / "q.txt").write_text("".join(f"{i}\n" for i in range(20000)))
    (tmp_path / "r.txt").write_text("".join(f"{i % 7}\n" for i in range(20000)))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    proc = run_tool(["nd-filter", "--query", tmp_path / "q.txt", "--response", tmp_path / "r.txt",
                     "--out-dir", tmp_path / "out", "--scratch-dir", scratch, "--quiet"],
                    preexec_fn=_file_size_limit(100 << 10))
    assert_one_line_error(proc, "nd-filter", f"cannot write the scratch files in {scratch}: ",
                          "pass --scratch-dir on a disk with room")
    assert list(scratch.iterdir()) == [] and not (tmp_path / "out").exists()


# ------------------------------------------------------------------ item 15: permissions


def test_outputs_get_the_permissions_of_a_plain_open(tmp_path):
    query, response = write_pairs(tmp_path, 500)
    out = tmp_path / "out"
    args = ["nd-filter", "--query", query, "--response", response, "--out-dir", out, "--quiet"]
    proc = run_tool(args, preexec_fn=lambda: os.umask(0o002))
    assert proc.returncode == 0, proc.stderr
    for name in ("scores.txt", "top.query", "top.response", "summary.json"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o664, name  # 0o666 & ~umask
    # a file that exists keeps its own mode when it is rewritten, as open(path, "w") would keep it
    (out / "scores.txt").chmod(0o640)
    proc = run_tool(args + ["--ratio", "0.3"], preexec_fn=lambda: os.umask(0o022))
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE((out / "scores.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((out / "top.query").stat().st_mode) == 0o664
    # single files written atomically (nd-eval --json) too
    (tmp_path / "hyp.txt").write_text("a b\n")
    proc = subprocess.run([tool("nd-eval"), "--hyp", str(tmp_path / "hyp.txt"), "--ref", str(tmp_path / "hyp.txt"),
                           "--train-responses", str(tmp_path / "hyp.txt"), "--json", str(tmp_path / "s.json"),
                           "--quiet"], env=cli_env(), capture_output=True, text=True, preexec_fn=lambda: os.umask(0o027))
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE((tmp_path / "s.json").stat().st_mode) == 0o640


# ------------------------------------------------------------------ item 4: byte order marks


@pytest.mark.parametrize("text", [BOM + "a\nb\r\n\n" + BOM + "c\n", BOM + "only", BOM, BOM + "\n", "no mark\n"])
def test_readers_drop_a_leading_byte_order_mark_at_any_block_size(tmp_path, text):
    from nd_fairseq.io_utils import iter_line_blocks, iter_line_buffers

    path = tmp_path / "t.txt"
    path.write_bytes(text.encode())
    body = text[1:] if text.startswith(BOM) else text
    expected = body.replace("\r\n", "\n").split("\n")  # by hand: a BOM later on is text
    expected = expected[:-1] if body.endswith("\n") or not body else expected
    for block in (1, 2, 3, 4, 7, 1 << 20):
        assert [ln for b in iter_line_blocks(str(path), block) for ln in b] == expected, block
        assert [ln.decode() for d, n in iter_line_buffers(str(path), block) for ln in d[:n].split(b"\n")] \
            == expected, block


def test_nd_filter_ignores_a_byte_order_mark(tmp_path):
    # "ok" answers three queries, two of them the same: H_src = -(2/3 log2 2/3 + 1/3 log2 1/3) bits
    (tmp_path / "q.txt").write_text(BOM + "a\na\nb\n", encoding="utf-8")
    (tmp_path / "r.txt").write_text(BOM + "ok\nok\nok\n", encoding="utf-8")
    out = tmp_path / "out"
    run_cli(["nd-filter", "--query", tmp_path / "q.txt", "--response", tmp_path / "r.txt", "--out-dir", out,
             "--ratio", "1", "--key", "exact", "--quiet"])
    assert (out / "scores.txt").read_text().splitlines() == ["0.918296"] * 3
    assert (out / "top.query").read_bytes() == b"a\na\nb\n"
    assert (out / "top.response").read_bytes() == b"ok\nok\nok\n"


def test_nd_prepare_ignores_a_byte_order_mark(tmp_path):
    (tmp_path / "pairs.tsv").write_text(BOM + "hi there\thello\nhow are you\tfine\n", encoding="utf-8")
    out = tmp_path / "out"
    run_cli(["nd-prepare", "--format", "tsv", "--input", tmp_path / "pairs.tsv", "--tokenize", "whitespace",
             "--valid-fraction", "0", "--test-fraction", "0", "--out-dir", out, "--quiet"])
    assert sorted((out / "train.query").read_text(encoding="utf-8").splitlines()) == ["hi there", "how are you"]
    # the chitchat JSON format too (a BOM made it "not a chitchat JSON file")
    conv = {"c1": {"messages": [[{"text": "Hi there"}], [{"text": "Hello"}, {"text": "friend"}]]}}
    (tmp_path / "chat.json").write_text(BOM + json.dumps(conv), encoding="utf-8")
    run_cli(["nd-prepare", "--format", "chitchat", "--input", tmp_path / "chat.json", "--tokenize", "whitespace",
             "--valid-fraction", "0", "--test-fraction", "0", "--out-dir", out, "--quiet"])
    assert (out / "train.query").read_text(encoding="utf-8") == "hi there\n"
    assert (out / "train.response").read_text(encoding="utf-8") == "hello friend\n"


def test_nd_eval_ignores_a_byte_order_mark(tmp_path):
    (tmp_path / "hyp.txt").write_text(BOM + "hello there\nhello you\n", encoding="utf-8")
    (tmp_path / "ref.txt").write_text("hello there\nhello you\n", encoding="utf-8")
    (tmp_path / "train.txt").write_text(BOM + "hello\n", encoding="utf-8")
    run_cli(["nd-eval", "--hyp", tmp_path / "hyp.txt", "--ref", tmp_path / "ref.txt", "--train-responses",
             tmp_path / "train.txt", "--json", tmp_path / "s.json", "--quiet"])
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["dist-1"] == pytest.approx(3 / 4)  # hello, there, you in 4 tokens
    assert scores["kl-1"] == pytest.approx(0.0, abs=1e-12)  # the same words as the references
