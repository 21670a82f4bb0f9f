"""Reading a topic by hand (``mesh tail``): every partition, no consumer group, values decoded.

A tail never joins a group (no rebalance wait, no committed offsets, invisible to the
agents) and never creates a topic: it checks the name against the full topic list and
``assign()``s partitions. Values are decoded with the writer's schema from the registry,
no model needed; a value that cannot be decoded is reported on its record, not raised.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as dt_time
from decimal import Decimal
from types import TracebackType
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from mesh.config import Settings
from mesh.errors import BrokerError, InputError, MeshError
from mesh.kafka.clients import admin_config, reader_config
from mesh.kafka.compat import high_watermarks
from mesh.kafka.topics import existing_topics
from mesh.serde import Serde

__all__ = ["Tail", "TailRecord", "jsonable", "tail_record", "topic_partitions"]

_POLL_S = 0.2
_BATCH = 500


@dataclass(frozen=True)
class TailRecord:
    """One record as read; ``value`` is the decoded record, or None with ``value_error``."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    raw_value: bytes | None
    value: dict[str, Any] | None
    value_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form: text as UTF-8 where it is, base64 where it is not."""
        return self._fields(jsonable(self.value))

    def to_json_line(self) -> str:
        """``json.dumps(self.to_json())``, in a third of the time: the value is converted by
        the encoder's ``default`` hook instead of a walk over every field first."""
        return json.dumps(self._fields(self.value), default=_json_default)

    def _fields(self, value: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp_ms,
            "key": _text(self.key),
            "headers": {name: _text(raw) for name, raw in self.headers},  # last one wins
            "value": value,
        }
        if self.value_error is not None:
            out["value_error"] = self.value_error
            out["value_base64"] = _b64(self.raw_value or b"")
        return out


