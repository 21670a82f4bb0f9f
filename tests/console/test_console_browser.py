"""The console in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by selenium): an agent goes red, its chain is found by correlation id, its dead
letter is redriven, and the chain completes.

Without the browser a developer's run skips this test; in CI (``CI`` set, ``.ci/run``
installs the packages) it fails instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from mesh import Settings
from mesh.console.app import ConsoleOptions, serving
from tests.console.support import Shop
from tests.support import running

#: How long a step may take on a loaded machine before the test gives up (not a target).
PATIENCE_S = 60


def require(*names: str, path: str | None = None) -> str:
    """The first of *names* installed (on PATH, or in *path*); a skip on a developer
    machine without any, a failure in CI."""
    for name in names:
        found = shutil.which(name) or (path and shutil.which(name, path=path))
        if found:
            return found
    message = f"{' or '.join(names)} is not installed (Debian package; .ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    # Debian's chromium (.ci/run), or the Chrome that GitHub's Ubuntu runners carry.
    options.binary_location = require("chromium", "google-chrome")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,900")
    driver_path = require("chromedriver", path=os.environ.get("CHROMEWEBDRIVER"))
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def test_in_a_browser_an_agent_goes_red_and_its_dead_letter_is_redriven_to_complete_the_chain(
    shop: Shop, mesh_settings: Settings, browser: webdriver.Chrome
) -> None:
    wait = WebDriverWait(browser, PATIENCE_S)
    options = ConsoleOptions(mesh_settings, app=shop.app, allow_writes=True, refresh_s=0.5)
    planner = (By.CSS_SELECTOR, 'tr[data-agent="planner"]')
    with serving(options) as url, running(shop.app):
        browser.get(url)
        wait.until(ec.text_to_be_present_in_element_attribute(planner, "data-state", "ok"))
        body = browser.find_element(By.TAG_NAME, "body")
        body.send_keys("L")  # dark, then light again
        assert browser.find_element(By.TAG_NAME, "html").get_attribute("data-theme") == "dark"
        browser.find_element(By.ID, "theme").click()
        assert browser.find_element(By.TAG_NAME, "html").get_attribute("data-theme") == "light"

        chain = shop.publish("t1")  # the planner fails on it, retries, dead-letters it
        wait.until(ec.text_to_be_present_in_element_attribute(planner, "data-state", "alert"))
        assert "new dead letter" in browser.find_element(*planner).text

        body.send_keys("/")  # the search, by keyboard
        search = browser.switch_to.active_element
        assert search.get_attribute("id") == "search"
        search.send_keys(chain.correlation_id, Keys.ENTER)
        tree = wait.until(ec.presence_of_element_located((By.ID, "chain-tree")))
        assert "test.console.TaskCreated" in tree.text
        assert "dead letter" in tree.text
        assert "test.console.PlanReady" not in tree.text

        opener = browser.find_element(By.LINK_TEXT, "open the dead letter")
        letter = opener.get_attribute("data-letter")
        opener.click()
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "main"), "Traceback"))
        assert "cannot plan t1" in browser.find_element(By.TAG_NAME, "main").text

        browser.find_element(By.ID, "redrive-preview").click()
        summary = wait.until(ec.presence_of_element_located((By.ID, "redrive-summary")))
        assert summary.text == "Matched 1, would send 1, skipped 0."
        shop.broken.clear()  # the planner is fixed
        browser.find_element(By.ID, "redrive-confirm").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "redrive-summary"), "sent 1"))

        browser.find_element(By.PARTIAL_LINK_TEXT, chain.correlation_id).click()

        def completed(driver: webdriver.Chrome) -> bool:
            if "test.console.PlanReady" in driver.find_element(By.ID, "chain-tree").text:
                return True
            driver.refresh()  # the redriven event may still be on its way
            return False

        wait.until(completed)

        # Once redriven, the letter goes again only when forced, by a checkbox.
        browser.get(f"{url}/dlq/{letter}")
        browser.find_element(By.ID, "redrive-preview").click()
        summary = wait.until(ec.presence_of_element_located((By.ID, "redrive-summary")))
        assert summary.text == "Matched 1, would send 0, skipped 0, already redriven 1."
        force = browser.find_element(By.ID, "redrive-force")
        assert not force.is_selected()
        force.send_keys(Keys.SPACE)
        assert force.is_selected()
        browser.find_element(By.ID, "redrive-confirm").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "redrive-summary"), "sent 1"))
