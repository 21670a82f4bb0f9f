"""Middleware: hooks around every event an agent handles.

Metrics, tracing, log binding and the retry decision are middleware of their own, so a
team adds what it needs (an audit trail, a budget guard, a rate meter) the same way,
without touching the handlers::

    class Audit(Middleware):
        def after_handle(self, ctx, event, outputs, seconds):
            audit_log.info("%s handled %s in %.3fs", ctx.agent, ctx.event_id, seconds)

    app = Mesh("support", middleware=[Audit()])

Hooks run on the event loop of the worker, once per event (for a batch agent, once per
event of the batch), so they must be quick and must not block. An exception raised by
``before_handle`` fails the event like one raised by its handler; one raised by another
hook is logged and ignored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mesh.headers import DUE_TS, last, to_int
from mesh.runtime.failure import ErrorKind

if TYPE_CHECKING:
    from mesh.event import Event
    from mesh.runtime.context import Context
    from mesh.runtime.metrics import AgentMetrics
    from mesh.runtime.retry import DeadLetter, Retry
    from mesh.runtime.topology import Topology
    from mesh.runtime.tracing import EventTracer

__all__ = ["Middleware"]

log = logging.getLogger(__name__)


class Middleware:
    """Override the hooks you need; the defaults do nothing."""

    def before_handle(self, ctx: Context, event: Event) -> None:
        """The handler of *event* is about to run (each attempt)."""

    def after_handle(
        self, ctx: Context, event: Event, outputs: Sequence[Any], seconds: float
    ) -> None:
        """The handler returned *outputs* (events, or delayed events) after *seconds*;
        they are sent next."""

    def on_failure(self, ctx: Context, error: BaseException, seconds: float | None) -> None:
        """An attempt failed: the handler raised or timed out after *seconds*, or the record
        could not be decoded (*seconds* None: no handler ran)."""

    def decide(
        self, ctx: Context, error: BaseException, kind: ErrorKind
    ) -> Retry | DeadLetter | None:
        """Where a failed attempt goes: :class:`~mesh.runtime.retry.Retry`,
        :class:`~mesh.runtime.retry.DeadLetter`, or None to leave it to the next
        middleware and, last, the agent's retry policy."""
        return None


class Hooks:
    """The middleware of one agent, bound for the hot path: only hooks that are overridden
    are called."""

    __slots__ = ("after", "before", "decide", "failure")

    def __init__(self, middleware: Sequence[Middleware]) -> None:
        def overridden(name: str) -> list[Any]:
            base = getattr(Middleware, name)
            return [getattr(m, name) for m in middleware if getattr(type(m), name) is not base]

        self.before = overridden("before_handle")
        self.after = overridden("after_handle")
        self.failure = overridden("on_failure")
        self.decide = overridden("decide")

    def run_after(self, ctx: Context, event: Event, outputs: Sequence[Any], seconds: float) -> None:
        for hook in self.after:
            try:
                hook(ctx, event, outputs, seconds)
            except Exception:
                log.exception("agent %s: middleware %r failed", ctx.agent, hook)

    def run_failure(self, ctx: Context, error: BaseException, seconds: float | None) -> None:
        for hook in self.failure:
            try:
                hook(ctx, error, seconds)
            except Exception:
                log.exception("agent %s: middleware %r failed", ctx.agent, hook)

    def decision(
        self, ctx: Context, error: BaseException, kind: ErrorKind
    ) -> Retry | DeadLetter | None:
        for hook in self.decide:
            try:
                decided = hook(ctx, error, kind)
            except Exception:
                log.exception("agent %s: middleware %r failed", ctx.agent, hook)
                continue
            if decided is not None:
                return decided
        return None


class LogBinding(Middleware):
    """Every line logged while an event is handled (mesh's too) carries its ids."""

    def before_handle(self, ctx: Context, event: Event) -> None:
        ctx._bind_logs()


class Measure(Middleware):
    """The handler's figures in Prometheus (``mesh_events_handled_total``, durations, lateness)."""

    def __init__(self, metrics: AgentMetrics, topology: Topology) -> None:
        self._metrics = metrics
        self._source_of = topology.source_of

    def before_handle(self, ctx: Context, event: Event) -> None:
        if ctx.attempt > 1:  # how late its retry timer fired
            due_ms = to_int(last(ctx.raw_headers, DUE_TS))
            if due_ms is not None:
                self._metrics.retry_lateness(time.time() - due_ms / 1000)

    def after_handle(
        self, ctx: Context, event: Event, outputs: Sequence[Any], seconds: float
    ) -> None:
        envelope = ctx.envelope
        topic = self._source_of(ctx.topic)[0]
        self._metrics.handled(topic, envelope.event_type, "ok", seconds)
        self._metrics.chain_latency(envelope.correlation_id)

    def on_failure(self, ctx: Context, error: BaseException, seconds: float | None) -> None:
        if seconds is None:
            return  # not handled: counted as a retry or a dead letter
        outcome = "timeout" if isinstance(error, TimeoutError) else "error"
        topic = self._source_of(ctx.topic)[0]
        self._metrics.handled(topic, ctx.envelope.event_type, outcome, seconds)


class Trace(Middleware):
    """One OpenTelemetry span per handled event; the events it emits name it as parent."""

    def __init__(self, tracer: EventTracer, topology: Topology) -> None:
        self._tracer = tracer
        self._agent = topology.agent
        self._source_of = topology.source_of
        self._spans: dict[Context, Any] = {}

    def before_handle(self, ctx: Context, event: Event) -> None:
        topic = self._source_of(ctx.topic)[0]
        span = self._tracer.start(self._agent, topic, ctx.partition, ctx.offset, ctx.envelope)
        self._spans[ctx] = span
        ctx._span_id = self._tracer.span_id(span)

    def after_handle(
        self, ctx: Context, event: Event, outputs: Sequence[Any], seconds: float
    ) -> None:
        span = self._spans.pop(ctx, None)
        if span is not None:
            self._tracer.end(span)

    def on_failure(self, ctx: Context, error: BaseException, seconds: float | None) -> None:
        span = self._spans.pop(ctx, None)
        if span is not None:
            self._tracer.end(span, error)
