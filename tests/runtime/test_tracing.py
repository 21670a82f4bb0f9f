"""OpenTelemetry: one span per handled event, linked across hops through ``traceparent``."""

from __future__ import annotations

import time
from collections.abc import Callable

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from mesh import Context, Mesh, Settings
from tests.runtime.test_runtime_chain import event_types
from tests.support import read_topic, running


def test_a_chain_is_one_trace_with_a_span_per_step(
    make_app: Callable[..., Mesh], mesh_settings: Settings
) -> None:
    TaskCreated, PlanReady, StepDone = event_types()
    app = make_app(
        TaskCreated,
        PlanReady,
        StepDone,
        settings=mesh_settings.model_copy(update={"tracing": True}),
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    @app.agent("planner", consumes=TaskCreated)
    async def planner(event: TaskCreated, ctx: Context) -> PlanReady:
        return PlanReady(task_id=event.task_id, steps=["a", "b"])

    @app.agent("worker", consumes=PlanReady)
    async def worker(event: PlanReady, ctx: Context) -> StepDone:
        raise RuntimeError("no tools today")  # every attempt fails: recorded on the span

    with running(app, tracer_provider=provider):
        root = app.publish(TaskCreated(task_id="t1", prompt="go"))
        read_topic(mesh_settings.bootstrap_servers, PlanReady.topic(), 1, partitions=3)
        deadline = time.monotonic() + 30
        while not any(
            s.attributes["mesh.agent"] == "worker" for s in exporter.get_finished_spans()
        ):
            assert time.monotonic() < deadline, "the worker's span never ended"
            time.sleep(0.05)

    spans = exporter.get_finished_spans()
    plan_span = next(s for s in spans if s.attributes["mesh.agent"] == "planner")
    work_span = next(s for s in spans if s.attributes["mesh.agent"] == "worker")
    root_trace, root_span = root.traceparent.split("-")[1:3]
    # The planner's span is the child of the span named in the published event...
    assert f"{plan_span.context.trace_id:032x}" == root_trace
    assert f"{plan_span.parent.span_id:016x}" == root_span
    assert plan_span.kind is SpanKind.CONSUMER
    assert plan_span.attributes["messaging.destination.name"] == TaskCreated.topic()
    assert plan_span.attributes["messaging.message.id"] == root.event_id
    assert plan_span.attributes["mesh.correlation_id"] == root.correlation_id
    assert plan_span.status.status_code is StatusCode.UNSET
    # ...and the worker's span the child of the planner's: the event it emitted named it.
    assert work_span.context.trace_id == plan_span.context.trace_id
    assert work_span.parent.span_id == plan_span.context.span_id
    assert work_span.status.status_code is StatusCode.ERROR
    assert work_span.events[0].attributes["exception.message"] == "no tools today"
