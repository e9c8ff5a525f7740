"""Resumable generation: records, summaries, interruption (SIGKILL, SIGINT, torn line) and resume."""

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO, cli_env, run_cli, tool
from nd_fairseq.io_utils import InputError
from nd_fairseq.pneg.backends import OpenAICompletionsBackend
from nd_fairseq.pneg.data import Example, read_dailydialog_pp
from nd_fairseq.pneg.generate import GenerationConfig, ResultStore, generate, read_results
from nd_fairseq.pneg.prompt import PromptConfig, demonstration_pool

FIX = Path(__file__).parent / "fixtures" / "pneg"
POOL = FIX / "dailydialog_pp_sample.jsonl"
sys.path.insert(0, str(FIX))
from completions_server import CompletionsServer, target_context  # noqa: E402

WORDS = ["apple", "bridge", "candle", "desert", "engine", "forest", "guitar", "harbor", "island", "jacket"]


def write_targets(directory: Path, n: int) -> Path:
    queries = [f"have you ever seen the {WORDS[i % 10]} near the {WORDS[(i * 3 + 1) % 10]} , number {i} ?"
               for i in range(n)]
    responses = [f"yes , i saw it on day {i} ." for i in range(n)]
    (directory / "train.query").write_text("\n".join(queries) + "\n", encoding="utf-8")
    (directory / "train.response").write_text("\n".join(responses) + "\n", encoding="utf-8")
    return directory / "train"


def ids_of_requests(server, prefix: Path):
    queries = (Path(str(prefix) + ".query")).read_text(encoding="utf-8").splitlines()
    index = {q: str(i) for i, q in enumerate(queries)}
    return [index[target_context(r["body"]["prompt"])[0]] for r in server.requests]


