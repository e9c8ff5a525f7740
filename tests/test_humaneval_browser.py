"""The annotation page in a real browser: headless Chromium driven by chromedriver (Debian packages).

Answers three items with clicks and keys, reloads, resumes at item 4; the judgments are in the
database; then the server is killed with SIGKILL, restarted, and the page resumes again.
"""

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "humaneval"))

from conftest import cli_env, run_cli, tool  # noqa: E402
from studykit import SYS_A, SYS_B, ServerProcess, create_args, db_rows, make_inputs  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else shutil.which("chromedriver")


def _require_browser():
    missing = [what for what, found in (("chromium", CHROMIUM), ("chromedriver", DRIVER)) if not found]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install selenium)")
    if missing:
        message = (f"browser test needs {', '.join(missing)}: apt-get install -y chromium chromium-driver "
                   f"(.ci/run does it)")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def browser():
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="nd-humaneval-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1200,900"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait_position(driver, position, timeout=20):
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script("return document.body.dataset.ready === '1' && document.body.dataset.position")
        == str(position))


def _text(driver, css):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css).text


def test_annotate_three_items_reload_resume_and_survive_sigkill(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    files = make_inputs(tmp_path, n=20)
    db = tmp_path / "study.sqlite"
    run_cli(create_args(files, db, n=10))
    srv = ServerProcess(tool("nd-humaneval"), db, cli_env()).start()
    try:
        # start page: enter a name
        browser.get(srv.url)
        assert "Informativeness" in browser.page_source
        box = browser.find_element(By.ID, "name")
        box.send_keys("alice")
        box.send_keys(Keys.ENTER)
        _wait_position(browser, 1)
        assert browser.current_url.startswith(srv.url + "a/alice")
        assert _text(browser, "#progress") == "0 / 10"
        for system in (SYS_A, SYS_B):
            assert system not in browser.page_source.lower()

        def click(criterion, choice):
            browser.find_element(By.CSS_SELECTOR, f'button[data-criterion="{criterion}"][data-choice="{choice}"]').click()

        body = browser.find_element(By.TAG_NAME, "body")
        shown = {}
        # item 1: clicks only
        shown[1] = (_text(browser, "#left"), _text(browser, "#right"))
        click("informativeness", "left")
        click("relevance", "tie")
        click("fluency", "right")
        _wait_position(browser, 2)
        assert _text(browser, "#progress") == "1 / 10"
        # item 2: keys only (1 = left, 2 = tie, 3 = right on the highlighted criterion)
        shown[2] = (_text(browser, "#left"), _text(browser, "#right"))
        body.send_keys("1")
        body.send_keys("3")
        body.send_keys("2")
        _wait_position(browser, 3)
        # item 3: a click, then arrow keys
        shown[3] = (_text(browser, "#left"), _text(browser, "#right"))
        click("informativeness", "right")
        body.send_keys(Keys.ARROW_LEFT)
        body.send_keys(Keys.ARROW_DOWN)
        _wait_position(browser, 4)
        WebDriverWait(browser, 10).until(lambda d: _text(d, "#progress") == "3 / 10")
        browser.refresh()
        _wait_position(browser, 4)
        assert _text(browser, "#progress") == "3 / 10"
        assert "4 of 10" in _text(browser, "#position")

        rows = db_rows(db, "SELECT a.position, j.criterion, j.choice, j.a_on_left, i.response_a, j.outcome "
                           "FROM judgments j JOIN assignments a ON a.annotator = j.annotator AND a.item_id = j.item_id "
                           "JOIN items i ON i.id = j.item_id WHERE j.annotator = 'alice' ORDER BY a.position")
        got = {(r[0], r[1]): r[2] for r in rows}
        assert got == {(1, "informativeness"): "left", (1, "relevance"): "tie", (1, "fluency"): "right",
                       (2, "informativeness"): "left", (2, "relevance"): "right", (2, "fluency"): "tie",
                       (3, "informativeness"): "right", (3, "relevance"): "left", (3, "fluency"): "tie"}
        for pos, crit, choice, a_on_left, response_a, outcome in rows:
            left_text = shown[pos][0]
            assert bool(a_on_left) == (left_text == response_a)  # the side recorded is the side shown
            expect = "tie" if choice == "tie" else ("win" if (choice == "left") == bool(a_on_left) else "lose")
            assert outcome == expect

        # one answer on item 4, then the server dies without warning
        click("informativeness", "tie")
        WebDriverWait(browser, 10).until(lambda d: _text(d, "#status") == "saved")
        srv.kill()
        assert db_rows(db, "SELECT COUNT(*) FROM judgments WHERE annotator = 'alice'") == [(10,)]
        srv2 = ServerProcess(tool("nd-humaneval"), db, cli_env()).start()
        try:
            browser.get(srv2.url + "a/alice")
            _wait_position(browser, 4)
            assert "chosen" in browser.find_element(
                By.CSS_SELECTOR, 'button[data-criterion="informativeness"][data-choice="tie"]').get_attribute("class")
            # the highlighted criterion is the first unanswered one: keys answer relevance, fluency
            body = browser.find_element(By.TAG_NAME, "body")
            body.send_keys("a")
            body.send_keys("d")
            _wait_position(browser, 5)
            assert _text(browser, "#progress") == "4 / 10"
        finally:
            srv2.stop()
        assert db_rows(db, "SELECT COUNT(*) FROM judgments WHERE annotator = 'alice'") == [(12,)]
    finally:
        srv.stop()
    run_cli(["nd-humaneval", "report", db, "--quiet"])
    summary = json.loads((tmp_path / "study.report.json").read_text(encoding="utf-8"))
    (alice,) = summary["per_annotator"]
    assert (alice["annotator"], alice["items_complete"], alice["judgments"], alice["sources"]) == \
        ("alice", 4, 12, ["web"])
    assert 0 <= alice["median_seconds_per_item"] < 600
