"""Retries: how late do retries fire, and do they hold up healthy traffic? One run.

1. Lateness: every event fails its first attempt; the retry's start is compared with the
   due time the record carries. Printed as p50/p99/max in ms for 1 s and 5 s delays (never
   negative: a retry that fires early would be a bug, and is reported as such).
2. Healthy traffic while 20 % of events retry (the issue's target, ratio >= 0.9). Handlers
   await 50 ms of I/O, as agents calling a model or an API do, at the default concurrency.
   The clean capacity is measured first (a backlog, no failures); then a producer process
   offers events at half that rate, once with no failures and once with every fifth event
   failing its first attempt (retried after 1 s). Compared: the throughput of the healthy
   80 % (the same event numbers in both runs, first send to last handled) and their
   produce-to-handled latency. Retries must flow beside healthy events, not in front.
3. Saturated, for the record: trivial handlers on a backlog, so the CPU sets the pace. The
   rate of first-try successes with 20 % failing is divided by the rate of all events
   without failures, which caps the ratio at 0.8 even if retries cost nothing.

Starts its own broker and registry::

    python bench/retry_bench.py [--lateness-events 300] [--duration 15] [--events 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from confluent_kafka import Producer

from mesh import Context, Envelope, Event, Mesh, Settings
from mesh.config import RetryPolicy, TopicDefaults
from mesh.dev.stack import free_port, start_broker, start_registry
from mesh.headers import DUE_TS
from mesh.schema.files import generate_schemas
from mesh.serde import Serde

GROUP_CONFIG = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
SENT_NS = "bench.sent-ns"  # when the record was handed to the producer (epoch ns)
FAIL_EVERY = 5  # events whose n is a multiple fail their first attempt: 20 %
IO_S = 0.05
IO_CONCURRENCY = 100  # the runtime's default
Record = tuple[bytes, bytes, list[tuple[str, bytes]]]


def task_type(topic: str) -> type[Event]:
    """A fresh event type per run, on its own topic."""

    class Task(Event, topic=topic, key="task_id", name="bench.Task"):
        task_id: str
        n: int

    return Task


def encoded(settings: Settings, task: type[Event], numbers: Iterable[int]) -> Iterator[Record]:
    """Value, key and envelope headers of task *n* for each of *numbers*."""
    serde = Serde.from_settings(settings)
    for n in numbers:
        event = task(task_id=f"t{n}", n=n)
        envelope = Envelope.new_chain(task.event_type(), produced_by="bench")
        yield serde.encode(event, task.topic()), event.task_id.encode(), envelope.to_headers()


def produce(producer: Producer, topic: str, record: Record) -> None:
    """Send *record*, stamped with the time it was sent."""
    value, key, headers = record
    while True:
        try:
            stamped = [*headers, (SENT_NS, str(time.time_ns()).encode())]
            producer.produce(topic, value, key, headers=stamped)
            return
        except BufferError:
            producer.poll(0.05)


def publish(settings: Settings, task: type[Event], numbers: Iterable[int]) -> None:
    """Fill the topic through one producer (``Mesh.publish`` waits for each ack)."""
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 10})
    for record in encoded(settings, task, numbers):
        produce(producer, task.topic(), record)
    producer.flush(60)


def feed(settings: Settings, topic: str, count: int, rate: float) -> None:
    """Send tasks 0..count-1 at *rate* per second.

    Runs in its own process, so the agent's process has its CPU to itself; records are
    encoded before the clock starts.
    """
    task = task_type(topic)
    records = list(encoded(settings, task, range(count)))
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 5})
    start = time.monotonic()
    for n, record in enumerate(records):
        ahead = start + n / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        produce(producer, topic, record)
        producer.poll(0)
    producer.flush(60)


class Flaky(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Handled:
    """One successful handling: of which task, on which try, sent and finished when."""

    n: int
    attempt: int
    sent_s: float
    done_s: float


@dataclass(frozen=True)
class Load:
    """How a run's events arrive and what its handler does."""

    count: int
    io_s: float = 0.0
    concurrency: int = 2000
    fail_every: int | None = None
    delay: str = "1s"
    rate: float | None = None  # paced by a producer process; else a backlog published first


