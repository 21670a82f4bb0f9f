"""Dedupe by event id against a real redelivery: the same record consumed twice."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Producer

from mesh import Context, Dedupe, Envelope, Event, Mesh
from mesh.testing import unique_name
from tests.support import running


def test_a_redelivered_event_runs_its_side_effect_once(make_app: Callable[..., Mesh]) -> None:
    topic = unique_name("dedupe")

    class Charge(Event, topic=topic, key="order_id", name="test.Charge"):
        order_id: str
        cents: int

    app = make_app(Charge)
    charged = Dedupe()
    handled: list[str] = []
    charges: list[str] = []

    @app.agent("biller", consumes=Charge)
    async def biller(event: Charge, ctx: Context) -> None:
        handled.append(ctx.event_id)
        with charged.once(ctx.event_id) as first:
            if first:
                charges.append(event.order_id)

    with running(app):
        producer = Producer({"bootstrap.servers": app.settings.bootstrap_servers})
        serde = app._get_serde()
        for order in ("o1", "o2"):
            event = Charge(order_id=order, cents=100)
            headers = Envelope.new_chain(Charge.event_type(), "test").to_headers()
            for _ in range(2):  # the same record twice, as after a crash before the commit
                producer.produce(topic, serde.encode(event, topic), order.encode(), headers=headers)
        producer.flush(10)
        deadline = time.monotonic() + 30
        while len(handled) < 4:
            assert time.monotonic() < deadline, f"handled {handled}"
            time.sleep(0.05)

    assert len(set(handled)) == 2  # two events, each handled twice...
    assert sorted(charges) == ["o1", "o2"]  # ...and each charged once