def file_ids(path: Path):
    rows = [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
    assert "meta" in rows[0]
    return [r["id"] for r in rows[1:]], rows


def generate_cmd(prefix, out, url, *extra):
    return [tool("nd-pneg"), "generate", "--examples", str(POOL), "--input", str(prefix), "--output", str(out),
            "--base-url", url, "--model", "test", "--backoff", "0.01", *map(str, extra)]


def test_generate_in_process_writes_records_and_summary(tmp_path):
    pool = demonstration_pool(read_dailydialog_pp(str(POOL)))
    targets = [Example(str(i), [f"Shall we visit the {w} tomorrow?", "Sure, what time?"], ["At noon."])
               for i, w in enumerate(WORDS)]
    out = tmp_path / "negs.jsonl"
    with CompletionsServer() as server:
        server.queue(("texts", [" only one\n2. two"]))  # one rejected attempt
        backend = OpenAICompletionsBackend(server.url, "m", concurrency=3, backoff_base=0.0)
        summary = generate(targets, pool, backend, str(out), GenerationConfig(), progress=False)
    assert summary["new"]["ok"] == 10 and summary["new"]["failed"] == 0
    assert summary["new"]["attempts"] == 11 and summary["new"]["rejected_attempts_by_reason"] == {"count": 1}
    assert summary["remaining"] == 0
    ids, rows = file_ids(out)
    assert sorted(ids, key=int) == [str(i) for i in range(10)]
    assert rows[0]["meta"]["instruction"] == "dir" and rows[0]["meta"]["temperature"] == 0.8
    assert all(len(r["negatives"]) == 5 and len(r["demos"]) == 2 for r in rows[1:])
    assert json.loads((tmp_path / "negs.jsonl.summary.json").read_text())["total"]["ok"] == 10
    # nothing left to do: a rerun sends no request
    with CompletionsServer() as server:
        backend = OpenAICompletionsBackend(server.url, "m", backoff_base=0.0)
        again = generate(targets, pool, backend, str(out), GenerationConfig(), progress=False)
        assert server.requests == []
    assert again["already_done"] == 10 and again["new"]["ok"] == 0


@pytest.mark.cli
def test_kill_mid_run_then_resume_without_duplicates(tmp_path):
    n = 40
    prefix = write_targets(tmp_path, n)
    out = tmp_path / "negs.jsonl"
    with CompletionsServer(delay=0.05) as server:
        proc = subprocess.Popen(generate_cmd(prefix, out, server.url, "--concurrency", "2", "--quiet"),
                                cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while time.time() < deadline:
            if out.exists() and out.read_text(encoding="utf-8").count("\n") >= 1 + 8:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        first_ids, _ = file_ids(out)
        assert 8 <= len(first_ids) < n
        # a record torn in half by the kill
        with open(out, "a", encoding="utf-8") as f:
            f.write('{"id": "39", "status": "ok", "negat')
        server.requests.clear()
        res = run_cli(generate_cmd(prefix, out, server.url, "--concurrency", "3"))
        second = ids_of_requests(server, prefix)
    assert f"already done: {len(first_ids)}" in res.stdout
    assert not set(second) & set(first_ids)           # done ids are never requested again
    assert Counter(second) == Counter(set(second))     # every remaining id is requested once (all clean)
    ids, rows = file_ids(out)
    assert len(ids) == len(set(ids)) == n              # all done, no duplicates
    assert all(r["status"] == "ok" for r in rows[1:])
    assert read_results(str(out)).keys() == {str(i) for i in range(n)}


@pytest.mark.cli
def test_ctrl_c_stops_cleanly_and_resumes(tmp_path):
    prefix = write_targets(tmp_path, 30)
    out = tmp_path / "negs.jsonl"
    # 0.5 s per reply: the whole run takes 15 s, so a test process starved on a loaded machine still
    # interrupts it mid-way
    with CompletionsServer(delay=0.5) as server:
        # a test suite started in the background (`cmd &`, nohup) inherits SIGINT ignored, and Python
        # then never raises KeyboardInterrupt: give the child the default disposition, as a terminal would
        proc = subprocess.Popen(generate_cmd(prefix, out, server.url, "--concurrency", "1", "--quiet"),
                                cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 60
        while time.time() < deadline and not (out.exists() and out.read_text().count("\n") >= 1 + 3):
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130 and "rerun the same command to resume" in err
        done, _ = file_ids(out)
        assert 3 <= len(done) < 30
        run_cli(generate_cmd(prefix, out, server.url, "--quiet"))
    ids, _ = file_ids(out)
    assert sorted(ids, key=int) == [str(i) for i in range(30)]


@pytest.mark.cli
def test_ctrl_c_keeps_what_completes_and_abandons_a_stuck_request(tmp_path):
    prefix = write_targets(tmp_path, 12)
    out = tmp_path / "negs.jsonl"
    with CompletionsServer() as server:
        # two requests in flight: one answers 0.8 s after it arrives, the other would take a minute
        server.queue(("sleep", 0.8), ("sleep", 60))
        proc = subprocess.Popen(generate_cmd(prefix, out, server.url, "--concurrency", "2", "--quiet"),
                                cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 60
        while time.time() < deadline and len(server.requests) < 2:
            time.sleep(0.02)
        assert len(server.requests) >= 2, "the child never sent two requests"
        proc.send_signal(signal.SIGINT)
        t_int = time.time()
        _, err = proc.communicate(timeout=40)
        stopped_after = time.time() - t_int
        requested = ids_of_requests(server, prefix)
        # before: 60 s (the stuck request was waited for) and the 0.8 s one was thrown away
        assert stopped_after < 15, f"took {stopped_after:.1f} s to stop after Ctrl-C"
        assert proc.returncode == 130 and "rerun the same command to resume" in err
        assert "1 request(s) still in flight were abandoned" in err
        slow = requested[1]
        done, _ = file_ids(out)
        # every answered request is kept (the 0.8 s one included, whether it came before or after
        # the signal), the stuck one is not
        assert set(done) == set(requested) - {slow} and slow not in done and requested[0] in done
        server.requests.clear()
        run_cli(generate_cmd(prefix, out, server.url, "--quiet"))
        again = ids_of_requests(server, prefix)
    assert slow in again and not set(again) & set(done)
    ids, _ = file_ids(out)
    assert sorted(ids, key=int) == [str(i) for i in range(12)]


@pytest.mark.cli
def test_failed_records_retry_limit_and_settings_guard(tmp_path):
    prefix = write_targets(tmp_path, 6)
    out = tmp_path / "negs.jsonl"
    # the first server only produces copies of the context: every context fails after the cap
    copy = lambda body: " " + target_context(body["prompt"])[0] + "".join(f"\n{i}. x{i} y z w" for i in range(2, 6))
    with CompletionsServer(responder=copy) as server:
        res = run_cli(generate_cmd(prefix, out, server.url, "--max-attempts", "2", "--limit", "4"))
        assert len(server.requests) == 8
    assert "this run: ok 0, failed 4, attempts 8" in res.stdout and "copy_context 8" in res.stdout
    assert "left: 2" in res.stdout
    with CompletionsServer() as server:
        run_cli(generate_cmd(prefix, out, server.url))                  # only the 2 never tried
        assert len(server.requests) == 2
        server.requests.clear()
        res = run_cli(generate_cmd(prefix, out, server.url, "--retry-failed"))
        assert len(server.requests) == 4
    assert "all: ok 6, failed 0" in res.stdout
    ids, _ = file_ids(out)
    assert len(ids) == 10 and len(set(ids)) == 6                        # the newer record wins
    assert all(r["status"] == "ok" for r in read_results(str(out)).values())
    bad = run_cli(generate_cmd(prefix, out, "http://127.0.0.1:9/v1", "--seed", "7"), check=False)
    assert bad.returncode == 2 and "other settings" in bad.stderr and "seed=1" in bad.stderr


@pytest.mark.cli
def test_fatal_backend_error_stops_with_one_line(tmp_path):
    prefix = write_targets(tmp_path, 5)
    out = tmp_path / "negs.jsonl"
    with CompletionsServer() as server:
        server.queue(("status", 401, "Incorrect API key provided"))
        res = run_cli(generate_cmd(prefix, out, server.url, "--concurrency", "1", "--quiet"), check=False,
                      env={"OPENAI_API_KEY": "sk-secret-123"})
        assert len(server.requests) <= 2  # the run stops at once (a queued request may still go out)
        assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-secret-123"
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("nd-pneg: error: ") and "HTTP 401" in res.stderr
    assert "sk-secret" not in res.stderr + res.stdout


def test_torn_line_is_cut_and_damaged_files_refused(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"meta": {"seed": 1}}\n{"id": "0", "status": "ok", "negatives": []}\n{"id": "1", "sta')
    store = ResultStore(str(path))
    assert store.repaired and set(store.records) == {"0"}
    store.append({"id": "1", "status": "failed"})
    store.close()
    assert [json.loads(l)["id"] for l in path.read_text().splitlines()[1:]] == ["0", "1"]
    path.write_text('{"id": "0"}\nnot json\n{"id": "1"}\n')
    with pytest.raises(InputError, match="line 2 is not JSON"):
        ResultStore(str(path))


@pytest.mark.parametrize("instruction", ["pos", "imp"])
def test_instruction_variants_end_to_end(tmp_path, instruction):
    pool = demonstration_pool(read_dailydialog_pp(str(FIX / "dailydialog_pp_sample.jsonl")), instruction)
    targets = [Example("0", ["Shall we visit the harbor tomorrow?", "Sure, what time?"], ["At noon."])]
    sentences = iter(f"The {w} in my story was painted blue." for w in WORDS)
    responder = (lambda body: " " + next(sentences)) if instruction == "imp" else None
    with CompletionsServer(responder=responder) as server:
        backend = OpenAICompletionsBackend(server.url, "m", backoff_base=0.0)
        cfg = GenerationConfig(prompt=PromptConfig(instruction=instruction))
        generate(targets, pool, backend, str(tmp_path / "o.jsonl"), cfg, progress=False)
        body = server.requests[0]["body"]
    rec = read_results(str(tmp_path / "o.jsonl"))["0"]
    assert rec["status"] == "ok" and len(rec["negatives"]) == 5
    if instruction == "imp":
        assert body["n"] == 5 and body["stop"] == ["###", "\n"] and body["prompt"].endswith("\nA:")
        assert rec["demos"] == [] and rec["negatives"][0] == "The apple in my story was painted blue."
    else:
        assert body["n"] == 1 and "\nRelevant response: At noon.\n" in body["prompt"] and len(rec["demos"]) == 2


def test_fatal_error_with_queued_work_raises_it_and_keeps_finished_records(tmp_path):
    from nd_fairseq.pneg.backends import BackendFatal

    pool = demonstration_pool(read_dailydialog_pp(str(POOL)))
    targets = [Example(str(i), [f"Is the {WORDS[i % 10]} open on day {i}?"], ["Yes."]) for i in range(20)]
    out = tmp_path / "negs.jsonl"
    with CompletionsServer(delay=0.02) as server:
        server.queue(*[None] * 3, *[("status", 403, "quota exceeded")] * 40)
        backend = OpenAICompletionsBackend(server.url, "m", concurrency=3, backoff_base=0.0)
        with pytest.raises(BackendFatal, match="HTTP 403"):
            generate(targets, pool, backend, str(out), GenerationConfig(), progress=False)
        assert len(server.requests) < 20
    ids, _ = file_ids(out)
    assert 1 <= len(ids) <= 3 and len(set(ids)) == len(ids)
    assert json.loads((tmp_path / "negs.jsonl.summary.json").read_text())["remaining"] == 20 - len(ids)
