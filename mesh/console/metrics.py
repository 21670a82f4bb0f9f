"""The agents' own counters, scraped from the ``/metrics`` endpoints of ``mesh run``.

Kafka tells what is waiting (lag, retries, dead letters); only the workers know what
they consumed and handled. Each scrape is summed per agent over every endpoint, and the
difference from the previous scrape gives the rates the overview shows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["AgentRates", "Scraper"]

#: Sample name -> the counter it adds to (handled is split by outcome below).
_COUNTERS = {
    "mesh_events_consumed_total": "consumed",
    "mesh_events_retried_total": "retried",
    "mesh_events_dead_lettered_total": "dead_lettered",
}


@dataclass
class AgentRates:
    """One agent over every endpoint: totals, per-second rates, workers answering."""

    totals: dict[str, float] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)
    workers: int = 0


class Scraper:
    """Scrapes *urls* on demand and keeps the previous totals to compute rates."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.urls = list(urls)
        self.errors: dict[str, str] = {}  # url -> why its last scrape failed
        self._previous: tuple[float, dict[str, dict[str, float]]] | None = None

    async def scrape(self, session: aiohttp.ClientSession) -> dict[str, AgentRates]:
        texts = await asyncio.gather(*(self._get(session, url) for url in self.urls))
        found: dict[str, AgentRates] = {}
        for text in texts:
            if text is not None:
                _add(found, text)
        now = time.monotonic()
        if self._previous is not None:
            then, before = self._previous
            elapsed = max(now - then, 1e-3)
            for agent, rates in found.items():
                old = before.get(agent, {})
                rates.rates = {
                    k: max(0.0, (v - old.get(k, 0.0)) / elapsed) for k, v in rates.totals.items()
                }
        self._previous = (now, {a: dict(r.totals) for a, r in found.items()})
        return found

    async def _get(self, session: aiohttp.ClientSession, url: str) -> str | None:
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=3)) as answer:
                answer.raise_for_status()
                text = await answer.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.errors[url] = str(exc) or type(exc).__name__
            return None
        self.errors.pop(url, None)
        return text


def _add(found: dict[str, AgentRates], text: str) -> None:
    """Add one endpoint's samples to the per-agent sums."""
    seen: set[str] = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            agent = sample.labels.get("agent")
            if agent is None:
                continue
            rates = found.setdefault(agent, AgentRates())
            if agent not in seen:
                seen.add(agent)
                rates.workers += 1
            key = _COUNTERS.get(sample.name)
            if sample.name == "mesh_events_handled_total":
                key = "handled" if sample.labels.get("outcome") == "ok" else "failed"
            if key is not None:
                rates.totals[key] = rates.totals.get(key, 0.0) + sample.value
