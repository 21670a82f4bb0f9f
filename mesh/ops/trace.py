"""Reconstructing one chain from Kafka alone (``mesh trace CORRELATION_ID``).

Every event of a chain carries ``mesh.correlation-id``, and every event but the first
its cause in ``mesh.causation-id``; retried and dead-lettered records are byte copies
with the failure in ``mesh.*`` headers (see :mod:`mesh.headers`). So one pass over the
app's topics (its event, retry and dead-letter topics: :func:`app_topics`), or topics
named by patterns, from ``since`` (time look-ups skip older data) to the ends seen at the
start, finds the whole chain without a database. Only headers are read: values are never
decoded. Without an app or patterns every topic not starting with ``_`` is read, which on
a shared cluster means every other team's data too.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from mesh import headers as h
from mesh.config import Settings
from mesh.errors import BrokerError
from mesh.kafka.clients import admin_config, reader_config
from mesh.kafka.compat import TP, end_offsets, offsets_for_times
from mesh.kafka.topics import existing_topics
from mesh.runtime.app import Mesh
from mesh.runtime.dead_letter import dead_letter_topic
from mesh.runtime.delay import delay_dead_letter_topic, namespace_of

__all__ = ["Failure", "Step", "Trace", "app_topics", "trace"]


@dataclass(frozen=True)
class Failure:
    """One failed attempt at an event: forwarded to a retry topic, or dead-lettered."""

    kind: Literal["retry", "dead-letter"]
    topic: str
    timestamp_ms: int
    group: str | None  # the consumer group that failed on it
    agent: str | None  # dead letters: the agent that gave up
    attempt: int | None
    error_class: str | None
    error_message: str | None
    reason: str | None  # dead letters: exhausted, fatal, deserialization, deadline
    partition: int = 0  # where the failed copy sits in *topic* (a dead letter's id)
    offset: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "topic": self.topic,
            "timestamp": self.timestamp_ms,
            "group": self.group,
            "agent": self.agent,
            "attempt": self.attempt,
            "error_class": self.error_class,
            "error_message": self.error_message,
            "reason": self.reason,
            "partition": self.partition,
            "offset": self.offset,
        }


@dataclass
class Step:
    """One event of the chain, with its failures and the events its handling emitted."""

    event_id: str
    event_type: str | None
    produced_by: str | None
    causation_id: str | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    failures: list[Failure] = field(default_factory=list)
    children: list[Step] = field(default_factory=list)
    latency_ms: int | None = None  # since the event that caused it

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "produced_by": self.produced_by,
            "causation_id": self.causation_id,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp_ms,
            "latency_ms": self.latency_ms,
            "failures": [f.to_json() for f in self.failures],
            "children": [c.to_json() for c in self.children],
        }


@dataclass
class Trace:
    """A chain as found: its roots (normally one), and how much was read to find it."""

    correlation_id: str
    roots: list[Step]
    topics: int
    scanned: int
    seconds: float

    @property
    def steps(self) -> int:
        def count(step: Step) -> int:
            return 1 + sum(count(c) for c in step.children)

        return sum(count(r) for r in self.roots)

    def to_json(self) -> dict[str, Any]:
        return {
            "correlation_id": self.correlation_id,
            "steps": self.steps,
            "roots": [r.to_json() for r in self.roots],
            "topics": self.topics,
            "scanned": self.scanned,
            "seconds": round(self.seconds, 3),
        }


def trace(
    settings: Settings,
    correlation_id: str,
    *,
    since_s: float = 86_400.0,
    topics: Iterable[str] = (),
    app: Mesh | None = None,
    timeout_s: float = 30.0,
) -> Trace:
    """Find the chain *correlation_id* in the records of the last *since_s* seconds.

    The scan covers *app*'s topics (:func:`app_topics`) and the names matching the glob
    patterns *topics*; with neither, every topic not starting with ``_``.
    """
    began = time.monotonic()
    admin = AdminClient(admin_config(settings))
    patterns = list(topics)
    own = app_topics(app) if app is not None else set()
    everything = not (patterns or own)
    sizes = {
        name: size
        for name, size in existing_topics(admin).items()
        if not name.startswith("_")
        and (everything or name in own or any(fnmatch.fnmatchcase(name, p) for p in patterns))
    }
    tps = [(name, p) for name, size in sorted(sizes.items()) for p in range(size)]
    probe = Consumer(reader_config(settings, "trace", **{"auto.offset.reset": "earliest"}))
    try:
        ends = end_offsets(settings, probe, tps, timeout_s=timeout_s)
        since_ms = int((time.time() - since_s) * 1000)
        starts = offsets_for_times(probe, dict.fromkeys(tps, since_ms), ends, timeout_s=timeout_s)
    finally:
        probe.close()
    # A consumer of its own: the scan tells a partition's end by its position, which would
    # report the probe's positions until its first fetch.
    consumer = Consumer(reader_config(settings, "trace", **{"auto.offset.reset": "earliest"}))
    try:
        found, scanned = _scan(consumer, starts, ends, correlation_id.encode(), timeout_s)
    finally:
        consumer.close()
    return Trace(
        correlation_id,
        _tree(found),
        topics=len(sizes),
        scanned=scanned,
        seconds=time.monotonic() - began,
    )


def app_topics(app: Mesh) -> set[str]:
    """What *app*'s chains are written to: the topics of the events its agents consume and
    emit, their retry and dead-letter topics, and its delay forwarder's dead letters.

    Delay topics are left out: a delayed event is shown where it was delivered.
    """
    found = {event_type.topic() for event_type in app.event_types.values()}
    for name, spec in app.agents.items():
        found.update(app.retry_topics(name))
        group = app.group_id(name)
        found.update(dead_letter_topic(t.topic(), group) for t in spec.consumes)
    found.add(delay_dead_letter_topic(namespace_of(app.settings)))
    return found


def _scan(
    consumer: Consumer,
    starts: dict[TP, int],
    ends: dict[TP, int],
    correlation_id: bytes,
    timeout_s: float,
) -> tuple[list[Message], int]:
    """The records of the chain in ``[start, end)`` of every partition, and how many were read."""
    pending = {tp: end for tp, end in ends.items() if starts[tp] < end}
    partitions = [TopicPartition(t, p, starts[t, p]) for t, p in pending]
    consumer.assign(partitions)
    if partitions:
        consumer.resume(partitions)  # offsets_for_times paused some: the flag outlives assign
    found: list[Message] = []
    scanned = 0
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise BrokerError(f"reading {len(pending)} partition(s) timed out")
        for msg in consumer.consume(5000, timeout=0.05):
            tp = (msg.topic() or "", msg.partition() or 0)
            end = pending.get(tp)
            if msg.error() is not None or end is None:
                continue
            offset = msg.offset() or 0
            if offset < end:
                scanned += 1
                if (h.CORRELATION_ID, correlation_id) in (msg.headers() or ()):
                    found.append(msg)
            if offset + 1 >= end:
                del pending[tp]
                consumer.pause([TopicPartition(*tp)])
        for position in consumer.position([TopicPartition(t, p) for t, p in pending]):
            tp = (position.topic, position.partition)
            if position.offset >= pending[tp]:  # past trailing control records
                del pending[tp]
    return found, scanned


def _tree(records: list[Message]) -> list[Step]:
    """Steps linked by causation id; failures attached to the event they failed on."""
    steps: dict[str, Step] = {}
    failures: list[tuple[str, Failure]] = []
    for msg in sorted(records, key=lambda m: m.timestamp()[1]):
        found = {k: (v or b"").decode("utf-8", "replace") for k, v in msg.headers() or ()}
        event_id = found.get(h.EVENT_ID, f"kafka:{msg.topic()}/{msg.partition()}/{msg.offset()}")
        _, timestamp_ms = msg.timestamp()
        if h.DELAY_TARGET in found:
            continue  # a delayed event on its way: the delivered copy is the step
        kind = _failure_kind(found)
        if kind is not None:
            failures.append((event_id, _failure(kind, msg, timestamp_ms, found)))
        elif event_id not in steps:
            steps[event_id] = Step(
                event_id=event_id,
                event_type=found.get(h.EVENT_TYPE),
                produced_by=found.get(h.PRODUCED_BY),
                causation_id=found.get(h.CAUSATION_ID),
                topic=msg.topic() or "",
                partition=msg.partition() or 0,
                offset=msg.offset() or 0,
                timestamp_ms=timestamp_ms,
            )
    for event_id, failure in failures:
        if event_id in steps:
            steps[event_id].failures.append(failure)
    roots = []
    for step in steps.values():
        parent = steps.get(step.causation_id or "")
        if parent is None:
            roots.append(step)
        else:
            parent.children.append(step)
            step.latency_ms = step.timestamp_ms - parent.timestamp_ms
    return roots


def _failure_kind(found: dict[str, str]) -> Literal["retry", "dead-letter"] | None:
    """Dead letters carry a reason; retried records the failure headers and no reason."""
    if h.DLQ_REASON in found:
        return "dead-letter"
    if h.EXCEPTION_CLASS in found:
        return "retry"
    return None


def _failure(
    kind: Literal["retry", "dead-letter"], msg: Message, timestamp_ms: int, found: dict[str, str]
) -> Failure:
    attempt = found.get(h.ATTEMPT)
    return Failure(
        kind=kind,
        topic=msg.topic() or "",
        partition=msg.partition() or 0,
        offset=msg.offset() or 0,
        timestamp_ms=timestamp_ms,
        group=found.get(h.ORIGINAL_GROUP),
        agent=found.get(h.DLQ_AGENT),
        attempt=int(attempt) if attempt and attempt.isdigit() else None,
        error_class=found.get(h.EXCEPTION_CLASS),
        error_message=found.get(h.EXCEPTION_MESSAGE),
        reason=found.get(h.DLQ_REASON),
    )
