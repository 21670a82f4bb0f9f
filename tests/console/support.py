"""Helpers for the console's tests: the app they run, the console served two ways, SSE."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from mesh import Event, Mesh
from mesh.console.app import Console, ConsoleOptions, build_app
from mesh.dev.stack import free_port
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


@contextmanager
def console_server(options: ConsoleOptions) -> Iterator[str]:
    """The console served from a thread of its own, for a browser: its base URL."""
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(build_app(Console(options)))
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(30), "console did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


async def next_event(response: ClientResponse) -> str:
    """The data of the next server-sent event of a stream (comments skipped)."""
    lines: list[str] = []
    while True:
        line = (await response.content.readline()).decode().rstrip("\n")
        if line.startswith("data: "):
            lines.append(line[6:])
        elif not line and lines:
            return "\n".join(lines)
