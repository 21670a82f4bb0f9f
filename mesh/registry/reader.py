"""The reader: a thread consuming ``_schemas`` from the beginning into the store.

It assigns partition 0 directly (no consumer group), hands each batch to the event loop
where the store is changed, and tracks the consumed position so that a writer can wait
until its own record is in the store before answering. ``enable.partition.eof`` tells it
when it has caught up at start-up.

A record carrying an epoch that is not the current primary's is ignored (see
:mod:`mesh.registry.election`) and reported to ``on_rejected``. A record that no mesh
registry writes (one of Confluent Schema Registry or Karapace: no epoch header, or a kind
such as ``NOOP`` or ``DELETE_SUBJECT``) is noted in :attr:`Reader.foreign_offset`: the
server refuses to start on such a topic.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from mesh.registry import records
from mesh.registry.errors import ApiError
from mesh.registry.records import Announcement, Record
from mesh.registry.store import Store

__all__ = ["Reader"]

log = logging.getLogger(__name__)

_BATCH = 1000
_POLL_S = 0.1


class Reader:
    """Keeps a :class:`Store` equal to the fold of the topic's valid records."""

    def __init__(
        self,
        *,
        kafka: Mapping[str, Any],
        topic: str,
        store: Store,
        tuning: Mapping[str, Any] | None = None,
    ) -> None:
        """*tuning*: the broker's client tuning (:func:`mesh.kafka.compat.tuning`), which
        the user's properties in *kafka* override."""
        self._topic = topic
        self._store = store
        #: Told about each ignored record (the primary re-writes the key's valid value).
        self.on_rejected: Callable[[Record], None] | None = None
        self._consumer = Consumer(
            {
                **(tuning or {}),
                **kafka,
                "group.id": f"{topic}-reader-{uuid.uuid4().hex}",  # required, never joined
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        self._position = 0
        self._caught_up = asyncio.Event()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-reader", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started_at = 0.0
        #: Offset of the first record not written by a mesh registry, if any.
        self.foreign_offset: int | None = None
        self._probe = Consumer({**kafka, "group.id": f"{topic}-probe-{uuid.uuid4().hex}"})
        self._probe_lock = asyncio.Lock()

    @property
    def position(self) -> int:
        """The offset of the next record to apply: everything before it is in the store."""
        return self._position

    def start(self) -> None:
        """Start consuming; call from the event loop that serves the store."""
        self._loop = asyncio.get_running_loop()
        self._started_at = time.monotonic()
        self._consumer.assign([TopicPartition(self._topic, 0, OFFSET_BEGINNING)])
        self._thread.start()

    async def caught_up(self) -> None:
        """Return once every record present at start-up is in the store."""
        await self._caught_up.wait()

    async def wait_for(self, position: int, *, timeout_s: float) -> None:
        """Return once the store holds every record before offset *position*."""
        if self._position >= position:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (position, future)
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise ApiError.timed_out(
                f"the registry did not read offset {position - 1} of {self._topic} "
                f"within {timeout_s:.0f}s"
            ) from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def catch_up(self, *, timeout_s: float) -> None:
        """Return once the store holds every record the topic held when called.

        The end is Kafka's high watermark (ListOffsets). Tansu answers with the offset after
        the first record of the newest batch instead: the same for a registration, which is
        a batch of one record.
        """
        deadline = asyncio.get_running_loop().time() + timeout_s
        partition = TopicPartition(self._topic, 0)
        async with self._probe_lock:  # a consumer is not for concurrent calls
            try:
                _, end = await asyncio.to_thread(
                    self._probe.get_watermark_offsets, partition, timeout=timeout_s
                )
            except KafkaException as exc:
                raise ApiError.timed_out(f"cannot read the end of {self._topic}: {exc}") from None
        remaining = deadline - asyncio.get_running_loop().time()
        await self.wait_for(end, timeout_s=max(remaining, 0.001))

    def close(self) -> None:
        self._probe.close()
        self._stopping.set()
        if self._thread.ident is None:  # never started
            self._consumer.close()
        else:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        assert self._loop is not None
        try:
            while not self._stopping.is_set():
                # consume(n, timeout) waits for n messages or the timeout: poll for the first
                # message, then take what is already fetched without waiting.
                first = self._consumer.poll(_POLL_S)
                if first is None or self._stopping.is_set():
                    continue
                batch = [first, *self._consumer.consume(_BATCH, 0)]
                self._loop.call_soon_threadsafe(self._apply, batch)
        except Exception:  # loud, not silent: writes now time out and reads go stale
            log.exception("the reader of %s stopped", self._topic)
        finally:
            self._consumer.close()

    def _apply(self, batch: list[Message]) -> None:
        for message in batch:
            error = message.error()
            if error is None:
                self._position = message.offset() + 1
                self._apply_one(message)
            elif error.code() == KafkaError._PARTITION_EOF:
                if not self._caught_up.is_set():
                    log.info(
                        "read %d records of %s in %.2fs",
                        self._position,
                        self._topic,
                        time.monotonic() - self._started_at,
                    )
                self._caught_up.set()
            else:
                log.warning("reading %s: %s", self._topic, error.str())
        for waiter in [w for w in self._waiters if w[0] <= self._position]:
            self._waiters.remove(waiter)
            if not waiter[1].done():
                waiter[1].set_result(None)

    def _apply_one(self, message: Message) -> None:
        offset = message.offset()
        try:
            record = records.decode(message.key(), message.value())
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            log.warning(
                "skipping malformed record at offset %d of %s: %s", offset, self._topic, exc
            )
            return
        epoch = _epoch(message)
        if self.foreign_offset is None and (
            record is None or (epoch is None and not isinstance(record, Announcement))
        ):
            self.foreign_offset = offset
        if record is None:
            return
        if isinstance(record, Announcement):
            log.info("primary: %s (epoch %d)", record.url, offset)
        elif epoch is not None and not self._store.is_valid(epoch=epoch, offset=offset):
            log.warning("ignoring record at offset %d written by a former primary", offset)
            if self.on_rejected is not None:
                self.on_rejected(record)
            return
        self._store.apply(record, offset=offset)


def _epoch(message: Message) -> int | None:
    for name, value in message.headers() or ():
        if name == records.EPOCH_HEADER and value is not None:
            try:
                return int(value)
            except ValueError:
                return -1  # garbage: belongs to no epoch, so the record is ignored
    return None
