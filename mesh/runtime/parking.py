"""Parking: hold back partitions whose head record is not due yet, without sleeping.

Retry topics (the agents' workers) and delay topics (the delay forwarder) share one
property: within a partition, due times rise with offsets, so the head of a partition is
always the next record due. A partition whose head is not due is paused and sought back to
it; polling goes on (``max.poll.interval.ms`` never expires, other partitions keep
flowing), and the partition is resumed once the head is due, so the record is fetched
again. The seek is needed because librdkafka drops prefetched records on pause.

Used from the thread that owns the consumer only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable

from confluent_kafka import Consumer, Message, TopicPartition

__all__ = ["Parking"]

TP = tuple[str, int]


class Parking:
    """The partitions of *consumer* rewound to a head that *due_ms* says is not due yet.

    *due_ms* gives a record's due time in epoch ms, or None for "due now".
    """

    def __init__(self, consumer: Consumer, due_ms: Callable[[Message], int | None]) -> None:
        self._consumer = consumer
        self._due_ms = due_ms
        self._parked: dict[TP, int] = {}  # partition -> when its head is due (epoch ms)

    def __bool__(self) -> bool:
        return bool(self._parked)

    def __contains__(self, tp: object) -> bool:
        return tp in self._parked

    def hold(self, batch: list[Message], topics: Collection[str]) -> list[Message]:
        """The records of *batch* that may run now; park partitions of *topics* not yet due.

        Records of other topics, and errors, pass through. Records behind a parked head
        are dropped here: they are fetched again after the resume.
        """
        kept = []
        now_ms = int(time.time() * 1000)
        for msg in batch:
            topic = msg.topic()
            if topic not in topics or msg.error() is not None:
                kept.append(msg)
                continue
            tp = (topic, msg.partition())
            if tp in self._parked:
                continue
            due_ms = self._due_ms(msg)
            if due_ms is None or due_ms <= now_ms:
                kept.append(msg)
                continue
            self._parked[tp] = due_ms
            partition = TopicPartition(topic, msg.partition(), msg.offset())
            self._consumer.pause([partition])
            self._consumer.seek(partition)
        return kept

    def release_due(self, max_wait_s: float, *, resume: bool = True) -> float:
        """Unpark partitions whose head is due; return how long the next poll may wait.

        With *resume* false they are only unparked, not resumed: the caller holds every
        partition paused for its own reason and resumes them later.
        """
        now_ms = int(time.time() * 1000)
        next_ms = now_ms + int(max_wait_s * 1000)
        for tp, due_ms in list(self._parked.items()):
            if due_ms <= now_ms:
                del self._parked[tp]
                if resume:
                    self._consumer.resume([TopicPartition(*tp)])
            else:
                next_ms = min(next_ms, due_ms)
        return max(0.0, (next_ms - now_ms) / 1000)

    def drop(self, tps: Iterable[TP]) -> None:
        """Forget partitions that were revoked (their new owner parks them itself)."""
        for tp in tps:
            self._parked.pop(tp, None)
