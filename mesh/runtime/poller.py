"""The consumer's thread: fetch, pause and resume, park retries, serve rebalances, commit.

The poll thread owns the consumer, so ``max.poll.interval.ms`` never expires however
slow the handlers are, and is the only thread that calls it: calling ``store_offsets``
from the event loop while the poll thread sat in ``poll`` deadlocked on the GIL. The rest
of the worker talks to it through callbacks (records, rebalances, errors: called on the
poll thread) and through an outbox of consumer calls (store offsets, pause or resume a
partition) that the poll thread runs between polls.

Memory stays bounded: at most *buffer* records are in flight (handed over and not yet
released); when the buffer is full the thread takes no more, and if that lasts it pauses
every partition and keeps polling, so rebalances are still served.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from mesh.runtime.metrics import AgentMetrics
from mesh.runtime.parking import Parking
from mesh.runtime.retry import due_at_ms

__all__ = ["PollCallbacks", "Poller"]

log = logging.getLogger(__name__)

TP = tuple[str, int]
_POLL_S = 0.05  # longest poll with work in flight: bounds how late the outbox is served
_IDLE_POLL_S = 0.5  # longest poll of an idle agent (retry timers still bound it)
#: How long the poll thread waits for room before pausing its partitions. Pausing makes
#: librdkafka drop what it prefetched, so short waits (fast handlers) must not pause;
#: long ones (slow handlers) must, so polling can go on serving rebalances.
_HOLD_S = 0.5
#: Stored offsets are committed this soon (the auto-commit interval is only a backstop):
#: a restart then redelivers little, and a slow agent's progress shows in its group's
#: offsets within this. At most one commit request per interval, none when idle.
_COMMIT_S = 0.1


@dataclass(frozen=True, slots=True)
class PollCallbacks:
    """What the poll thread tells the rest of the worker; all called on the poll thread."""

    #: Records fetched, in order (errors included), to be released once done with.
    records: Callable[[list[Message]], None]
    #: Partitions assigned: returns once the worker is ready for their records.
    assigned: Callable[[list[TP]], None]
    #: Partitions revoked: returns once their started events finished (bounded) and
    #: their offsets were handed to :meth:`Poller.store`.
    revoked: Callable[[set[TP]], None]
    #: Partitions lost (the member missed its session): their events are abandoned.
    lost: Callable[[set[TP]], None]
    #: The poll thread died: the worker must stop.
    failed: Callable[[BaseException], None]


class Poller:
    """Polls *consumer* on a thread of its own, handing records to *callbacks*."""

    def __init__(
        self,
        consumer: Consumer,
        callbacks: PollCallbacks,
        *,
        name: str,
        buffer: int,
        batch_size: int,
        retry_topics: Collection[str],
        metrics: AgentMetrics,
    ) -> None:
        self._consumer = consumer
        self._callbacks = callbacks
        self._name = name
        self._buffer = buffer
        # A full buffer takes records again once this few are in flight.
        self._resume_at = buffer - max(buffer // 10, 1)
        self._batch_size = batch_size
        self._retry_topics = retry_topics
        self._metrics = metrics
        # Records handed over and not released yet: dispatched - released. Each counter
        # is written by one thread only (dispatched: poll, released: the worker's loop).
        self._dispatched = 0
        self._released = 0
        self._room = threading.Event()  # cleared by the poll thread when the buffer is full
        self._stopping = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._outbox: deque[Callable[[Consumer], object]] = deque()
        # Poll-thread state: retry partitions rewound to a record not yet due, whether
        # every partition is paused because the buffer stayed full, the partitions paused
        # because they are crowded, and what was polled but not handed over yet.
        self._parked = Parking(consumer, due_at_ms)
        self._held = False
        self._full: set[TP] = set()
        self._polled: list[Message] = []
        self._stored = False  # offsets stored since the last commit
        self._seen = 0  # records released as of the last turn of the poll loop
        self._commit_due = 0.0

    # -- from the worker (any thread) ------------------------------------------------

    def start(self, topics: Sequence[str]) -> None:
        self._consumer.subscribe(
            list(topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._thread = threading.Thread(
            target=self._run, name=f"mesh-poll-{self._name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop polling; blocks until the thread has left (call from an executor)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def close(self) -> None:
        """Store what is queued, commit, leave the group (after :meth:`stop`; blocks)."""
        self._closed = True
        self._apply_outbox()
        with contextlib.suppress(KafkaException):  # nothing stored since the last commit
            self._consumer.commit(asynchronous=False)
        self._consumer.close()

    @property
    def in_flight(self) -> int:
        return self._dispatched - self._released

    def release(self, count: int) -> None:
        """*count* records handed over are done with (finished, dropped or abandoned)."""
        self._released += count
        if not self._room.is_set() and self.in_flight <= self._resume_at:
            self._room.set()

    def store(self, offsets: list[TopicPartition]) -> None:
        """Store *offsets* for commit; committed within ``_COMMIT_S``."""
        self._outbox.append(functools.partial(self._store, offsets))

    def pause(self, tp: TP, *, window: int | None = None) -> None:
        """Stop fetching *tp* while it is crowded; *window*: because that many events wait
        behind its committed offset, which an operator should hear about."""
        self._outbox.append(functools.partial(self._pause_full, tp, window))

    def resume(self, tp: TP) -> None:
        self._outbox.append(functools.partial(self._resume_full, tp))

    # -- poll thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._poll_until_stopped()
        except BaseException as exc:  # a dead poll thread would stall the agent silently
            self._callbacks.failed(exc)

    def _poll_until_stopped(self) -> None:
        consumer, limit, metrics = self._consumer, self._buffer, self._metrics
        while not self._stopping.is_set():
            metrics.polling()
            self._apply_outbox()
            if self._held:
                if self.in_flight <= self._resume_at:
                    self._hold(False)
            elif self.in_flight >= limit:
                self._wait_for_room()
            room = min(self._batch_size, limit - self.in_flight)
            # Idle (nothing in flight or just released, nothing to store or commit): poll
            # long; the loop asks for nothing more, and rebalances are served inside poll.
            released = self._released
            busy = self.in_flight or self._outbox or self._stored or released != self._seen
            self._seen = released
            timeout_s = _POLL_S if busy else _IDLE_POLL_S
            if self._parked:
                timeout_s = self._parked.release_due(timeout_s, resume=not self._held)
            try:
                # While held, every partition is paused: polling serves callbacks only
                # (and hands on what librdkafka had queued before the pause).
                first = consumer.poll(timeout_s)
                if first is None:
                    continue
                self._polled.append(first)
                if room > 1:
                    # A rebalance callback served by consume() hands over what was polled
                    # before it, so the worker sees records and rebalances in true order.
                    self._polled.extend(consumer.consume(room - 1, timeout=0))
            except KafkaException as exc:
                log.error("agent %s: poll failed: %s", self._name, exc)
            self._hand_over()

    def _wait_for_room(self) -> None:
        """The buffer is full: wait until a tenth of it is released.

        Taking nothing meanwhile bounds memory; pausing only when the wait lasts keeps
        librdkafka's prefetched records, which a pause would drop, for fast handlers.
        Waiting for half of them, as this once did, idled slow handlers: with 500 ms
        handlers the wait often outlasted ``_HOLD_S``, and a pause refetches.
        """
        self._room.clear()
        # Check again after clearing: records may have been released in between.
        if self.in_flight > self._resume_at and not self._room.wait(_HOLD_S):
            self._hold(True)

    def _hand_over(self) -> None:
        batch, self._polled = self._polled, []
        if self._retry_topics:
            batch = self._parked.hold(batch, self._retry_topics)
        if batch:
            self._dispatched += len(batch)
            self._callbacks.records(batch)

    def _hold(self, held: bool) -> None:
        """Pause (or resume) every assigned partition but the parked and the full ones."""
        self._held = held
        consumer = self._consumer
        partitions = [
            p
            for p in consumer.assignment()
            if (p.topic, p.partition) not in self._parked
            and (p.topic, p.partition) not in self._full
        ]
        if partitions:
            (consumer.pause if held else consumer.resume)(partitions)
        self._metrics.paused_partitions(len(partitions) if held else 0)

    def _apply_outbox(self) -> None:
        """Run the consumer calls the worker asked for, then commit what was stored if the
        last commit is ``_COMMIT_S`` old."""
        while self._outbox:
            call = self._outbox.popleft()
            try:
                call(self._consumer)
            except KafkaException as exc:  # e.g. a partition revoked meanwhile
                log.debug("agent %s: %s", self._name, exc)
        if self._stored and time.monotonic() >= self._commit_due:
            self._stored = False
            self._commit_due = time.monotonic() + _COMMIT_S
            with contextlib.suppress(KafkaException):  # nothing new, or between generations
                self._consumer.commit(asynchronous=True)

    def _store(self, offsets: list[TopicPartition], consumer: Consumer) -> None:
        consumer.store_offsets(offsets=offsets)
        self._stored = True

    def _pause_full(self, tp: TP, window: int | None, consumer: Consumer) -> None:
        self._full.add(tp)
        consumer.pause([TopicPartition(*tp)])
        if window is not None:
            log.warning(
                "agent %s: %s:%d paused: %d events past its committed offset wait for the oldest",
                self._name,
                *tp,
                window,
            )

    def _resume_full(self, tp: TP, consumer: Consumer) -> None:
        self._full.discard(tp)
        if not self._held and tp not in self._parked:
            consumer.resume([TopicPartition(*tp)])

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._hand_over()
        tps = [(p.topic, p.partition) for p in partitions]
        self._callbacks.assigned(tps)
        consumer.incremental_assign(partitions)
        # librdkafka keeps a partition's pause flag across revoke and re-assign: one
        # revoked while paused would never be fetched again. Set it explicitly.
        if partitions:
            (consumer.pause if self._held else consumer.resume)(partitions)
        log.info("agent %s: assigned %s", self._name, sorted(tps))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._closed:
            return
        self._hand_over()
        tps = {(p.topic, p.partition) for p in partitions}
        self._parked.drop(tps)
        self._full -= tps
        self._callbacks.revoked(tps)
        self._apply_outbox()
        with contextlib.suppress(KafkaException):
            consumer.commit(asynchronous=False)
        log.info("agent %s: released %s", self._name, sorted(tps))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group gave *partitions* away already (this member missed its session):
        their new owner reads from the last commit, so nothing is drained or committed,
        and the member rejoins at once instead of waiting for events it no longer owns."""
        self._hand_over()
        tps = {(p.topic, p.partition) for p in partitions}
        self._parked.drop(tps)
        self._full -= tps
        self._callbacks.lost(tps)
        log.warning("agent %s: lost %s (session expired)", self._name, sorted(tps))
