"""A key lands on the partition Java's producer picks for it (Kafka's murmur2 partitioner)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, Message, Producer

from mesh import Settings
from mesh.kafka.clients import producer_config

PARTITIONS = 6
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2``: 32-bit MurmurHash2, seed 0x9747b28c, as a signed int."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = data[length - length % 4 :]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def java_partition(key: bytes, partitions: int) -> int:
    """``Utils.toPositive(Utils.murmur2(keyBytes)) % numPartitions``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@pytest.mark.parametrize(
    ("text", "expected"),  # Kafka's UtilsTest.testMurmur2
    [
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        ("abc", 479470107),
    ],
)
def test_the_reference_murmur2_matches_kafkas_own_test_vectors(text: str, expected: int) -> None:
    assert murmur2(text.encode()) == expected


def test_every_key_lands_on_the_partition_java_picks_for_it(
    mesh_settings: Settings, mesh_topic: Callable[..., str]
) -> None:
    topic = mesh_topic(partitions=PARTITIONS)
    keys = [f"customer-{n}".encode() for n in range(300)] + [b"", b"a", b"ab", b"abc", "é".encode()]
    landed: dict[bytes, int] = {}

    def delivered(err: KafkaError | None, msg: Message) -> None:
        assert err is None, err
        landed[msg.key() or b""] = msg.partition() or 0

    producer = Producer(producer_config(mesh_settings))
    for key in keys:
        producer.produce(topic, b"v", key, on_delivery=delivered)
    assert producer.flush(30) == 0
    wrong = {k: p for k, p in landed.items() if p != java_partition(k, PARTITIONS)}
    assert len(landed) == len(keys)
    assert wrong == {}
