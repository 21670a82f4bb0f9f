"""Helpers for the console's tests: the app they run, a test client, server-sent events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from mesh import Event, Mesh
from mesh.console.app import Console, ConsoleOptions, build_app
from mesh.envelope import Envelope

#: A string field that would run as script if the console did not escape it.
SCRIPT = "<script>alert('x')</script>"


@dataclass
class Shop:
    """An app whose ``planner`` fails on the task ids in ``broken`` (then dead-letters)."""

    app: Mesh
    tasks: type[Event]
    plans: type[Event]
    broken: set[str] = field(default_factory=set)
    chains: dict[str, Envelope] = field(default_factory=dict)

    @property
    def dlq(self) -> str:
        return f"{self.tasks.topic()}.{self.app.group_id('planner')}.dlq"

    def publish(self, task_id: str, prompt: str = "plan it") -> Envelope:
        self.chains[task_id] = self.app.publish(self.tasks(task_id=task_id, prompt=prompt))
        return self.chains[task_id]


@asynccontextmanager
async def console_client(options: ConsoleOptions) -> AsyncIterator[TestClient]:
    """aiohttp's test client on the console application, on a real port."""
    async with TestClient(TestServer(build_app(Console(options)))) as client:
        yield client


async def next_event(response: ClientResponse) -> str:
    """The data of the next server-sent event of a stream (comments skipped)."""
    lines: list[str] = []
    while True:
        line = (await response.content.readline()).decode().rstrip("\n")
        if line.startswith("data: "):
            lines.append(line[6:])
        elif not line and lines:
            return "\n".join(lines)
