"""Agents exchanging typed events end to end over the real broker and registry."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mesh import Context, Event, Mesh, SchemaError, Settings
from mesh.errors import ConfigError
from mesh.schema.files import generate_schemas
from mesh.serde import Serde
from mesh.testing import unique_name
from tests.support import header, read_topic, running


def event_types() -> tuple[type[Event], ...]:
    """Fresh types on fresh topics, so tests never share state."""
    stem = unique_name("chain")

    class TaskCreated(Event, topic=f"{stem}.tasks", key="task_id", name="test.TaskCreated"):
        task_id: str
        prompt: str

    class PlanReady(Event, topic=f"{stem}.plans", key="task_id", name="test.PlanReady"):
        task_id: str
        steps: list[str]

    class StepDone(Event, topic=f"{stem}.steps", key="step_id", name="test.StepDone"):
        task_id: str
        step_id: str
        result: str

    return TaskCreated, PlanReady, StepDone


def test_three_agent_chain_links_every_step(
    make_app: Callable[..., Mesh], mesh_settings: Settings
) -> None:
    TaskCreated, PlanReady, StepDone = event_types()
    app = make_app(TaskCreated, PlanReady, StepDone)

    @app.agent("planner", consumes=TaskCreated)
    async def planner(event: TaskCreated, ctx: Context) -> PlanReady:
        return PlanReady(task_id=event.task_id, steps=[f"{event.prompt}-{i}" for i in range(3)])

    @app.agent("worker", consumes=PlanReady)
    def worker(event: PlanReady, ctx: Context) -> None:  # sync: runs in the thread pool
        for i, step in enumerate(event.steps):
            ctx.emit(StepDone(task_id=event.task_id, step_id=f"{event.task_id}/{i}", result=step))

    with running(app):
        roots = [app.publish(TaskCreated(task_id=f"t{i}", prompt=f"p{i}")) for i in range(5)]
        plans = read_topic(mesh_settings.bootstrap_servers, PlanReady.topic(), 5, partitions=3)
        steps = read_topic(mesh_settings.bootstrap_servers, StepDone.topic(), 15, partitions=3)

    serde = Serde(
        __import__("confluent_kafka").schema_registry.SchemaRegistryClient(
            mesh_settings.registry_config()
        )
    )
    by_correlation = {root.correlation_id: root for root in roots}
    plan_ids = {}
    for msg in plans:
        plan = serde.decode(msg.value(), PlanReady)
        root = by_correlation[header(msg, "mesh.correlation-id")]
        assert header(msg, "mesh.causation-id") == root.event_id
        assert header(msg, "mesh.produced-by") == "planner"
        assert header(msg, "mesh.event-type") == "test.PlanReady"
        assert header(msg, "traceparent").split("-")[1] == root.traceparent.split("-")[1]
        assert msg.key() == plan.task_id.encode()
        plan_ids[header(msg, "mesh.event-id")] = header(msg, "mesh.correlation-id")
    assert len(plan_ids) == 5
    results = set()
    for msg in steps:
        step = serde.decode(msg.value(), StepDone)
        cause = header(msg, "mesh.causation-id")
        assert cause in plan_ids
        assert header(msg, "mesh.correlation-id") == plan_ids[cause]
        assert header(msg, "mesh.produced-by") == "worker"
        results.add((step.task_id, step.result))
    assert results == {(f"t{i}", f"p{i}-{j}") for i in range(5) for j in range(3)}


def test_failing_handler_and_poison_pill_go_to_the_dead_letter_topic(
    make_app: Callable[..., Mesh], mesh_settings: Settings
) -> None:
    TaskCreated, PlanReady, _ = event_types()
    app = make_app(TaskCreated, PlanReady)

    @app.agent("planner", consumes=TaskCreated)
    async def planner(event: TaskCreated) -> PlanReady:
        if event.prompt == "boom":
            raise ValueError("cannot plan boom")
        return PlanReady(task_id=event.task_id, steps=[])

    from confluent_kafka import Producer

    with running(app):
        app.publish(TaskCreated(task_id="bad", prompt="boom"))
        raw = Producer({"bootstrap.servers": mesh_settings.bootstrap_servers})
        raw.produce(TaskCreated.topic(), b"\x07not avro", b"poison")
        raw.flush(10)
        app.publish(TaskCreated(task_id="good", prompt="fine"))
        plans = read_topic(mesh_settings.bootstrap_servers, PlanReady.topic(), 1, partitions=3)
        dlq = f"{TaskCreated.topic()}.{app.group_id('planner')}.dlq"
        dead = read_topic(mesh_settings.bootstrap_servers, dlq, 2, partitions=3)

    assert [m.key() for m in plans] == [b"good"]
    by_key = {m.key(): m for m in dead}
    assert header(by_key[b"bad"], "mesh.error.kind") == "transient"
    assert header(by_key[b"bad"], "mesh.dlq.reason") == "exhausted"
    assert header(by_key[b"bad"], "mesh.exception.class") == "ValueError"
    assert header(by_key[b"bad"], "mesh.exception.message") == "cannot plan boom"
    assert header(by_key[b"bad"], "mesh.original.topic") == TaskCreated.topic()
    assert header(by_key[b"bad"], "mesh.event-type") == "test.TaskCreated"
    assert header(by_key[b"poison"], "mesh.error.kind") == "deserialization"
    assert by_key[b"poison"].value() == b"\x07not avro"  # byte for byte


def test_drift_and_unknown_agent_fail_at_start(make_app: Callable[..., Mesh], schemas_dir) -> None:
    TaskCreated, PlanReady, _ = event_types()
    app = make_app(TaskCreated)

    @app.agent("planner", consumes=TaskCreated, emits=PlanReady)
    async def planner(event: TaskCreated) -> PlanReady: ...

    with pytest.raises(SchemaError, match=r"test\.PlanReady\.avsc is missing"):
        app.prepare()
    generate_schemas([PlanReady], schemas_dir)
    path = schemas_dir / "test.TaskCreated.avsc"
    path.write_text(path.read_text().replace('"prompt"', '"prompt_text"'))
    with pytest.raises(SchemaError, match=r"test\.TaskCreated\.avsc does not match(.|\n)*prompt"):
        app.prepare()
    with pytest.raises(ConfigError, match=r"has no agent 'writer'; its agents are: planner"):
        app.run(["writer"])
    with pytest.raises(ConfigError, match="is not an event type"):
        app.agent("x", consumes=str)  # type: ignore[arg-type]