def run_agent(settings: Settings, schemas: Path, load: Load) -> tuple[list[float], list[Handled]]:
    """Run an agent until every task succeeded; retry lateness (ms) and every success."""
    topic = f"bench.t-{uuid.uuid4().hex[:8]}"
    Task = task_type(topic)
    app = Mesh(f"bench-{uuid.uuid4().hex[:8]}", settings=settings, schemas_dir=schemas)
    lateness_ms: list[float] = []
    handled: list[Handled] = []
    warm = asyncio.Event()
    all_done = asyncio.Event()

    @app.agent(
        "worker",
        consumes=Task,
        concurrency=load.concurrency,
        retry=RetryPolicy(attempts=3, backoff="fixed", initial_delay=load.delay),
    )
    async def worker(event: Event, ctx: Context) -> None:
        if event.n < 0:  # the warm-up event: the group has joined
            warm.set()
            return
        if ctx.attempt > 1:
            lateness_ms.append(time.time() * 1000 - int(ctx.headers[DUE_TS]))
        if load.io_s:
            await asyncio.sleep(load.io_s)
        if ctx.attempt == 1 and load.fail_every and event.n % load.fail_every == 0:
            raise Flaky("transient")
        sent_s = int(ctx.headers[SENT_NS]) / 1e9
        handled.append(Handled(event.n, ctx.attempt, sent_s, time.time()))
        if len(handled) == load.count:
            all_done.set()

    app.prepare()
    publish(settings, Task, range(-1, 0) if load.rate else range(load.count))

    async def main() -> None:
        stop = asyncio.Event()
        serving = asyncio.create_task(app.serve(stop=stop, consumer_config=GROUP_CONFIG))
        feeder = None
        if load.rate:
            await asyncio.wait_for(warm.wait(), 60)
            feeder = multiprocessing.get_context("spawn").Process(
                target=feed, args=(settings, topic, load.count, load.rate)
            )
            feeder.start()
        await asyncio.wait_for(all_done.wait(), 600)
        stop.set()
        await serving
        if feeder is not None:
            feeder.join()

    asyncio.run(main())
    return lateness_ms, handled


def rate(done: list[Handled], *, from_sent: bool = False) -> float:
    """Events per second from the first send (or finish) to the last finish."""
    start = min(h.sent_s if from_sent else h.done_s for h in done)
    return len(done) / (max(h.done_s for h in done) - start)


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def healthy_line(label: str, handled: list[Handled]) -> float:
    """Print throughput and latency of the events that never fail; return the throughput."""
    healthy = [h for h in handled if h.n % FAIL_EVERY]
    latency_ms = [(h.done_s - h.sent_s) * 1000 for h in healthy]
    throughput = rate(healthy, from_sent=True)
    p50, p99 = percentile(latency_ms, 50), percentile(latency_ms, 99)
    print(
        f"  {label:<14} healthy {throughput:7,.0f} events/s  "
        f"latency p50 {p50:5.0f} ms  p99 {p99:5.0f} ms  max {max(latency_ms):5.0f} ms"
    )
    return throughput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lateness-events", type=int, default=300)
    parser.add_argument("--capacity-events", type=int, default=4000)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of paced traffic")
    parser.add_argument("--events", type=int, default=10_000, help="saturated backlog")
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
                settings, schemas, Load(count=args.lateness_events, fail_every=1, delay=delay)
            )
            early = sum(1 for v in late if v < 0)
            print(
                f"  delay {delay}: p50 {percentile(late, 50):6.1f} ms  "
                f"p99 {percentile(late, 99):6.1f} ms  max {max(late):6.1f} ms  "
                f"early {early}  (target p99 <= 100 ms, never early)"
            )

        io = Load(count=args.capacity_events, io_s=IO_S, concurrency=IO_CONCURRENCY)
        print(
            f"healthy traffic while 20 % retry (handlers await {IO_S * 1000:.0f} ms, "
            f"concurrency {IO_CONCURRENCY}, retry delay 1 s):"
        )
        _, backlog = run_agent(settings, schemas, io)
        capacity = rate(backlog)
        offered = round(capacity / 2)
        count = round(offered * args.duration)
        print(f"  clean capacity {capacity:,.0f} events/s; offering {offered:,} events/s")
        paced = Load(count=count, io_s=IO_S, concurrency=IO_CONCURRENCY, rate=offered)
        _, clean = run_agent(settings, schemas, paced)
        _, mixed = run_agent(settings, schemas, replace(paced, fail_every=FAIL_EVERY))
        clean_rate = healthy_line("no failures:", clean)
        mixed_rate = healthy_line("20 % retried:", mixed)
        retried = sum(1 for h in mixed if h.attempt > 1)
        print(
            f"  ratio {mixed_rate / clean_rate:.2f} (target >= 0.90); {retried} retried, all done"
        )

        print(f"saturated, CPU-bound trivial handlers, backlog of {args.events}:")
        _, clean = run_agent(settings, schemas, Load(count=args.events))
        _, mixed = run_agent(settings, schemas, Load(count=args.events, fail_every=FAIL_EVERY))
        clean_rate = rate(clean)
        mixed_rate = rate([h for h in mixed if h.attempt == 1])
        print(f"  no failures:   {clean_rate:8,.0f} events/s")
        print(f"  20 % retried:  {mixed_rate:8,.0f} first-try events/s")
        print(
            f"  ratio {mixed_rate / clean_rate:.2f} (ceiling 0.80: 80 % of the events divided by "
            "the rate of all of them, at the same CPU-bound pace)"
        )
    finally:
        registry.stop()
        broker.stop()


if __name__ == "__main__":
    main()
