"""Reconstructing one chain from Kafka alone (``mesh trace ID``).

Every event of a chain carries ``mesh.correlation-id``, and every event but the first
its cause in ``mesh.causation-id``; retried and dead-lettered records are byte copies
with the failure in ``mesh.*`` headers (see :mod:`mesh.headers`). So one pass over the
app's topics (its event, retry and dead-letter topics: :func:`app_topics`), or topics
named by patterns, from ``since`` (time look-ups skip older data) to the ends seen at the
start, finds the whole chain without a database. Only headers are read: values are never
decoded. Without an app or patterns every topic not starting with ``_`` is read, which on
a shared cluster means every other team's data too.

The id searched for is a correlation id or the ``mesh.event-id`` of any event of the
chain. The same pass looks for both; once it meets the event, it looks for its
correlation id too, and takes the records of that id it had read before from those it
kept meanwhile (a second pass reads them again when there were too many to keep).
Ids mesh mints are UUIDv7s (:func:`minted_ms`): no record carries one before it was
minted, so a pass for one starts at its time (less :data:`CLOCK_SLACK_S` and
:data:`CHAIN_SPAN_S`) when that is later than ``since``.
"""

from __future__ import annotations

import fnmatch
import re
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
from mesh.runtime.delay import delay_dead_letter_topic, namespace_of

__all__ = [
    "CHAIN_SPAN_S",
    "CLOCK_SLACK_S",
    "Failure",
    "Step",
    "Trace",
    "app_topics",
    "minted_ms",
    "trace",
]