def jsonable(value: Any) -> Any:
    """A decoded Avro value as JSON data: ISO-8601 times, UUID and Decimal as text, bytes base64."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime | date | dt_time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, bytes):
        return _b64(value)
    return value


def _json_default(value: Any) -> Any:
    """What :func:`jsonable` does to one value json cannot encode itself."""
    converted = jsonable(value)
    if converted is value:
        raise TypeError(f"{type(value).__name__} is not JSON serializable")
    return converted


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return _b64(data)


class Tail:
    """A positioned reader of one topic; use as a context manager, then iterate :meth:`records`.

    ``positions`` tells where each partition starts once entered: an offset, or
    ``"beginning"``. Starting "at the end" means at the high watermark read when entered,
    so exactly the records produced after that moment are shown. *from_offset* starts
    every partition there instead, and *starts* gives each partition its own offset. With
    *to_end*, reading stops at the high watermarks read when entered (``ends``), so a
    read of what a topic holds terminates; *ends* gives each partition its own
    (exclusive) end instead. A partition is read to its end once the consumer's position
    reaches it: the last offsets of a topic written with transactions are commit markers
    that are never delivered as records. ``idled`` tells whether reading stopped for want
    of records (*idle_timeout_s*) before the ends were reached.
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        *,
        partitions: Sequence[int] | None = None,
        from_beginning: bool = False,
        from_offset: int | None = None,
        to_end: bool = False,
        starts: Mapping[int, int] | None = None,
        ends: Mapping[int, int] | None = None,
        serde: Serde | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.topic = topic
        self._settings = settings
        if partitions is None and starts is not None:
            partitions = list(starts)
        self._partitions = list(partitions) if partitions else None
        self._starts = dict(starts) if starts is not None else None
        self._given_ends = dict(ends) if ends is not None else None
        self._from_beginning = from_beginning
        self._from_offset = from_offset
        self._to_end = to_end
        self._serde = serde  # built on first use: readers of messages() never need one
        self._timeout_s = timeout_s
        self._consumer: Consumer | None = None
        self.positions: dict[int, int | str] = {}
        self.ends: dict[int, int] | None = None
        self.idled = False

    def __enter__(self) -> Tail:
        partitions = topic_partitions(
            self._settings, self.topic, self._partitions, timeout_s=self._timeout_s
        )
        self._consumer = Consumer(reader_config(self._settings, "tail"))
        try:
            starts: dict[int, int]
            if self._given_ends is not None:
                self.ends = self._given_ends
            elif self._to_end or not (
                self._from_beginning or self._from_offset is not None or self._starts
            ):
                # Probed with a consumer of its own: the reader tells its end by its
                # position, which would report the probe's until its first fetch.
                probe = Consumer(reader_config(self._settings, "tail-probe"))
                try:
                    self.ends = high_watermarks(
                        self._settings, probe, self.topic, partitions, timeout_s=self._timeout_s
                    )
                finally:
                    probe.close()
            if self._starts is not None:
                starts = {p: self._starts[p] for p in partitions}
                self.positions = dict(starts)
            elif self._from_offset is not None:
                starts = dict.fromkeys(partitions, self._from_offset)
                self.positions = dict(starts)
            elif self._from_beginning:
                starts = dict.fromkeys(partitions, OFFSET_BEGINNING)
                self.positions = dict.fromkeys(partitions, "beginning")
            else:
                assert self.ends is not None
                starts = dict(self.ends)
                self.positions = dict(starts)
            if not (self._to_end or self._given_ends is not None):
                self.ends = None
            self._consumer.assign([TopicPartition(self.topic, p, o) for p, o in starts.items()])
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def records(
        self, *, count: int | None = None, idle_timeout_s: float | None = None
    ) -> Iterator[TailRecord]:
        """Records as they arrive; stops after *count*, or *idle_timeout_s* without one."""
        if self._serde is None:
            self._serde = Serde.from_settings(self._settings)
        for msg in self.messages(count=count, idle_timeout_s=idle_timeout_s):
            yield tail_record(msg, self._serde)

    def messages(
        self, *, count: int | None = None, idle_timeout_s: float | None = None
    ) -> Iterator[Message]:
        """Like :meth:`records`, undecoded: for readers that need only keys and headers."""
        for batch in self.batches(count=count, idle_timeout_s=idle_timeout_s):
            yield from batch

    def batches(
        self, *, count: int | None = None, idle_timeout_s: float | None = None
    ) -> Iterator[list[Message]]:
        """Like :meth:`messages`, a consumed batch at a time (never empty): a reader that
        does its work per batch keeps up with the broker."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("enter the Tail (with Tail(...) as tail:) before reading")
        ends = self.ends
        next_offsets = {p: o for p, o in self.positions.items() if isinstance(o, int)}
        seen = 0
        last = time.monotonic()
        while count is None or seen < count:
            if ends is not None and self._reached(consumer, ends, next_offsets):
                return
            wait_s = _POLL_S
            if idle_timeout_s is not None:
                wait_s = min(wait_s, max(idle_timeout_s - (time.monotonic() - last), 0.0))
            batch: list[Message] = []
            for msg in consumer.consume(_BATCH, timeout=wait_s):
                error = msg.error()
                if error is not None:
                    if error.fatal():
                        raise BrokerError(f"reading {self.topic}: {error.str()}")
                    continue  # transient (a broker reconnecting): librdkafka retries
                if ends is not None:
                    partition, offset = msg.partition() or 0, msg.offset() or 0
                    next_offsets[partition] = offset + 1
                    if offset + 1 >= ends[partition]:  # nothing more wanted from it
                        consumer.pause([TopicPartition(self.topic, partition)])
                    if offset >= ends[partition]:
                        continue  # produced after the snapshot
                batch.append(msg)
            if count is not None:
                del batch[count - seen :]
            if batch:
                yield batch
                seen += len(batch)
                last = time.monotonic()
            elif idle_timeout_s is not None and time.monotonic() - last >= idle_timeout_s:
                self.idled = ends is not None and not self._reached(consumer, ends, next_offsets)
                return

    def _reached(
        self, consumer: Consumer, ends: dict[int, int], next_offsets: dict[int, int]
    ) -> bool:
        """Every partition read up to its end: the last record delivered, or the position
        past it (control records, compacted-away offsets), or a log trimmed past the end."""
        behind = [p for p, end in ends.items() if next_offsets.get(p, 0) < end]
        if not behind:
            return True
        for position in consumer.position([TopicPartition(self.topic, p) for p in behind]):
            p = position.partition
            if position.offset >= ends[p]:
                next_offsets[p] = position.offset
                continue
            low, _ = consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
            if low < ends[p]:
                return False
        return True


def topic_partitions(
    settings: Settings, topic: str, partitions: Sequence[int] | None, *, timeout_s: float = 10.0
) -> list[int]:
    """The partitions of *topic* to read (all when *partitions* is None), checked to exist.

    Lists all topics rather than asking for one by name, which would create it on Tansu.
    """
    sizes = existing_topics(AdminClient(admin_config(settings)), timeout_s=timeout_s)
    size = sizes.get(topic)
    if size is None:
        raise InputError(f"topic {topic!r} does not exist")
    if partitions is None:
        return list(range(size))
    unknown = sorted({p for p in partitions if not 0 <= p < size})
    if unknown:
        raise InputError(
            f"topic {topic!r} has partitions 0-{size - 1}, not {', '.join(map(str, unknown))}"
        )
    return sorted(set(partitions))


def tail_record(msg: Message, serde: Serde) -> TailRecord:
    """A consumed *msg* with its value decoded, or the reason it could not be."""
    raw = msg.value()
    value: dict[str, Any] | None = None
    value_error: str | None = None
    if raw is not None:  # a tombstone has no value and no error
        try:
            value = serde.decode_record(raw)
        except MeshError as exc:  # undecodable bytes, or the registry failed
            value_error = str(exc)
    _, timestamp_ms = msg.timestamp()
    return TailRecord(
        topic=msg.topic() or "",
        partition=msg.partition() or 0,
        offset=msg.offset() or 0,
        timestamp_ms=timestamp_ms if timestamp_ms >= 0 else None,
        key=msg.key(),
        headers=tuple(msg.headers() or ()),
        raw_value=raw,
        value=value,
        value_error=value_error,
    )
