"""The poll loop of one agent: consumer -> serde -> handler -> producer -> commit.

Threads: a poll thread owns the consumer (so ``max.poll.interval.ms`` never expires,
however slow the handlers) and runs the rebalance callbacks; everything else
(handlers, delivery callbacks, offset bookkeeping) runs on the asyncio loop, so the
bookkeeping needs no locks. Batches cross from the poll thread to the loop with one
``call_soon_threadsafe`` each; offsets to store cross the other way through a deque
the poll thread applies between polls, and "room for more" through a
``threading.Event``. The consumer is
only ever called from one thread at a time: calling ``store_offsets`` from the loop
while the poll thread sat in ``poll`` deadlocked on the GIL.

Guarantees:

* an input offset is stored for commit only once its handler finished and every
  event it emitted was acknowledged (acks=all), and never past an unfinished event
  of the same partition (:class:`~mesh.runtime.offsets.PartitionOffsets`);
* events with the same key are handled one after the other, in offset order; other
  keys of the same partition run concurrently, up to ``concurrency`` events;
* when ``concurrency`` events are buffered, the poll thread takes no more records
  (memory stays bounded by that and librdkafka's prefetch queue); if that lasts, it
  pauses the partitions and keeps polling, so rebalances are still served;
* on revoke and on shutdown, new events stop, in-flight ones get ``drain_timeout_s``
  to finish, the finished prefix is committed, then the partitions are released.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from mesh.config import RetryPolicy
from mesh.envelope import Envelope, record_event_id
from mesh.errors import DeserializationError, PublishError, SerializationError
from mesh.event import Event
from mesh.headers import DLQ_VALUE_BYTES
from mesh.kafka.errors import is_permanent, is_too_large
from mesh.runtime.context import Context
from mesh.runtime.dead_letter import dead_letter_headers, dead_letter_topic
from mesh.runtime.failure import (
    DeadLetterReason,
    ErrorKind,
    attempt_of,
    first_failure_of,
)
from mesh.runtime.invoke import invoke
from mesh.runtime.metrics import AgentMetrics
from mesh.runtime.offsets import PartitionOffsets
from mesh.runtime.parking import Parking
from mesh.runtime.publisher import Publisher, Record
from mesh.runtime.retry import due_at_ms, retry_headers, retry_topic
from mesh.runtime.threads import HandlerThreads
from mesh.runtime.tracing import EventTracer
from mesh.serde import Serde

__all__ = ["AgentWorker", "WorkerOptions"]

log = logging.getLogger(__name__)

TP = tuple[str, int]
_POLL_S = 0.05  # longest poll; bounds how late the outbox and retry timers are served
#: How long the poll thread waits for room before pausing its partitions. Pausing makes
#: librdkafka drop what it prefetched, so short waits (fast handlers) must not pause;
#: long ones (slow handlers) must, so polling can go on serving rebalances.
_HOLD_S = 0.5
#: Stored offsets are committed this soon (the auto-commit interval is only a backstop):
#: a restart then redelivers little, and a slow agent's progress shows in its group's
#: offsets within this. At most one commit request per interval, none when idle.
_COMMIT_S = 0.1
#: Async handlers past their timeout are cancelled at most this late. A sweep over the
#: running handlers costs a dict entry per event; asyncio.timeout() per call (a timer
#: handle, a context manager, a coroutine frame) cost a quarter of a fast agent's time.
_SWEEP_S = 0.05


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How one agent consumes; built from settings and decorator arguments."""

    agent: str
    group_id: str
    topics: dict[str, tuple[type[Event], ...]]
    handler: Callable[..., Any]
    is_async: bool
    concurrency: int
    timeout_s: float | None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Retry topic -> the source topic it retries (its records decode like the source's).
    retry_sources: dict[str, str] = field(default_factory=dict)
    drain_timeout_s: float = 30.0
    batch_size: int = 500
    #: Past this many events received after a partition's committable offset, the
    #: partition is paused until the oldest unfinished one finishes.
    max_uncommitted: int = 10_000


class _Partition:
    """Bookkeeping of one assigned partition; dropped (and marked revoked) when released."""

    __slots__ = ("closing", "full", "offsets", "revoked", "unacked", "waiting")

    def __init__(self) -> None:
        self.offsets = PartitionOffsets()
        self.unacked = 0  # started and not yet finished (handler or deliveries pending)
        self.waiting = 0  # received, not started: behind a busy key, or for a free slot
        self.closing = False  # being released: start nothing new
        self.revoked = False  # released: late completions are ignored
        self.full = False  # paused: see AgentWorker._crowded


class _Job:
    """One input record on its way through the handler and the producer."""

    __slots__ = ("attempt", "dead", "msg", "part", "pending")

    def __init__(self, msg: Message, part: _Partition) -> None:
        self.msg = msg
        self.part = part
        self.pending = 0  # deliveries still awaited
        self.attempt = 1  # of the handler, once it ran
        self.dead = False  # a dead letter of it is written or on its way


#: What a record written for a job is; decides what a permanent refusal of it leads to.
_Write = Literal["output", "retry", "dead letter", "dead letter without value"]


class AgentWorker:
    """Consumes the topics of one agent in one consumer group."""

    def __init__(
        self,
        options: WorkerOptions,
        *,
        consumer_config: dict[str, Any],
        publisher: Publisher,
        serde: Serde,
        threads: HandlerThreads,
        metrics: AgentMetrics,
        tracer: EventTracer | None = None,
    ) -> None:
        self.options = options
        self._tracer = tracer
        self._metrics = metrics
        self._publisher = publisher
        self._serde = serde
        self._threads = threads
        self._consumer = Consumer(consumer_config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._parts: dict[TP, _Partition] = {}
        self._lanes: dict[tuple[str, bytes], deque[_Job]] = {}
        # Records handed to the loop and not finished yet: dispatched - released. Each
        # counter is written by one thread only (dispatched: poll, released: loop).
        self._dispatched = 0
        self._released = 0
        self._room = threading.Event()  # cleared by the poll thread when the loop is full
        # Handlers run at most `concurrency` at once; twice as many records are buffered,
        # so that records waiting behind a busy key never leave a handler slot idle.
        self._buffer = 2 * options.concurrency
        # A full loop takes records again once this few are in flight.
        self._resume_at = self._buffer - max(self._buffer // 10, 1)
        self._running = 0  # handlers started and not returned
        self._ready: deque[_Job] = deque()  # free to start (their key is idle), no slot yet
        self._dirty: set[TP] = set()
        self._tasks: set[asyncio.Future[None]] = set()
        # Async handlers with a time limit: task -> loop time it expires; the expired ones
        # cancelled by the sweep (their CancelledError is a timeout, not a shutdown).
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._next_sweep = 0.0
        self._stopping = threading.Event()
        self._closed = False
        self._poll_thread: threading.Thread | None = None
        self._outbox: deque[Callable[[Consumer], object]] = deque()
        # Poll-thread state: retry partitions rewound to a record not yet due (-> due ms),
        # and whether every partition is paused because the loop stayed full.
        self._parked = Parking(self._consumer, due_at_ms)
        self._polled: list[Message] = []  # polled, not yet handed to the loop
        self._held = False
        self._stored = False  # offsets stored since the last commit
        self._commit_due = 0.0
        self._full: set[TP] = set()  # paused because their uncommitted window is full
        self._fatal: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe and start polling; the calling loop runs the handlers."""
        self._loop = asyncio.get_running_loop()
        self._consumer.subscribe(
            list(self.options.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._poll_thread = threading.Thread(
            target=self._poll_forever, name=f"mesh-poll-{self.options.agent}", daemon=True
        )
        self._poll_thread.start()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def failed(self) -> BaseException | None:
        """A delivery the broker refused: the worker stops without committing past it."""
        return self._fatal

    async def stop(self) -> None:
        """Stop taking events, let in-flight ones finish (bounded), commit, leave the group."""
        self._stopping.set()
        log.info("agent %s: stopping, %d event(s) in flight", self.options.agent, self._in_flight())
        loop = asyncio.get_running_loop()
        if self._poll_thread is not None:
            await loop.run_in_executor(None, self._poll_thread.join)
        await self._drain(set(self._parts))
        self._closed = True
        await loop.run_in_executor(None, self._commit_and_close)
        log.info("agent %s: stopped: offsets committed, left the group", self.options.agent)

    def _commit_and_close(self) -> None:
        self._apply_outbox()
        with contextlib.suppress(KafkaException):  # nothing stored since the last commit
            self._consumer.commit(asynchronous=False)
        self._consumer.close()

    # -- poll thread -----------------------------------------------------------------

    def _poll_forever(self) -> None:
        loop = self._loop
        assert loop is not None
        try:
            self._poll_until_stopped()
        except BaseException as exc:  # a dead poll thread would stall the agent silently
            loop.call_soon_threadsafe(self._fail, exc)

    def _poll_until_stopped(self) -> None:
        consumer, limit = self._consumer, self._buffer
        metrics = self._metrics
        while not self._stopping.is_set():
            metrics.polling()
            self._apply_outbox()
            if self._held:
                if self._in_flight() <= self._resume_at:
                    self._hold(False)
            elif self._in_flight() >= limit:
                self._wait_for_room()
            room = min(self.options.batch_size, limit - self._in_flight())
            timeout_s = _POLL_S
            if self._parked:
                timeout_s = self._parked.release_due(_POLL_S, resume=not self._held)
            try:
                # While held, every partition is paused: polling serves callbacks only
                # (and hands on what librdkafka had queued before the pause).
                first = consumer.poll(timeout_s)
                if first is None:
                    continue
                self._polled.append(first)
                if room > 1:
                    # A rebalance callback served by consume() dispatches what was polled
                    # before it, so the loop sees records and rebalances in true order.
                    self._polled.extend(consumer.consume(room - 1, timeout=0))
            except KafkaException as exc:
                log.error("agent %s: poll failed: %s", self.options.agent, exc)
            self._dispatch()

    def _in_flight(self) -> int:
        return self._dispatched - self._released

    def _wait_for_room(self) -> None:
        """The loop holds its buffer of records: wait until it finished a tenth of them.

        Taking nothing meanwhile bounds memory; pausing only when the wait lasts keeps
        librdkafka's prefetched records, which a pause would drop, for fast handlers.
        Waiting for half of them, as this once did, idled slow handlers: with 500 ms
        handlers the wait often outlasted ``_HOLD_S``, and a pause refetches.
        """
        self._room.clear()
        # Check again after clearing: the loop may have made room in between.
        if self._in_flight() > self._resume_at and not self._room.wait(_HOLD_S):
            self._hold(True)

    def _dispatch(self) -> None:
        """Hand the records polled so far to the loop (poll thread)."""
        batch, self._polled = self._polled, []
        if self.options.retry_sources:
            batch = self._parked.hold(batch, self.options.retry_sources)
        if batch:
            loop = self._loop
            assert loop is not None
            self._dispatched += len(batch)
            loop.call_soon_threadsafe(self._accept, batch)

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
        """Run the consumer calls the loop asked for (store offsets), then commit what was
        stored if the last commit is ``_COMMIT_S`` old."""
        while self._outbox:
            call = self._outbox.popleft()
            try:
                call(self._consumer)
            except KafkaException as exc:  # e.g. a partition revoked meanwhile
                log.debug("agent %s: %s", self.options.agent, exc)
        if self._stored and time.monotonic() >= self._commit_due:
            self._stored = False
            self._commit_due = time.monotonic() + _COMMIT_S
            with contextlib.suppress(KafkaException):  # nothing new, or between generations
                self._consumer.commit(asynchronous=True)

    def _store(self, offsets: list[TopicPartition], consumer: Consumer) -> None:
        consumer.store_offsets(offsets=offsets)
        self._stored = True

    def _pause_full(self, tp: TP, window: bool, consumer: Consumer) -> None:
        """Stop fetching *tp* while it is crowded (poll thread); *window*: because of its
        uncommitted window, which an operator should hear about."""
        self._full.add(tp)
        consumer.pause([TopicPartition(*tp)])
        if window:
            log.warning(
                "agent %s: %s:%d paused: %d events past its committed offset wait for the oldest",
                self.options.agent,
                *tp,
                self.options.max_uncommitted,
            )

    def _resume_full(self, tp: TP, consumer: Consumer) -> None:
        self._full.discard(tp)
        if not self._held and tp not in self._parked:
            consumer.resume([TopicPartition(*tp)])

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        loop = self._loop
        assert loop is not None
        self._dispatch()
        tps = [(p.topic, p.partition) for p in partitions]
        asyncio.run_coroutine_threadsafe(self._assign(tps), loop).result()
        consumer.incremental_assign(partitions)
        # librdkafka keeps a partition's pause flag across revoke and re-assign: one
        # revoked while paused would never be fetched again. Set it explicitly.
        if partitions:
            (consumer.pause if self._held else consumer.resume)(partitions)
        log.info("agent %s: assigned %s", self.options.agent, sorted(tps))

    async def _assign(self, tps: list[TP]) -> None:
        for tp in tps:
            self._parts[tp] = _Partition()
        self._metrics.assigned(len(self._parts))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._closed:
            return
        loop = self._loop
        assert loop is not None
        self._dispatch()
        tps = {(p.topic, p.partition) for p in partitions}
        self._parked.drop(tps)
        self._full -= tps
        future = asyncio.run_coroutine_threadsafe(self._drain(tps), loop)
        future.result(self.options.drain_timeout_s + 5)
        self._apply_outbox()
        with contextlib.suppress(KafkaException):
            consumer.commit(asynchronous=False)
        log.info("agent %s: released %s", self.options.agent, sorted(tps))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group gave *partitions* away already (this member missed its session):
        their new owner reads from the last commit, so nothing is drained or committed,
        and the member rejoins at once instead of waiting for events it no longer owns."""
        loop = self._loop
        assert loop is not None
        self._dispatch()
        tps = {(p.topic, p.partition) for p in partitions}
        self._parked.drop(tps)
        self._full -= tps
        asyncio.run_coroutine_threadsafe(self._lose(tps), loop).result()
        log.warning("agent %s: lost %s (session expired)", self.options.agent, sorted(tps))

    # -- loop thread -----------------------------------------------------------------

    async def _lose(self, tps: set[TP]) -> None:
        parts = {tp: self._parts.pop(tp) for tp in tps if tp in self._parts}
        for part in parts.values():
            part.closing = part.revoked = True
            self._release(part.offsets.unfinished)
        self._drop_queued()
        self._dirty -= tps
        self._metrics.assigned(len(self._parts))

    def _accept(self, batch: Sequence[Message]) -> None:
        skipped = 0
        consumed = self._metrics.consumed
        for msg in batch:
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("agent %s: consumer error: %s", self.options.agent, error)
                skipped += 1
                continue
            part = self._parts.get((msg.topic(), msg.partition()))
            if part is None or part.closing:
                skipped += 1  # released while in transit: the next owner reads it again
                continue
            part.offsets.add(msg.offset())
            consumed(msg.topic())
            job = _Job(msg, part)
            key = msg.key()
            if key is not None:
                lane_key = (msg.topic(), key)
                lane = self._lanes.get(lane_key)
                if lane is not None:
                    part.waiting += 1
                    lane.append(job)
                    self._check_crowded(part, msg)
                    continue
                self._lanes[lane_key] = deque()
            self._start(job)
            self._check_crowded(part, msg)
        if skipped:
            self._release(skipped)
        self._metrics.in_flight(self._in_flight())
        self.flush_offsets()

    def _check_crowded(self, part: _Partition, msg: Message) -> None:
        """Pause the partition of *msg* once it is crowded (see :meth:`_crowded`)."""
        if not part.full and self._crowded(part):
            part.full = True
            window = part.offsets.window >= self.options.max_uncommitted
            tp = (msg.topic(), msg.partition())
            self._outbox.append(functools.partial(self._pause_full, tp, window))

    def _crowded(self, part: _Partition) -> bool:
        """Too much of the partition is held: its uncommitted window reached
        ``max_uncommitted`` (one hung event), or ``concurrency`` of its events wait to
        start (busy keys). The latter keeps one partition's keys from filling the buffer
        while other partitions' idle keys could run."""
        return (
            part.offsets.window >= self.options.max_uncommitted
            or part.waiting >= self.options.concurrency
        )

    def _check_relaxed(self, part: _Partition, msg: Message) -> None:
        """Resume the partition of *msg* once it has room again (half of each bound)."""
        options = self.options
        if (
            part.full
            and not part.revoked
            and part.offsets.window <= options.max_uncommitted // 2
            and part.waiting <= options.concurrency // 2
        ):
            part.full = False
            tp = (msg.topic(), msg.partition())
            self._outbox.append(functools.partial(self._resume_full, tp))

    def _start(self, job: _Job) -> None:
        """Run *job*'s handler, or queue it until one of the ``concurrency`` slots frees."""
        if self._running >= self.options.concurrency:
            job.part.waiting += 1
            self._ready.append(job)
            return
        self._running += 1
        job.part.unacked += 1
        task = self._loop.create_task(self._handle(job))  # type: ignore[union-attr]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Not the handler (its errors are dead-lettered) but mesh or the registry
            # failing around it: leave the offset unfinished and stop, so a restart
            # consumes the record again.
            self._fail(task.exception())

    def _fail(self, error: BaseException | None) -> None:
        if self._fatal is None and error is not None:
            self._fatal = error
            log.error("agent %s: stopping: %r", self.options.agent, error, exc_info=error)
            self._stopping.set()

    async def _handle(self, job: _Job) -> None:
        msg = job.msg
        options = self.options
        headers = msg.headers()
        topic, retried = self._source_of(msg)
        job.attempt = attempt_of(headers) + 1 if retried else 1
        try:
            event = self._decode(msg)
        except DeserializationError as exc:
            self._undecodable(job, exc)
            return
        envelope = Envelope.from_headers(  # a foreign record gets an id from where it is
            headers,
            fallback_event_id=record_event_id(msg.topic(), msg.partition(), msg.offset()),
        )
        ctx = Context(
            agent=options.agent,
            envelope=envelope,
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
            key=msg.key(),
            raw_headers=headers,
            attempt=job.attempt,
        )
        ctx._bind_logs()  # this task handles this event only
        metrics = self._metrics
        if retried:  # how late its timer fired
            due_ms = due_at_ms(msg)
            if due_ms is not None:
                metrics.retry_lateness(time.time() - due_ms / 1000)
        tracer = self._tracer
        span = None
        if tracer is not None:
            span = tracer.start(options.agent, topic, msg.partition(), msg.offset(), envelope)
        started = time.perf_counter()
        try:
            if options.is_async:  # the common case, inlined
                call = options.handler(event, ctx)
                result = await (call if options.timeout_s is None else self._limited(call))
            else:
                result = await self._invoke(event, ctx)
        except (Exception, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError):
                exc = self._cancellation(exc)
            ctx._finish()
            self._release_lane(job)
            timed_out = isinstance(exc, TimeoutError)
            outcome = "timeout" if timed_out else "error"
            metrics.handled(topic, envelope.event_type, outcome, time.perf_counter() - started)
            if span is not None:
                tracer.end(span, exc)  # type: ignore[union-attr]
            self._failed(job, exc, ctx.attempt, timed_out=timed_out)
            return
        metrics.handled(topic, envelope.event_type, "ok", time.perf_counter() - started)
        metrics.chain_latency(envelope.correlation_id)
        emits = ctx._finish()
        if result is not None:
            emits.extend(result if isinstance(result, list | tuple) else [result])
        self._release_lane(job)
        span_id = None
        if span is not None:
            span_id = tracer.span_id(span)  # type: ignore[union-attr]
            tracer.end(span)  # type: ignore[union-attr]
        self._send_outputs(job, envelope, emits, ctx.attempt, span_id)

    def _undecodable(self, job: _Job, exc: DeserializationError) -> None:
        self._release_lane(job)
        if exc.reason == "unknown-schema":
            # Written with a schema this registry replica has not read yet (several
            # registries behind a load balancer): worth the retry policy's tries.
            self._retry_or_dead_letter(job, ErrorKind.DESERIALIZATION, exc, job.attempt)
        else:  # the same bytes fail the same way again
            self._dead_letter(job, ErrorKind.DESERIALIZATION, exc, attempt=job.attempt)

    def _failed(self, job: _Job, exc: BaseException, attempt: int, *, timed_out: bool) -> None:
        if timed_out:  # invoke() gave asyncio's bare TimeoutError its message
            self._retry_or_dead_letter(job, ErrorKind.TIMEOUT, exc, attempt)
            return
        log.warning("agent %s: attempt %d failed: %r", self.options.agent, attempt, exc)
        self._retry_or_dead_letter(job, ErrorKind.TRANSIENT, exc, attempt)

    def _send_outputs(
        self, job: _Job, envelope: Envelope, emits: list[Any], attempt: int, span_id: str | None
    ) -> None:
        """Send what a handler emitted; the input is finished once all of it is acknowledged."""
        if not emits:
            self._finish(job)
            return
        agent = self.options.agent
        try:  # encode everything first: all of the outputs are sent, or none
            records = [
                self._publisher.encode(
                    out, envelope.child(out.event_type(), agent, span_id=span_id)
                )
                for out in emits
            ]
        except SerializationError as exc:
            self._dead_letter(job, ErrorKind.FATAL, exc, attempt=attempt)
            return
        emitted = self._metrics.emitted
        job.pending += 1  # held while sending: an ack served meanwhile must not finish it
        for record, out in zip(records, emits, strict=True):
            if not self._send(job, record, "output"):
                break  # refused for good: the input is dead-lettered, the rest not sent
            emitted(record.topic, out.event_type())
        self._settle(job)

    def _source_of(self, msg: Message) -> tuple[str, bool]:
        """The source topic *msg* belongs to, and whether it was read from a retry topic.

        Where a failed record goes next follows from this, never from its headers.
        """
        topic = msg.topic()
        source = self.options.retry_sources.get(topic)
        return (topic, False) if source is None else (source, True)

    def _decode(self, msg: Message) -> Event:
        models = self.options.topics[msg.topic()]
        model = models[0]
        if len(models) > 1:
            wanted = Envelope.event_type_of(msg.headers())
            model = next((m for m in models if m.event_type() == wanted), model)
        return self._serde.decode(msg.value(), model)

    async def _limited(self, call: Coroutine[Any, Any, Any]) -> Any:
        """Await an async handler's *call* under the agent's timeout (see :meth:`_sweep`)."""
        timeout_s = self.options.timeout_s
        assert timeout_s is not None
        task = asyncio.current_task()
        assert task is not None
        self._deadlines[task] = task.get_loop().time() + timeout_s
        try:
            return await call
        finally:
            del self._deadlines[task]

    def _cancellation(self, exc: asyncio.CancelledError) -> BaseException:
        """What a handler's CancelledError means: a timeout (the sweep cancelled it), mesh
        shutting down (raised again: the record is consumed again after the restart), or
        the handler's own failure."""
        task = asyncio.current_task()
        assert task is not None
        if task in self._expired:
            self._expired.discard(task)
            task.uncancel()
            return TimeoutError(f"handler took over {self.options.timeout_s}s")
        if _cancelled_by_mesh():
            raise exc
        return exc

    def _sweep(self) -> None:
        """Cancel the async handlers past their timeout (every ``_SWEEP_S`` at most)."""
        loop = self._loop
        assert loop is not None
        now = loop.time()
        if now < self._next_sweep or not self._deadlines:
            return
        self._next_sweep = now + _SWEEP_S
        for task, deadline in self._deadlines.items():
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()

    async def _invoke(self, event: Event, ctx: Context) -> Any:
        options = self.options
        return await invoke(
            options.handler,
            event,
            ctx,
            is_async=options.is_async,
            timeout_s=options.timeout_s,
            threads=self._threads,
        )

    def _retry_or_dead_letter(
        self, job: _Job, kind: ErrorKind, error: BaseException, attempt: int
    ) -> None:
        """Forward a failed record to the retry topic of its next delay, or dead-letter it."""
        policy = self.options.retry
        if not policy.should_retry(error, attempt):
            if policy.is_non_retryable(error):
                kind = ErrorKind.FATAL
            self._dead_letter(job, kind, error, attempt=attempt)
            return
        msg = job.msg
        source, retried = self._source_of(msg)
        delay_ms = policy.delay_ms(attempt)
        now_ms = int(time.time() * 1000)
        due_ms = now_ms + policy.jittered_ms(delay_ms)
        first_ms = (retried and first_failure_of(msg.headers())) or now_ms
        if policy.past_deadline(first_failure_ms=first_ms, due_ms=due_ms):
            self._dead_letter(job, kind, error, attempt=attempt, reason=DeadLetterReason.DEADLINE)
            return
        group_id = self.options.group_id
        headers = retry_headers(
            msg,
            retried=retried,
            kind=kind,
            error=error,
            attempt=attempt,
            group_id=group_id,
            due_ms=due_ms,
        )
        self._metrics.retried(source, kind)
        topic = retry_topic(source, group_id, delay_ms)
        log.info(
            "agent %s: %s:%d@%d attempt %d of %d due at %s.%03dZ (in %.1f s) through %s",
            self.options.agent,
            msg.topic(),
            msg.partition(),
            msg.offset(),
            attempt + 1,
            policy.attempts,
            time.strftime("%H:%M:%S", time.gmtime(due_ms / 1000)),
            due_ms % 1000,
            (due_ms - now_ms) / 1000,
            topic,
        )
        self._send(job, Record(topic, msg.value(), msg.key(), headers), "retry")

    def _dead_letter(
        self,
        job: _Job,
        kind: ErrorKind,
        error: BaseException,
        *,
        attempt: int,
        reason: DeadLetterReason | None = None,
    ) -> None:
        msg = job.msg
        options = self.options
        source, retried = self._source_of(msg)
        headers = dead_letter_headers(
            msg,
            retried=retried,
            kind=kind,
            error=error,
            attempt=attempt,
            group_id=options.group_id,
            agent=options.agent,
            reason=reason,
        )
        self._metrics.dead_lettered(source, kind)
        job.dead = True
        topic = dead_letter_topic(source, options.group_id)
        log.error(  # the one line with the traceback: the attempts before logged none
            "agent %s: %s:%d@%d dead-lettered to %s (reason %s, after %d attempt(s)): %r",
            options.agent,
            msg.topic(),
            msg.partition(),
            msg.offset(),
            topic,
            (reason or DeadLetterReason.of(kind)).value,
            attempt,
            error,
            exc_info=error,
        )
        self._send(job, Record(topic, msg.value(), msg.key(), headers), "dead letter")

    def _send(self, job: _Job, record: Record, what: _Write) -> bool:
        """Queue *record*, written for *job*; the job finishes once all of them are acked.

        Returns False when the record was refused for good before it was queued (too
        large, invalid): then the job was dead-lettered instead (see :meth:`_refused`).
        """
        job.pending += 1
        on_delivery = functools.partial(self._delivered, job, record, what)
        try:
            self._publisher.send_raw(*record, on_delivery=on_delivery)
        except KafkaException as exc:  # librdkafka refused it before queuing
            job.pending -= 1
            self._refused(job, exc.args[0], record, what)
            return False
        return True

    def _delivered(
        self, job: _Job, record: Record, what: _Write, err: KafkaError | None, _msg: Message
    ) -> None:
        if err is not None:
            self._refused(job, err, record, what)
        self._settle(job)

    def _settle(self, job: _Job) -> None:
        """One record written for *job* is done with; the last one finishes the job."""
        job.pending -= 1
        if job.pending == 0 and self._fatal is None:
            self._finish(job)

    def _refused(self, job: _Job, err: KafkaError, record: Record, what: _Write) -> None:
        """A record written for *job* was refused (librdkafka retried what could be).

        A refusal for good of an output or a retry dead-letters the input (reason
        ``refused``); a dead letter too large to write goes without its value. Anything
        else (the broker away past ``message.timeout.ms``, a dead-letter topic refused)
        stops the worker without committing the input: it is consumed again on restart.
        """
        agent, topic = self.options.agent, record.topic
        if not is_permanent(err) or what == "dead letter without value":
            self._fail(KafkaException(err))
        elif what == "dead letter":
            if not (is_too_large(err) and record.value is not None):
                self._fail(KafkaException(err))
                return
            log.error("agent %s: dead letter too large for %s, kept without value", agent, topic)
            size = (DLQ_VALUE_BYTES, str(len(record.value)).encode())
            without = record._replace(value=None, headers=[*record.headers, size])
            self._send(job, without, "dead letter without value")
        elif not job.dead:
            log.error("agent %s: %s refused by %s: %s", agent, what, topic, err.str())
            error = PublishError(f"{what} to {topic} refused: {err.name()}: {err.str()}")
            reason = DeadLetterReason.REFUSED
            self._dead_letter(job, ErrorKind.FATAL, error, attempt=job.attempt, reason=reason)

    def _drop_queued(self) -> None:
        """Events of a closing partition that never started (queued behind their key, or
        for a slot): drop them."""
        for queue in (*self._lanes.values(), self._ready):
            if any(job.part.closing for job in queue):
                kept = [job for job in queue if not job.part.closing]
                queue.clear()
                queue.extend(kept)

    def _release_lane(self, job: _Job) -> None:
        """The handler of *job* returned: its slot goes to the next event of the same key,
        if any, else to the event that waited longest for a slot."""
        self._running -= 1
        key = job.msg.key()
        lane = None if key is None else self._lanes.get((job.msg.topic(), key))
        if lane is not None:
            while lane:
                nxt = lane.popleft()
                if not nxt.part.closing:
                    self._unqueue(nxt)
                    break
            else:
                del self._lanes[(job.msg.topic(), key)]
        ready = self._ready
        while ready and self._running < self.options.concurrency:
            nxt = ready.popleft()
            if not nxt.part.closing:
                self._unqueue(nxt)

    def _unqueue(self, job: _Job) -> None:
        """Start *job*, which waited behind its key or for a slot."""
        job.part.waiting -= 1
        self._start(job)
        self._check_relaxed(job.part, job.msg)

    def _finish(self, job: _Job) -> None:
        part = job.part
        if part.revoked:
            return  # finished after its partition was released; accounted for then
        part.unacked -= 1
        self._release(1)
        if part.offsets.complete(job.msg.offset()):
            self._dirty.add((job.msg.topic(), job.msg.partition()))
            self._check_relaxed(part, job.msg)

    def _release(self, count: int) -> None:
        """*count* records left the loop: wake the poll thread if it waits for room."""
        self._released += count
        self._metrics.in_flight(self._in_flight())
        if not self._room.is_set() and self._in_flight() <= self._resume_at:
            self._room.set()

    def flush_offsets(self) -> None:
        """Serve delivery callbacks, then store the committable offsets that moved.

        librdkafka commits stored offsets every ``auto.commit.interval.ms`` and on revoke.
        """
        self._publisher.poll(0)
        self._sweep()
        if not self._dirty:
            return
        stored = []
        for tp in self._dirty:
            part = self._parts.get(tp)
            if part is not None and part.offsets.committable is not None:
                stored.append(TopicPartition(tp[0], tp[1], part.offsets.committable))
        self._dirty.clear()
        if stored:
            self._outbox.append(functools.partial(self._store, stored))

    async def _drain(self, tps: set[TP]) -> None:
        """Stop *tps*, give their started events time to finish, store their offsets."""
        parts = {tp: self._parts[tp] for tp in tps if tp in self._parts}
        for part in parts.values():
            part.closing = True
        self._drop_queued()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.drain_timeout_s
        while self._fatal is None and any(part.unacked for part in parts.values()):
            if loop.time() > deadline:
                log.warning(
                    "agent %s: %d events still in flight after %.0fs; they will be redelivered",
                    self.options.agent,
                    sum(part.unacked for part in parts.values()),
                    self.options.drain_timeout_s,
                )
                break
            self._publisher.poll(0)
            await asyncio.sleep(0.005)
        self._dirty |= set(parts)
        self.flush_offsets()
        for tp, part in parts.items():
            part.revoked = True
            self._release(part.offsets.unfinished)
            del self._parts[tp]
        self._metrics.assigned(len(self._parts))


def _cancelled_by_mesh() -> bool:
    """Whether the running task was cancelled from outside (mesh shutting down).

    A handler may raise ``CancelledError`` on its own (an HTTP client's cancelled call,
    an inner task given up on): that is a failure of the handler, retried and then
    dead-lettered like any other. Ignoring it stalled the partition's commits and its
    key's lane for good.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
