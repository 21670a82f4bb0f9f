"""The event loop's side of a worker: key lanes, in-flight work, outputs and offsets.

Records arrive in batches from the poll thread (:mod:`mesh.runtime.poller`); everything
here runs on the asyncio loop, so the bookkeeping needs no locks. The consumer side and
the producer are injected (:class:`ConsumerPort`, :class:`~mesh.runtime.publisher.Publisher`),
so the dispatcher can be driven without a broker.

Guarantees:

* an input offset is stored for commit only once its handler finished and every
  event it emitted was acknowledged (acks=all), and never past an unfinished event
  of the same partition (:class:`~mesh.runtime.offsets.PartitionOffsets`);
* events with the same key are handled one after the other, in offset order; other
  keys of the same partition run concurrently, up to ``concurrency`` events;
* a partition with ``concurrency`` events waiting behind busy keys, or
  ``max_uncommitted`` events past its committable offset, is paused until it has room;
* on revoke and on shutdown, new events stop, in-flight ones get ``drain_timeout_s``
  to finish, the finished prefix is stored, then the partitions are released.

Acknowledgements drive progress: delivery reports are served on the loop while records
are awaiting them (:meth:`~mesh.runtime.publisher.Publisher.pump_acks`) and settled in
batches (:meth:`~mesh.runtime.outcomes.Outcomes.report`); a finished event schedules one
store of the offsets that moved. What becomes of a handled event (its outputs, its retry
or dead letter) is :mod:`mesh.runtime.outcomes`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import KafkaError, Message, TopicPartition

from mesh.config import RetryPolicy
from mesh.envelope import Envelope, record_event_id
from mesh.errors import DeserializationError
from mesh.event import Event
from mesh.runtime.context import Context
from mesh.runtime.failure import attempt_of
from mesh.runtime.invoke import invoke
from mesh.runtime.metrics import AgentMetrics
from mesh.runtime.middleware import Hooks
from mesh.runtime.offsets import PartitionOffsets
from mesh.runtime.outcomes import Job, Outcomes
from mesh.runtime.publisher import Publisher
from mesh.runtime.threads import HandlerThreads
from mesh.runtime.topology import Topology

__all__ = ["ConsumerPort", "Dispatcher", "WorkerOptions"]

log = logging.getLogger("mesh.runtime.worker")

TP = tuple[str, int]
#: Async handlers past their timeout are cancelled at most this late. A sweep over the
#: running handlers costs a dict entry per event; asyncio.timeout() per call (a timer
#: handle, a context manager, a coroutine frame) cost a quarter of a fast agent's time.
_SWEEP_S = 0.05


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How one agent consumes; built from settings and decorator arguments."""

    topology: Topology
    handler: Callable[..., Any]
    is_async: bool
    concurrency: int
    timeout_s: float | None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    drain_timeout_s: float = 30.0
    #: Records taken from the consumer at once.
    poll_batch: int = 500
    #: Past this many events received after a partition's committable offset, the
    #: partition is paused until the oldest unfinished one finishes.
    max_uncommitted: int = 10_000
    #: A batch agent's handler takes a list of events (up to *batch_size*, gathered for
    #: at most *batch_wait_s*) and returns one result per event.
    batch: bool = False
    batch_size: int = 500
    batch_wait_s: float = 0.05
    hooks: Hooks = field(default_factory=lambda: Hooks(()))

    @property
    def agent(self) -> str:
        return self.topology.agent

    @property
    def group_id(self) -> str:
        return self.topology.group_id


class ConsumerPort(Protocol):
    """What the dispatcher asks of the consumer's side (:class:`~mesh.runtime.poller.Poller`)."""

    def store(self, offsets: list[TopicPartition]) -> None: ...
    def pause(self, tp: TP, *, window: int | None = None) -> None: ...
    def resume(self, tp: TP) -> None: ...
    def release(self, count: int) -> None: ...
    @property
    def in_flight(self) -> int: ...


class _Partition:
    """Bookkeeping of one assigned partition; dropped (and marked revoked) when released."""

    __slots__ = ("closing", "full", "offsets", "revoked", "unacked", "waiting")

    def __init__(self) -> None:
        self.offsets = PartitionOffsets()
        self.unacked = 0  # started and not yet finished (handler or deliveries pending)
        self.waiting = 0  # received, not started: behind a busy key, or for a free slot
        self.closing = False  # being released: start nothing new
        self.revoked = False  # released: late completions are ignored
        self.full = False  # paused: see Dispatcher._crowded


#: A batch item's outcome: what its handler returned for it, or how it failed.
_Outcome = tuple[Any, BaseException | None]


