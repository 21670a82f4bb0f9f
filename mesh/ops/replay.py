"""Replaying history (``mesh replay``): re-read a range of one topic and hand it to a sink.

A replay is planned before anything is read: per partition, the first offset to read and
the (exclusive) end, resolved from offsets, times or a consumer group's commits. The
default end is the high watermark snapshotted when planning, so a run terminates even
while producers keep writing. Ends come from :func:`mesh.kafka.compat.watermarks`
and times from :func:`mesh.kafka.compat.offsets_for_times`, which give Kafka's answers
on brokers that get them wrong, so the range is exact on Tansu too.

Reading never joins a consumer group (partitions are assigned, nothing is committed),
so the agents' groups never see a replay. Where the records go is a
:class:`~mesh.ops.sinks.Sink`.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Protocol

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from mesh import headers as h
from mesh.config import Settings
from mesh.errors import BrokerError, InputError
from mesh.kafka.clients import admin_config, reader_config
from mesh.kafka.compat import TP, offsets_for_times, watermarks
from mesh.kafka.reader import Tail, topic_partitions

__all__ = [
    "ONE_END",
    "ONE_START",
    "OnProgress",
    "PartitionRange",
    "RecordFilter",
    "ReplayPlan",
    "ReplaySummary",
    "Sink",
    "StartAt",
    "StopAt",
    "group_offsets",
    "parse_source",
    "parse_time_ms",
    "plan_replay",
    "probe_consumer",
    "replay",
]

#: Progress callback: (records read so far, records in the plan or None when following).
OnProgress = Callable[[int, int | None], None]

ONE_START = "give one start: --from-beginning, --from-offset, --from-time, --since or --from-group"
ONE_END = "give one end: --to-offset, --to-time, --limit or --follow"


@dataclass(frozen=True)
class StartAt:
    """Where each partition starts; at most one field set (none: the beginning).

    ``offset`` below zero counts back from the end; ``group`` starts at that consumer
    group's committed offsets (the beginning where it has none).
    """

    beginning: bool = False
    offset: int | None = None
    time_ms: int | None = None
    group: str | None = None

    def __post_init__(self) -> None:
        given = [self.beginning, self.offset is not None, self.time_ms is not None, self.group]
        if sum(map(bool, given)) > 1:
            raise InputError(ONE_START)


@dataclass(frozen=True)
class StopAt:
    """Where each partition ends (exclusive); at most one field set (none: the end seen now)."""

    offset: int | None = None
    time_ms: int | None = None
    follow: bool = False

    def __post_init__(self) -> None:
        given = [self.offset is not None, self.time_ms is not None, self.follow]
        if sum(given) > 1:
            raise InputError(ONE_END)


@dataclass(frozen=True)
class PartitionRange:
    partition: int
    start: int
    end: int | None  # exclusive; None while following

    @property
    def size(self) -> int | None:
        return None if self.end is None else max(self.end - self.start, 0)


@dataclass(frozen=True)
class ReplayPlan:
    """What a replay reads: one topic, a range per partition."""

    topic: str
    ranges: tuple[PartitionRange, ...]

    @property
    def size(self) -> int | None:
        """Records in the ranges (filters not applied), or None while following."""
        sizes = [r.size for r in self.ranges]
        return None if None in sizes else sum(s or 0 for s in sizes)

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partitions": [
                {"partition": r.partition, "start": r.start, "end": r.end} for r in self.ranges
            ],
            "records": self.size,
        }


def parse_source(source: str) -> tuple[str, list[int] | None]:
    """``topic`` or ``topic:0,2`` -> (topic, partitions or None for all)."""
    topic, sep, rest = source.partition(":")
    if not sep:
        return topic, None
    try:
        partitions = [int(p) for p in rest.split(",")]
    except ValueError:
        raise InputError(f"{source!r}: partitions are numbers, e.g. {topic}:0,2") from None
    return topic, partitions


def plan_replay(
    settings: Settings,
    topic: str,
    *,
    partitions: Iterable[int] | None = None,
    start: StartAt = StartAt(),
    stop: StopAt = StopAt(),
    timeout_s: float = 10.0,
) -> ReplayPlan:
    """Resolve *start* and *stop* to offsets per partition; bad input raises InputError."""
    now_ms = int(time.time() * 1000)
    for name, ts in (("--from-time", start.time_ms), ("--to-time", stop.time_ms)):
        if ts is not None and ts > now_ms:
            raise InputError(f"{name} is in the future")
    if start.time_ms is not None and stop.time_ms is not None and stop.time_ms <= start.time_ms:
        raise InputError("--to-time must be after --from-time")
    parts = topic_partitions(
        settings, topic, None if partitions is None else list(partitions), timeout_s=timeout_s
    )
    consumer = probe_consumer(settings)
    try:
        tps = [(topic, p) for p in parts]
        lows, highs = watermarks(settings, consumer, tps, timeout_s=timeout_s)
        starts = _starts(
            settings, consumer, tps, start, lows=lows, highs=highs, timeout_s=timeout_s
        )
        ends: dict[TP, int | None]
        if stop.follow:
            ends = dict.fromkeys(tps)
        elif stop.offset is not None:
            ends = {tp: min(max(stop.offset, lows[tp]), highs[tp]) for tp in tps}
        elif stop.time_ms is not None:
            times = dict.fromkeys(tps, stop.time_ms)
            ends = dict(offsets_for_times(consumer, times, highs, timeout_s=timeout_s))
        else:
            ends = dict(highs)
    finally:
        consumer.close()
    ranges = []
    for tp in tps:
        end = ends[tp]
        ranges.append(
            PartitionRange(tp[1], starts[tp] if end is None else min(starts[tp], end), end)
        )
    return ReplayPlan(topic, tuple(ranges))


def _starts(
    settings: Settings,
    consumer: Consumer,
    tps: list[TP],
    start: StartAt,
    *,
    lows: dict[TP, int],
    highs: dict[TP, int],
    timeout_s: float,
) -> dict[TP, int]:
    if start.offset is not None:
        if start.offset < 0:  # that many before the end
            return {tp: max(highs[tp] + start.offset, lows[tp]) for tp in tps}
        return {tp: min(max(start.offset, lows[tp]), highs[tp]) for tp in tps}
    if start.time_ms is not None:
        times = dict.fromkeys(tps, start.time_ms)
        return offsets_for_times(consumer, times, highs, timeout_s=timeout_s)
    if start.group is not None:
        committed = group_offsets(settings, start.group, tps, timeout_s=timeout_s)
        if not committed:
            raise InputError(f"group {start.group!r} has no committed offsets on {tps[0][0]!r}")
        return {tp: min(max(committed.get(tp, lows[tp]), lows[tp]), highs[tp]) for tp in tps}
    return dict(lows)


def group_offsets(
    settings: Settings, group: str, tps: Iterable[TP], *, timeout_s: float = 10.0
) -> dict[TP, int]:
    """The committed offsets of *group* on *tps* (partitions without one are left out)."""
    admin = AdminClient(admin_config(settings))
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in tps])
    try:
        (future,) = admin.list_consumer_group_offsets([request], request_timeout=timeout_s).values()
        answer = future.result()
    except Exception as exc:  # KafkaException: broker gone, or no such group
        raise BrokerError(f"cannot read the offsets of group {group!r}: {exc}") from None
    return {
        (tp.topic, tp.partition): tp.offset
        for tp in answer.topic_partitions
        if tp.offset >= 0 and tp.error is None
    }


def probe_consumer(settings: Settings) -> Consumer:
    """A consumer for look-ups only: never subscribes, never commits."""
    return Consumer(reader_config(settings, "replay-plan", **{"auto.offset.reset": "earliest"}))


@dataclass(frozen=True)
class RecordFilter:
    """Which records a replay passes on; every given condition must hold.

    ``error_class`` matches ``mesh.exception.class`` exactly or by a dotted tail
    (``BadInput`` matches ``mypkg.errors.BadInput``); ``reason`` is ``mesh.dlq.reason``.
    """

    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    event_type: str | None = None
    correlation_id: str | None = None
    error_class: str | None = None
    reason: str | None = None

    @cached_property
    def _wanted(self) -> list[tuple[str, bytes]]:
        """Every header condition, as (name, value) pairs."""
        return [
            *self.headers,
            *(
                (n, v.encode())
                for n, v in (
                    (h.EVENT_TYPE, self.event_type),
                    (h.CORRELATION_ID, self.correlation_id),
                    (h.DLQ_REASON, self.reason),
                )
                if v is not None
            ),
        ]

    @property
    def passes_all(self) -> bool:
        return self.key is None and not self._wanted and self.error_class is None

    def matches(self, msg: Message) -> bool:
        if self.key is not None and msg.key() != self.key:
            return False
        wanted = self._wanted
        if not wanted and self.error_class is None:
            return True
        found = dict(msg.headers() or ())  # the last value of a repeated header wins
        if any(found.get(name) != value for name, value in wanted):
            return False
        if self.error_class is not None:
            name = (found.get(h.EXCEPTION_CLASS) or b"").decode("utf-8", "replace")
            return name == self.error_class or name.endswith("." + self.error_class)
        return True


@dataclass
class ReplaySummary:
    """What a replay did: read, matched, written (or would write), skipped, failed; and
    whether it stopped idle short of its range's end (``incomplete``)."""

    plan: ReplayPlan
    dry_run: bool
    read: int = 0
    matched: int = 0
    written: int = 0
    skipped: int = 0
    failed: int = 0
    incomplete: bool = False
    seconds: float = 0.0
    sample: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_json(),
            "dry_run": self.dry_run,
            "read": self.read,
            "matched": self.matched,
            "written": self.written,
            "skipped": self.skipped,
            "failed": self.failed,
            "incomplete": self.incomplete,
            "seconds": round(self.seconds, 3),
            "sample": self.sample,
            "problems": self.problems,
        }


