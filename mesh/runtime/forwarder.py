"""The delay forwarder: moves due records out of the delay topics (see :mod:`mesh.runtime.delay`).

Every ``mesh run`` process runs one, in the consumer group of its delay namespace
(``mesh.delay.{namespace}``), so the namespace's delay topics are shared among its
processes and a process that dies hands its partitions to the others. A record not due
yet parks its partition (:class:`~mesh.runtime.parking.Parking`, as retry topics do); a
due one is produced, key, value and headers intact, to the next bucket or to its target
topic, and its offset is stored for commit only after the broker acknowledged that
(acks=all, idempotent): a crash forwards a record again rather than losing it.

A forward the broker refuses for good (:func:`mesh.kafka.errors.is_permanent`: too
large, not authorized, no such topic) would be refused on every try and hold up every
record behind it, so it goes to ``mesh.delay.{namespace}.dlq`` instead, with the failure
headers and ``mesh.dlq.reason=refused`` (without its value, and ``mesh.dlq.value-bytes``,
if even the dead letter is too large). Any other refusal rewinds the batch and tries again.

It runs on its own thread with its own producer: the app's producer serves its delivery
callbacks on the event loop, where the agents' bookkeeping lives.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from mesh.config import Settings
from mesh.errors import PublishError
from mesh.headers import DLQ_VALUE_BYTES
from mesh.kafka.clients import agent_consumer_config, producer_config
from mesh.kafka.errors import is_permanent, is_too_large
from mesh.runtime.dead_letter import dead_letter_headers
from mesh.runtime.delay import (
    BUCKETS_MS,
    bucket_for,
    delay_dead_letter_topic,
    delay_group,
    delay_topic,
    leaves_at_ms,
    namespace_of,
    target_of,
)
from mesh.runtime.failure import DeadLetterReason, ErrorKind
from mesh.runtime.parking import Parking
from mesh.runtime.publisher import Record, produce
from mesh.runtime.retry import due_at_ms

__all__ = ["FORWARDER", "DelayForwarder"]

log = logging.getLogger(__name__)

#: ``mesh.dlq.agent`` of the forwarder's dead letters.
FORWARDER = "delay-forwarder"
#: The longest wait for a record while nothing is parked: the delay of :meth:`stop`, and
#: two wakeups a second when idle (a record ends the wait: see ``_fetched``).
_IDLE_WAIT_S = 0.5
_BATCH = 500
_RETRY_S = 1.0  # after the broker refused a forward


class DelayForwarder:
    """Consumes the delay topics and forwards each record when it is due."""

    def __init__(self, settings: Settings, *, consumer_config: dict[str, Any] | None = None):
        namespace = namespace_of(settings)
        self._group = delay_group(namespace)
        self._namespace = namespace
        self._consumer = Consumer(
            agent_consumer_config(settings, group_id=self._group, overrides=consumer_config)
        )
        self._producer = Producer(producer_config(settings))
        self._topics = {delay_topic(bucket, namespace) for bucket in BUCKETS_MS}
        self._parked = Parking(self._consumer, leaves_at_ms)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.failed: BaseException | None = None  # set when the thread died of a bug

    def start(self) -> None:
        self._consumer.subscribe(
            sorted(self._topics), on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        self._thread = threading.Thread(target=self._run, name="mesh-delay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the batch at hand, commit what was forwarded, leave the group."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        try:
            self._forward_until_stopped()
        except BaseException as exc:  # a dead forwarder would strand delayed events silently
            log.exception("delay forwarder stopped")
            self.failed = exc
        finally:
            with contextlib.suppress(KafkaException):  # nothing stored since the last commit
                self._consumer.commit(asynchronous=False)
            self._consumer.close()

    def _forward_until_stopped(self) -> None:
        while not self._stopping.is_set():
            timeout_s = self._parked.release_due(_IDLE_WAIT_S) if self._parked else _IDLE_WAIT_S
            try:
                batch = self._fetched(timeout_s)
            except KafkaException as exc:
                log.error("delay forwarder: poll failed: %s", exc)
                continue
            due = [m for m in self._parked.hold(batch, self._topics) if _is_record(m)]
            if due:
                self._forward(due)

    def _fetched(self, timeout_s: float) -> list[Message]:
        """Up to a batch of records: the first to come within *timeout_s*, then those
        already fetched. (``consume`` would wait out its timeout unless the batch filled.)"""
        first = self._consumer.poll(timeout_s)
        if first is None:
            return []
        return [first, *self._consumer.consume(_BATCH - 1, timeout=0)]

    def _forward(self, batch: list[Message]) -> None:
        """Produce *batch* on; store its offsets once all were acknowledged or dead-lettered
        (refused for good), else rewind."""
        now_ms = int(time.time() * 1000)
        forwards: dict[int, Record] = {}
        for i, msg in enumerate(batch):
            topic = _destination(msg, now_ms, self._namespace)
            if topic is not None:
                forwards[i] = Record(topic, msg.value(), msg.key(), msg.headers() or [])
        refused = self._write(forwards)
        if refused and all(is_permanent(err) for err in refused.values()):
            refused = self._dead_letter(
                {i: (batch[i], forwards[i].topic, err) for i, err in refused.items()}
            )
        if refused:
            # Send the whole batch again: duplicates at worst, never a loss.
            log.error(
                "delay forwarder: %d forwards not acknowledged (%s); retrying",
                len(refused),
                next(iter(refused.values())).str(),
            )
            firsts: dict[tuple[str, int], int] = {}
            for msg in batch:
                firsts.setdefault((msg.topic(), msg.partition()), msg.offset())
            for (topic, partition), offset in firsts.items():
                with contextlib.suppress(KafkaException):  # revoked meanwhile
                    self._consumer.seek(TopicPartition(topic, partition, offset))
            time.sleep(_RETRY_S)
            return
        lasts = {(msg.topic(), msg.partition()): msg.offset() for msg in batch}
        self._consumer.store_offsets(
            offsets=[TopicPartition(t, p, offset + 1) for (t, p), offset in lasts.items()]
        )

    def _dead_letter(
        self, refused: dict[int, tuple[Message, str, KafkaError]]
    ) -> dict[int, KafkaError]:
        """Write each refused record to the namespace's dead-letter topic; what that refused.

        A dead letter too large to write goes again without its value.
        """
        topic = delay_dead_letter_topic(self._namespace)
        letters: dict[int, Record] = {}
        for i, (msg, target, err) in refused.items():
            log.error(
                "delay forwarder: %s:%d:%d refused for good by %s (%s); dead-lettered to %s",
                msg.topic(),
                msg.partition(),
                msg.offset(),
                target,
                err.str(),
                topic,
            )
            error = PublishError(f"forward to {target} refused: {err.name()}: {err.str()}")
            headers = dead_letter_headers(
                msg,
                retried=False,
                kind=ErrorKind.FATAL,
                error=error,
                attempt=1,
                group_id=self._group,
                agent=FORWARDER,
                reason=DeadLetterReason.REFUSED,
            )
            letters[i] = Record(topic, msg.value(), msg.key(), headers)
        failed = self._write(letters)
        too_large = {i: letters[i] for i, err in failed.items() if is_too_large(err)}
        if too_large and len(too_large) == len(failed):
            failed = self._write({i: _without_value(letter) for i, letter in too_large.items()})
        return failed

    def _write(self, records: dict[int, Record]) -> dict[int, KafkaError]:
        """Produce *records* and wait for the broker: the errors of those not acknowledged."""
        refused: dict[int, KafkaError] = {}
        for i, record in records.items():
            try:
                produce(self._producer, *record, on_delivery=functools.partial(_note, refused, i))
            except KafkaException as exc:  # refused before queuing (too large, invalid)
                refused[i] = exc.args[0]
        if self._producer.flush(30):  # still queued: not acknowledged, may yet be delivered
            timed_out = KafkaError(KafkaError._MSG_TIMED_OUT)
            return {i: refused.get(i, timed_out) for i in records}
        return refused

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        if partitions:  # a pause flag survives revoke and re-assign: clear it
            consumer.resume(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._parked.drop((p.topic, p.partition) for p in partitions)
        with contextlib.suppress(KafkaException):
            consumer.commit(asynchronous=False)


def _note(refused: dict[int, KafkaError], i: int, err: KafkaError | None, _msg: Message) -> None:
    if err is not None:
        refused[i] = err


def _without_value(letter: Record) -> Record:
    size = (DLQ_VALUE_BYTES, str(len(letter.value or b"")).encode())
    return letter._replace(value=None, headers=[*letter.headers, size])


def _destination(msg: Message, now_ms: int, namespace: str) -> str | None:
    """The target topic once due, else the delay topic for the time left.

    None for a record without ``mesh.delay.target`` or ``mesh.due-ts`` (no mesh producer
    writes one): it is logged and passed over.
    """
    target, due_ms = target_of(msg), due_at_ms(msg)
    if target is None or due_ms is None:
        log.error(
            "delay forwarder: %s:%d:%d has no mesh.delay.target or mesh.due-ts; skipped",
            msg.topic(),
            msg.partition(),
            msg.offset(),
        )
        return None
    left_ms = due_ms - now_ms
    return target if left_ms <= 0 else delay_topic(bucket_for(left_ms), namespace)


def _is_record(msg: Message) -> bool:
    error = msg.error()
    if error is not None and error.code() != KafkaError._PARTITION_EOF:
        log.warning("delay forwarder: consumer error: %s", error)
    return error is None
