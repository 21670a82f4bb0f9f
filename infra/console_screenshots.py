"""Screenshots of ``mesh console`` for its documentation, taken by the browser its tests use.

Starts its own broker and registry, runs a small research app whose writer fails on
one topic (so there are retries and dead letters), serves the console on it with the
app's /metrics, and saves what headless Chromium shows (Debian's ``chromium`` and
``chromium-driver``, driven by selenium)::

    python infra/console_screenshots.py [--out infra/screenshots]

Run it again after changing a page; docs/console.md shows the files it writes.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from mesh import Event, Mesh, Settings
from mesh.config import RetryPolicy
from mesh.console.app import ConsoleOptions, serving
from mesh.dev.stack import free_port, start_broker, start_registry
from mesh.ops.dlq import dead_letter_topics, read_dead_letters
from mesh.runtime.metrics import Metrics
from mesh.runtime.status import observed
from mesh.schema.files import generate_schemas

GROUP_CONFIG = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


class ResearchRequested(Event, topic="research.requested", key="rid", name="research.Requested"):
    rid: str
    question: str


class PlanReady(Event, topic="research.planned", key="rid", name="research.PlanReady"):
    rid: str
    steps: list[str]


class DraftReady(Event, topic="research.drafted", key="rid", name="research.DraftReady"):
    rid: str
    text: str


def research_app(settings: Settings, schemas: Path) -> Mesh:
    """planner -> writer -> reviewer; the writer finds no sources on quantum questions."""
    generate_schemas([ResearchRequested, PlanReady, DraftReady], schemas)
    app = Mesh("research", settings=settings, schemas_dir=schemas)
    quick = RetryPolicy(attempts=3, backoff="fixed", initial_delay="300ms")

    @app.agent("planner", consumes=ResearchRequested, emits=PlanReady)
    async def planner(event: ResearchRequested) -> PlanReady:
        return PlanReady(rid=event.rid, steps=["search", "read", f"answer: {event.question}"])

    @app.agent("writer", consumes=PlanReady, emits=DraftReady, retry=quick)
    async def writer(event: PlanReady) -> DraftReady:
        if "quantum" in event.steps[-1]:
            raise LookupError(f"no sources found for {event.rid}")
        return DraftReady(rid=event.rid, text=" ".join(event.steps))

    @app.agent("reviewer", consumes=DraftReady)
    async def reviewer(event: DraftReady) -> None:
        await asyncio.sleep(0.01)

    return app


@contextmanager
def running(app: Mesh, metrics: Metrics) -> Iterator[None]:
    stop = threading.Event()

    async def serve() -> None:
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        threading.Thread(target=lambda: (stop.wait(), loop.call_soon_threadsafe(done.set))).start()
        await app.serve(stop=done, consumer_config=GROUP_CONFIG, metrics=metrics)

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(60)


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1360,860"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "screenshots")
    out: Path = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        broker = start_broker(port=free_port(), log_dir=logs)
        registry = start_registry(bootstrap_servers=broker.url, port=free_port(), log_dir=logs)
        try:
            settings = Settings(bootstrap_servers=broker.url, registry_url=registry.url)
            app = research_app(settings, logs / "schemas")
            port = free_port()
            with observed(app, port=port, host="127.0.0.1") as metrics, running(app, metrics):
                options = ConsoleOptions(
                    app.settings,
                    app=app,
                    metrics_urls=[f"http://127.0.0.1:{port}/metrics"],
                    allow_writes=True,
                    refresh_s=1.0,
                )
                with serving(options) as url:
                    shoot(app, url, out)
        finally:
            registry.stop()
            broker.stop()


def shoot(app: Mesh, url: str, out: Path) -> None:
    driver = browser()
    wait = WebDriverWait(driver, 60)
    try:
        driver.get(url)  # watched from the start: the dead letters count as new
        questions = ["tides", "quantum tunnelling", "bread", "glaciers", "quantum dots"]
        chains = [
            app.publish(ResearchRequested(rid=f"r{n}", question=q))
            for n, q in enumerate(questions * 4)
        ]
        failing = chains[1]
        topics = dead_letter_topics(app.settings, app=app)
        while len(list(read_dead_letters(app.settings, topics))) < 8:
            time.sleep(0.5)
        writer = (By.CSS_SELECTOR, 'tr[data-agent="writer"]')
        wait.until(ec.text_to_be_present_in_element_attribute(writer, "data-state", "alert"))
        time.sleep(3)  # two more refreshes: rates from /metrics
        driver.save_screenshot(str(out / "console-overview.png"))
        driver.get(f"{url}/chain?id={failing.correlation_id}")
        wait.until(ec.presence_of_element_located((By.ID, "chain-tree")))
        driver.save_screenshot(str(out / "console-chain.png"))
        driver.find_element(By.LINK_TEXT, "open the dead letter").click()
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "main"), "Traceback"))
        driver.save_screenshot(str(out / "console-dead-letter.png"))
        driver.get(f"{url}/dlq?agent=writer")
        wait.until(ec.presence_of_element_located((By.ID, "letters")))
        driver.save_screenshot(str(out / "console-dead-letters.png"))
    finally:
        driver.quit()
    print(f"screenshots in {out}")


if __name__ == "__main__":
    main()
