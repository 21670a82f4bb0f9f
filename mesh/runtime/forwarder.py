"""The delay forwarder: moves due records out of the delay topics (see :mod:`mesh.runtime.delay`).

Every ``mesh run`` process runs one, all in the consumer group ``mesh.delay``, so the
delay topics' partitions are shared among the processes of a cluster and a process
that dies hands its partitions to the others. A record not due yet parks its partition
(:class:`~mesh.runtime.parking.Parking`, as retry topics do); a due one is produced, key,
value and headers intact, to the next bucket or to its target topic, and its offset is
stored for commit only after the broker acknowledged that (acks=all, idempotent): a
crash forwards a record again rather than losing it.

It runs on its own thread with its own producer: the app's producer serves its delivery
callbacks on the event loop, where the agents' bookkeeping lives.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from mesh.config import Settings
from mesh.kafka.clients import agent_consumer_config, producer_config
from mesh.runtime.delay import BUCKETS_MS, bucket_for, delay_topic, leaves_at_ms, target_of
from mesh.runtime.parking import Parking
from mesh.runtime.publisher import produce
from mesh.runtime.retry import due_at_ms

__all__ = ["DELAY_GROUP", "DelayForwarder"]

log = logging.getLogger(__name__)

DELAY_GROUP = "mesh.delay"
_POLL_S = 0.05
_BATCH = 500
_RETRY_S = 1.0  # after the broker refused a forward


class DelayForwarder:
    """Consumes the delay topics and forwards each record when it is due."""

    def __init__(self, settings: Settings, *, consumer_config: dict[str, Any] | None = None):
        self._consumer = Consumer(
            agent_consumer_config(settings, group_id=DELAY_GROUP, overrides=consumer_config)
        )
        self._producer = Producer(producer_config(settings))
        self._topics = {delay_topic(bucket) for bucket in BUCKETS_MS}
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
            timeout_s = self._parked.release_due(_POLL_S) if self._parked else _POLL_S
            try:
                batch = self._consumer.consume(_BATCH, timeout=timeout_s)
            except KafkaException as exc:
                log.error("delay forwarder: poll failed: %s", exc)
                continue
            due = [m for m in self._parked.hold(batch, self._topics) if _is_record(m)]
            if due:
                self._forward(due)

    def _forward(self, batch: list[Message]) -> None:
        """Produce *batch* on; store its offsets once all were acknowledged, else rewind."""
        refused: list[KafkaError] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                refused.append(err)

        now_ms = int(time.time() * 1000)
        for msg in batch:
            topic = _destination(msg, now_ms)
            if topic is not None:
                produce(
                    self._producer,
                    topic,
                    msg.value(),
                    msg.key(),
                    msg.headers(),
                    on_delivery=delivered,
                )
        undelivered = self._producer.flush(30)
        firsts: dict[tuple[str, int], int] = {}
        lasts: dict[tuple[str, int], int] = {}
        for msg in batch:
            tp = (msg.topic(), msg.partition())
            firsts.setdefault(tp, msg.offset())
            lasts[tp] = msg.offset()
        if refused or undelivered:
            # Send the whole batch again: duplicates at worst, never a loss.
            log.error(
                "delay forwarder: %d forwards not acknowledged (%s); retrying",
                len(refused) + undelivered,
                refused[0].str() if refused else "timed out",
            )
            for (topic, partition), offset in firsts.items():
                with contextlib.suppress(KafkaException):  # revoked meanwhile
                    self._consumer.seek(TopicPartition(topic, partition, offset))
            time.sleep(_RETRY_S)
            return
        self._consumer.store_offsets(
            offsets=[TopicPartition(t, p, offset + 1) for (t, p), offset in lasts.items()]
        )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        if partitions:  # a pause flag survives revoke and re-assign: clear it
            consumer.resume(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._parked.drop((p.topic, p.partition) for p in partitions)
        with contextlib.suppress(KafkaException):
            consumer.commit(asynchronous=False)


def _destination(msg: Message, now_ms: int) -> str | None:
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
    return target if left_ms <= 0 else delay_topic(bucket_for(left_ms))


def _is_record(msg: Message) -> bool:
    error = msg.error()
    if error is not None and error.code() != KafkaError._PARTITION_EOF:
        log.warning("delay forwarder: consumer error: %s", error)
    return error is None
