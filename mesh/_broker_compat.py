"""Workarounds for Kafka-compatible brokers that deviate from Apache Kafka (Tansu).

Every function here gives the Kafka answer on Apache Kafka too, so nothing changes on a
real cluster; only the route to the answer avoids what a deviating broker gets wrong.
See ``../shared/broker-notes.md`` for the measurements. Deviations worked around:

- **ListOffsets "latest" is wrong on Tansu**: it returns the base offset of the newest
  batch + 1 (after one batch of 100 records the "end" is 1), so ``OFFSET_END``,
  ``auto.offset.reset=latest`` and uncached ``get_watermark_offsets`` start too early.
  :func:`high_watermarks` reads the high watermark from a fetch response instead.

Related rules kept elsewhere: never ask metadata for one topic by name, Tansu creates it
(:func:`mesh.topics.existing_topics` lists all topics instead).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from confluent_kafka import Consumer, TopicPartition

from mesh.errors import BrokerError

__all__ = ["high_watermarks"]

_UNKNOWN = 0  # cached watermarks are negative (OFFSET_INVALID) until a fetch answered


def high_watermarks(
    consumer: Consumer, topic: str, partitions: Iterable[int], *, timeout_s: float = 10.0
) -> dict[int, int]:
    """Partition -> high watermark (the offset the next record will get), from a fetch.

    Assigns each partition one record before the reported end (or at 0), consumes once
    so the broker answers a fetch, and takes the watermark that fetch carried: a fetch
    response holds the true high watermark even where ListOffsets does not. The larger
    of the two answers wins, so a correct ListOffsets is never made worse. Leaves
    *consumer* assigned to the probed positions: reassign before reading.
    """
    parts = list(partitions)
    reported: dict[int, int] = {}
    for p in parts:
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
        except Exception as exc:  # KafkaException: broker gone or timed out
            raise BrokerError(f"cannot read the end offsets of {topic}: {exc}") from None
        reported[p] = high
    consumer.assign([TopicPartition(topic, p, max(reported[p] - 1, 0)) for p in parts])
    found: dict[int, int] = {}
    deadline = time.monotonic() + timeout_s
    while len(found) < len(parts):
        if time.monotonic() > deadline:
            missing = ", ".join(str(p) for p in parts if p not in found)
            raise BrokerError(f"no fetch answer from {topic} partition(s) {missing}")
        consumer.consume(1000, timeout=0.05)  # the records are dropped: only the answer counts
        for p in parts:
            if p not in found:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
                if high >= _UNKNOWN:
                    found[p] = max(high, reported[p])
    return found
