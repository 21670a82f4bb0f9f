"""mesh console: page times and idle CPU against the issue's targets. One run.

1. Chain page: ``GET /chain?id=`` for a 4-step chain (a retry, a dead letter) among
   ``--trace-events`` other events (``replay_bench.fill_trace``), the console without an
   app, so the trace reads every topic: by its correlation id, and by the event id of its
   last step (a second pass reads what the first read before meeting the event; here the
   whole window, since the chain was written after the other events). Target < 1 s.
2. Overview: an app of ``--agents`` agents, each consuming a topic of ``--partitions``
   partitions (50 x 10: 500 source partitions; with retry and dead-letter topics four
   times that), topics created as ``mesh run`` creates them and a few records in each.
   Timed: the sampler's round (counts and lag, in the background) and ``GET /`` (the
   page from the last round), median and max of 20. Target < 300 ms.
3. Idle: the console process's CPU time over ``--idle`` seconds once nobody has looked
   for 30 s (refreshes every 60 s then). Target < 2 %.

Starts its own broker and registry::

    python bench/console_bench.py [--agents 50] [--partitions 10] [--trace-events 10000]
                                  [--only chain|overview]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from confluent_kafka import Producer
from replay_bench import fill_trace  # bench/ is the script's directory

from mesh import Event, Mesh, Settings
from mesh.config import TopicDefaults
from mesh.console.app import ConsoleOptions, serving
from mesh.console.source import Sampler, app_agents
from mesh.dev.stack import free_port, start_broker, start_registry
from mesh.ops.trace import Step, trace
from mesh.schema.files import generate_schemas
from mesh.serde import Serde

#: Once nobody has looked for this long the console refreshes every 30 s (console.app).
WATCHED_S = 30.0


def event_type(n: int) -> type[Event]:
    class Ping(Event, topic=f"bench.console.{n}", name=f"bench.Ping{n}"):
        n: int

    return Ping


def wide_app(settings: Settings, agents: int, schemas: Path) -> Mesh:
    """*agents* agents, one topic each, their topics created as at start."""
    types = [event_type(n) for n in range(agents)]
    generate_schemas(types, schemas)
    app = Mesh("bench", settings=settings, schemas_dir=schemas)
    for n, consumed in enumerate(types):
        app.agent(f"agent{n}", consumes=consumed)(lambda event: None)
    app.prepare()
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for consumed in types:
        for key in range(20):
            producer.produce(consumed.topic(), b"\0", str(key).encode())
    producer.flush(30)
    return app


async def timed_gets(url: str, times: int) -> list[float]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as warm:  # the first waits for the first round
            assert warm.status == 200, await warm.text()
        found = []
        for _ in range(times):
            began = time.perf_counter()
            async with session.get(url) as answer:
                await answer.read()
                assert answer.status == 200
            found.append(time.perf_counter() - began)
        return found


def chain_page(settings: Settings, events: int) -> None:
    chain = fill_trace(settings, Serde.from_settings(settings), events)
    step: Step = trace(settings, chain).roots[0]
    while step.children:
        step = step.children[0]
    with serving(ConsoleOptions(settings)) as url:
        for what, ident in (("correlation id", chain), ("last step's event id", step.event_id)):
            took = asyncio.run(timed_gets(f"{url}/chain?id={ident}", 5))
            print(
                f"chain page by {what}: a 4-step chain among {events:,} events, every topic "
                f"read: median {statistics.median(took) * 1000:.0f} ms, "
                f"max {max(took) * 1000:.0f} ms (target < 1 s)"
            )


def overview(settings: Settings, agents: int, partitions: int, idle_s: float, tmp: Path) -> None:
    app = wide_app(
        settings.model_copy(update={"topics": TopicDefaults(partitions=partitions)}),
        agents,
        tmp / "schemas",
    )
    described = app_agents(app)
    sampler = Sampler(app.settings)
    rounds = []
    for _ in range(3):
        began = time.perf_counter()
        sampler.sample(described)
        rounds.append(time.perf_counter() - began)
    sampler.close()
    total = sum(1 for a in described for _ in a.topics) * partitions
    with serving(ConsoleOptions(app.settings, app=app)) as url:
        took = asyncio.run(timed_gets(url + "/", 20))
        time.sleep(WATCHED_S + 2)
        cpu, wall = time.process_time(), time.monotonic()
        time.sleep(idle_s)
        idle = (time.process_time() - cpu) / (time.monotonic() - wall)
    print(
        f"overview: {agents} agents, {agents * partitions} source partitions ({total} with "
        f"retry and dead-letter topics): GET / median {statistics.median(took) * 1000:.1f} ms, "
        f"max {max(took) * 1000:.1f} ms (target < 300 ms); a sampler round "
        f"{statistics.median(rounds) * 1000:.0f} ms (background)"
    )
    print(f"idle: {idle * 100:.2f} % of one core over {idle_s:.0f} s (target < 2 %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--partitions", type=int, default=10)
    parser.add_argument("--trace-events", type=int, default=10_000)
    parser.add_argument("--idle", type=float, default=120.0)
    parser.add_argument("--only", choices=["chain", "overview"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        broker = start_broker(port=free_port(), log_dir=tmp)
        registry = start_registry(bootstrap_servers=broker.url, port=free_port(), log_dir=tmp)
        try:
            settings = Settings(bootstrap_servers=broker.url, registry_url=registry.url)
            if args.only in (None, "chain"):
                chain_page(settings, args.trace_events)
            if args.only in (None, "overview"):
                overview(settings, args.agents, args.partitions, args.idle, tmp)
        finally:
            registry.stop()
            broker.stop()


if __name__ == "__main__":
    main()
