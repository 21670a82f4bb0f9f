"""Reading a topic by hand (``mesh tail``): every partition, no consumer group, values decoded.

A tail never joins a group (no rebalance wait, no committed offsets, invisible to the
agents) and never creates a topic: it checks the name against the full topic list and
``assign()``s partitions. Values are decoded with the writer's schema from the registry,
no model needed; a value that cannot be decoded is reported on its record, not raised.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as dt_time
from decimal import Decimal
from types import TracebackType
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from mesh._broker_compat import high_watermarks
from mesh.config import Settings
from mesh.errors import BrokerError, InputError, MeshError
from mesh.serde import Serde
from mesh.topics import existing_topics

__all__ = ["Tail", "TailRecord", "jsonable"]

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
        out: dict[str, Any] = {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp_ms,
            "key": _text(self.key),
            "headers": {name: _text(raw) for name, raw in self.headers},  # last one wins
            "value": jsonable(self.value),
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
    so exactly the records produced after that moment are shown.
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        *,
        partitions: Sequence[int] | None = None,
        from_beginning: bool = False,
        serde: Serde | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.topic = topic
        self._settings = settings
        self._partitions = list(partitions) if partitions else None
        self._from_beginning = from_beginning
        self._serde = serde or Serde.from_settings(settings)
        self._timeout_s = timeout_s
        self._consumer: Consumer | None = None
        self.positions: dict[int, int | str] = {}

    def __enter__(self) -> Tail:
        partitions = self._check_partitions()
        self._consumer = Consumer(
            self._settings.kafka_config(
                **{
                    "group.id": f"mesh-tail-{uuid.uuid4().hex[:12]}",  # never joined nor committed
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "fetch.wait.max.ms": 100,  # Tansu does not wake a waiting fetch
                }
            )
        )
        try:
            if self._from_beginning:
                starts = dict.fromkeys(partitions, OFFSET_BEGINNING)
                self.positions = dict.fromkeys(partitions, "beginning")
            else:
                starts = high_watermarks(
                    self._consumer, self.topic, partitions, timeout_s=self._timeout_s
                )
                self.positions = dict(starts)
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
        if self._consumer is None:
            raise RuntimeError("enter the Tail (with Tail(...) as tail:) before reading")
        seen = 0
        last = time.monotonic()
        while count is None or seen < count:
            wait_s = _POLL_S
            if idle_timeout_s is not None:
                wait_s = min(wait_s, max(idle_timeout_s - (time.monotonic() - last), 0.0))
            messages = self._consumer.consume(_BATCH, timeout=wait_s)
            for msg in messages:
                error = msg.error()
                if error is not None:
                    if error.fatal():
                        raise BrokerError(f"reading {self.topic}: {error.str()}")
                    continue  # transient (a broker reconnecting): librdkafka retries
                yield self._record(msg)
                seen += 1
                last = time.monotonic()
                if count is not None and seen >= count:
                    return
            if idle_timeout_s is not None and time.monotonic() - last >= idle_timeout_s:
                return

    def _check_partitions(self) -> list[int]:
        admin = AdminClient(self._settings.kafka_config())
        sizes = existing_topics(admin, timeout_s=self._timeout_s)
        size = sizes.get(self.topic)
        if size is None:
            raise InputError(f"topic {self.topic!r} does not exist")
        if self._partitions is None:
            return list(range(size))
        unknown = sorted({p for p in self._partitions if not 0 <= p < size})
        if unknown:
            raise InputError(
                f"topic {self.topic!r} has partitions 0-{size - 1}, "
                f"not {', '.join(map(str, unknown))}"
            )
        return sorted(set(self._partitions))

    def _record(self, msg: Message) -> TailRecord:
        raw = msg.value()
        value: dict[str, Any] | None = None
        value_error: str | None = None
        if raw is not None:  # a tombstone has no value and no error
            try:
                value = self._serde.decode_record(raw)
            except MeshError as exc:  # undecodable bytes, or the registry failed
                value_error = str(exc)
        _, timestamp_ms = msg.timestamp()
        return TailRecord(
            topic=msg.topic() or self.topic,
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            timestamp_ms=timestamp_ms if timestamp_ms >= 0 else None,
            key=msg.key(),
            headers=tuple(msg.headers() or ()),
            raw_value=raw,
            value=value,
            value_error=value_error,
        )
