"""What becomes of a handled event: its outputs sent, or its failure retried or dead-lettered.

The dispatcher hands each event here once its handler returned (:meth:`Outcomes.emit`) or
failed (:meth:`Outcomes.failed`, :meth:`Outcomes.undecodable`). Every record written for
an event is tracked until the broker acknowledges it; the last acknowledgement hands the
event back to the dispatcher (*finished*), which may then commit its offset. A record
the broker refuses for good dead-letters its event; any other refusal stops the worker
without committing it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from confluent_kafka import KafkaError, KafkaException, Message

from mesh.errors import DeserializationError, PublishError, SerializationError
from mesh.headers import DLQ_VALUE_BYTES
from mesh.kafka.errors import is_permanent, is_too_large
from mesh.runtime.context import Context
from mesh.runtime.dead_letter import dead_letter_headers
from mesh.runtime.failure import DeadLetterReason, ErrorKind, first_failure_of
from mesh.runtime.metrics import AgentMetrics
from mesh.runtime.publisher import Publisher, Record
from mesh.runtime.retry import DeadLetter, Retry, decide, retry_headers

if TYPE_CHECKING:
    from mesh.runtime.dispatcher import WorkerOptions

__all__ = ["Job", "Outcomes"]

log = logging.getLogger("mesh.runtime.worker")

#: What a record written for a job is; decides what a permanent refusal of it leads to.
_Write = Literal["output", "retry", "dead letter", "dead letter without value"]


class Job:
    """One input record on its way through the handler and the producer."""

    __slots__ = ("attempt", "dead", "msg", "part", "pending")

    def __init__(self, msg: Message, part: Any) -> None:
        self.msg = msg
        self.part = part  # the dispatcher's bookkeeping of its partition
        self.pending = 0  # deliveries still awaited
        self.attempt = 1  # of the handler, once it ran
        self.dead = False  # a dead letter of it is written or on its way


class Outcomes:
    """Sends what an agent's handlers emit and routes what fails, for one worker."""

    def __init__(
        self,
        options: WorkerOptions,
        *,
        publisher: Publisher,
        metrics: AgentMetrics,
        finished: Callable[[Job], None],
        fail: Callable[[BaseException], None],
        alive: Callable[[], bool],
    ) -> None:
        self.options = options
        self._topology = options.topology
        self._hooks = options.hooks
        self._publisher = publisher
        self._metrics = metrics
        self._finished = finished
        self._fail = fail
        self._alive = alive
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        # Delivery reports, settled on the loop in batches.
        self._reports: deque[tuple[Job, Record, _Write, KafkaError | None]] = deque()
        self._settle_scheduled = False

    def undecodable(self, job: Job, ctx: Context, exc: DeserializationError) -> None:
        self._hooks.run_failure(ctx, exc, None)
        if exc.reason == "unknown-schema":
            # Written with a schema this registry replica has not read yet (several
            # registries behind a load balancer): worth the retry policy's tries.
            self._retry_or_dead_letter(job, ctx, ErrorKind.DESERIALIZATION, exc)
        else:  # the same bytes fail the same way again
            self._dead_letter(job, ErrorKind.DESERIALIZATION, exc)

    def failed(self, job: Job, ctx: Context, exc: BaseException) -> None:
        if isinstance(exc, TimeoutError):
            self._retry_or_dead_letter(job, ctx, ErrorKind.TIMEOUT, exc)
            return
        log.warning("agent %s: attempt %d failed: %r", self.options.agent, job.attempt, exc)
        self._retry_or_dead_letter(job, ctx, ErrorKind.TRANSIENT, exc)

    def _retry_or_dead_letter(
        self, job: Job, ctx: Context, kind: ErrorKind, error: BaseException
    ) -> None:
        """Forward a failed record to the retry topic of its next delay, or dead-letter it:
        as the middleware decides, else as the retry policy says."""
        msg = job.msg
        source, retried = self._topology.source_of(msg.topic())
        now_ms = int(time.time() * 1000)
        decision = self._hooks.decision(ctx, error, kind)
        if (
            isinstance(decision, Retry)
            and self._topology.retry_of(source, decision.delay_ms) not in self._topology.retries
        ):
            log.error(
                "agent %s: middleware asked for a retry in %d ms, which the retry policy has "
                "no topic for (%s); the policy decides instead",
                self.options.agent,
                decision.delay_ms,
                ", ".join(f"{d} ms" for d in self.options.retry.delays_ms()) or "no retries",
            )
            decision = None
        decision = decision or decide(
            self.options.retry,
            error,
            kind,
            job.attempt,
            now_ms=now_ms,
            first_failure_ms=(retried and first_failure_of(msg.headers())) or now_ms,
        )
        if isinstance(decision, DeadLetter):
            self._dead_letter(job, decision.kind, error, reason=decision.reason)
            return
        group_id = self.options.group_id
        headers = retry_headers(
            msg,
            retried=retried,
            kind=kind,
            error=error,
            attempt=job.attempt,
            group_id=group_id,
            due_ms=decision.due_ms,
        )
        self._metrics.retried(source, kind)
        topic = self._topology.retry_of(source, decision.delay_ms)
        due_ms = decision.due_ms
        log.info(
            "agent %s: %s:%d@%d attempt %d of %d due at %s.%03dZ (in %.1f s) through %s",
            self.options.agent,
            msg.topic(),
            msg.partition(),
            msg.offset(),
            job.attempt + 1,
            self.options.retry.attempts,
            time.strftime("%H:%M:%S", time.gmtime(due_ms / 1000)),
            due_ms % 1000,
            (due_ms - now_ms) / 1000,
            topic,
        )
        self._send(job, Record(topic, msg.value(), msg.key(), headers), "retry")

    def _dead_letter(
        self,
        job: Job,
        kind: ErrorKind,
        error: BaseException,
        *,
        reason: DeadLetterReason | None = None,
    ) -> None:
        msg = job.msg
        options = self.options
        source, retried = self._topology.source_of(msg.topic())
        headers = dead_letter_headers(
            msg,
            retried=retried,
            kind=kind,
            error=error,
            attempt=job.attempt,
            group_id=options.group_id,
            agent=options.agent,
            reason=reason,
        )
        self._metrics.dead_lettered(source, kind)
        job.dead = True
        topic = self._topology.dead_letter_of(source)
        log.error(  # the one line with the traceback: the attempts before logged none
            "agent %s: %s:%d@%d dead-lettered to %s (reason %s, after %d attempt(s)): %r",
            options.agent,
            msg.topic(),
            msg.partition(),
            msg.offset(),
            topic,
            (reason or DeadLetterReason.of(kind)).value,
            job.attempt,
            error,
            exc_info=error,
        )
        self._send(job, Record(topic, msg.value(), msg.key(), headers), "dead letter")

    def emit(self, job: Job, ctx: Context, emits: list[Any]) -> None:
        """Send what a handler emitted; the input is finished once all of it is acknowledged."""
        if not emits:
            self._finished(job)
            return
        agent, envelope, span_id = self.options.agent, ctx.envelope, ctx._span_id
        try:  # encode everything first: all of the outputs are sent, or none
            records = [
                self._publisher.encode(
                    out, envelope.child(out.event_type(), agent, span_id=span_id)
                )
                for out in emits
            ]
        except SerializationError as exc:
            self._dead_letter(job, ErrorKind.FATAL, exc)
            return
        emitted = self._metrics.emitted
        job.pending += 1  # held while sending: an ack settled meanwhile must not finish it
        for record, out in zip(records, emits, strict=True):
            if not self._send(job, record, "output"):
                break  # refused for good: the input is dead-lettered, the rest not sent
            emitted(record.topic, out.event_type())
        self._settle(job)

    def _send(self, job: Job, record: Record, what: _Write) -> bool:
        """Queue *record*, written for *job*; the job finishes once all of them are acked.

        Returns False when the record was refused for good before it was queued (too
        large, invalid): then the job was dead-lettered instead (see :meth:`_refused`).
        """
        job.pending += 1
        on_delivery = functools.partial(self.report, job, record, what)
        try:
            self._publisher.send_raw(*record, on_delivery=on_delivery)
        except KafkaException as exc:  # librdkafka refused it before queuing
            job.pending -= 1
            self._refused(job, exc.args[0], record, what)
            return False
        return True

    def report(
        self, job: Job, record: Record, what: _Write, err: KafkaError | None, _msg: Message
    ) -> None:
        """A delivery report: queued and settled on the loop with the others served by the
        same poll. Mostly served on the loop (the publisher's acknowledgement pump), but
        any thread that polls the shared producer (``Mesh.publish`` flushing it from a
        sync handler's thread) may serve it."""
        self._reports.append((job, record, what, err))
        if not self._settle_scheduled:
            self._settle_scheduled = True
            if threading.get_ident() == self._loop_thread:
                self._loop.call_soon(self._settle_reports)
            else:
                self._loop.call_soon_threadsafe(self._settle_reports)

    def _settle_reports(self) -> None:
        self._settle_scheduled = False  # first: a report queued from now on schedules again
        reports = self._reports
        while reports:
            job, record, what, err = reports.popleft()
            if err is not None:
                self._refused(job, err, record, what)
            self._settle(job)

    def _settle(self, job: Job) -> None:
        """One record written for *job* is done with; the last one finishes the job."""
        job.pending -= 1
        if job.pending == 0 and self._alive():
            self._finished(job)

    def _refused(self, job: Job, err: KafkaError, record: Record, what: _Write) -> None:
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
            self._dead_letter(job, ErrorKind.FATAL, error, reason=DeadLetterReason.REFUSED)
