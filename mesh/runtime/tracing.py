"""OpenTelemetry spans for handled events: the optional ``otel`` extra.

With ``tracing = true`` (``MESH_TRACING=true``), each handled event gets a span of kind
CONSUMER whose parent is the span named in the event's ``traceparent`` header, and the
events a handler emits name that span as theirs. A chain thus forms one trace across
agents and processes. mesh uses the OpenTelemetry API only: where spans go (OTLP, the
console, nowhere) is the application's choice of SDK and exporter, configured as for any
instrumented library (``opentelemetry-instrument``, or a ``TracerProvider`` of its own).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mesh.errors import ConfigError

if TYPE_CHECKING:
    from mesh.envelope import Envelope

__all__ = ["EventTracer", "event_tracer"]


class EventTracer:
    """Starts the span of one handled event; built by :func:`event_tracer`."""

    def __init__(self, tracer: Any) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._tracer = tracer
        self._propagator = TraceContextTextMapPropagator()
        self._consumer = trace.SpanKind.CONSUMER
        self._error = trace.StatusCode.ERROR

    def start(self, agent: str, topic: str, partition: int, offset: int, envelope: Envelope) -> Any:
        """A started span for handling the event of *envelope*; end it with :meth:`end`."""
        parent = self._propagator.extract({"traceparent": envelope.traceparent})
        return self._tracer.start_span(
            f"{topic} process",
            context=parent,
            kind=self._consumer,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": topic,
                "messaging.destination.partition.id": str(partition),
                "messaging.kafka.offset": offset,
                "messaging.message.id": envelope.event_id,
                "messaging.consumer.group.name": agent,
                "mesh.agent": agent,
                "mesh.event_type": envelope.event_type,
                "mesh.correlation_id": envelope.correlation_id,
            },
        )

    @staticmethod
    def span_id(span: Any) -> str:
        """The span id as 16 hex digits: the parent span of the events the handler emits."""
        return f"{span.get_span_context().span_id:016x}"

    def end(self, span: Any, error: BaseException | None = None) -> None:
        if error is not None:
            span.record_exception(error)
            span.set_status(self._error, f"{type(error).__name__}: {error}")
        span.end()


def event_tracer(enabled: bool, tracer_provider: Any = None) -> EventTracer | None:
    """The tracer of an app, or None when tracing is off (the runtime then skips it)."""
    if not enabled:
        return None
    try:
        from opentelemetry import trace
    except ImportError:
        raise ConfigError(
            "tracing = true needs OpenTelemetry: pip install 'mesh-agents[otel]'"
        ) from None
    from mesh import __version__

    return EventTracer(trace.get_tracer("mesh", __version__, tracer_provider=tracer_provider))
