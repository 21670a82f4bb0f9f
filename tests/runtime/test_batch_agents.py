"""Batch agents on the real broker: one call for many events, failures isolated per event."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka.admin import AdminClient

from mesh import Event, Mesh, RetryPolicy, Settings
from mesh.testing import unique_name
from tests.support import committed_offsets, header, read_topic, running


def event_types() -> tuple[type[Event], type[Event]]:
    stem = unique_name("batch")

    class Order(Event, topic=f"{stem}.orders", key="order_id", name="test.BatchOrder"):
        order_id: str
        amount: int

    class Priced(Event, topic=f"{stem}.priced", key="order_id", name="test.BatchPriced"):
        order_id: str
        total: int

    return Order, Priced


def test_a_batch_agent_handles_many_events_per_call_and_dead_letters_only_the_failing_one(
    make_app: Callable[..., Mesh], mesh_settings: Settings
) -> None:
    Order, Priced = event_types()
    app = make_app(Order, Priced)
    sizes: list[int] = []

    @app.agent("pricer", consumes=Order, batch_size=50, retry=RetryPolicy(attempts=1))
    def pricer(orders: list[Order]) -> list[Priced | None]:  # sync: one thread call per batch
        sizes.append(len(orders))
        if any(o.order_id == "o13" for o in orders):
            raise ValueError("cannot price o13")
        return [
            None if o.amount == 0 else Priced(order_id=o.order_id, total=o.amount * 2)
            for o in orders
        ]

    assert app.describe()["pricer"]["batch_size"] == 50
    count = 120
    with running(app):
        roots = {}
        for i in range(count):
            roots[f"o{i}"] = app.publish(Order(order_id=f"o{i}", amount=0 if i == 7 else i + 1))
        bootstrap = mesh_settings.bootstrap_servers
        priced = read_topic(bootstrap, Priced.topic(), count - 2, partitions=3)
        dead = read_topic(
            bootstrap, f"{Order.topic()}.{app.group_id('pricer')}.dlq", 1, partitions=3
        )
        admin = AdminClient({"bootstrap.servers": bootstrap})
        deadline = time.monotonic() + 20
        while sum(committed_offsets(admin, app.group_id("pricer"), Order.topic()).values()) < count:
            assert time.monotonic() < deadline, "the group never committed every event"
            time.sleep(0.2)

    assert max(sizes) > 1  # events were handled in batches
    keys = sorted(m.key().decode() for m in priced)
    assert keys == sorted(f"o{i}" for i in range(count) if i not in (7, 13))
    for msg in priced:  # each output is caused by its own input event
        root = roots[msg.key().decode()]
        assert header(msg, "mesh.causation-id") == root.event_id
        assert header(msg, "mesh.correlation-id") == root.correlation_id
    assert [m.key() for m in dead] == [b"o13"]
    assert header(dead[0], "mesh.exception.message") == "cannot price o13"
