"""One hung event must not let memory and redelivery grow without bound behind it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from confluent_kafka import Producer

from mesh import Context, Event, Mesh, Settings
from mesh.config import AgentSettings, TopicDefaults
from mesh.envelope import Envelope
from mesh.serde import Serde
from mesh.testing import unique_name
from tests.support import running


def test_a_hung_event_pauses_its_partition_once_the_uncommitted_window_is_full(
    make_app: Callable[..., Mesh], mesh_settings: Settings
) -> None:
    stem = unique_name("window")

    class Item(Event, topic=f"{stem}.items", key="item_id", name="test.Item"):
        item_id: str
        n: int

    settings = mesh_settings.model_copy(
        update={
            "topics": TopicDefaults(partitions=1),
            "agents": {"counter": AgentSettings(max_uncommitted=100, timeout="off")},
        }
    )
    app = make_app(Item, settings=settings)
    release = threading.Event()
    handled: list[int] = []

    @app.agent("counter", consumes=Item)
    async def counter(event: Item, ctx: Context) -> None:
        while event.n == 0 and not release.is_set():  # an LLM call that never answers
            await asyncio.sleep(0.05)
        handled.append(event.n)

    app.prepare()
    serde = Serde.from_settings(mesh_settings)
    producer = Producer({"bootstrap.servers": mesh_settings.bootstrap_servers, "linger.ms": 20})
    total = 3000
    with running(app):
        for n in range(total):
            headers = Envelope.new_chain(Item.event_type(), produced_by="test").to_headers()
            value = serde.encode(Item(item_id=f"i{n}", n=n), Item.topic())
            producer.produce(Item.topic(), value, f"i{n}".encode(), headers=headers)
        assert producer.flush(30) == 0
        time.sleep(3)
        while_hung = len(handled)
        release.set()
        deadline = time.monotonic() + 60
        while len(handled) < total:
            assert time.monotonic() < deadline, f"{len(handled)} of {total} after the release"
            time.sleep(0.1)

    # The window (100) plus what one poll takes (a batch of 500) and its fetch in transit.
    assert while_hung < 1000
    assert sorted(handled) == list(range(total))
