"""Delayed delivery through delay topics, never by sleeping.

``app.publish(event, deliver_at=...)`` and ``ctx.emit(event, delay=...)`` encode the event
as usual, then send the record to a delay topic ``mesh.delay.{namespace}.{bucket}``
instead of its own, with ``mesh.delay.target`` (its topic) and ``mesh.due-ts`` added. The
delay forwarder of every ``mesh run`` process of the namespace
(:mod:`mesh.runtime.forwarder`) moves it on.

The namespace is the ``delay_namespace`` setting, the app's name by default: each app
has delay topics and a forwarder group of its own, so a record one app cannot deliver
never holds up another app's delayed events. Apps that set the same namespace share them.

Buckets are a fixed ladder (100ms ... 24h). A record waits in the largest bucket no longer
than the time it has left, for exactly that bucket's length after it was written; then
it moves to the bucket for what is left, or to its target once due. Every record of a
bucket waits the same time, so within a partition the records leave in offset order: the
head is always the next one due, which is what parking (pause and rewind to the head)
needs. Common delays (``"30s"``, ``"5m"``) are buckets themselves and take one hop; any
other takes a few. Only a record with less than 100 ms left waits for its own due time,
so it can wait behind one due later by less than 100 ms.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from confluent_kafka import Message

from mesh.config import Settings, parse_duration
from mesh.errors import ConfigError
from mesh.headers import DELAY_TARGET, DUE_TS, last
from mesh.kafka.topics import TopicSpec, retention_config
from mesh.runtime.retry import due_at_ms
from mesh.runtime.topology import format_delay

if TYPE_CHECKING:
    from mesh.event import Event

__all__ = [
    "BUCKETS_MS",
    "Delayed",
    "bucket_for",
    "delay_dead_letter_topic",
    "delay_group",
    "delay_topic",
    "delay_topic_specs",
    "delayed_record",
    "deliver_at_ms",
    "due_in_ms",
    "leaves_at_ms",
    "namespace_of",
    "target_of",
]

DELAY_TOPIC_PREFIX = "mesh.delay."
_S, _M, _H = 1000, 60_000, 3_600_000
#: The delay of each delay topic, shortest first.
BUCKETS_MS = (
    100,
    250,
    500,
    1 * _S,
    2 * _S,
    5 * _S,
    10 * _S,
    30 * _S,
    1 * _M,
    2 * _M,
    5 * _M,
    10 * _M,
    30 * _M,
    1 * _H,
    2 * _H,
    6 * _H,
    12 * _H,
    24 * _H,
)
_RETENTION_MS = 7 * 24 * _H  # several times the longest bucket: a stopped forwarder loses nothing


def namespace_of(settings: Settings) -> str:
    """The delay namespace: ``delay_namespace``, which an app fills in with its name."""
    if settings.delay_namespace is None:
        raise ConfigError("delayed delivery needs delay_namespace (an app sets its name)")
    return settings.delay_namespace


def delay_topic(bucket_ms: int, namespace: str) -> str:
    return f"{DELAY_TOPIC_PREFIX}{namespace}.{format_delay(bucket_ms)}"


def delay_group(namespace: str) -> str:
    """The consumer group of the namespace's forwarders."""
    return f"{DELAY_TOPIC_PREFIX.rstrip('.')}.{namespace}"


def delay_dead_letter_topic(namespace: str) -> str:
    """Where the forwarders put a record its target refuses for good (see the forwarder)."""
    return f"{DELAY_TOPIC_PREFIX}{namespace}.dlq"


_BUCKET_OF_NAME = {format_delay(bucket): bucket for bucket in BUCKETS_MS}


def delay_topic_specs(settings: Settings) -> list[TopicSpec]:
    """The delay topics of the settings' namespace, and its dead-letter topic (kept forever)."""
    namespace = namespace_of(settings)
    topics = settings.topics
    retention = {"retention.ms": str(_RETENTION_MS)}
    return [
        *(
            TopicSpec(
                delay_topic(bucket, namespace),
                topics.partitions,
                topics.replication_factor,
                retention,
            )
            for bucket in BUCKETS_MS
        ),
        TopicSpec(
            delay_dead_letter_topic(namespace),
            topics.partitions,
            topics.replication_factor,
            retention_config(None),
        ),
    ]


def bucket_for(left_ms: int) -> int:
    """The largest bucket no longer than *left_ms* (the shortest one below it)."""
    fitting = [bucket for bucket in BUCKETS_MS if bucket <= left_ms]
    return fitting[-1] if fitting else BUCKETS_MS[0]


@dataclass(frozen=True, slots=True)
class Delayed:
    """An event to deliver at ``due_ms`` (epoch ms); what ``ctx.emit(..., delay=...)`` buffers."""

    event: Event
    due_ms: int

    def event_type(self) -> str:
        return self.event.event_type()


def deliver_at_ms(deliver_at: datetime | int) -> int:
    """``deliver_at`` (a timezone-aware datetime, or epoch milliseconds) in epoch ms."""
    if isinstance(deliver_at, datetime):
        if deliver_at.tzinfo is None:
            raise ValueError("deliver_at needs a timezone (e.g. datetime.now(UTC) + ...)")
        return int(deliver_at.timestamp() * 1000)
    return int(deliver_at)


def due_in_ms(delay: str | float | timedelta) -> int:
    """When an event delayed by *delay* (``"30s"``, seconds, a timedelta) is due, epoch ms."""
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else parse_duration(delay)
    if seconds < 0:
        raise ValueError("a delay cannot be negative")
    return time.time_ns() // 1_000_000 + round(seconds * 1000)


def delayed_record(
    topic: str,
    headers: list[tuple[str, bytes]],
    due_ms: int,
    *,
    namespace: str,
    now_ms: int | None = None,
) -> tuple[str, list[tuple[str, bytes]]]:
    """Where a record for *topic* due at *due_ms* goes now, and its headers there.

    A record already due goes straight to *topic*.
    """
    left_ms = due_ms - (time.time_ns() // 1_000_000 if now_ms is None else now_ms)
    if left_ms <= 0:
        return topic, headers
    marks = [(DELAY_TARGET, topic.encode()), (DUE_TS, str(due_ms).encode())]
    return delay_topic(bucket_for(left_ms), namespace), [*headers, *marks]


def leaves_at_ms(msg: Message) -> int | None:
    """When a record leaves its delay topic: its bucket's length after it was written,
    or its due time if that is sooner. None for a record without a due time."""
    due_ms = due_at_ms(msg)
    if due_ms is None:
        return None
    _, written_ms = msg.timestamp()
    bucket_ms = _BUCKET_OF_NAME.get((msg.topic() or "").rpartition(".")[2])
    if bucket_ms is None or written_ms <= 0:
        return due_ms
    return min(due_ms, written_ms + bucket_ms)


def target_of(msg: Message) -> str | None:
    """The topic a delayed record is delivered to."""
    value = last(msg.headers(), DELAY_TARGET)
    return None if value is None else value.decode("utf-8", "replace")