class Dispatcher:
    """Runs the handlers of one agent over the records its consumer receives."""

    def __init__(
        self,
        options: WorkerOptions,
        *,
        port: ConsumerPort,
        publisher: Publisher,
        serde: Any,
        threads: HandlerThreads,
        metrics: AgentMetrics,
        on_fatal: Callable[[BaseException], None],
    ) -> None:
        self.options = options
        self._port = port
        self._publisher = publisher
        self._serde = serde
        self._threads = threads
        self._metrics = metrics
        self._hooks = options.hooks
        self._on_fatal = on_fatal
        self._loop = asyncio.get_running_loop()
        self._topology = options.topology
        self._models = options.topology.consumed  # topic -> the event types it decodes to
        self._parts: dict[TP, _Partition] = {}
        self._lanes: dict[tuple[str, bytes], deque[Job]] = {}
        self._running = 0  # handlers (events) started and not returned
        self._ready: deque[Job] = deque()  # free to start (their key is idle), no slot yet
        self._dirty: set[TP] = set()
        self._store_scheduled = False
        self._tasks: set[asyncio.Future[None]] = set()
        # Async handlers with a time limit: task -> loop time it expires; the expired ones
        # cancelled by the sweep (their CancelledError is a timeout, not a shutdown).
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._sweep_handle: asyncio.TimerHandle | None = None
        # Batch agents: the batch being gathered, its timer, and batches running.
        self._forming: list[Job] = []
        self._batch_timer: asyncio.TimerHandle | None = None
        self._batches = 0
        self.fatal: BaseException | None = None
        self._outcomes = Outcomes(
            options,
            publisher=publisher,
            metrics=metrics,
            finished=self._finish,
            fail=self.fail,
            alive=lambda: self.fatal is None,
        )

    # -- partitions ------------------------------------------------------------------

    def assign(self, tps: list[TP]) -> None:
        for tp in tps:
            self._parts[tp] = _Partition()
        self._metrics.assigned(len(self._parts))

    async def drain(self, tps: set[TP]) -> None:
        """Stop *tps*, give their started events time to finish, store their offsets."""
        parts = {tp: self._parts[tp] for tp in tps if tp in self._parts}
        for part in parts.values():
            part.closing = True
        self._drop_queued()
        deadline = self._loop.time() + self.options.drain_timeout_s
        while self.fatal is None and any(part.unacked for part in parts.values()):
            if self._loop.time() > deadline:
                log.warning(
                    "agent %s: %d events still in flight after %.0fs; they will be redelivered",
                    self.options.agent,
                    sum(part.unacked for part in parts.values()),
                    self.options.drain_timeout_s,
                )
                break
            await asyncio.sleep(0.005)
        self._dirty |= set(parts)
        self._store()
        for tp, part in parts.items():
            part.revoked = True
            self._port.release(part.offsets.unfinished)
            del self._parts[tp]
        self._metrics.assigned(len(self._parts))

    def lose(self, tps: set[TP]) -> None:
        """*tps* belong to another member already: forget their events, store nothing."""
        parts = {tp: self._parts.pop(tp) for tp in tps if tp in self._parts}
        for part in parts.values():
            part.closing = part.revoked = True
            self._port.release(part.offsets.unfinished)
        self._drop_queued()
        self._dirty -= tps
        self._metrics.assigned(len(self._parts))

    @property
    def partitions(self) -> set[TP]:
        return set(self._parts)

    # -- intake ----------------------------------------------------------------------

    def accept(self, batch: Sequence[Message]) -> None:
        """Take the records the poll thread fetched: start them, or queue them by key."""
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
            job = Job(msg, part)
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
            self._port.release(skipped)
        if self._forming and not self._batches:
            self._launch_batch()  # nothing runs: no reason to wait for more
        self._metrics.in_flight(self._port.in_flight)

    def _check_crowded(self, part: _Partition, msg: Message) -> None:
        """Pause the partition of *msg* once it is crowded (see :meth:`_crowded`)."""
        if not part.full and self._crowded(part):
            part.full = True
            window = part.offsets.window
            big = window if window >= self.options.max_uncommitted else None
            self._port.pause((msg.topic(), msg.partition()), window=big)

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
            self._port.resume((msg.topic(), msg.partition()))

    def _start(self, job: Job) -> None:
        """Run *job*'s handler, or queue it until one of the ``concurrency`` slots frees."""
        if self._running >= self.options.concurrency:
            job.part.waiting += 1
            self._ready.append(job)
            return
        self._running += 1
        job.part.unacked += 1
        if self.options.batch:
            self._forming.append(job)
            if len(self._forming) >= self.options.batch_size:
                self._launch_batch()
            elif self._batch_timer is None:
                self._batch_timer = self._loop.call_later(
                    self.options.batch_wait_s, self._launch_batch
                )
            return
        self._track(self._loop.create_task(self._handle(job)))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Not the handler (its errors are dead-lettered) but mesh or the registry
            # failing around it: leave the offset unfinished and stop, so a restart
            # consumes the record again.
            self.fail(task.exception())

    def fail(self, error: BaseException | None) -> None:
        """Stop the worker: *error* leaves its record unfinished (consumed again on restart)."""
        if self.fatal is None and error is not None:
            self.fatal = error
            self._on_fatal(error)

    # -- one event -------------------------------------------------------------------

    def _prepare(self, job: Job) -> tuple[Event | None, Context, DeserializationError | None]:
        """The decoded event of *job* (None if it cannot be decoded) and its context."""
        msg = job.msg
        headers = msg.headers()
        if self._topology.source_of(msg.topic())[1]:
            job.attempt = attempt_of(headers) + 1
        envelope = Envelope.from_headers(  # a foreign record gets an id from where it is
            headers,
            fallback_event_id=record_event_id(msg.topic(), msg.partition(), msg.offset()),
        )
        ctx = Context(
            agent=self.options.agent,
            envelope=envelope,
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
            key=msg.key(),
            raw_headers=headers,
            attempt=job.attempt,
        )
        try:
            return self._decode(msg), ctx, None
        except DeserializationError as exc:
            return None, ctx, exc

    async def _handle(self, job: Job) -> None:
        event, ctx, undecodable = self._prepare(job)
        if event is None:
            self._release_lane(job)
            self._outcomes.undecodable(job, ctx, undecodable)  # type: ignore[arg-type]
            return
        options = self.options
        hooks = self._hooks
        started = time.perf_counter()
        try:
            for hook in hooks.before:
                hook(ctx, event)
            if options.is_async:  # the common case, inlined
                call = options.handler(event, ctx)
                result = await (call if options.timeout_s is None else self._limited(call))
            else:
                result = await invoke(
                    options.handler,
                    event,
                    ctx,
                    is_async=False,
                    timeout_s=options.timeout_s,
                    threads=self._threads,
                )
        except (Exception, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError):
                exc = self._cancellation(exc)
            ctx._finish()
            self._release_lane(job)
            hooks.run_failure(ctx, exc, time.perf_counter() - started)
            self._outcomes.failed(job, ctx, exc)
            return
        emits = ctx._finish()
        if result is not None:
            emits.extend(result if isinstance(result, list | tuple) else [result])
        self._release_lane(job)
        if hooks.after:
            hooks.run_after(ctx, event, emits, time.perf_counter() - started)
        self._outcomes.emit(job, ctx, emits)

    def _decode(self, msg: Message) -> Event:
        models = self._models[msg.topic()]
        model = models[0]
        if len(models) > 1:
            wanted = Envelope.event_type_of(msg.headers())
            model = next((m for m in models if m.event_type() == wanted), model)
        return self._serde.decode(msg.value(), model)

    async def _limited(self, call: Coroutine[Any, Any, Any]) -> Any:
        """Await an async handler's *call* under the agent's timeout (see :meth:`_sweep`)."""
        task = asyncio.current_task()
        timeout_s = self.options.timeout_s
        assert task is not None
        assert timeout_s is not None
        self._deadlines[task] = self._loop.time() + timeout_s
        if self._sweep_handle is None:
            self._sweep_handle = self._loop.call_later(_SWEEP_S, self._sweep)
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
        """Cancel the async handlers past their timeout; runs every ``_SWEEP_S`` while any
        handler with a time limit runs."""
        now = self._loop.time()
        for task, deadline in self._deadlines.items():
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        self._sweep_handle = (
            self._loop.call_later(_SWEEP_S, self._sweep) if self._deadlines else None
        )

    # -- batches ---------------------------------------------------------------------

    def _launch_batch(self) -> None:
        if self._batch_timer is not None:
            self._batch_timer.cancel()
            self._batch_timer = None
        jobs, self._forming = self._forming, []
        if jobs:
            self._batches += 1
            self._track(self._loop.create_task(self._handle_batch(jobs)))

    async def _handle_batch(self, jobs: list[Job]) -> None:
        """Run a batch; if it fails, isolate the events that fail (see :meth:`_isolate`)."""
        try:
            hooks = self._hooks
            started = time.perf_counter()
            items = []
            for job in jobs:
                event, ctx, undecodable = self._prepare(job)
                if event is None:
                    self._release_lane(job)
                    self._outcomes.undecodable(job, ctx, undecodable)  # type: ignore[arg-type]
                    continue
                try:
                    for hook in hooks.before:
                        hook(ctx, event)
                except Exception as exc:  # fails this event only, as in a per-event agent
                    ctx._finish()
                    self._release_lane(job)
                    hooks.run_failure(ctx, exc, time.perf_counter() - started)
                    self._outcomes.failed(job, ctx, exc)
                    continue
                items.append((job, event, ctx))
            outcomes = await self._isolate([event for _, event, _ in items])
            seconds = time.perf_counter() - started
            for (job, event, ctx), (result, error) in zip(items, outcomes, strict=True):
                emits = ctx._finish()
                self._release_lane(job)
                if error is not None:
                    hooks.run_failure(ctx, error, seconds)
                    self._outcomes.failed(job, ctx, error)
                    continue
                if result is not None:
                    emits.extend(result if isinstance(result, list | tuple) else [result])
                hooks.run_after(ctx, event, emits, seconds)
                self._outcomes.emit(job, ctx, emits)
        finally:
            self._batches -= 1
            if self._forming and not self._batches:
                self._launch_batch()

    async def _isolate(self, events: list[Event]) -> list[_Outcome]:
        """Call the batch handler with *events*; when it raises, call it again with each half,
        down to single events, so only the events that fail are retried or dead-lettered.

        An event of a failed batch may thus be handled more than once (at-least-once, as a
        redelivery after a crash would).
        """
        try:
            results = await self._call_batch(events)
        except (Exception, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError):
                exc = self._cancellation(exc)
            if len(events) == 1:
                return [(None, exc)]
            half = len(events) // 2
            return [*await self._isolate(events[:half]), *await self._isolate(events[half:])]
        return [(result, None) for result in results]

    async def _call_batch(self, events: list[Event]) -> Sequence[Any]:
        options = self.options
        if options.is_async:
            call = options.handler(events)
            results = await (call if options.timeout_s is None else self._limited(call))
        else:
            results = await self._threads.run(options.handler, events, timeout_s=options.timeout_s)
        if not isinstance(results, list | tuple) or len(results) != len(events):
            got = len(results) if isinstance(results, list | tuple) else type(results).__name__
            raise TypeError(
                f"batch handler of {options.agent!r} returned {got} results for "
                f"{len(events)} events: return one result (an event, a list, or None) per event"
            )
        return results

    # -- lanes and offsets -----------------------------------------------------------

    def _drop_queued(self) -> None:
        """Events of a closing partition that never started (queued behind their key, or
        for a slot): drop them."""
        for queue in (*self._lanes.values(), self._ready):
            if any(job.part.closing for job in queue):
                kept = [job for job in queue if not job.part.closing]
                queue.clear()
                queue.extend(kept)

    def _release_lane(self, job: Job) -> None:
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

    def _unqueue(self, job: Job) -> None:
        """Start *job*, which waited behind its key or for a slot."""
        job.part.waiting -= 1
        self._start(job)
        self._check_relaxed(job.part, job.msg)

    def _finish(self, job: Job) -> None:
        part = job.part
        if part.revoked:
            return  # finished after its partition was released; accounted for then
        part.unacked -= 1
        self._port.release(1)
        if part.offsets.complete(job.msg.offset()):
            tp = (job.msg.topic(), job.msg.partition())
            self._dirty.add(tp)
            self._check_relaxed(part, job.msg)
            if not self._store_scheduled:
                self._store_scheduled = True
                self._loop.call_soon(self._store)

    def _store(self) -> None:
        """Hand the committable offsets that moved to the consumer."""
        self._store_scheduled = False
        if not self._dirty:
            return
        stored = []
        for tp in self._dirty:
            part = self._parts.get(tp)
            if part is not None and part.offsets.committable is not None:
                stored.append(TopicPartition(tp[0], tp[1], part.offsets.committable))
        self._dirty.clear()
        if stored:
            self._port.store(stored)
        self._metrics.in_flight(self._port.in_flight)


def _cancelled_by_mesh() -> bool:
    """Whether the running task was cancelled from outside (mesh shutting down).

    A handler may raise ``CancelledError`` on its own (an HTTP client's cancelled call,
    an inner task given up on): that is a failure of the handler, retried and then
    dead-lettered like any other. Ignoring it stalled the partition's commits and its
    key's lane for good.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
