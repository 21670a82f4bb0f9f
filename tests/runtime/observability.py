"""Helpers for the metrics tests: an app whose events partly fail, and scraping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

from mesh import Context, Event, Mesh
from mesh.config import RetryPolicy
from mesh.testing import unique_name

T = TypeVar("T")

SENT = 30
FAILING = 6  # n % 5 == 0: always raises, so retried once, then dead-lettered
ATTEMPTS = 2


class Boom(Exception):
    """The handler's failure."""


def event_types() -> tuple[type[Event], type[Event]]:
    stem = unique_name("obs")

    class Order(Event, topic=f"{stem}.orders", key="order_id", name="test.Order"):
        order_id: str
        n: int

    class Shipped(Event, topic=f"{stem}.shipped", key="order_id", name="test.Shipped"):
        order_id: str

    return Order, Shipped


def add_shipper(app: Mesh, order: type[Event], shipped: type[Event]) -> None:
    """Agent ``shipper``: ships every order except every fifth, which always fails."""

    @app.agent(
        "shipper",
        consumes=order,
        emits=shipped,
        retry=RetryPolicy(attempts=ATTEMPTS, backoff="fixed", initial_delay="200ms"),
    )
    async def shipper(event: Any, ctx: Context) -> Any:
        ctx.log.info("shipping %s", event.order_id)
        if event.n % 5 == 0:
            raise Boom(f"order {event.n} cannot ship")
        return shipped(order_id=event.order_id)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample at *url*, keyed by (name, labels)."""
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of *name* over the series whose labels include *labels*."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def series(samples: Samples, name: str, **labels: str) -> list[dict[str, str]]:
    wanted = set(labels.items())
    return [dict(ls) for (n, ls) in samples if n == name and wanted <= ls]


def eventually(probe: Callable[[], T], ok: Callable[[T], bool], timeout_s: float = 30) -> T:
    """Call *probe* until *ok* holds for its answer (or time runs out); the last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if ok(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def http_status(url: str) -> Callable[[], int]:
    """A probe for :func:`eventually`: the status code of GET *url*, 0 while refused."""

    def probe() -> int:
        try:
            return httpx.get(url, timeout=2).status_code
        except httpx.TransportError:
            return 0

    return probe
