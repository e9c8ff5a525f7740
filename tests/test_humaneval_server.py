"""nd-humaneval serve over HTTP: blinding, SIGKILL mid-study, two annotators at once, bad requests."""

import json
import socket
import sys
import threading
import urllib.error
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "humaneval"))

from conftest import cli_env, run_cli, tool  # noqa: E402
from studykit import SYS_A, SYS_B, SYS_C, ServerProcess, create_args, db_rows, http, make_inputs  # noqa: E402

CRITERIA = ("informativeness", "relevance", "fluency")


@pytest.fixture
def study(tmp_path):
    files = make_inputs(tmp_path, n=60)
    db = tmp_path / "study.sqlite"
    run_cli(create_args(files, db, n=50, systems=(SYS_A, SYS_B, SYS_C)))
    return db


def server(db, *extra):
    return ServerProcess(tool("nd-humaneval"), db, cli_env(), extra)


def test_blinding_no_system_name_and_balanced_sides(study):
    items = {r[0]: r[1:] for r in db_rows(study, "SELECT id, system_b, response_a, response_b FROM items")}
    served = []
    with server(study) as srv:
        for path in ("", "a/alice", "start?name=alice", "a/bob"):
            served.append(http(srv.url + path)[1])
        for name in ("alice", "bob"):
            state = json.loads(http(srv.url + f"api/a/{name}/state")[1])
            assert state["total"] == 100 and state["resume"] == 1 and state["done"] == 0
            served.append(json.dumps(state))
            a_left = {SYS_B: 0, SYS_C: 0}
            for pos in range(1, 101):
                text = http(srv.url + f"api/a/{name}/item/{pos}")[1]
                served.append(text)
                item = json.loads(text)
                (item_id,) = db_rows(study, "SELECT item_id FROM assignments WHERE annotator = ? AND position = ?",
                                     (name, pos))[0]
                other, resp_a, resp_b = items[item_id]
                assert {item["left"], item["right"]} == {resp_a, resp_b}
                a_left[other] += item["left"] == resp_a
            for other, n in a_left.items():  # 50 items per pair: within one item of 25 / 25
                assert abs(n - (50 - n)) <= 1, (name, other, n)
    for text in served:
        for system in (SYS_A, SYS_B, SYS_C):
            assert system not in text.lower()


def test_sigkill_loses_nothing_and_resumes(study):
    srv = server(study).start()
    try:
        for pos in (1, 2, 3):
            for crit in CRITERIA:
                http(srv.url + "api/a/alice/judge", {"position": pos, "criterion": crit, "choice": "left"})
        http(srv.url + "api/a/alice/judge", {"position": 4, "criterion": "informativeness", "choice": "tie"})
        # change of mind on item 2 is stored too
        http(srv.url + "api/a/alice/judge", {"position": 2, "criterion": "fluency", "choice": "right"})
        srv.kill()
        assert srv.proc.returncode == -9
    finally:
        srv.stop()
    rows = db_rows(study, "SELECT a.position, j.criterion, j.choice FROM judgments j JOIN assignments a ON "
                          "a.annotator = j.annotator AND a.item_id = j.item_id WHERE j.annotator = 'alice'")
    assert len(rows) == 10
    assert (2, "fluency", "right") in rows and (4, "informativeness", "tie") in rows
    with server(study) as srv2:
        state = json.loads(http(srv2.url + "api/a/alice/state")[1])
        assert (state["resume"], state["done"]) == (4, 3)
        item = json.loads(http(srv2.url + "api/a/alice/item/4")[1])
        assert item["choices"] == {"informativeness": "tie"}


def test_two_annotators_at_once(study):
    errors = []

    def annotate(name, choice):
        try:
            for pos in range(1, 21):
                for crit in CRITERIA:
                    http(srv.url + f"api/a/{name}/judge", {"position": pos, "criterion": crit, "choice": choice})
        except Exception as err:  # reported below
            errors.append(err)

    with server(study) as srv:
        threads = [threading.Thread(target=annotate, args=(n, c)) for n, c in (("alice", "left"), ("bob", "tie"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors
        for name in ("alice", "bob"):
            assert json.loads(http(srv.url + f"api/a/{name}/state")[1])["resume"] == 21
    counts = dict(db_rows(study, "SELECT annotator, COUNT(*) FROM judgments GROUP BY annotator"))
    assert counts == {"alice": 60, "bob": 60}
    assert db_rows(study, "SELECT DISTINCT choice FROM judgments WHERE annotator = 'bob'") == [("tie",)]


def test_bad_requests_and_annotator_list(study):
    with server(study, "--annotators", "alice,bob") as srv:
        for path, body, status in (("a/al%20ice", None, 400), ("a/carol", None, 403), ("api/a/alice/item/101", None, 404),
                                   ("api/a/alice/judge", {"position": 1, "criterion": "fluency", "choice": "best"}, 400),
                                   ("api/a/alice/judge", {"position": 1, "criterion": "humour", "choice": "tie"}, 400),
                                   ("nowhere", None, 404)):
            with pytest.raises(urllib.error.HTTPError) as err:
                http(srv.url + path, body)
            assert err.value.code == status, path
        assert http(srv.url + "start?name=alice")[0] == 200  # redirected to the page
    assert db_rows(study, "SELECT COUNT(*) FROM judgments") == [(0,)]


def test_port_in_use_is_a_one_line_error(study):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        proc = run_cli(["nd-humaneval", "serve", study, "--port", port], check=False, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr and "--port" in proc.stderr
