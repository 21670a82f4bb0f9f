"""The pytest plugin shipped in mesh.testing gives each test a real broker and fresh topics."""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from mesh.kafka.topics import TopicSpec, ensure_topics, existing_topics
from mesh.testing import FAST_GROUP_CONFIG, unique_name


def test_topics_are_unique_and_sized(
    mesh_topic: Callable[..., str], mesh_admin: AdminClient
) -> None:
    first, second = mesh_topic(partitions=3), mesh_topic()
    assert first != second
    present = existing_topics(mesh_admin)
    assert present[first] == 3
    assert present[second] == 1


def test_ensure_topics_is_idempotent(mesh_admin: AdminClient) -> None:
    spec = TopicSpec(unique_name("idem"), 2, config={"cleanup.policy": "compact"})
    assert ensure_topics(mesh_admin, [spec]) == [spec.name]
    assert ensure_topics(mesh_admin, [spec]) == []
    assert existing_topics(mesh_admin)[spec.name] == 2


def test_round_trip_through_the_session_broker(
    mesh_bootstrap_servers: str, mesh_topic: Callable[..., str]
) -> None:
    topic = mesh_topic()
    producer = Producer({"bootstrap.servers": mesh_bootstrap_servers, "acks": "all"})
    for i in range(10):
        producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
    assert producer.flush(10) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": mesh_bootstrap_servers,
            "group.id": unique_name("g"),
            "auto.offset.reset": "earliest",
            **FAST_GROUP_CONFIG,
        }
    )
    consumer.subscribe([topic])
    values = []
    try:
        while len(values) < 10:
            msg = consumer.poll(10)
            assert msg is not None, "timed out waiting for records"
            assert msg.error() is None
            values.append(msg.value())
    finally:
        consumer.close()
    assert values == [f"v{i}".encode() for i in range(10)]
