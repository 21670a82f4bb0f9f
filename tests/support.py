"""Helpers for tests on a real broker: run an app in a background thread, read a topic back."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from mesh import Mesh
from mesh.testing import FAST_GROUP_CONFIG, unique_name


@contextmanager
def running(app: Mesh, agents: list[str] | None = None, **options: Any) -> Iterator[None]:
    """Serve *app* in a thread for the duration of the block, then stop it gracefully."""
    stop: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None
    started = threading.Event()
    errors: list[BaseException] = []

    async def main() -> None:
        nonlocal stop, loop
        stop, loop = asyncio.Event(), asyncio.get_running_loop()
        await app.serve(
            agents, stop=stop, consumer_config=FAST_GROUP_CONFIG, ready=started.set, **options
        )

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)
            started.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert started.wait(60), "app did not start"
    if errors:
        raise errors[0]
    try:
        yield
    finally:
        assert loop is not None
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        assert not thread.is_alive(), "app did not stop"
    if errors:
        raise errors[0]


def read_topic(
    bootstrap: str, topic: str, count: int, *, partitions: int = 1, timeout_s: float = 60
) -> list[Message]:
    """The first *count* records of *topic*, read without a consumer group."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": unique_name("reader"), **FAST_GROUP_CONFIG}
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    found: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < count and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.2):
                if msg.error() is None:
                    found.append(msg)
    finally:
        consumer.close()
    assert len(found) >= count, f"{topic}: {len(found)} records of {count} after {timeout_s}s"
    return found


def header(msg: Message, name: str) -> str | None:
    values = [v for k, v in msg.headers() or [] if k == name]
    return values[-1].decode() if values else None


def committed_offsets(admin: AdminClient, group: str, topic: str) -> dict[int, int]:
    """The offsets *group* committed on *topic*, by partition (negative: none)."""
    (future,) = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)]).values()
    return {tp.partition: tp.offset for tp in future.result().topic_partitions if tp.topic == topic}