#: How much earlier than its UUIDv7 time a record carrying an id may be stamped: the
#: hosts that minted the id and produced the record may disagree about the time.
CLOCK_SLACK_S = 600.0
#: A pass for an id also reads this long before its time, so that the chain of an event
#: is found in the same pass when it began no longer than this before the event.
CHAIN_SPAN_S = 600.0
_UUID7 = re.compile(r"([0-9a-f]{8})-([0-9a-f]{4})-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


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
    #: The id searched for when it was an event's id rather than the chain's correlation id.
    event_id: str | None = None

    @property
    def steps(self) -> int:
        def count(step: Step) -> int:
            return 1 + sum(count(c) for c in step.children)

        return sum(count(r) for r in self.roots)

    def to_json(self) -> dict[str, Any]:
        return {
            "correlation_id": self.correlation_id,
            "event_id": self.event_id,
            "steps": self.steps,
            "roots": [r.to_json() for r in self.roots],
            "topics": self.topics,
            "scanned": self.scanned,
            "seconds": round(self.seconds, 3),
        }


def trace(
    settings: Settings,
    ident: str,
    *,
    since_s: float = 86_400.0,
    topics: Iterable[str] = (),
    app: Mesh | None = None,
    timeout_s: float = 30.0,
) -> Trace:
    """Find the chain of *ident* in the records of the last *since_s* seconds: the chain
    whose correlation id is *ident*, else the chain of the event whose id is *ident*.

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
    since_ms = int((time.time() - since_s) * 1000)
    asked = ident.encode()
    first_ms = _earliest_ms(ident, since_ms, CHAIN_SPAN_S)
    ends, starts = _bounds(settings, tps, first_ms, timeout_s)
    wanted = {(h.CORRELATION_ID, asked), (h.EVENT_ID, asked)}
    first = _pass(settings, starts, ends, wanted, timeout_s, event_id=asked)
    found, scanned = first.found, first.scanned
    correlation, event_id = ident, None
    by_correlation = [m for m in found if (h.CORRELATION_ID, asked) in (m.headers() or ())]
    if by_correlation or first.correlation is None:
        found = by_correlation or found  # the event alone: a record without a correlation id
    else:  # an event id: the rest of its chain, where the pass read without looking for it
        correlation, event_id = first.correlation.decode("utf-8", "replace"), ident
        chain_ms = _earliest_ms(correlation, since_ms)
        earlier = first.reached  # nothing left to read: every record read was kept
        if chain_ms < first_ms or first.reached != starts:
            _, earlier = _bounds(settings, tps, chain_ms, timeout_s, ends=ends)
        if any(earlier[tp] < first.reached[tp] for tp in tps):
            wanted = {(h.CORRELATION_ID, first.correlation)}
            second = _pass(settings, earlier, first.reached, wanted, timeout_s)
            places = {(m.topic(), m.partition(), m.offset()) for m in second.found}
            found = second.found + [
                m for m in found if (m.topic(), m.partition(), m.offset()) not in places
            ]
            scanned += second.scanned
    return Trace(
        correlation,
        _tree(found),
        topics=len(sizes),
        scanned=scanned,
        seconds=time.monotonic() - began,
        event_id=event_id,
    )


def _bounds(
    settings: Settings,
    tps: list[TP],
    at_ms: int,
    timeout_s: float,
    *,
    ends: dict[TP, int] | None = None,
) -> tuple[dict[TP, int], dict[TP, int]]:
    """The end of every partition (unless given) and the first offset at or after *at_ms*."""
    probe = Consumer(reader_config(settings, "trace", **{"auto.offset.reset": "earliest"}))
    try:
        if ends is None:
            ends = end_offsets(settings, probe, tps, timeout_s=timeout_s)
        starts = offsets_for_times(probe, dict.fromkeys(tps, at_ms), ends, timeout_s=timeout_s)
    finally:
        probe.close()
    return ends, starts


def _pass(
    settings: Settings,
    starts: dict[TP, int],
    ends: dict[TP, int],
    wanted: set[tuple[str, bytes]],
    timeout_s: float,
    *,
    event_id: bytes | None = None,
) -> _Scanned:
    # A consumer of its own: the scan tells a partition's end by its position, which would
    # report the probe's positions until its first fetch.
    consumer = Consumer(reader_config(settings, "trace", **{"auto.offset.reset": "earliest"}))
    try:
        return _scan(consumer, starts, ends, wanted, timeout_s, event_id=event_id)
    finally:
        consumer.close()


def minted_ms(ident: str) -> int | None:
    """When a UUIDv7 id (as mesh mints event and correlation ids) was minted, in epoch ms;
    None for any other id."""
    match = _UUID7.fullmatch(ident)
    return None if match is None else int(match.group(1) + match.group(2), 16)


def _earliest_ms(ident: str, since_ms: int, before_s: float = 0.0) -> int:
    """Where records carrying *ident* may start (and *before_s* more): *since_ms*, or
    later for a UUIDv7."""
    minted = minted_ms(ident)
    if minted is None:
        return since_ms
    return max(since_ms, minted - int((CLOCK_SLACK_S + before_s) * 1000))


def app_topics(app: Mesh) -> set[str]:
    """What *app*'s chains are written to: the topics of the events its agents consume and
    emit, their retry and dead-letter topics, and its delay forwarder's dead letters.

    Delay topics are left out: a delayed event is shown where it was delivered.
    """
    found = {event_type.topic() for event_type in app.event_types.values()}
    for name in app.agents:
        topology = app.topology(name)
        found.update(topology.retries)
        found.update(topology.dead_letters)
    found.add(delay_dead_letter_topic(namespace_of(app.settings)))
    return found


#: Records the first pass keeps, until it meets the event searched for, in case they are of
#: its chain: past either bound it forgets them, and a second pass reads them again.
_HELD_RECORDS = 200_000
_HELD_BYTES = 64 << 20


class _Kept:
    """Records by correlation id, until more than :data:`_HELD_RECORDS` or
    :data:`_HELD_BYTES` were offered: then none (``full``)."""

    def __init__(self) -> None:
        self.by_id: dict[bytes, list[Message]] = {}
        self.records = self.bytes = 0
        self.full = False

    def add(self, msg: Message, headers: list[tuple[str, bytes]]) -> None:
        correlation = dict(headers).get(h.CORRELATION_ID)
        if correlation is None or self.full:
            return
        self.by_id.setdefault(correlation, []).append(msg)
        self.records += 1
        self.bytes += len(msg.value() or b"")
        if self.records > _HELD_RECORDS or self.bytes > _HELD_BYTES:
            self.by_id, self.full = {}, True


@dataclass
class _Scanned:
    found: list[Message]
    scanned: int
    #: The correlation id of the event looked for, once met (None: not met, or it has none).
    correlation: bytes | None = None
    #: Per partition, the offset up to which records were checked without that correlation
    #: id (only where the pass began, when the records it had read were kept).
    reached: dict[TP, int] = field(default_factory=dict)


def _scan(
    consumer: Consumer,
    starts: dict[TP, int],
    ends: dict[TP, int],
    wanted: set[tuple[str, bytes]],
    timeout_s: float,
    *,
    event_id: bytes | None = None,
) -> _Scanned:
    """The records in ``[start, end)`` of every partition carrying one of the *wanted*
    headers, and how many were read.

    On the first record whose event id is *event_id*, its correlation id joins *wanted*,
    and the records of that correlation id read before are taken from those kept
    (:data:`_HELD_RECORDS`); ``reached`` says what remains to be read for it.
    """
    pending = {tp: end for tp, end in ends.items() if starts.get(tp, end) < end}
    partitions = [TopicPartition(t, p, starts[t, p]) for t, p in pending]
    consumer.assign(partitions)
    if partitions:
        consumer.resume(partitions)  # offsets_for_times paused some: the flag outlives assign
    result = _Scanned([], 0)
    began = {tp: min(starts.get(tp, end), end) for tp, end in ends.items()}
    reached = dict(began)
    meet = None if event_id is None else (h.EVENT_ID, event_id)
    kept = _Kept() if meet is not None else None
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
                result.scanned += 1
                found = msg.headers()
                if found and not wanted.isdisjoint(found):
                    result.found.append(msg)
                    if meet is not None and meet in found:
                        meet = None
                        result.correlation = h.last(found, h.CORRELATION_ID)
                        if result.correlation is not None:
                            wanted.add((h.CORRELATION_ID, result.correlation))
                            result.found += kept.by_id.get(result.correlation, [])
                        result.reached = dict(reached if kept.full else began)
                        kept = None
                elif kept is not None and found:
                    kept.add(msg, found)
                if meet is not None:
                    reached[tp] = offset + 1
            if offset + 1 >= end:
                del pending[tp]
                consumer.pause([TopicPartition(*tp)])
        for position in consumer.position([TopicPartition(t, p) for t, p in pending]):
            tp = (position.topic, position.partition)
            if position.offset >= pending[tp]:  # past trailing control records
                del pending[tp]
    return result


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
