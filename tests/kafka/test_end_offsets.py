"""End offsets: one batched ListOffsets on Kafka, the fetch workaround only on Tansu."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer

from mesh import Settings
from mesh.kafka.clients import reader_config
from mesh.kafka.compat import end_offsets, watermarks


def _produce(settings: Settings, topic: str, counts: dict[int, int], *, one_batch: bool) -> None:
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 50})
    for partition, count in counts.items():
        for n in range(count):
            producer.produce(topic, f"v{n}".encode(), partition=partition)
            if not one_batch:
                producer.flush(10)  # one batch per record: Tansu's ListOffsets is right then
    assert producer.flush(10) == 0


def test_on_kafka_end_offsets_are_listed_without_probing_the_consumer(
    mesh_settings: Settings, mesh_topic: Callable[..., str]
) -> None:
    topic = mesh_topic(partitions=3)
    _produce(mesh_settings, topic, {0: 3, 1: 1}, one_batch=False)
    kafka = mesh_settings.model_copy(update={"broker": "kafka"})
    consumer = Consumer(reader_config(kafka, "test"))
    try:
        tps = [(topic, p) for p in range(3)]
        assert end_offsets(kafka, consumer, tps) == {tps[0]: 3, tps[1]: 1, tps[2]: 0}
        assert watermarks(kafka, consumer, tps) == (
            dict.fromkeys(tps, 0),
            {tps[0]: 3, tps[1]: 1, tps[2]: 0},
        )
        assert consumer.assignment() == []  # no fetch probe: ListOffsets answered
    finally:
        consumer.close()


@pytest.mark.tansu_only  # exercises the workaround for Tansu's wrong ListOffsets
def test_on_tansu_end_offsets_come_from_a_fetch_where_list_offsets_is_wrong(
    mesh_settings: Settings, mesh_topic: Callable[..., str]
) -> None:
    topic = mesh_topic(partitions=1)
    _produce(mesh_settings, topic, {0: 100}, one_batch=True)
    tansu = mesh_settings.model_copy(update={"broker": "tansu"})
    consumer = Consumer(reader_config(tansu, "test"))
    try:
        assert end_offsets(tansu, consumer, [(topic, 0)]) == {(topic, 0): 100}
    finally:
        consumer.close()