class Sink(Protocol):
    """Receives the matching records of a replay (see :mod:`mesh.ops.sinks`) a batch at a
    time, then is closed once; it counts what it wrote, skipped or failed on the summary."""

    dry_run: bool

    def write(self, msgs: list[Message], summary: ReplaySummary) -> None: ...

    def close(self, summary: ReplaySummary) -> None: ...


def replay(
    settings: Settings,
    plan: ReplayPlan,
    sink: Sink,
    *,
    where: RecordFilter = RecordFilter(),
    count: int | None = None,
    rate_per_s: float | None = None,
    on_progress: OnProgress | None = None,
    idle_timeout_s: float = 30.0,
) -> ReplaySummary:
    """Read *plan*, pass the records *where* matches to *sink*.

    Stops at the plan's ends, after *count* matched records, or (following) on Ctrl-C.
    Short of its ends, it also stops after *idle_timeout_s* without a record, and says so
    in ``problems``: the rest of the range may be in a transaction still open (a
    ``read_committed`` reader waits for it) or may never come.
    *rate_per_s* caps how fast records reach the sink (one at a time, then). Records go
    to the sink as consumed, a batch at a time: per-record work is what limits a copy.
    """
    summary = ReplaySummary(plan, dry_run=sink.dry_run)
    began = time.monotonic()
    ranges = {r.partition: r for r in plan.ranges}
    following = plan.size is None
    with (
        Tail(
            settings,
            plan.topic,
            starts={p: r.start for p, r in ranges.items()},
            ends=None if following else {p: r.end or 0 for p, r in ranges.items()},
        ) as reader,
        _rare_collections(),
    ):
        try:
            matches = None if where.passes_all else where.matches
            batches: Iterable[list[Message]] = reader.batches(
                idle_timeout_s=None if following else idle_timeout_s
            )
            if rate_per_s is not None:
                batches = ([msg] for batch in batches for msg in batch)
            for batch in batches:
                read = len(batch)
                chosen = batch if matches is None else [m for m in batch if matches(m)]
                wanted = None if count is None else count - summary.matched
                done = wanted is not None and len(chosen) >= wanted
                if done:  # the last batch: read up to its last wanted match only
                    del chosen[wanted:]
                    read = batch.index(chosen[-1]) + 1 if chosen else 0
                summary.read += read
                if on_progress is not None:
                    on_progress(summary.read, plan.size)
                if chosen:
                    summary.matched += len(chosen)
                    if rate_per_s is not None:
                        _pace(began, summary.matched, rate_per_s)
                    sink.write(chosen, summary)
                if done:
                    break
        except KeyboardInterrupt:
            if not following:
                raise
        finally:
            sink.close(summary)
        if reader.idled:
            summary.incomplete = True
            summary.problems.append(
                f"stopped: no record for {idle_timeout_s:g}s before the end of the range "
                "(an open transaction, or records that never came); what was read is reported"
            )
    if on_progress is not None:
        on_progress(summary.read, plan.size)
    summary.seconds = time.monotonic() - began
    return summary


@contextlib.contextmanager
def _rare_collections() -> Iterator[None]:
    """Look for garbage cycles rarely while records stream through.

    Each record leaves a few short-lived containers that reference counting frees; at the
    default threshold the cycle collector ran every 700 of them and took about a tenth
    of a copy's time. The previous thresholds are restored afterwards.
    """
    thresholds = gc.get_threshold()
    gc.set_threshold(100_000, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


def _pace(began: float, sent: int, rate_per_s: float) -> None:
    wait_s = began + (sent - 1) / rate_per_s - time.monotonic()
    if wait_s > 0:
        time.sleep(wait_s)


def parse_time_ms(text: str, *, option: str) -> int:
    """ISO-8601 with a zone (``2026-11-26T08:00:00Z``) or epoch milliseconds -> epoch ms."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(
            f"{option} {text!r}: use ISO-8601 with a zone (2026-11-26T08:00:00Z) or epoch ms"
        ) from None
    if moment.tzinfo is None:
        raise InputError(f"{option} {text!r} has no zone: add Z or +01:00")
    return int(moment.timestamp() * 1000)
