"""Retries: how late do retries fire, and what do they cost healthy traffic? One run.

1. Lateness: every event fails its first attempt; the retry's start is compared with the
   due time the record carries. Printed as p50/p99/max in ms for 1 s and 5 s delays (never
   negative: a retry that fires early would be a bug, and is reported as such).
2. Healthy throughput: the same agent with no failures, then with 20 % of the events
   failing their first attempt; the rate of the healthy 80 % is compared with the rate of
   the no-failure run. Target >= 0.9.

Starts its own broker and registry::

    python bench/retry_bench.py [--lateness-events 300] [--events 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer

from mesh import Context, Envelope, Event, Mesh, Settings
from mesh.config import RetryPolicy, TopicDefaults
from mesh.devstack import free_port, start_broker, start_registry
from mesh.headers import DUE_TS
from mesh.schema import generate_schemas
from mesh.serde import Serde

GROUP_CONFIG = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


def task_type(topic: str) -> type[Event]:
    """A fresh event type per run, on its own topic."""

    class Task(Event, topic=topic, key="task_id", name="bench.Task"):
        task_id: str
        n: int

    return Task


def publish(settings: Settings, task: type[Event], count: int) -> None:
    """Fill the topic through one producer (``Mesh.publish`` waits for each ack)."""
    serde = Serde.from_settings(settings)
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 10})
    for n in range(count):
        event = task(task_id=f"t{n}", n=n)
        envelope = Envelope.new_chain(task.event_type(), produced_by="bench")
        while True:
            try:
                producer.produce(
                    task.topic(),
                    serde.encode(event, task.topic()),
                    event.task_id.encode(),
                    headers=envelope.to_headers(),
                )
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)


class Flaky(Exception):
    pass


def run_agent(
    settings: Settings,
    schemas: Path,
    *,
    count: int,
    fail_every: int | None,
    delay: str,
    topic: str,
) -> tuple[list[float], float]:
    """Publish *count* tasks, run the agent until all succeeded; lateness (ms) and healthy rate."""
    Task = task_type(topic)
    app = Mesh(f"bench-{uuid.uuid4().hex[:8]}", settings=settings, schemas_dir=schemas)
    lateness_ms: list[float] = []
    healthy: list[float] = []
    succeeded = 0
    all_done = asyncio.Event()

    @app.agent(
        "worker",
        consumes=Task,
        concurrency=2000,
        retry=RetryPolicy(attempts=3, backoff="fixed", initial_delay=delay),
    )
    async def worker(event: Event, ctx: Context) -> None:
        nonlocal succeeded
        if ctx.attempt > 1:
            lateness_ms.append(time.time() * 1000 - int(ctx.headers[DUE_TS]))
        elif fail_every and event.n % fail_every == 0:
            raise Flaky("transient")
        else:
            healthy.append(time.perf_counter())
        succeeded += 1
        if succeeded == count:
            all_done.set()

    app.prepare()
    publish(settings, Task, count)

    async def main() -> float:
        stop = asyncio.Event()
        serving = asyncio.create_task(app.serve(stop=stop, consumer_config=GROUP_CONFIG))
        await asyncio.wait_for(all_done.wait(), 300)
        stop.set()
        await serving
        return len(healthy) / (max(healthy) - min(healthy)) if len(healthy) > 1 else 0.0

    rate = asyncio.run(main())
    return lateness_ms, rate


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lateness-events", type=int, default=300)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # one warning per failed attempt otherwise
    workdir = Path(tempfile.mkdtemp(prefix="mesh-retry-bench-"))
    broker = start_broker(port=free_port(), log_dir=workdir)
    registry = start_registry(bootstrap_servers=broker.url, port=free_port(), log_dir=workdir)
    schemas = workdir / "schemas"
    generate_schemas([task_type("bench.schema")], schemas)
    settings = Settings(
        bootstrap_servers=broker.url,
        registry_url=registry.url,
        topics=TopicDefaults(partitions=3),
    )
    try:
        print("retry fire lateness (every event fails once):")
        for delay in ("1s", "5s"):
            late, _ = run_agent(
                settings,
                schemas,
                count=args.lateness_events,
                fail_every=1,
                delay=delay,
                topic=f"bench.late-{uuid.uuid4().hex[:6]}",
            )
            early = sum(1 for v in late if v < 0)
            print(
                f"  delay {delay}: p50 {percentile(late, 50):6.1f} ms  "
                f"p99 {percentile(late, 99):6.1f} ms  max {max(late):6.1f} ms  "
                f"early {early}  (target p99 <= 100 ms, never early)"
            )
        print(f"healthy throughput, {args.events} events:")
        _, clean = run_agent(
            settings, schemas, count=args.events, fail_every=None, delay="1s",
            topic=f"bench.clean-{uuid.uuid4().hex[:6]}",
        )  # fmt: skip
        _, mixed = run_agent(
            settings, schemas, count=args.events, fail_every=5, delay="1s",
            topic=f"bench.mixed-{uuid.uuid4().hex[:6]}",
        )  # fmt: skip
        print(f"  no failures:        {clean:10,.0f} events/s")
        print(f"  20 % retried:       {mixed:10,.0f} healthy events/s")
        print(f"  ratio: {mixed / clean:.2f} (target >= 0.90)")
    finally:
        registry.stop()
        broker.stop()


if __name__ == "__main__":
    main()
