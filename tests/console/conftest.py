"""A small app with a failing agent, run on the session's broker."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mesh import Event, Mesh, Settings
from mesh.config import RetryPolicy
from mesh.testing import unique_name
from tests.console.support import SCRIPT, Shop
from tests.support import read_topic, running


@pytest.fixture
def shop(make_app: Callable[..., Mesh]) -> Shop:
    stem = unique_name("console")

    class TaskCreated(Event, topic=f"{stem}.tasks", key="task_id", name="test.console.TaskCreated"):
        task_id: str
        prompt: str

    class PlanReady(Event, topic=f"{stem}.plans", key="task_id", name="test.console.PlanReady"):
        task_id: str
        steps: list[str]

    app = make_app(TaskCreated, PlanReady)
    found = Shop(app, TaskCreated, PlanReady, broken={"t1"})
    quick = RetryPolicy(attempts=2, backoff="fixed", initial_delay="200ms")

    @app.agent("planner", consumes=TaskCreated, emits=PlanReady, retry=quick)
    async def planner(event: TaskCreated) -> PlanReady:
        if event.task_id in found.broken:
            raise ValueError(f"cannot plan {event.task_id}")
        return PlanReady(task_id=event.task_id, steps=[event.prompt])

    @app.agent("auditor", consumes=TaskCreated)
    async def auditor(event: TaskCreated) -> None:
        return None

    return found


@pytest.fixture
def failed(shop: Shop, mesh_settings: Settings) -> Shop:
    """The shop after a run: t1 dead-lettered by the planner (its prompt holds a script
    tag), t2 planned."""
    with running(shop.app):
        shop.publish("t1", prompt=SCRIPT)
        shop.publish("t2")
        read_topic(mesh_settings.bootstrap_servers, shop.dlq, 1, partitions=3)
        read_topic(mesh_settings.bootstrap_servers, shop.plans.topic(), 1, partitions=3)
    return shop
