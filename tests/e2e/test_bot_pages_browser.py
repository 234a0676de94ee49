"""The job page in a real browser (headless Chromium): it follows a running job without a reload.

The screenshot is kept as a test artifact: ``test-artifacts/`` beside the repository, or
``$KA_TEST_ARTIFACTS``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import PROJECT
from tests.support.botkit import Rig, wait_for
from tests.support.needs import require
from tests.support.threads import slow_fleet

ARTIFACTS = Path(os.environ.get("KA_TEST_ARTIFACTS") or PROJECT / "test-artifacts")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    require(shutil.which("chromium") is not None and shutil.which("chromedriver") is not None,
            "Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1600", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or ""), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_a_running_jobs_page_follows_its_log_and_state(rig: Callable[..., Rig], browser: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    hosts, files = slow_fleet(60)
    r = rig(hosts, files, KA_CHECK_WORKERS="1")
    job = r.push(r.head()).json()["jobs"][0]
    wait_for(lambda: r.bot.job(job)["state"] == "running", 60, "the job to start")
    browser.get(f"{r.bot.url}/jobs/{job}")
    first_log = browser.find_element(By.ID, "log").text
    assert browser.find_element(By.ID, "state").text == "running"
    loaded = browser.execute_script("return performance.timeOrigin")
    wait_for(lambda: len(browser.find_element(By.ID, "log").text) > len(first_log), 60, "the log to grow")
    grown = browser.find_element(By.ID, "log").text
    assert grown.startswith(first_log.rstrip("\n")[:200]) and ": success: " in grown
    wait_for(lambda: browser.find_element(By.ID, "state").text == "succeeded", 180, "the state to turn")
    assert browser.execute_script("return performance.timeOrigin") == loaded  # no reload happened
    assert "60 success" in browser.find_element(By.ID, "counts").text
    wait_for(lambda: browser.execute_script("return document.body.dataset.final") == "1", 30, "the tables")
    assert browser.find_element(By.ID, "finished").text.endswith("UTC")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#hosts tr")) == 61  # the hosts table, swapped in
    assert browser.execute_script("return performance.timeOrigin") == loaded
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"job-page-{int(time.time())}.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
